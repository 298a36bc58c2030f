"""``databases``, ``database-users``, ``database-user-grants``: customer databases on a
real MariaDB or PostgreSQL, the state held in the server rather than in files.

Two configurations, ``mariadb-databases`` (group ``mariadb``) and
``postgresql-databases`` (group ``postgresql``), declare the full intended state of their
server with the SQL change kind (``ccm.plan.sql``): every database, user and grant of that
``server_software``, then the cleanup that removes what ccm created and no longer
declares. They plan only on the node whose ``nodes`` object is ``primary_for`` their
group; every other node plans nothing and so touches nothing (replication carries the
primary's result to them). An unregistered node runs every configuration but is nobody's
primary: SQL is the one thing it never does (a node that guessed wrong would change a
server it does not own; a one-server setup registers itself as primary).

Ownership: a database and a database user belong to a unix user (``unix_user_id``); a
grant joins a user and a database of the same owner and the same server software, so a
tenant never gets a grant on another tenant's database. Owner, name and server software
never change (``IMMUTABLE``): the grants' rule then holds both ways without re-reading.

Names: ``[a-z0-9_]{1,63}`` (a plain identifier on both servers); ccm's own ``ccm``, the
servers' system databases and roles, PostgreSQL's reserved ``pg_`` prefix, and
``_deleted_`` (the names deleted databases are renamed to) are refused. Password hashes
are the servers' own stored forms: MariaDB ``*`` + 40 hex (``mysql_native_password``),
PostgreSQL ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``: the server is
given the hash, never a password. They are secrets: no diff, log or error shows them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import ObjectId, Ref, Secret, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, SqlCleanup, SqlDatabase, SqlGrant, SqlUser
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.unix_users import UnixUser

ServerSoftware = Literal["mariadb", "postgresql"]

NAME = r"[a-z0-9_]{1,63}"
#: names a tenant may not take: ccm's own, the servers' system databases and roles
RESERVED = frozenset(
    {
        "ccm",
        "mysql",
        "information_schema",
        "performance_schema",
        "sys",
        "root",
        "mariadb_sys",
        "postgres",
        "template0",
        "template1",
        "public",
        "none",
        "current_user",
        "session_user",
        "current_role",
    }
)
MARIADB_HASH = re.compile(r"\*[0-9A-F]{40}")
_B64 = r"[A-Za-z0-9+/]+={0,2}"
POSTGRESQL_HASH = re.compile(rf"SCRAM-SHA-256\$[1-9][0-9]{{3,6}}:{_B64}\${_B64}:{_B64}")
#: a MariaDB account host: ``%``, ``localhost``, an address or name, with ``%``/``_`` wildcards
MARIADB_HOST = r"[A-Za-z0-9.%_:-]{1,255}"


def _name(value: str) -> str:
    if value in RESERVED:
        raise ValueError(f"{value!r} is reserved (the server's or ccm's own)")
    if value.startswith("pg_"):
        raise ValueError("names starting with pg_ are reserved by PostgreSQL")
    if "_deleted_" in value:
        raise ValueError("names containing _deleted_ are kept for deleted databases")
    return value


Name = Annotated[
    str,
    Field(strict=True, max_length=63),
    pattern(NAME, "1 to 63 characters of a-z, 0-9 and _"),
]


class Database(CcmObject):
    """A database of a tenant on the primary of its server software."""

    TYPE: ClassVar[str] = "databases"
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("name", "server_software", "unix_user_id")
    name: Name
    unix_user_id: Annotated[ObjectId, Ref(UnixUser.TYPE)]
    server_software: ServerSoftware

    @model_validator(mode="after")
    def _not_reserved(self) -> Database:
        _name(self.name)
        return self

    def unique_keys(self) -> dict[str, Any]:
        return {"name": f"{self.server_software}/{self.name}"}


class DatabaseUser(CcmObject):
    """A user (MariaDB ``'name'@'host'``) or login role (PostgreSQL) of a tenant."""

    TYPE: ClassVar[str] = "database-users"
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("name", "server_software", "unix_user_id", "host")
    name: Name
    unix_user_id: Annotated[ObjectId, Ref(UnixUser.TYPE)]
    server_software: ServerSoftware
    password_hash: Annotated[str, Field(strict=True, max_length=512), Secret]
    host: (
        Annotated[
            str,
            Field(strict=True, max_length=255),
            pattern(MARIADB_HOST, "%, localhost, an address or a host name (% and _ wildcards)"),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _hash_and_host_fit_the_server(self) -> DatabaseUser:
        _name(self.name)
        if self.server_software == "mariadb":
            if not MARIADB_HASH.fullmatch(self.password_hash):
                raise ValueError(
                    "password_hash: not a MariaDB hash (* followed by 40 upper-case hex digits)"
                )
        else:
            if not POSTGRESQL_HASH.fullmatch(self.password_hash):
                raise ValueError(
                    "password_hash: not a PostgreSQL SCRAM-SHA-256 verifier "
                    "(SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"
                )
            if self.host is not None:
                raise ValueError("host: only MariaDB users have a host")
        return self

    @property
    def account_host(self) -> str:
        """The MariaDB account's host (``%`` by default); empty for PostgreSQL."""
        if self.server_software == "postgresql":
            return ""
        return "%" if self.host is None else self.host

    def unique_keys(self) -> dict[str, Any]:
        return {"name": f"{self.server_software}/{self.name}"}


