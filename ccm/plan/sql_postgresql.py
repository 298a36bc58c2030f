"""The PostgreSQL dialect of the SQL change kind, on psycopg 3.

psycopg 3 (the maintained driver; ``psycopg.sql`` composes identifiers and literals with
the server's own quoting rules) over psycopg2, which is in maintenance only. It uses the
node's libpq (Debian's ``libpq5``, installed with the server's client).

State is read from ``pg_database`` (databases and their ACLs, ``aclexplode``) and
``pg_authid`` (roles with their stored SCRAM verifier; ``pg_roles`` masks it). A grant is
compared on the database's ACL: ``ALL`` is CONNECT, CREATE and TEMPORARY; ``SELECT`` is
CONNECT. Granting also gives the ``public`` schema's privileges, in the database itself
(``Statement.database``): ``ALL`` may create tables there, ``SELECT`` may read the tables
it holds when granted (tables made later need the grant made again).
A database ccm makes has PUBLIC's default CONNECT and TEMPORARY revoked, so only the
roles granted on it can connect. ccm's record of what it created is the table
``ccm.created`` in ``[postgresql] database``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ccm.plan.sql_state import (
    MASK,
    OTHER,
    Actual,
    Ident,
    Lit,
    Record,
    SecretLit,
    SqlFailed,
    Statement,
    forget_statement,
    mask,
    statement,
)
from ccm.settings import PostgresqlSettings

STATE_SCHEMA = "ccm"
_ALL = {"CONNECT", "CREATE", "TEMPORARY"}


def _kind(privileges: set[str]) -> str:
    return "ALL" if privileges == _ALL else "SELECT" if privileges == {"CONNECT"} else OTHER


def compose(stmt: Statement, *, shown: bool = False) -> sql.Composed:
    """The statement as ``psycopg.sql`` composes it (``shown``: secrets masked)."""
    parts: list[sql.Composable] = []
    for piece in stmt.pieces:
        if isinstance(piece, str):
            parts.append(sql.SQL(piece))  # constants of ccm's code, never input
        elif isinstance(piece, Ident):
            parts.append(sql.Identifier(piece.value))
        elif isinstance(piece, SecretLit):
            parts.append(sql.Literal(MASK if shown else piece.value))
        else:
            parts.append(sql.Literal(piece.value))
    return sql.Composed(parts)


class PostgreSQL:
    """One PostgreSQL server, as ``[postgresql]`` reaches it."""

    software = "postgresql"

    def __init__(self, settings: PostgresqlSettings) -> None:
        self.settings = settings

    def _connect(self, database: str | None = None) -> psycopg.Connection[Any]:
        s = self.settings
        try:
            return psycopg.connect(
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password or None,
                dbname=database or s.database,
                connect_timeout=s.connect_timeout,
                autocommit=True,  # CREATE DATABASE runs outside a transaction
            )
        except psycopg.Error as error:
            raise SqlFailed(f"(connect to PostgreSQL as {s.user})", str(error).strip()) from None

    def read(self) -> Actual:
        try:
            with self._connect() as connection:
                return self._read(connection)
        except psycopg.Error as error:
            raise SqlFailed("(read the server's state)", str(error).strip()) from None

    def _read(self, connection: psycopg.Connection[Any]) -> Actual:
        actual = Actual()
        actual.databases = {
            row[0] for row in connection.execute("SELECT datname FROM pg_database").fetchall()
        }
        actual.users = {
            (row[0], ""): row[1]
            for row in connection.execute(
                "SELECT rolname, coalesce(rolpassword, '') FROM pg_authid"
            ).fetchall()
        }
        # one row per database and role, its privileges joined by the server: a row per
        # privilege costs 3 times as much to load (psycopg's Python loaders)
        actual.grants = {
            (database, role, ""): _kind(set(privileges.split(",")))
            for database, role, privileges in connection.execute(
                "SELECT d.datname, r.rolname, string_agg(a.privilege_type, ',') "
                "FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a "
                "JOIN pg_roles r ON r.oid = a.grantee GROUP BY d.datname, r.rolname"
            ).fetchall()
        }
        table = connection.execute("SELECT to_regclass('ccm.created')").fetchone()
        if table is not None and table[0] is not None:
            actual.created = {
                Record(row[0], row[1], row[2])
                for row in connection.execute(
                    "SELECT kind, name, detail FROM ccm.created"
                ).fetchall()
            }
        return actual

    def show(self, stmt: Statement) -> str:
        return compose(stmt, shown=True).as_string(None)

    def execute(self, statements: Sequence[Statement]) -> None:
        if not statements:
            return
        connections: dict[str | None, psycopg.Connection[Any]] = {}
        try:
            for index, stmt in enumerate(statements):
                try:
                    if stmt.database not in connections:
                        connections[stmt.database] = self._connect(stmt.database)
                    self._run(connections[stmt.database], stmt)
                except SqlFailed as failed:
                    failed.index = index
                    raise
        finally:
            for connection in connections.values():
                connection.close()

    def _run(self, connection: psycopg.Connection[Any], stmt: Statement) -> None:
        try:
            connection.execute(compose(stmt))
        except psycopg.Error as error:
            raise SqlFailed(self.show(stmt), mask(str(error).strip(), stmt.secrets)) from None

    def claim(self, record: Record) -> list[Statement]:
        schema = Ident(STATE_SCHEMA)
        return [
            statement("CREATE SCHEMA IF NOT EXISTS ", schema),
            statement("REVOKE ALL ON SCHEMA ", schema, " FROM PUBLIC"),
            statement(
                "CREATE TABLE IF NOT EXISTS ",
                schema,
                ".created (kind text NOT NULL, "
                "name text NOT NULL, detail text NOT NULL, PRIMARY KEY (kind, name, detail))",
            ),
            statement(
                "INSERT INTO ",
                schema,
                ".created (kind, name, detail) VALUES (",
                Lit(record.kind),
                ", ",
                Lit(record.name),
                ", ",
                Lit(record.detail),
                ") ON CONFLICT DO NOTHING",
            ),
        ]

    def forget(self, record: Record) -> list[Statement]:
        return [forget_statement(STATE_SCHEMA, record)]

    def create_database(self, name: str) -> list[Statement]:
        return [
            statement("CREATE DATABASE ", Ident(name)),
            # PUBLIC may CONNECT to (and make temporary tables in) a new database by default
            statement("REVOKE ALL ON DATABASE ", Ident(name), " FROM PUBLIC"),
        ]

    def drop_database(self, name: str) -> list[Statement]:
        return [statement("DROP DATABASE ", Ident(name))]

    def _rename(self, name: str, new: str) -> Statement:
        return statement("ALTER DATABASE ", Ident(name), " RENAME TO ", Ident(new))

    def rename_shown(self, name: str, new: str) -> list[str]:
        return [self.show(self._rename(name, new))]

    def rename_database(self, name: str, new: str) -> None:
        self.execute([self._rename(name, new)])

    def create_user(self, name: str, host: str, password_hash: str) -> list[Statement]:
        return [
            statement("CREATE ROLE ", Ident(name), " LOGIN PASSWORD ", SecretLit(password_hash))
        ]

    def set_password(self, name: str, host: str, password_hash: str) -> list[Statement]:
        return [statement("ALTER ROLE ", Ident(name), " PASSWORD ", SecretLit(password_hash))]

    def drop_user(self, name: str, host: str, databases: Sequence[str] = ()) -> list[Statement]:
        """``REASSIGN OWNED`` (to ccm's own role) and ``DROP OWNED`` (what privileges it
        still holds) in each database it was granted, then ``DROP ROLE``: the tables it
        made stay with the database, owned by the administrator."""
        role = Ident(name)
        inside = [
            stmt
            for database in databases
            for stmt in (
                statement("REASSIGN OWNED BY ", role, " TO CURRENT_USER", database=database),
                statement("DROP OWNED BY ", role, database=database),
            )
        ]
        return [*inside, statement("DROP ROLE ", role)]

    def grant(self, database: str, user: str, host: str, privilege: str) -> list[Statement]:
        """``ALL``: the database's privileges and the ``public`` schema's (PostgreSQL 15
        gives PUBLIC no CREATE there); ``SELECT``: CONNECT, USAGE of ``public`` and
        SELECT on the tables it holds now."""
        db, role = Ident(database), Ident(user)
        if privilege == "ALL":
            return [
                statement("GRANT ALL PRIVILEGES ON DATABASE ", db, " TO ", role),
                statement("GRANT ALL ON SCHEMA public TO ", role, database=database),
            ]
        return [
            statement("GRANT CONNECT ON DATABASE ", db, " TO ", role),
            statement("GRANT USAGE ON SCHEMA public TO ", role, database=database),
            statement("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ", role, database=database),
        ]

    def revoke(self, database: str, user: str, host: str) -> list[Statement]:
        db, role = Ident(database), Ident(user)
        return [
            statement("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ", role, database=database),
            statement("REVOKE ALL ON SCHEMA public FROM ", role, database=database),
            statement("REVOKE ALL PRIVILEGES ON DATABASE ", db, " FROM ", role),
        ]
