"""Reading the node as it is, under the root: files, modes, owners, accounts.

Owner and group names are resolved through the root's own ``etc/passwd`` and
``etc/group`` (not the host's), so a temporary root with its own accounts behaves like
a real node; and through the root's ``var/lib/extrausers/passwd`` and ``group`` (the
``extrausers`` accounts backend renders them), read after ``etc`` as nsswitch's ``files
extrausers`` does: a name in both is the ``etc`` one.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ccm.errors import PlanError


@dataclass(frozen=True)
class PasswdEntry:
    username: str
    uid: int
    gid: int
    comment: str
    home: str
    shell: str


def _read_colon_file(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _passwd_entries(path: Path) -> dict[str, PasswdEntry]:
    entries = {}
    for fields in _read_colon_file(path):
        if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit():
            entry = PasswdEntry(
                fields[0], int(fields[2]), int(fields[3]), fields[4], fields[5], fields[6]
            )
            entries[entry.username] = entry
    return entries


def _group_entries(path: Path) -> dict[str, int]:
    return {
        fields[0]: int(fields[2])
        for fields in _read_colon_file(path)
        if len(fields) >= 3 and fields[2].isdigit()
    }


#: where the ``extrausers`` accounts backend renders its passwd, group and shadow
EXTRAUSERS_DIR = "var/lib/extrausers"


class Accounts:
    """The root's passwd and group databases, re-read with ``reload()`` after changes.

    ``users`` and ``groups`` are what NSS resolves (``etc``, then extrausers);
    ``etc_users`` and ``etc_groups`` are ``etc/passwd`` and ``etc/group`` alone.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.users: dict[str, PasswdEntry] = {}
        self.groups: dict[str, int] = {}
        self.etc_users: dict[str, PasswdEntry] = {}
        self.etc_groups: dict[str, int] = {}
        #: uid → name in ``etc/passwd``, gid → name in ``etc/group``
        self.etc_uids: dict[int, str] = {}
        self.etc_gids: dict[int, str] = {}
        self._user_names: dict[int, str] = {}
        self._group_names: dict[int, str] = {}
        #: accounts (and their groups) that the run being planned will create
        self.planned: set[str] = set()
        self.reload()

    def reload(self) -> None:
        self.etc_users = _passwd_entries(self.root / "etc/passwd")
        self.etc_groups = _group_entries(self.root / "etc/group")
        extra = self.root / EXTRAUSERS_DIR
        self.users = {**_passwd_entries(extra / "passwd"), **self.etc_users}
        self.groups = {**_group_entries(extra / "group"), **self.etc_groups}
        self.etc_uids = {entry.uid: name for name, entry in self.etc_users.items()}
        self.etc_gids = {gid: name for name, gid in self.etc_groups.items()}
        # a uid in both: the etc name, as NSS answers
        self._user_names = {entry.uid: name for name, entry in self.users.items()}
        self._user_names.update(self.etc_uids)
        self._group_names = {gid: name for name, gid in self.groups.items()}
        self._group_names.update(self.etc_gids)

    def uid(self, name: str, *, configuration: str) -> int:
        if name in self.users:
            return self.users[name].uid
        raise PlanError(
            configuration, f"owner {name!r} is not an account in {self.root}/etc/passwd"
        )

    def gid(self, name: str, *, configuration: str) -> int:
        if name in self.groups:
            return self.groups[name]
        raise PlanError(configuration, f"group {name!r} is not a group in {self.root}/etc/group")

    def missing(self, user: str, group: str) -> str:
        """Which of ``user`` and ``group`` neither exists nor is created by the run being
        planned ("" when both will be there)."""
        if user not in self.users and user not in self.planned:
            return f"owner {user!r} is not an account on this node"
        if group not in self.groups and group not in self.planned:
            return f"group {group!r} is not a group on this node"
        return ""

    def user_name(self, uid: int) -> str:
        return self._user_names.get(uid, str(uid))

    def group_name(self, gid: int) -> str:
        return self._group_names.get(gid, str(gid))


@dataclass(frozen=True)
class PathState:
    """What is at a path now: None fields mean it does not exist."""

    exists: bool
    is_dir: bool = False
    is_link: bool = False
    #: a regular file (not a directory, symlink, fifo, socket or device)
    is_file: bool = False
    content: bytes | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


def read_path(path: str | Path, *, with_content: bool = True) -> PathState:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return PathState(exists=False)
    is_dir = stat.S_ISDIR(info.st_mode)
    content = None
    if with_content and stat.S_ISREG(info.st_mode):
        with open(path, "rb") as handle:
            content = handle.read()
    return PathState(
        exists=True,
        is_dir=is_dir,
        is_link=stat.S_ISLNK(info.st_mode),
        is_file=stat.S_ISREG(info.st_mode),
        content=content,
        mode=stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
    )


def copy_system_accounts(source: Path, target: Path) -> None:
    """Seed ``target``'s etc/passwd and etc/group with the system accounts and groups of
    ``source`` (ids below 1000 or from 60000 up): an empty root for previewing another
    node's plan still knows ``root``, ``www-data`` or ``crontab``, and no tenant. A
    ``source`` without accounts (a workstation's scratch root) lends this machine's."""
    if not (source / "etc/passwd").exists():
        source = Path("/")
    (target / "etc").mkdir(parents=True, exist_ok=True)
    for name in ("passwd", "group"):
        kept = [
            ":".join(fields)
            for fields in _read_colon_file(source / "etc" / name)
            if len(fields) >= 3 and fields[2].isdigit() and not 1000 <= int(fields[2]) < 60000
        ]
        (target / "etc" / name).write_text("".join(f"{line}\n" for line in kept))
