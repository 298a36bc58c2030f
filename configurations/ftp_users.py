"""``ftp-users`` and ``proftpd-users``: a tenant's FTP logins, served by ProFTPD.

An FTP user is a login (``username``, a SHA-512 crypt ``password_hash``) of a tenant
(``unix_user_id``) that works as that tenant's uid, locked into ``directory_path``: the
tenant's home or a directory inside it. On the nodes with the ``proftpd`` group:

* ``/etc/proftpd/ccm.passwd`` — ProFTPD's ``AuthUserFile`` in full, in ftpasswd form
  (``user:hash:uid:gid::home:shell``), one line per user sorted by name. uid and gid are
  the tenant's account's (``configurations.unix_users.account_uid``, with the node's
  ``[accounts] uid_base``: the template reads it from ``node_settings``); home is
  ``directory_path``. Mode 0600 root (ProFTPD refuses a world-readable one; it holds the
  hashes), a secret file: ``ccm diff`` shows only fingerprints.
* ``/etc/proftpd/conf.d/ccm.conf`` — what Debian's ``proftpd.conf`` includes (``Include
  /etc/proftpd/conf.d/``): the users of that file are the only logins (``AuthOrder
  mod_auth_file.c``: no system accounts, no PAM), each chrooted to its home (``DefaultRoot
  ~``), never through a symlink (``AllowChrootSymlinks off``: ProFTPD chroots as root, so
  a tenant's link to another home would otherwise be followed), and a missing
  ``directory_path`` is made at the first login with the tenant's own rights
  (``CreateHome … NoRootPrivs``: never root writing inside a tenant's home).
  ``AuthFileOptions SyntaxCheck`` makes ProFTPD parse the users file when it reads its
  configuration, so the check below refuses a malformed or world-readable file.

Then the check ``proftpd_check`` (``proftpd -t -c /etc/proftpd/conf.d/ccm.conf``: the
snippet itself, and through ``SyntaxCheck`` the users file) and, when the snippet changed,
a reload of ``proftpd``. Not ``-t`` on the main ``proftpd.conf``: ProFTPD 1.3.8 logs an
error in an included file as fatal yet exits 0, and a server started so runs without the
rest of that file (no chroot, system logins); only the snippet checked on its own fails.
A changed users file needs no reload: every FTP session reads it anew
(``tests/test_ftp_users.py`` logs a user added later in on the running server).

The users file is one file for every tenant, so its ``origin`` names every FTP user and
its owner: when this node refuses one tenant's account (a login of that name exists here,
its uid is taken), the file — and the snippet with it — stays as it is on this node until
that is resolved, rather than giving an FTP login a uid or a home that is not that
tenant's here. (Dropping only the refused tenant's lines would need a change kind that
knows the node's refusals, as ``AccountFiles`` does for the accounts.)

A node that is not registered (``nodes``) runs every configuration; there this one plans
nothing until the first FTP user exists, so a one-server setup without FTP needs no
ProFTPD. A registered node with the ``proftpd`` group always gets both files.

Write-time rules: ``username`` is unique across the cluster (two owners never share a
login), of a-z, 0-9 and inner ``._-`` (at most 64), and no system account's name.
``directory_path`` is an absolute, normalised path (no ``..``, no ``:`` or blank) inside
the owner's home, of at most 768 characters (ProFTPD reads its users file in lines of at
most 1023 bytes and refuses a longer one, split, as malformed). The hash is SHA-512 crypt
(``$6$``, 1,000 to 100,000 rounds: every login attempt pays for one hash); ``{PLAIN}``,
MD5 crypt, bcrypt (ProFTPD's crypt may not know it) and Dovecot's ``{SHA512-CRYPT}``
prefix are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import AbsolutePath, ObjectId, Ref, Secret, path_inside, pattern
from ccm.models.reserved import reserved_name
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, Check, File, UnitAction
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.unix_users import UnixUser, account_uid

USERNAME = r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?"
USERNAME_RULE = "a login of a-z, 0-9 and inner ._- (at most 64)"
#: names ProFTPD itself gives a meaning (an <Anonymous> section answers them)
FTP_NAMES = frozenset({"anonymous", "ftp"})
#: ProFTPD reads its AuthUserFile in lines of at most 1023 bytes (a longer one is split in
#: two and refused as malformed); the rest of a line takes at most 227 (a 64-character
#: login, a 120-character hash, two 10-digit ids, the shell and six colons)
MAX_DIRECTORY = 768
MIN_ROUNDS = 1000
MAX_ROUNDS = 100_000
_SHA512_CRYPT = re.compile(
    r"\$6\$(?:rounds=(?P<rounds>[1-9][0-9]{0,8})\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}"
)

USERS_FILE = "/etc/proftpd/ccm.passwd"
CONFIG_FILE = "/etc/proftpd/conf.d/ccm.conf"
#: what a session's account says about a shell (``RequireValidShell off``: never used)
SHELL = "/usr/sbin/nologin"
PROFTPD_CHECK = "proftpd_check"
PROFTPD_CHECKS: Mapping[str, tuple[str, ...]] = {
    PROFTPD_CHECK: ("proftpd", "-t", "-c", "{root}" + CONFIG_FILE)
}


def sha512_crypt(value: str) -> str:
    """A SHA-512 crypt hash of 1,000 to 100,000 rounds (the value is never echoed)."""
    found = _SHA512_CRYPT.fullmatch(value)
    if found is None:
        raise ValueError(
            "is not a SHA-512 crypt hash ($6$[rounds=N$]salt$hash, no scheme prefix); "
            "plain text, MD5 ($1$) and bcrypt are refused"
        )
    rounds = int(found["rounds"] or 5000)
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise ValueError(
            f"{rounds} SHA-512 rounds: {MIN_ROUNDS} to {MAX_ROUNDS} (every login attempt "
            "pays for one hash)"
        )
    return value


class FtpUser(CcmObject):
    """An FTP login of a tenant, as its uid, locked into ``directory_path`` in its home."""

    TYPE: ClassVar[str] = "ftp-users"
    username: Annotated[str, Field(strict=True, max_length=64), pattern(USERNAME, USERNAME_RULE)]
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    password_hash: Annotated[str, Field(strict=True, max_length=256), Secret]
    directory_path: AbsolutePath

    @field_validator("username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        """not a system account's name, nor ``anonymous`` or ``ftp``"""
        if reserved_name(value) or value in FTP_NAMES:
            raise ValueError(f"{value!r} is reserved for a system account or ProFTPD")
        return value

    @field_validator("directory_path")
    @classmethod
    def _fits_a_line(cls, value: str) -> str:
        """at most 768 characters (ProFTPD reads lines of at most 1023 bytes)"""
        if len(value) > MAX_DIRECTORY:
            raise ValueError(
                f"{len(value)} characters: at most {MAX_DIRECTORY} (ProFTPD's AuthUserFile "
                "lines hold at most 1023 bytes)"
            )
        return value

    @field_validator("password_hash")
    @classmethod
    def _sha512_crypt(cls, value: str) -> str:
        """SHA-512 crypt (``$6$``, no scheme prefix), 1,000 to 100,000 rounds"""
        return sha512_crypt(value)

    def unique_keys(self) -> dict[str, Any]:
        # one AuthUserFile for the whole cluster: a login names exactly one tenant
        return {"username": self.username}

    def problems(self, view: ObjectsView) -> list[str]:
        """``directory_path`` is the owner's home or lies inside it (ProFTPD chroots as
        root: a path in another home would be entered whatever that home's mode)."""
        user = view.lookup(UnixUser.TYPE, self.unix_user_id)
        if not isinstance(user, UnixUser):
            return []
        path = self.directory_path
        if path == user.home or path_inside(path, user.home):
            return []
        return [
            f"{self.describe()}: directory_path: {path!r} is not inside the home of "
            f"{user.username!r} ({user.home}/)"
        ]


