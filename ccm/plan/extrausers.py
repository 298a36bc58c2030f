"""The ``extrausers`` accounts backend: accounts as rendered files, not ``useradd`` calls.

With ``[accounts] backend = "extrausers"`` an ``Account`` runs no ``useradd``: it is
checked against the node's own ``/etc/passwd`` and ``/etc/group`` (the rules below), and
``AccountFiles`` (planned by the configuration that provides the accounts, after its
accounts and before anything they own) renders ``/var/lib/extrausers/group``, ``passwd``
and ``shadow`` in full from the accounts that passed, written atomically like any file.
Debian's libnss-extrausers serves them through NSS once nsswitch.conf says ``files
extrausers``: ``playbooks/extrausers.yml`` (planned by ``AccountFiles`` too) installs it
and sets that. Everything that looks an account up by name (php-fpm's ``user =``,
``crontab``, ``chown``, Dovecot) works unchanged.

Why: ``useradd`` parses and rewrites passwd, shadow, group and gshadow on every call
(about 28 ms of CPU each, growing with the files), so 2,000 accounts were most of a 35 s
cold apply; three rendered files are three writes, and an unchanged set writes nothing.
The backend is the node's (a setting, like ``uid_base``), so the configuration's plan
stays the same on every node and the kinds read it when they compare.

Rules (each refuses that account's objects on this node, naming the object; never the
whole run):

- a reserved name (``ccm.models.reserved``) never appears;
- the uid (``uid_base`` + id; the account's own group has the same number as gid) must be
  usable and held by no other name in ``/etc/passwd`` (as a uid) or ``/etc/group`` (as a
  gid);
- a name in ``/etc/passwd`` or ``/etc/group`` is never taken over (``files`` comes first
  in nsswitch: it would shadow the rendered one), except an account ccm itself made with
  ``useradd``, with this uid as uid and gid: that one is *moved* (``MoveAccount``): it is
  rendered here and, after the run's reloads, removed from ``/etc/passwd`` with
  ``[commands] userdel_moved``. Its uid, and so every file it owns, stays.

An account refused now whose lines the files already hold keeps them (a refused
``useradd`` account is never deleted either). Homes stay the configuration's
``Directory`` changes: made and owned as with ``useradd``, and a kept home of another
uid is never handed over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ccm.errors import PlanError, TenantConflict
from ccm.models.reserved import reserved_name, uid_problem
from ccm.plan.files import File, WriteFile
from ccm.plan.node import EXTRAUSERS_DIR
from ccm.plan.playbook import Playbook
from ccm.plan.steps import ConfigurationOperations, NodeView, Run

BACKEND = "extrausers"
DIRECTORY = "/" + EXTRAUSERS_DIR
#: the playbook that installs libnss-extrausers and sets nsswitch.conf
PLAYBOOK = "extrausers.yml"
#: what no field of a passwd, group or shadow line may hold: the separator, a line
#: break (libnss-extrausers stops reading a file at a broken line), control characters
_UNSAFE = re.compile(r"[:\x00-\x1f\x7f]")


class AccountLike(Protocol):
    """What the backend reads of an ``Account`` (``ccm.plan.accounts``)."""

    @property
    def username(self) -> str: ...

    @property
    def home(self) -> str: ...

    @property
    def id(self) -> int: ...

    @property
    def shell(self) -> str: ...

    @property
    def comment(self) -> str: ...

    @property
    def origin(self) -> tuple[str, ...]: ...


# -- the lines ------------------------------------------------------------------------------


def passwd_line(account: AccountLike, uid: int) -> str:
    """``name:x:uid:gid:comment:home:shell``; the gid is the account's own group's."""
    a = account
    return f"{a.username}:x:{uid}:{uid}:{a.comment}:{a.home}:{a.shell}\n"


def group_line(account: AccountLike, uid: int) -> str:
    """``name:x:gid:`` (no members: tenants are never in each other's groups)."""
    return f"{account.username}:x:{uid}:\n"


def shadow_line(account: AccountLike) -> str:
    """``name:!:::::::``: no password (``!``, as ``useradd`` leaves it) and no ageing, so
    the line is the same every day (``useradd`` writes the day it ran)."""
    return f"{account.username}:!:::::::\n"


# -- the rules, per account --------------------------------------------------------------------


def compare_account(account: AccountLike, ops: ConfigurationOperations, node: NodeView) -> None:
    """Refuse the account (``TenantConflict`` naming it) or let ``AccountFiles`` render it;
    plan its move out of ``/etc/passwd`` when ccm made it there with ``useradd``."""
    accounts, name = node.accounts, account.username
    uid = node.uid_base + account.id
    what = f"account {name!r} ({', '.join(account.origin) or 'no object'})"

    def refuse(reason: str) -> TenantConflict:
        return TenantConflict(ops.configuration, f"{what}: {reason}")

    if reserved_name(name):
        raise refuse("the name is reserved for a system account or group")
    problem = uid_problem(uid)
    if problem:
        raise refuse(f"it cannot be made here: {problem}")
    for field, value in (
        ("username", name),
        ("home", account.home),
        ("shell", account.shell),
        ("comment", account.comment),
    ):
        if _UNSAFE.search(value):
            raise refuse(f"its {field} {value!r} cannot be a passwd field (':' or a control)")
    existing = accounts.etc_users.get(name)
    moved = False
    if existing is not None:
        if node.manifest.owner_of_account(name) != ops.configuration:
            raise refuse(
                "an account of that name is in /etc/passwd and was not made by ccm; refusing "
                "to take it over (it would shadow the extrausers one)"
            )
        if existing.uid != uid or existing.gid != uid:
            raise refuse(
                f"ccm made it with useradd with uid {existing.uid} and gid {existing.gid}, "
                f"not {uid}: it cannot move to extrausers keeping its ids"
            )
        moved = True
    holder = accounts.etc_uids.get(uid)
    if holder is not None and holder != name:
        raise refuse(f"its uid {uid} is held by {holder!r} in /etc/passwd")
    group_gid = accounts.etc_groups.get(name)
    if group_gid is not None and not (moved and group_gid == uid):
        raise refuse(f"a group of that name is in /etc/group (gid {group_gid})")
    group_holder = accounts.etc_gids.get(uid)
    if group_holder is not None and group_holder != name:
        raise refuse(f"its gid {uid} is held by the group {group_holder!r} in /etc/group")
    accounts.planned.add(name)
    if moved:
        ops.planned_accounts.add(name)
        ops.add(MoveAccount(name, uid))


@dataclass(frozen=True)
class MoveAccount:
    """An account ccm made with ``useradd`` that the extrausers files now serve with the
    same uid: ``userdel_moved`` takes it out of ``/etc/passwd`` (and its group out of
    ``/etc/group``) after the reloads. Its home and files stay, owned by the same uid."""

    ORDER: ClassVar[int] = 0
    DEFERRED: ClassVar[bool] = True
    username: str
    uid: int

    @property
    def claim(self) -> tuple[str, str] | None:
        return None

    @property
    def changed(self) -> str:
        return f"account:{self.username}"

    def apply(self, run: Run, configuration: str) -> None:
        run.run(configuration, run.account_argv("userdel_moved", None, self.username))

    def text(self, colour: bool) -> list[str]:
        return [
            f"~ account {self.username} moves from /etc/passwd to {DIRECTORY} "
            f"(uid {self.uid} kept)\n"
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "account",
            "operation": "MoveAccount",
            "username": self.username,
            "uid": self.uid,
        }


# -- the files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteAccountsFile(WriteFile):
    """A write of an extrausers file: the run's accounts are re-read right after it, so
    the homes and tenant files written next find their owners."""

    def apply(self, run: Run, configuration: str) -> None:
        super().apply(run, configuration)
        run.accounts.reload()


#: (file, mode, group, secret): shadow is 0640 root:shadow as Debian's /etc/shadow (read by
#: root and the shadow group's helpers, such as unix_chkpwd)
_FILES = (
    ("group", 0o644, "root", False),
    ("passwd", 0o644, "root", False),
    ("shadow", 0o640, "shadow", True),
)


@dataclass(frozen=True)
class AccountFiles:
    """The accounts' files on an ``extrausers`` node; nothing on a ``useradd`` node.

    List it after every ``Account`` of ``accounts`` and before anything they own: it
    renders the accounts that passed their checks in this comparison (their objects are
    in ``ops.compared``), keeps the lines of refused ones the files already hold, and
    plans the playbook that sets nsswitch up.
    """

    accounts: tuple[AccountLike, ...]

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        if node.accounts_backend != BACKEND:
            self._refuse_switching_back(ops, node)
            return
        kept = {name: _current_lines(node, name) for name in ("group", "passwd", "shadow")}
        lines: dict[str, list[str]] = {name: [] for name in kept}
        for account in self.accounts:
            uid = node.uid_base + account.id
            if ops.compared.issuperset(account.origin):
                lines["group"].append(group_line(account, uid))
                lines["passwd"].append(passwd_line(account, uid))
                lines["shadow"].append(shadow_line(account))
                continue
            # refused: what the files hold of it stays (unless its name is reserved now)
            held = kept["passwd"].get(account.username, "")
            if held.split(":")[2:3] == [str(uid)] and not reserved_name(account.username):
                for name, current in kept.items():
                    if account.username in current:
                        lines[name].append(current[account.username])
        for name, mode, group, secret in _FILES:
            change = File(
                f"{DIRECTORY}/{name}", "".join(lines[name]), mode, "root", group, secret=secret
            )
            before, redacted = len(ops.steps), set(ops.secret_text)
            change.compare(ops, node)
            # shadow is secret for the diff, but its lines hold no password ("!"): kept out
            # of the run's redaction, whose regex would get an alternative per account
            ops.secret_text.intersection_update(redacted)
            if len(ops.steps) > before and isinstance(ops.steps[-1], WriteFile):
                step = ops.steps[-1]
                ops.steps[-1] = WriteAccountsFile(
                    *(getattr(step, field.name) for field in fields(step))
                )
        self._plan_playbook(ops, node)

    @staticmethod
    def _plan_playbook(ops: ConfigurationOperations, node: NodeView) -> None:
        """The playbook runs when its inputs changed since its last success here (as any
        ``Playbook``), and on a full run only when nsswitch.conf lost ``extrausers``:
        a reconcile repairs that drift without paying seconds of Ansible every hour.
        A new node whose image already has what the playbook makes (the NSS module
        installed, nsswitch.conf set) skips it: its first run is seconds shorter, and a
        later change of the playbook still runs it."""
        playbook = Playbook(PLAYBOOK)
        inputs = node.fingerprint(playbook)
        ops.planned_playbooks[PLAYBOOK] = inputs
        last = node.manifest.owned(ops.configuration).playbooks.get(PLAYBOOK)
        if last is None and nss_module_installed(node) and nsswitch_ready(node):
            return
        if last != inputs or (node.full and not nsswitch_ready(node)):
            ops.playbooks.append(playbook)

    @staticmethod
    def _refuse_switching_back(ops: ConfigurationOperations, node: NodeView) -> None:
        """Back from ``extrausers`` to ``useradd`` is not automatic: planning nothing would
        remove the files, and every account with them, before ``useradd`` could make
        them again. The run fails, saying so, and changes nothing."""
        owned = node.manifest.owned(ops.configuration).files
        held = sorted(path for path in owned if path.startswith(DIRECTORY + "/"))
        if held:
            raise PlanError(
                ops.configuration,
                f"the accounts are in {', '.join(held)} (backend extrausers) but the backend "
                'is now "useradd": switching back is not automatic (README, "Accounts '
                'backends"); set [accounts] backend = "extrausers" again',
            )


#: where the module NSS loads may be: Debian's libnss-extrausers puts it in /usr/lib
#: itself, not in a multiarch folder
NSS_MODULE_PATTERNS = tuple(
    f"{folder}/libnss_extrausers.so.2" for folder in ("usr/lib", "usr/lib/*", "lib", "lib/*")
)


def nss_module_installed(node: NodeView) -> bool:
    """The root has the NSS module: without it, nsswitch.conf naming ``extrausers``
    resolves nothing from the rendered files."""
    root = Path(node.under("/"))
    return any(next(root.glob(pattern), None) is not None for pattern in NSS_MODULE_PATTERNS)


def nsswitch_ready(node: NodeView) -> bool:
    """The root's nsswitch.conf reads ``extrausers`` right after ``files`` (or ``compat``)
    for passwd, group and shadow, as the playbook leaves it."""
    try:
        with open(node.under("/etc/nsswitch.conf"), encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return False
    sources = {}
    for line in text.splitlines():
        database, colon, rest = line.partition(":")
        if colon:
            sources[database.strip()] = rest.split("#", 1)[0].split()
    return all(
        sources.get(database, [])[:2] in (["files", BACKEND], ["compat", BACKEND])
        for database in ("passwd", "group", "shadow")
    )


def _current_lines(node: NodeView, name: str) -> dict[str, str]:
    """Account name → its line in the extrausers file ``name`` as it is now."""
    try:
        with open(node.under(f"{DIRECTORY}/{name}"), encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return {}
    return {line.split(":", 1)[0]: line + "\n" for line in text.splitlines() if line}
