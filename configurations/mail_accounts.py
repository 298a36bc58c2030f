"""``mail-accounts`` and ``dovecot-users``: mailboxes, and Dovecot's passwd-file of them.

An account is ``local_part`` in a ``mail-domains`` object (``mail_domain_id``); it
belongs to that domain's owner. It replaced the free ``domain`` field, with which any
tenant could open a mailbox in another tenant's domain (``ccm migrate`` carries stored
accounts over: ``ccm/cluster/mail_migration.py``).

The password hash is a secret (never in a diff, a log, the history or a refusal) and
one of the crypt schemes Dovecot verifies safely, with its scheme prefix:
``{SHA512-CRYPT}$6$…``, ``{BLF-CRYPT}$2y$…`` or ``{ARGON2ID}$argon2id$…``. ``{PLAIN}``,
``{CLEARTEXT}`` and every other scheme are refused.

Dovecot's passwd-file ``/etc/dovecot/users``: one line per account, sorted by address,
in passwd-file form ``user:password:uid:gid:(gecos):home:(shell):extra_fields``::

    info@example.com:{SHA512-CRYPT}$6$…::::::userdb_quota_rule=*:storage=1024M

uid, gid and home are left empty: virtual mail users get them from the userdb's
``default_fields``/``override_fields`` in Dovecot's own configuration. A quota becomes the
``userdb_quota_rule`` extra field (``M`` is MiB in Dovecot's size units). Mode 0640,
owner root, group ``dovecot``, a secret file: it holds password hashes.

No accounts still plans the file, holding only its header comment: Dovecot's passdb and
userdb point at this path and log an error for every login when it is missing, and an
empty passwd-file simply knows no users. So deleting the last account empties the file
(and reloads Dovecot) rather than removing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import ObjectId, Ref, Secret, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, File, UnitAction
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.mail_domains import MailDomain
from configurations.mail_routing import (
    MAIL_ACCOUNTS,
    MAIL_ALIASES,
    MAIL_DOMAINS,
    Routing,
    clash_problems,
)

#: a mailbox name: what Postfix's maps, Dovecot's passwd-file and a Maildir path take
LOCAL_PART = r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?"
LOCAL_PART_RULE = "a lower-case mailbox name of a-z, 0-9 and inner ._+- (at most 64)"

_CRYPT64 = r"[./A-Za-z0-9]"
_BASE64 = r"[A-Za-z0-9+/]"
#: the schemes Dovecot verifies with a salted, slow hash, each with its own hash form
PASSWORD_HASH = (
    rf"\{{SHA512-CRYPT\}}\$6\$(?:rounds=[0-9]{{4,9}}\$)?{_CRYPT64}{{1,16}}\${_CRYPT64}{{86}}"
    rf"|\{{BLF-CRYPT\}}\$2[aby]\$[0-9]{{2}}\${_CRYPT64}{{53}}"
    rf"|\{{ARGON2ID\}}\$argon2id\$v=19\$m=[0-9]{{1,10}},t=[0-9]{{1,10}},p=[0-9]{{1,3}}"
    rf"\${_BASE64}{{11,88}}\${_BASE64}{{16,344}}"
)
PASSWORD_HASH_RULE = (
    "a hash of {SHA512-CRYPT} ($6$…), {BLF-CRYPT} ($2y$…) or {ARGON2ID} ($argon2id$…), "
    "with its scheme prefix (plain text schemes are refused)"
)


class MailAccount(CcmObject):
    """A mailbox in a mail domain (the domain owner's), with a crypt password hash."""

    TYPE: ClassVar[str] = MAIL_ACCOUNTS
    #: an alias may not take an account's address (and the reverse: ``mail-aliases``)
    READS: ClassVar[tuple[str, ...]] = (MAIL_DOMAINS, MAIL_ALIASES, MAIL_ACCOUNTS)
    local_part: Annotated[str, Field(strict=True), pattern(LOCAL_PART, LOCAL_PART_RULE)]
    mail_domain_id: Annotated[ObjectId, Ref(MAIL_DOMAINS)]
    password_hash: Annotated[
        str,
        Field(strict=True, max_length=512),
        pattern(PASSWORD_HASH, PASSWORD_HASH_RULE),
        Secret,
    ]
    quota_mib: int | None = Field(default=None, ge=1, le=2**40, strict=True)

    def unique_keys(self) -> dict[str, Any]:
        # the domain is unique among mail-domains: one address per (local part, domain)
        return {"address": f"{self.local_part}@mail-domains/{self.mail_domain_id}"}

    def problems(self, view: ObjectsView) -> list[str]:
        return clash_problems(self, Routing.of(view), MAIL_ALIASES)


USERS_FILE = "/etc/dovecot/users"


def passwd_file_line(account: MailAccount, domain: MailDomain) -> str:
    """The passwd-file line of one account (no newline).

    Safe by the models' patterns: neither the address nor the hash can hold ``:``, a
    blank or a newline, and neither contains ``%`` (Dovecot expands ``%`` variables in
    extra fields).
    """
    extra = f"userdb_quota_rule=*:storage={account.quota_mib}M" if account.quota_mib else ""
    return f"{account.local_part}@{domain.domain}:{account.password_hash}::::::{extra}"


class DovecotUsers(Configuration):
    name = "dovecot-users"
    subscribes = (MailAccount.TYPE, MailDomain.TYPE)
    summary = "Dovecot passwd-file of the mail accounts; reload dovecot"
    groups = ("dovecot",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        lines = []
        for account in snapshot.all(MailAccount):
            domain = referenced(
                snapshot,
                MailDomain,
                account.mail_domain_id,
                referrer=account,
                field="mail_domain_id",
                configuration=self.name,
            )
            lines.append(
                (f"{account.local_part}@{domain.domain}", passwd_file_line(account, domain))
            )
        content = render(
            "mail-accounts/dovecot-users.j2", lines=[line for _, line in sorted(lines)]
        )
        return [
            File(USERS_FILE, content, mode=0o640, owner="root", group="dovecot", secret=True),
            UnitAction("dovecot", "reload", triggers=(USERS_FILE,)),
        ]
