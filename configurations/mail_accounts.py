"""``dovecot-users``: Dovecot's passwd-file ``/etc/dovecot/users`` from ``mail-accounts``.

One line per account, sorted by address, in passwd-file form
``user:password:uid:gid:(gecos):home:(shell):extra_fields``::

    info@example.com:{SHA512-CRYPT}$6$…::::::userdb_quota_rule=*:storage=1024M

uid, gid and home are left empty: virtual mail users get them from the userdb's
``default_fields``/``override_fields`` in Dovecot's own configuration. A quota becomes the
``userdb_quota_rule`` extra field (``M`` is MiB in Dovecot's size units). Mode 0640,
owner root, group ``dovecot``: the file holds password hashes.

No accounts still plans the file, holding only its header comment: Dovecot's passdb and
userdb point at this path and log an error for every login when it is missing, and an
empty passwd-file simply knows no users. So deleting the last account empties the file
(and reloads Dovecot) rather than removing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field

from ccm.models.base import CcmObject
from ccm.models.fields import Hostname, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, File, UnitAction
from ccm.plan.configuration import Configuration, Render


class MailAccount(CcmObject):
    TYPE: ClassVar[str] = "mail-accounts"
    local_part: Annotated[
        str,
        Field(strict=True),
        pattern(r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?", "a lower-case mailbox name"),
    ]
    domain: Hostname
    password_hash: Annotated[
        str,
        Field(strict=True, max_length=512),
        pattern(
            r"(?:\{[A-Z0-9.-]+\})?\$[0-9a-z]+(?:\$[A-Za-z0-9=,]+)?\$[./A-Za-z0-9$]+",
            "a crypt(3) hash like $6$salt$hash, optionally with a {SCHEME} prefix",
        ),
    ]
    quota_mib: int | None = Field(default=None, ge=1, le=2**40, strict=True)

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"

    def unique_keys(self) -> dict[str, Any]:
        return {"address": self.address}


USERS_FILE = "/etc/dovecot/users"


def passwd_file_line(account: MailAccount) -> str:
    """The passwd-file line of one account (no newline).

    Safe by the model's patterns: neither the address nor the hash can hold ``:``, a
    blank or a newline, and neither contains ``%`` (Dovecot expands ``%`` variables in
    extra fields).
    """
    extra = f"userdb_quota_rule=*:storage={account.quota_mib}M" if account.quota_mib else ""
    return f"{account.address}:{account.password_hash}::::::{extra}"


class DovecotUsers(Configuration):
    name = "dovecot-users"
    subscribes = (MailAccount.TYPE,)
    summary = "Dovecot passwd-file of the mail accounts; reload dovecot"
    groups = ("dovecot",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        accounts = sorted(snapshot.all(MailAccount), key=lambda account: account.address)
        content = render(
            "mail-accounts/dovecot-users.j2", lines=[passwd_file_line(a) for a in accounts]
        )
        return [
            File(USERS_FILE, content, mode=0o640, owner="root", group="dovecot"),
            UnitAction("dovecot", "reload", triggers=(USERS_FILE,)),
        ]
