"""What the SQL change kind shares with its dialects: statements as typed pieces, a
server's actual state, and the protocol a dialect (``ccm.plan.sql_mariadb``,
``ccm.plan.sql_postgresql``) follows.

A statement is never a formatted string. It is a tuple of pieces: constant SQL written in
ccm's code (``str``), identifiers (``Ident``: a database, a user), literals (``Lit``: a
host, a name used as a string) and secret literals (``SecretLit``: a password hash). Each
dialect turns the pieces into SQL with its driver's quoting at the moment it runs them
(PyMySQL's escaping on the live connection, ``psycopg.sql``), and shows them with every
secret replaced by ``'[secret]'``: what ``ccm diff``, logs and errors print.

The record of what ccm created (``Record``) lives in the server itself, in a table of
ccm's own (``ccm.created``): it moves with the data (a replica promoted, a dump
restored, another node made primary) where a node's manifest would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

#: the privileges a grant may give, and what a server holds that is neither
Privilege = Literal["ALL", "SELECT"]
OTHER = "OTHER"

#: what the shown text has in place of a secret literal
MASK = "[secret]"


@dataclass(frozen=True)
class Ident:
    """An identifier (database, role): quoted by the dialect's identifier quoting."""

    value: str


@dataclass(frozen=True)
class Lit:
    """A string literal: escaped by the driver."""

    value: str


@dataclass(frozen=True)
class SecretLit:
    """A string literal that is never shown (a password hash), not even in a repr."""

    value: str = field(repr=False)


Piece = str | Ident | Lit | SecretLit


@dataclass(frozen=True)
class Statement:
    pieces: tuple[Piece, ...]
    #: run while connected to this database (PostgreSQL: a schema's privileges live in
    #: the database itself); None: the administrative connection's
    database: str | None = None

    @property
    def secrets(self) -> set[str]:
        return {piece.value for piece in self.pieces if isinstance(piece, SecretLit)}


def statement(*pieces: Piece, database: str | None = None) -> Statement:
    return Statement(tuple(pieces), database)


@dataclass(frozen=True, order=True)
class Record:
    """One thing ccm created on a server: ``("database", name, "")``, ``("user", name,
    host)``, ``("grant", database, "user@host")``."""

    kind: Literal["database", "user", "grant"]
    name: str
    detail: str = ""


def forget_statement(namespace: str, record: Record) -> Statement:
    """The statement that drops ``record`` from ccm's ``<namespace>.created`` table (the
    same SQL on MariaDB, where the namespace is a database, and PostgreSQL, a schema)."""
    return statement(
        "DELETE FROM ",
        Ident(namespace),
        ".created WHERE kind = ",
        Lit(record.kind),
        " AND name = ",
        Lit(record.name),
        " AND detail = ",
        Lit(record.detail),
    )


@dataclass
class Actual:
    """A server's state as read at plan time (only what ccm compares)."""

    databases: set[str] = field(default_factory=set)
    #: (user, host) → its password hash as the server stores it
    users: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    #: (database, user, host) → ``ALL``, ``SELECT`` or ``OTHER``
    grants: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: what ccm created (its own table)
    created: set[Record] = field(default_factory=set)


class SqlFailed(Exception):
    """A statement the server refused: the statement as shown (secrets masked) and the
    server's error (secrets masked)."""

    def __init__(self, shown: str, error: str) -> None:
        super().__init__(f"{shown}: {error}")
        self.shown = shown
        self.error = error
        #: the position of the failing statement in what ``execute`` was given (-1:
        #: before any ran, a connection refused)
        self.index = -1


class Dialect(Protocol):
    """One server: reads its state, and turns intents into statements."""

    software: str

    def read(self) -> Actual: ...

    def show(self, statement: Statement) -> str: ...

    def execute(self, statements: Sequence[Statement]) -> None:
        """Run the statements in order on one connection; ``SqlFailed`` (with its
        ``index``) at the first the server refuses."""

    def claim(self, record: Record) -> list[Statement]:
        """Add ``record`` to ccm's table of what it created (the table made if missing)."""

    def forget(self, record: Record) -> list[Statement]: ...

    def create_database(self, name: str) -> list[Statement]: ...

    def drop_database(self, name: str) -> list[Statement]: ...

    def rename_database(self, name: str, new: str) -> None:
        """Move ``name`` to ``new`` now (MariaDB has no RENAME DATABASE: its tables are
        read and moved when this runs); ``SqlFailed`` when the server refuses."""

    def rename_shown(self, name: str, new: str) -> list[str]:
        """What ``rename_database`` runs, as ``ccm diff`` shows it."""

    def create_user(self, name: str, host: str, password_hash: str) -> list[Statement]: ...

    def set_password(self, name: str, host: str, password_hash: str) -> list[Statement]: ...

    def drop_user(self, name: str, host: str, databases: Sequence[str] = ()) -> list[Statement]:
        """Drop the user; ``databases``: where it may own objects (PostgreSQL hands them
        to ccm's own role first: the tenant's tables stay, and the drop cannot fail on
        them)."""

    def grant(self, database: str, user: str, host: str, privilege: str) -> list[Statement]: ...

    def revoke(self, database: str, user: str, host: str) -> list[Statement]: ...


def mask(text: str, secrets: set[str]) -> str:
    """``text`` with every secret replaced (a server error that echoes a literal)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text
