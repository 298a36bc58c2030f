"""The SQL change kind: state held in a database server, not in files.

A configuration declares the full intended state of a server as changes: ``SqlDatabase``,
``SqlUser`` and ``SqlGrant`` for each object, then one ``SqlCleanup`` last. Comparing
them reads the server's actual state once per comparison (its dialect:
``ccm.plan.sql_mariadb``, ``ccm.plan.sql_postgresql``), and plans ``SqlStep``s: typed
statements that ``ccm diff`` shows (password hashes as ``'[secret]'``) and the executor
applies, each recording its undo in the run's journal (a dropped database has none).

What ccm did not create is never touched. ccm keeps the record of what it created in a
table of its own on that server (``ccm.created``), not in the node's manifest: the
record then goes wherever the data goes (replication, a promoted replica, a restored
dump, another node made primary), and it is written in the same place as what it
describes. The record is claimed *before* the statement that creates (a crash in between
leaves a claim the next run completes), and forgotten *after* the statement that
removes. A database, user or grant that exists on the server without a record refuses
the objects that want it (``TenantConflict``: a hand-made database of that name is
left alone, and so is the tenant object, on this node); a record whose object is no
longer declared is removed: grants revoked, then users dropped, then databases renamed to
``<name>_deleted_<revision>`` (``[databases] drop = "rename"``, the default) or dropped.

A statement the server refuses fails the run (``RunError``) with the statement as shown
and the server's error; the journal undoes what the run did before it.

A configuration that plans no ``SqlCleanup`` for a server (a node that is not its
primary) changes nothing there: removals are planned only from a declared full state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ccm.errors import PlanError, RunError, TenantConflict
from ccm.plan.sql_mariadb import MariaDB
from ccm.plan.sql_postgresql import PostgreSQL
from ccm.plan.sql_state import OTHER, Actual, Dialect, Record, SqlFailed, Statement
from ccm.plan.steps import ConfigurationOperations, NodeView, Run
from ccm.settings import Settings

Software = Literal["mariadb", "postgresql"]


def dialect_for(software: str, settings: Settings) -> Dialect:
    if software == "mariadb":
        return MariaDB(settings.mariadb)
    if software == "postgresql":
        return PostgreSQL(settings.postgresql)
    raise ValueError(f"no SQL dialect for {software!r}")


@dataclass
class ServerView:
    """One server in one comparison: its dialect, its state as read, and what the
    changes compared so far declare (``SqlCleanup`` removes the rest of the record)."""

    dialect: Dialect
    actual: Actual
    declared: set[Record] = field(default_factory=set)


def server_view(ops: ConfigurationOperations, node: NodeView, software: str) -> ServerView:
    key = f"sql:{software}"
    view = node.cache.get(key)
    if isinstance(view, ServerView):
        return view
    if node.settings is None:
        raise PlanError(ops.configuration, f"{software}: SQL changes need the node's settings")
    dialect = dialect_for(software, node.settings)
    try:
        actual = dialect.read()
    except SqlFailed as failed:
        raise PlanError(
            ops.configuration, f"cannot read the {software} server's state: {failed}"
        ) from None
    view = node.cache[key] = ServerView(dialect, actual)
    return view


# -- intents -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlDatabase:
    """A database on ``server``."""

    server: Software
    name: str
    origin: tuple[str, ...] = ()

    @property
    def record(self) -> Record:
        return Record("database", self.name)

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        view = server_view(ops, node, self.server)
        view.declared.add(self.record)
        exists = self.name in view.actual.databases
        ours = self.record in view.actual.created
        if exists and ours:
            return
        if exists:
            raise TenantConflict(
                ops.configuration,
                f"database {self.name!r} exists on {self.server} but was not created by ccm; "
                "refusing to take it over",
            )
        dialect = view.dialect
        ops.add(
            SqlStep(
                dialect,
                "+",
                f"database {self.name}",
                statements=tuple(dialect.create_database(self.name)),
                undo=tuple(dialect.drop_database(self.name)),
                claim_record=None if ours else self.record,
            )
        )

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        server_view(ops, node, self.server).declared.add(self.record)


@dataclass(frozen=True)
class SqlUser:
    """A user (MariaDB ``'name'@'host'``) or login role (PostgreSQL, ``host`` empty) with
    this stored password hash: the server is given the hash, never a password."""

    server: Software
    name: str
    host: str
    password_hash: str = field(repr=False)
    origin: tuple[str, ...] = ()

    @property
    def record(self) -> Record:
        return Record("user", self.name, self.host)

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        view = server_view(ops, node, self.server)
        view.declared.add(self.record)
        ops.secret_text.add(self.password_hash)
        current = view.actual.users.get((self.name, self.host))
        ours = self.record in view.actual.created
        if current is not None and not ours:
            raise TenantConflict(
                ops.configuration,
                f"user {self.label} exists on {self.server} but was not created by ccm; "
                "refusing to take it over",
            )
        dialect = view.dialect
        if current is None:
            ops.add(
                SqlStep(
                    dialect,
                    "+",
                    f"user {self.label}",
                    statements=tuple(dialect.create_user(self.name, self.host, self.password_hash)),
                    undo=tuple(dialect.drop_user(self.name, self.host)),
                    claim_record=None if ours else self.record,
                )
            )
        elif current != self.password_hash:
            ops.secret_text.add(current)
            ops.add(
                SqlStep(
                    dialect,
                    "~",
                    f"user {self.label} (password hash)",
                    statements=tuple(
                        dialect.set_password(self.name, self.host, self.password_hash)
                    ),
                    undo=tuple(dialect.set_password(self.name, self.host, current)),
                )
            )

    @property
    def label(self) -> str:
        return account(self.name, self.host)

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        server_view(ops, node, self.server).declared.add(self.record)


@dataclass(frozen=True)
class SqlGrant:
    """``privilege`` (``ALL`` or ``SELECT``) on ``database`` for a user ccm declares."""

    server: Software
    database: str
    user: str
    host: str
    privilege: Literal["ALL", "SELECT"]
    origin: tuple[str, ...] = ()

    @property
    def record(self) -> Record:
        return Record("grant", self.database, f"{self.user}@{self.host}")

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        view = server_view(ops, node, self.server)
        view.declared.add(self.record)
        current = view.actual.grants.get((self.database, self.user, self.host))
        ours = self.record in view.actual.created
        if current is not None and not ours:
            raise TenantConflict(
                ops.configuration,
                f"{self.server} already has a grant on {self.database!r} for "
                f"{account(self.user, self.host)} that ccm did not make; refusing to take it over",
            )
        if current == self.privilege:
            return
        dialect = view.dialect
        revoke = dialect.revoke(self.database, self.user, self.host)
        before = [] if current is None else revoke
        restore = (
            []
            if current in (None, OTHER)
            else dialect.grant(self.database, self.user, self.host, str(current))
        )
        ops.add(
            SqlStep(
                dialect,
                "+" if current is None else "~",
                f"grant {self.privilege} on {self.database} to {account(self.user, self.host)}",
                statements=(
                    *before,
                    *dialect.grant(self.database, self.user, self.host, self.privilege),
                ),
                undo=(*revoke, *restore),
                claim_record=None if ours else self.record,
            )
        )

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        server_view(ops, node, self.server).declared.add(self.record)


@dataclass(frozen=True)
class SqlCleanup:
    """The end of a server's declared state: what ccm created there and no longer
    declares is removed. Planned last, after every other SQL change of the server.
    ``revision`` names a renamed database (``<name>_deleted_<revision>``)."""

    server: Software
    revision: int
    origin: tuple[str, ...] = ()

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        view = server_view(ops, node, self.server)
        actual, dialect = view.actual, view.dialect
        leaving = sorted(view.actual.created - view.declared)
        order = {"grant": 0, "user": 1, "database": 2}
        drop = node.settings.databases.drop if node.settings is not None else "rename"
        for record in sorted(leaving, key=lambda r: (order[r.kind], r)):
            if record.kind == "grant":
                user, _, host = record.detail.rpartition("@")
                to = account(user, host)
                if (record.name, user, host) not in actual.grants:
                    ops.add(
                        SqlStep(
                            dialect,
                            "-",
                            f"grant on {record.name} to {to} (gone from the server)",
                            forget=record,
                        )
                    )
                    continue
                current = actual.grants[(record.name, user, host)]
                restore = (
                    [] if current == OTHER else dialect.grant(record.name, user, host, current)
                )
                ops.add(
                    SqlStep(
                        dialect,
                        "-",
                        f"grant on {record.name} to {to}",
                        statements=tuple(dialect.revoke(record.name, user, host)),
                        undo=tuple(restore),
                        forget=record,
                    )
                )
            elif record.kind == "user":
                current_hash = actual.users.get((record.name, record.detail))
                label = account(record.name, record.detail)
                if current_hash is None:
                    ops.add(
                        SqlStep(dialect, "-", f"user {label} (gone from the server)", forget=record)
                    )
                    continue
                ops.secret_text.add(current_hash)
                ops.add(
                    SqlStep(
                        dialect,
                        "-",
                        f"user {label}",
                        statements=tuple(
                            dialect.drop_user(record.name, record.detail, granted(actual, record))
                        ),
                        undo=tuple(dialect.create_user(record.name, record.detail, current_hash)),
                        forget=record,
                    )
                )
            elif record.name not in actual.databases:
                ops.add(
                    SqlStep(
                        dialect,
                        "-",
                        f"database {record.name} (gone from the server)",
                        forget=record,
                    )
                )
            elif drop == "drop":
                ops.add(
                    SqlStep(
                        dialect,
                        "-",
                        f"database {record.name} (dropped: its data is lost)",
                        statements=tuple(dialect.drop_database(record.name)),
                        forget=record,
                    )
                )
            else:
                new = deleted_name(record.name, self.revision)
                ops.add(
                    SqlStep(
                        dialect,
                        "-",
                        f"database {record.name} (renamed to {new})",
                        rename=(record.name, new),
                        forget=record,
                    )
                )


def granted(actual: Actual, user: Record) -> list[str]:
    """The existing databases on which ccm gave ``user`` a grant (where it may own what
    it made)."""
    detail = f"{user.name}@{user.detail}"
    return sorted(
        record.name
        for record in actual.created
        if record.kind == "grant" and record.detail == detail and record.name in actual.databases
    )


def account(user: str, host: str) -> str:
    """``user@host`` (MariaDB), or ``user`` (PostgreSQL: no host)."""
    return f"{user}@{host}" if host else user


def deleted_name(name: str, revision: int) -> str:
    """``<name>_deleted_<revision>``, the name cut so the whole fits 63 characters."""
    suffix = f"_deleted_{revision}"
    return name[: 63 - len(suffix)] + suffix


# -- the step --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlStep:
    """Statements run on one server, with the record kept of what ccm created.

    ``claim``: recorded as ccm's before the statements run (taken back if they fail);
    ``forget``: removed from the record after they ran. ``undo``: the statements that put
    the server back, run by the journal when the run fails later (none: not undoable).
    ``rename``: a database moved (``(name, new)``) instead of ``statements``.

    The undo is recorded once the statements ran, not before: a step the server refuses
    halfway is not undone (its first statements stay, and the run halts saying which
    failed), because undoing a CREATE that failed would drop what the server already
    had under that name.
    """

    ORDER: ClassVar[int] = 0  # with the accounts: before the files, listed as changed
    DEFERRED: ClassVar[bool] = False
    dialect: Dialect
    sign: str
    subject: str
    statements: tuple[Statement, ...] = ()
    undo: tuple[Statement, ...] = ()
    claim_record: Record | None = None
    forget: Record | None = None
    rename: tuple[str, str] | None = None

    @property
    def claim(self) -> tuple[str, str] | None:
        return None  # no file or account: the record is the server's own table

    @property
    def changed(self) -> str:
        return f"sql:{self.dialect.software}:{self.subject}"

    def shown(self) -> list[str]:
        if self.rename is not None:
            return self.dialect.rename_shown(*self.rename)
        return [self.dialect.show(stmt) for stmt in self.statements]

    def apply(self, run: Run, configuration: str) -> None:
        """Claim, statements and forget on one connection (a connection costs more than
        a statement); a claim is taken back when what it claimed was not made."""
        dialect = self.dialect
        claim = dialect.claim(self.claim_record) if self.claim_record is not None else []
        forget = dialect.forget(self.forget) if self.forget is not None else []
        try:
            if self.rename is not None:
                dialect.execute(claim)
                dialect.rename_database(*self.rename)
                dialect.execute(forget)
            else:
                try:
                    dialect.execute([*claim, *self.statements, *forget])
                except SqlFailed as failed:
                    if self.claim_record is not None and failed.index >= len(claim):
                        dialect.execute(dialect.forget(self.claim_record))
                    raise
        except SqlFailed as failed:
            raise RunError(
                configuration,
                f"{dialect.software}: {self.subject}: the statement {failed.shown} failed: "
                f"{failed.error}",
            ) from None
        run.journal.record(f"sql {dialect.software} {self.subject}", self._undo())

    def _undo(self) -> Callable[[], None]:
        dialect = self.dialect
        rename, undo = self.rename, self.undo
        claimed, forgotten = self.claim_record, self.forget

        def put_back() -> None:
            if rename is not None:
                dialect.rename_database(rename[1], rename[0])
            elif not undo and self.statements:
                raise RunError("(undo)", f"{dialect.software}: {self.subject} cannot be undone")
            dialect.execute(undo)
            if forgotten is not None:
                dialect.execute(dialect.claim(forgotten))
            if claimed is not None:
                dialect.execute(dialect.forget(claimed))

        return put_back

    def text(self, colour: bool) -> list[str]:
        head = f"{self.sign} sql {self.dialect.software} {self.subject}\n"
        return [head, *(f"    {line};\n" for line in self.shown())]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "sql",
            "server": self.dialect.software,
            "operation": {"+": "create", "~": "change", "-": "remove"}[self.sign],
            "subject": self.subject,
            "statements": self.shown(),
        }