class DatabaseUserGrant(CcmObject):
    """``privilege`` on a database for a user of the same owner and server software."""

    TYPE: ClassVar[str] = "database-user-grants"
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("database_id", "database_user_id")
    database_id: Annotated[ObjectId, Ref(Database.TYPE)]
    database_user_id: Annotated[ObjectId, Ref(DatabaseUser.TYPE)]
    privilege: Literal["ALL", "SELECT"]

    def unique_keys(self) -> dict[str, Any]:
        return {"grant": f"{self.database_id}/{self.database_user_id}"}

    def problems(self, view: ObjectsView) -> list[str]:
        database = view.lookup(Database.TYPE, self.database_id)
        user = view.lookup(DatabaseUser.TYPE, self.database_user_id)
        if not isinstance(database, Database) or not isinstance(user, DatabaseUser):
            return []  # a dangling reference is the store's refusal
        found = []
        if database.unix_user_id != user.unix_user_id:
            found.append(
                f"{self.describe()}: database_user_id: {user.describe()} belongs to "
                f"unix-users/{user.unix_user_id}, {database.describe()} to "
                f"unix-users/{database.unix_user_id}: a grant joins a user and a database "
                "of the same owner"
            )
        if database.server_software != user.server_software:
            found.append(
                f"{self.describe()}: database_user_id: {user.describe()} is a "
                f"{user.server_software} user, {database.describe()} a "
                f"{database.server_software} database"
            )
        return found


class _Databases(Configuration):
    """The full SQL state of one server software, on its primary node."""

    software: ClassVar[ServerSoftware]
    subscribes = (Database.TYPE, DatabaseUser.TYPE, DatabaseUserGrant.TYPE)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        node = snapshot.this_node()
        if node is None or self.software not in node.primary_for:
            return []  # not this server's primary: nothing is planned, nothing touched
        software = self.software
        changes: list[Change] = []
        for database in snapshot.all(Database):
            if database.server_software == software:
                changes.append(SqlDatabase(software, database.name, (database.describe(),)))
        for user in snapshot.all(DatabaseUser):
            if user.server_software == software:
                changes.append(
                    SqlUser(
                        software,
                        user.name,
                        user.account_host,
                        user.password_hash,
                        (user.describe(),),
                    )
                )
        for grant in snapshot.all(DatabaseUserGrant):
            database = referenced(
                snapshot,
                Database,
                grant.database_id,
                referrer=grant,
                field="database_id",
                configuration=self.name,
            )
            if database.server_software != software:
                continue
            user = referenced(
                snapshot,
                DatabaseUser,
                grant.database_user_id,
                referrer=grant,
                field="database_user_id",
                configuration=self.name,
            )
            origin = (grant.describe(), database.describe(), user.describe())
            changes.append(
                SqlGrant(
                    software, database.name, user.name, user.account_host, grant.privilege, origin
                )
            )
        changes.append(SqlCleanup(software, snapshot.revision))
        return changes


class MariadbDatabases(_Databases):
    name = "mariadb-databases"
    summary = "databases, users and grants on MariaDB, on the node primary_for mariadb"
    groups = ("mariadb",)
    software = "mariadb"


class PostgresqlDatabases(_Databases):
    name = "postgresql-databases"
    summary = "databases, roles and grants on PostgreSQL, on the node primary_for postgresql"
    groups = ("postgresql",)
    software = "postgresql"
