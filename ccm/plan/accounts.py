"""The account kind: ``Account`` changes, and the ``useradd``/``usermod``/``userdel`` steps.

An account's uid is ``accounts.uid_base + id``: the object id, not the name, is its
identity. An account ccm did not make, a uid someone else holds, a uid the node
reserves, or a group of the same name refuse that account's objects on this node
(``TenantConflict``), never the whole run. Deletions are deferred until after the
reloads, so the workers of a deleted pool have exited when its user goes. On a node whose
``[accounts] backend`` is ``extrausers`` an ``Account`` runs no command: its rules are
``ccm.plan.extrausers``'s, and ``AccountFiles`` renders the accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ccm.errors import TenantConflict
from ccm.models.reserved import uid_problem
from ccm.plan import extrausers
from ccm.plan.steps import ConfigurationOperations, NodeView, Run


@dataclass(frozen=True)
class Account:
    """A unix account made by ccm (``useradd``/``usermod``/``userdel`` from settings).

    Its uid is ``accounts.uid_base + id``: the object id, not the name, is the account's
    identity, so a uid is never handed to another object and files keep their owner.
    """

    username: str
    home: str
    id: int
    shell: str = "/bin/bash"
    comment: str = ""
    origin: tuple[str, ...] = ()

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        if node.accounts_backend == extrausers.BACKEND:
            extrausers.compare_account(self, ops, node)
            return
        configuration, accounts = ops.configuration, node.accounts
        existing = accounts.users.get(self.username)
        uid = node.uid_base + self.id
        if existing is None:
            problem = uid_problem(uid)
            if problem:
                raise TenantConflict(
                    configuration, f"account {self.username!r} cannot be made here: {problem}"
                )
            holder = accounts.user_name(uid)
            if holder != str(uid):  # the uid is taken by an account of another name
                raise TenantConflict(
                    configuration,
                    f"account {self.username!r} needs uid {uid}, which {holder!r} holds",
                )
            if self.username in accounts.groups:  # useradd --user-group would fail
                raise TenantConflict(
                    configuration,
                    f"account {self.username!r} cannot be made: a group of that name exists "
                    "on this node",
                )
            ops.planned_accounts.add(self.username)
            ops.add(CreateAccount(self))
            accounts.planned.add(self.username)
            return
        if node.manifest.owner_of_account(self.username) != configuration:
            raise TenantConflict(
                configuration,
                f"account {self.username!r} exists on this node but was not created by ccm; "
                "refusing to take it over",
            )
        if existing.uid != uid:
            raise TenantConflict(
                configuration,
                f"account {self.username!r} has uid {existing.uid}, not {uid} (unix-users/"
                f"{self.id}): it belongs to another object or was not made by ccm; refusing it",
            )
        ops.planned_accounts.add(self.username)
        if existing.shell != self.shell or existing.comment != self.comment:
            ops.add(ModifyAccount(self, existing.shell, existing.comment))

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        """Refused: an account ccm made earlier stays (never deleted as orphaned)."""
        if self.username in node.manifest.owned(ops.configuration).accounts:
            ops.planned_accounts.add(self.username)


class _AccountStep:
    """What the account steps share: applied first, reported as ``account:<name>``."""

    ORDER: ClassVar[int] = 0
    DEFERRED: ClassVar[bool] = False
    account: Account

    @property
    def claim(self) -> tuple[str, str] | None:
        return None

    @property
    def changed(self) -> str:
        return f"account:{self.account.username}"


@dataclass(frozen=True)
class CreateAccount(_AccountStep):
    account: Account

    @property
    def claim(self) -> tuple[str, str] | None:
        return ("account", self.account.username)

    def apply(self, run: Run, configuration: str) -> None:
        name = self.account.username
        run.run(configuration, run.account_argv("useradd", self.account, name))
        userdel = run.account_argv("userdel", None, name)
        run.journal.record(f"account {name}", lambda: run.run(configuration, userdel))

    def text(self, colour: bool) -> list[str]:
        a = self.account
        return [f"+ account {a.username} (home {a.home}, shell {a.shell})\n"]

    def as_json(self) -> dict[str, Any]:
        return {"kind": "account", "operation": "CreateAccount", "username": self.account.username}


@dataclass(frozen=True)
class ModifyAccount(_AccountStep):
    account: Account
    before_shell: str
    before_comment: str

    def apply(self, run: Run, configuration: str) -> None:
        a = self.account
        run.run(configuration, run.account_argv("usermod", a, a.username))
        previous = Account(a.username, a.home, a.id, self.before_shell, self.before_comment)
        undo = run.account_argv("usermod", previous, a.username)
        run.journal.record(f"account {a.username}", lambda: run.run(configuration, undo))

    def text(self, colour: bool) -> list[str]:
        """What changes: the shell, the comment, or both (never an unchanged field)."""
        a = self.account
        changes = []
        if a.shell != self.before_shell:
            changes.append(f"shell {self.before_shell} -> {a.shell}")
        if a.comment != self.before_comment:
            changes.append(f"comment {self.before_comment!r} -> {a.comment!r}")
        return [f"~ account {a.username} ({', '.join(changes)})\n"]

    def as_json(self) -> dict[str, Any]:
        return {"kind": "account", "operation": "ModifyAccount", "username": self.account.username}


@dataclass(frozen=True)
class DeleteAccount:
    """An account the configuration made and no longer plans; its home is kept."""

    ORDER: ClassVar[int] = 0
    DEFERRED: ClassVar[bool] = True
    username: str

    @property
    def claim(self) -> tuple[str, str] | None:
        return None

    @property
    def changed(self) -> str:
        return f"account:{self.username}"

    def apply(self, run: Run, configuration: str) -> None:
        run.run(configuration, run.account_argv("userdel", None, self.username))

    def text(self, colour: bool) -> list[str]:
        return [f"- account {self.username} (its home directory is kept)\n"]

    def as_json(self) -> dict[str, Any]:
        return {"kind": "account", "operation": "DeleteAccount", "username": self.username}


def plan_account_removals(ops: ConfigurationOperations, node: NodeView) -> None:
    """Accounts the configuration made and no longer plans are deleted (only those)."""
    owned = node.manifest.owned(ops.configuration)
    for username in sorted(owned.accounts - ops.planned_accounts):
        if username in node.accounts.users:
            ops.add(DeleteAccount(username))
