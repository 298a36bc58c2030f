"""The MariaDB dialect of the SQL change kind, on PyMySQL.

PyMySQL (pure Python, no C build or client library on the node) over mysqlclient: ccm
runs a few statements per run, so speed does not matter, and its escaping is the
server-aware ``Connection.escape`` (it honours ``NO_BACKSLASH_ESCAPES``).

State is read from ``information_schema.SCHEMATA`` (databases), ``mysql.global_priv``
(users and their ``authentication_string``) and ``mysql.db`` (database-level grants).

Identifiers are quoted by ``quote_identifier`` (backticks, a backtick doubled); a database
named in a GRANT is a *pattern* to MariaDB (``_`` and ``%`` are wildcards: a grant on
``shop_1`` would also give ``shopx1``), so ``grant_pattern`` escapes them first. Literals
(user names, hosts, hashes) go through the driver's escaping on the live connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql
from pymysql.converters import escape_string

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
from ccm.settings import MariadbSettings

#: ccm's own database, holding the record of what it created
STATE_DATABASE = "ccm"


def quote_identifier(name: str) -> str:
    """A MariaDB identifier in backticks, an inner backtick doubled (NUL refused: the
    server cannot store it and the statement would be cut there)."""
    if "\x00" in name or not name:
        raise ValueError(f"{name!r} cannot be a MariaDB identifier")
    return "`" + name.replace("`", "``") + "`"


def grant_pattern(database: str) -> str:
    """The database as GRANT reads it: ``\\``, ``_`` and ``%`` escaped, so the grant is on
    exactly that database, never on the others its name would match as a pattern."""
    return database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def unescape_pattern(pattern: str) -> str:
    """``mysql.db.Db`` as a database name (the inverse of ``grant_pattern``)."""
    out, escaped = [], False
    for char in pattern:
        if char == "\\" and not escaped:
            escaped = True
            continue
        out.append(char)
        escaped = False
    return "".join(out)


def _literal(value: str) -> str:
    escaped: str = escape_string(value)
    return "'" + escaped + "'"


class MariaDB:
    """One MariaDB server, as ``[mariadb]`` reaches it."""

    software = "mariadb"

    def __init__(self, settings: MariadbSettings) -> None:
        self.settings = settings

    def _connect(self) -> Any:
        s = self.settings
        # over the socket, no TLS: it protects nothing there, and PyMySQL's default
        # ("preferred") builds an SSL context with the system's CA store at every
        # connection (30 ms, and a connection is made per step: 86 s of a cold apply of
        # 1,000 databases). Over TCP PyMySQL's default stays.
        where: dict[str, Any] = (
            {"unix_socket": s.unix_socket, "ssl_disabled": True}
            if s.unix_socket
            else {"host": s.host, "port": s.port}
        )
        try:
            return pymysql.connect(
                **where,
                user=s.user,
                password=s.password,
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=s.connect_timeout,
            )
        except pymysql.MySQLError as error:
            raise SqlFailed(f"(connect to MariaDB as {s.user})", _message(error)) from None

    # -- reading -----------------------------------------------------------------------

    def read(self) -> Actual:
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                return self._read(cursor)
        except pymysql.MySQLError as error:
            raise SqlFailed("(read the server's state)", _message(error)) from None
        finally:
            connection.close()

    def _read(self, cursor: Any) -> Actual:
        actual = Actual()
        cursor.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        actual.databases = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT User, Host, JSON_VALUE(Priv, '$.authentication_string') FROM mysql.global_priv"
        )
        actual.users = {(row[0], row[1]): row[2] or "" for row in cursor.fetchall()}
        # the privilege columns differ between versions: read their names, then each
        # grant's flags as one string (a row of every column costs 5 times as much to
        # read with 1,000 grants)
        cursor.execute("SELECT * FROM mysql.db LIMIT 0")
        privileges = [
            d[0] for d in cursor.description if d[0].endswith("_priv") and d[0] != "Grant_priv"
        ]
        flags = ", ".join(quote_identifier(name) for name in privileges)
        cursor.execute(f"SELECT Db, User, Host, CONCAT({flags}) FROM mysql.db")
        select_only = "".join("Y" if name == "Select_priv" else "N" for name in privileges)
        for database, name, host, held in cursor.fetchall():
            kind = "ALL" if set(held) == {"Y"} else "SELECT" if held == select_only else OTHER
            actual.grants[(unescape_pattern(database), name, host)] = kind
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'created'",
            (STATE_DATABASE,),
        )
        if cursor.fetchone()[0]:
            cursor.execute(
                f"SELECT kind, name, detail FROM {quote_identifier(STATE_DATABASE)}.created"
            )
            actual.created = {Record(row[0], row[1], row[2]) for row in cursor.fetchall()}
        return actual

    # -- running -----------------------------------------------------------------------

    def show(self, stmt: Statement) -> str:
        return "".join(_shown_piece(piece) for piece in stmt.pieces)

    def execute(self, statements: Sequence[Statement]) -> None:
        if not statements:
            return
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                for index, stmt in enumerate(statements):
                    try:
                        self._run(connection, cursor, stmt)
                    except SqlFailed as failed:
                        failed.index = index
                        raise
        finally:
            connection.close()

    def _run(self, connection: Any, cursor: Any, stmt: Statement) -> None:
        def literal(value: str) -> str:
            quoted: str = connection.escape(value)  # quoted, as the server's mode reads it
            return quoted

        text = "".join(
            piece
            if isinstance(piece, str)
            else quote_identifier(piece.value)
            if isinstance(piece, Ident)
            else literal(piece.value)
            for piece in stmt.pieces
        )
        try:
            cursor.execute(text)  # no arguments: PyMySQL does no %-formatting of it
        except pymysql.MySQLError as error:
            raise SqlFailed(self.show(stmt), mask(_message(error), stmt.secrets)) from None

    # -- the record of what ccm created ------------------------------------------------

    def claim(self, record: Record) -> list[Statement]:
        db = Ident(STATE_DATABASE)
        return [
            statement("CREATE DATABASE IF NOT EXISTS ", db),
            statement(
                "CREATE TABLE IF NOT EXISTS ",
                db,
                ".created (kind VARCHAR(16) NOT NULL, "
                "name VARCHAR(64) NOT NULL, detail VARCHAR(400) NOT NULL, "
                "PRIMARY KEY (kind, name, detail)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            ),
            statement(
                "INSERT IGNORE INTO ",
                db,
                ".created (kind, name, detail) VALUES (",
                Lit(record.kind),
                ", ",
                Lit(record.name),
                ", ",
                Lit(record.detail),
                ")",
            ),
        ]

    def forget(self, record: Record) -> list[Statement]:
        return [forget_statement(STATE_DATABASE, record)]

    # -- intents -----------------------------------------------------------------------

    def create_database(self, name: str) -> list[Statement]:
        return [statement("CREATE DATABASE ", Ident(name), " CHARACTER SET utf8mb4")]

    def drop_database(self, name: str) -> list[Statement]:
        return [statement("DROP DATABASE ", Ident(name))]

    def rename_shown(self, name: str, new: str) -> list[str]:
        return [
            self.show(self.create_database(new)[0]),
            f"RENAME TABLE {quote_identifier(name)}.<each table> TO {quote_identifier(new)}.<it>",
            self.show(self.drop_database(name)[0]),
        ]

    def rename_database(self, name: str, new: str) -> None:
        """CREATE the new database, move every table in one RENAME TABLE (atomic), DROP
        the old, now empty one (its stored routines and events go with it)."""
        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                self._run(connection, cursor, self.create_database(new)[0])
                cursor.execute(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                    (name,),
                )
                tables = [row[0] for row in cursor.fetchall()]
                if tables:
                    moves: list[str | Ident] = ["RENAME TABLE "]
                    for index, table in enumerate(tables):
                        moves += [", "] if index else []
                        moves += [
                            Ident(name),
                            ".",
                            Ident(table),
                            " TO ",
                            Ident(new),
                            ".",
                            Ident(table),
                        ]
                    self._run(connection, cursor, statement(*moves))
                self._run(connection, cursor, self.drop_database(name)[0])
        finally:
            connection.close()

    def create_user(self, name: str, host: str, password_hash: str) -> list[Statement]:
        return [
            statement(
                "CREATE USER ",
                Lit(name),
                "@",
                Lit(host),
                " IDENTIFIED BY PASSWORD ",
                SecretLit(password_hash),
            )
        ]

    def set_password(self, name: str, host: str, password_hash: str) -> list[Statement]:
        return [
            statement(
                "ALTER USER ",
                Lit(name),
                "@",
                Lit(host),
                " IDENTIFIED BY PASSWORD ",
                SecretLit(password_hash),
            )
        ]

    def drop_user(self, name: str, host: str, databases: Sequence[str] = ()) -> list[Statement]:
        """MariaDB users own no objects: ``databases`` does not matter."""
        return [statement("DROP USER ", Lit(name), "@", Lit(host))]

    def grant(self, database: str, user: str, host: str, privilege: str) -> list[Statement]:
        what = "ALL PRIVILEGES" if privilege == "ALL" else "SELECT"
        return [
            statement(
                "GRANT ",
                what,
                " ON ",
                Ident(grant_pattern(database)),
                ".* TO ",
                Lit(user),
                "@",
                Lit(host),
            )
        ]

    def revoke(self, database: str, user: str, host: str) -> list[Statement]:
        return [
            statement(
                "REVOKE ALL PRIVILEGES ON ",
                Ident(grant_pattern(database)),
                ".* FROM ",
                Lit(user),
                "@",
                Lit(host),
            )
        ]


def _shown_piece(piece: str | Ident | Lit | SecretLit) -> str:
    if isinstance(piece, str):
        return piece
    if isinstance(piece, Ident):
        return quote_identifier(piece.value)
    if isinstance(piece, SecretLit):
        return f"'{MASK}'"
    return _literal(piece.value)


def _message(error: Exception) -> str:
    """``(1396, "Operation CREATE USER failed …")`` as ``1396: Operation …``."""
    if len(error.args) == 2:
        return f"{error.args[0]}: {error.args[1]}"
    return str(error)