@dataclass(frozen=True)
class UserLine:
    """What ``ccm.passwd.j2`` renders for one FTP user (uid from the node's settings)."""

    username: str
    password_hash: str
    unix_user_id: int
    home: str


class ProftpdUsers(Configuration):
    name = "proftpd-users"
    subscribes = (FtpUser.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users",)
    summary = "ProFTPD's AuthUserFile of the FTP users and its conf.d snippet; check, reload"
    groups = ("proftpd",)
    #: sessions run as the tenants' uids in their homes: the homes must be on this node
    needs_accounts = True
    checks = PROFTPD_CHECKS

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        users = snapshot.all(FtpUser)
        if not users and snapshot.this_node() is None:
            return []  # an unregistered node without FTP users needs no ProFTPD
        lines = []
        origin: set[str] = set()
        for ftp_user in users:
            owner = referenced(
                snapshot,
                UnixUser,
                ftp_user.unix_user_id,
                referrer=ftp_user,
                field="unix_user_id",
                configuration=self.name,
            )
            lines.append(
                UserLine(
                    ftp_user.username,
                    ftp_user.password_hash,
                    owner.id,
                    ftp_user.directory_path,
                )
            )
            origin |= {ftp_user.describe(), owner.describe()}
        lines.sort(key=lambda line: line.username)
        users_file = render(
            "ftp-users/ccm.passwd.j2", users=lines, account_uid=account_uid, shell=SHELL
        )
        # one origin for both files: a tenant this node refuses keeps them as they are
        # together (a snippet naming a users file that was never written fails the check)
        shared = tuple(sorted(origin))
        return [
            File(USERS_FILE, users_file, mode=0o600, origin=shared, secret=True),
            File(
                CONFIG_FILE,
                render("ftp-users/proftpd-ccm.conf.j2", users_file=USERS_FILE),
                origin=shared,
            ),
            Check(PROFTPD_CHECK, triggers=(USERS_FILE, CONFIG_FILE)),
            UnitAction("proftpd", "reload", triggers=(CONFIG_FILE,)),
        ]
