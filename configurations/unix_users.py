"""``unix-users``: one unix account and one home directory per ``unix-users`` object.

Plans, per user (ordered by id): the ``Account`` (home ``/home/<username>``, the shell,
the e-mail address as comment); then ``AccountFiles``, the accounts' files; then per user
``/home/<username>``: mode 0750, owned by the user, group ``www-data`` (the web server's
group). On a node whose ``[accounts] backend`` is ``useradd`` (the default) the executor
creates accounts with ``useradd`` before it writes files and deletes the accounts it
created once they are no longer planned, and ``AccountFiles`` plans nothing; on an
``extrausers`` node ``AccountFiles`` renders ``/var/lib/extrausers/group``, ``passwd``
and ``shadow`` in full instead, before the homes (``ccm.plan.extrausers`` says why and
by which rules). Home directories are never removed (they hold the user's data), and a
home whose mode or group drifted is set back on the next run.

Why this home model: nginx's workers run as ``www-data`` and must traverse the home to
reach a document root inside it; with group ``www-data`` and 0750 they can, and nobody
else but the user can. php-fpm runs each pool as its tenant, and tenants are never
members of ``www-data``, so one tenant's PHP cannot even enter another tenant's home.
(Alternatives: adding ``www-data`` to every tenant's group works the same way, but it
puts state into ``/etc/group`` for each tenant and gives the web server the tenant's
group on every file; a 0711 home lets anyone who knows a path inside it read it.) The
web server may read every home, so a tenant's symlink to another tenant's file is
refused by nginx itself (``disable_symlinks if_not_owner``, in ``nginx-vhosts``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import AbsolutePath, Email, pattern
from ccm.models.reserved import reserved_name, uid_problem
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Account, AccountFiles, Change, Directory
from ccm.plan.configuration import Configuration, Render


def account_uid(uid_base: int, user_id: int) -> int:
    """The uid (and the gid of its own group) of the account of ``unix-users/<user_id>``
    on a node whose ``[accounts] uid_base`` is ``uid_base``: the object id, not the name,
    is the account's identity. Another type that writes a tenant's uid into a file (FTP's
    AuthUserFile) takes it from here, with the node's ``uid_base`` (``node_settings``)."""
    return uid_base + user_id


class UnixUser(CcmObject):
    TYPE: ClassVar[str] = "unix-users"
    # The account, its uid (derived from the id) and its home are the user's identity on
    # every node: a rename would orphan the home. Delete and create a new user instead.
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("username",)
    username: Annotated[
        str,
        Field(strict=True),
        pattern(r"[a-z_][a-z0-9_-]{0,31}", "a user name of a-z, 0-9, _ and - (at most 32)"),
    ]
    email: Email | None = None
    shell: AbsolutePath = "/bin/bash"

    @field_validator("username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if reserved_name(value):
            raise ValueError(f"{value!r} is reserved for a system account or group")
        return value

    @field_validator("shell")
    @classmethod
    def _shell(cls, value: str) -> str:
        if value == "/" or len(value) > 255:
            raise ValueError(f"{value!r} is not a shell (an absolute path of at most 255)")
        return value

    @field_validator("id")
    @classmethod
    def _uid(cls, value: int, info: ValidationInfo) -> int:
        """The account's uid is ``uid_base + id``: it must be a usable, unreserved uid.

        Checked at write time, with the writer's ``uid_base`` in the validation context;
        a stored object is read without it, and each node checks the uid it would give
        with its own ``uid_base`` (refusing that one account, not halting).
        """
        context = info.context if isinstance(info.context, dict) else {}
        if "uid_base" not in context:
            return value
        uid_base = int(context["uid_base"])
        problem = uid_problem(account_uid(uid_base, value))
        if problem:
            raise ValueError(f"the account would get {problem} (uid_base {uid_base} + id)")
        return value

    @property
    def home(self) -> str:
        return f"/home/{self.username}"

    def unique_keys(self) -> dict[str, Any]:
        return {"username": self.username}


#: the web server's group (Debian's nginx workers run as www-data)
WEB_SERVER_GROUP = "www-data"


class UnixUsers(Configuration):
    name = "unix-users"
    subscribes = (UnixUser.TYPE,)
    summary = "unix accounts and their home directories"
    #: on the nodes of every configuration that ``needs_accounts`` (crontabs, pools,
    #: vhosts; a plugin's daemons or FTP users), with no list kept here
    provides_accounts = True

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        users = snapshot.all(UnixUser)
        accounts = tuple(
            Account(
                username=user.username,
                home=user.home,
                id=user.id,
                shell=user.shell,
                comment=user.email or "",
                origin=(user.describe(),),
            )
            for user in users
        )
        homes = [
            Directory(
                user.home,
                mode=0o750,
                owner=user.username,
                group=WEB_SERVER_GROUP,
                owner_id=user.id,
                origin=(user.describe(),),
            )
            for user in users
        ]
        # the accounts, their files (extrausers), then what they own
        return [*accounts, AccountFiles(accounts), *homes]
