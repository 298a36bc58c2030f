"""``databases``, ``database-users`` and ``database-user-grants`` against a real MariaDB
10.11 and a real PostgreSQL 15 (``tests/sql_servers.py``: started once per session on
free loopback ports, with their real authentication).

Objects go through the real object store (etcd); the node's run is the engine's. What a
test asserts is what the server does: a user logs in with the password whose hash was
stored, a grant lets it use the database and nothing else, a deleted database keeps its
data under ``<name>_deleted_<revision>``, a hand-made database is never touched, and a
statement the server refuses halts the run with that statement and the server's error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from sql_servers import PG_PASSWORD, MariaDB, PostgreSQL, mariadb_server, postgresql_server

from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import RunError, ValidationFailed
from ccm.plan.diff import describe_json, describe_text
from ccm.plan.sql_mariadb import MariaDB as MariaDBDialect
from ccm.plan.sql_mariadb import grant_pattern, quote_identifier
from ccm.plan.sql_postgresql import PostgreSQL as PostgreSQLDialect
from ccm.plan.sql_state import Ident, statement
from ccm.settings import EtcdSettings, Settings
from ccm.testing.node import CcmNode
from ccm.testing.noderoot import node_settings, seed_root
from configurations.databases import MariadbDatabases, PostgresqlDatabases

SOFTWARE = ("mariadb", "postgresql")


# -- the servers: once per session, emptied before each test ---------------------------------


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    with mariadb_server(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    with postgresql_server() as server:
        yield server


MARIADB_SYSTEM = ("mysql", "information_schema", "performance_schema", "sys")


def empty_mariadb(server: MariaDB) -> None:
    for (name,) in server.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"):
        if name not in MARIADB_SYSTEM:
            server.query(f"DROP DATABASE {quote_identifier(str(name))}")
    for user, host in server.query("SELECT User, Host FROM mysql.global_priv"):
        if user not in ("root", "mariadb.sys"):
            server.query("DROP USER %s@%s", user, host)


def empty_postgresql(server: PostgreSQL) -> None:
    server.execute("DROP SCHEMA IF EXISTS ccm CASCADE")
    for (name,) in server.query(
        "SELECT datname FROM pg_database "
        "WHERE datname NOT IN ('postgres', 'template0', 'template1')"
    ):
        server.execute(psycopg.sql.SQL("DROP DATABASE {}").format(psycopg.sql.Identifier(name)))  # type: ignore[arg-type]
    for (name,) in server.query("SELECT rolname FROM pg_roles WHERE oid >= 16384"):
        server.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(name)))  # type: ignore[arg-type]


@pytest.fixture
def servers(mariadb: MariaDB, postgresql: PostgreSQL) -> tuple[MariaDB, PostgreSQL]:
    empty_mariadb(mariadb)
    empty_postgresql(postgresql)
    return mariadb, postgresql


def settings_for(root: Path, servers: tuple[MariaDB, PostgreSQL], **overrides: Any) -> Settings:
    mariadb, postgresql = servers
    return node_settings(
        root,
        logged_checks=(),
        passing_probes=(),
        mariadb={"unix_socket": mariadb.socket},
        postgresql={"host": "127.0.0.1", "port": postgresql.port, "password": PG_PASSWORD},
        **overrides,
    )


class Node:
    """A node running the two database configurations against the test servers."""

    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.engine = Engine(Registry([MariadbDatabases, PostgresqlDatabases]), settings)

    def apply(self) -> Any:
        return self.engine.apply(self.store.snapshot())

    def diff(self) -> tuple[str, dict[str, Any]]:
        planned = self.engine.plan(self.store.snapshot())
        return (
            describe_text(planned.operations, refused=planned.refused),
            describe_json(planned.operations, planned.revision, refused=planned.refused),
        )


THIS_NODE = {"id": 100, "hostname": "test", "groups": list(SOFTWARE), "primary_for": list(SOFTWARE)}


@pytest.fixture
def node(store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], tmp_path: Path) -> Node:
    """The node ``test``, registered as the primary of both servers."""
    store.put("nodes", [THIS_NODE])
    return Node(store, settings_for(seed_root(tmp_path / "root"), servers))


# -- hashes as a Cluster API would store them ------------------------------------------------


def mariadb_hash(password: str) -> str:
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def scram_hash(password: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def password_hash(software: str, password: str) -> str:
    return mariadb_hash(password) if software == "mariadb" else scram_hash(password)


def put_tenant(store: ObjectStore, software: str, *, uid: int = 1, base: int = 1,
               name: str = "shop", password: str = "first-password-1",
               privilege: str = "ALL") -> None:  # fmt: skip
    """unix-users/<uid>, databases/<base>, database-users/<base>, grants/<base>."""
    store.put("unix-users", [{"id": uid, "username": f"tenant{uid}"}])
    store.put("databases", [{"id": base, "name": name, "unix_user_id": uid,
                             "server_software": software}])  # fmt: skip
    store.put("database-users", [{"id": base, "name": f"{name}_user", "unix_user_id": uid,
                                  "server_software": software,
                                  "password_hash": password_hash(software, password)}])  # fmt: skip
    store.put("database-user-grants", [{"id": base, "database_id": base, "database_user_id": base,
                                        "privilege": privilege}])  # fmt: skip


def can_log_in(servers: tuple[MariaDB, PostgreSQL], software: str, user: str, password: str,
               database: str | None = None) -> bool:  # fmt: skip
    mariadb, postgresql = servers
    try:
        if software == "mariadb":
            mariadb.login(user, password, database)
        else:
            postgresql.login(user, password, database or "postgres")
    except (pymysql.MySQLError, psycopg.OperationalError):
        return False
    return True


def databases_of(servers: tuple[MariaDB, PostgreSQL], software: str) -> set[str]:
    mariadb, postgresql = servers
    if software == "mariadb":
        rows = mariadb.query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
    else:
        rows = postgresql.query("SELECT datname FROM pg_database")
    return {str(row[0]) for row in rows}


def make_table(servers: tuple[MariaDB, PostgreSQL], software: str, database: str,
               user: str | None = None, password: str | None = None) -> None:  # fmt: skip
    """A table with one row in ``database`` (as ``user`` when given: then it owns it)."""
    mariadb, postgresql = servers
    if software == "mariadb":
        connection = mariadb.admin()
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {quote_identifier(database)}.orders (id INT)")
            cursor.execute(f"INSERT INTO {quote_identifier(database)}.orders VALUES (42)")
        connection.close()
        return
    conninfo = (
        postgresql.conninfo(user, password or "", database) if user
        else postgresql.conninfo(dbname=database)
    )  # fmt: skip
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("CREATE TABLE orders (id int)")
        connection.execute("INSERT INTO orders VALUES (42)")
        connection.execute("SELECT 1 FROM orders").fetchall()


def rows_in(servers: tuple[MariaDB, PostgreSQL], software: str, database: str) -> list[Any]:
    mariadb, postgresql = servers
    if software == "mariadb":
        return mariadb.query(f"SELECT id FROM {quote_identifier(database)}.orders")
    with psycopg.connect(postgresql.conninfo(dbname=database)) as connection:
        return list(connection.execute("SELECT id FROM orders").fetchall())


def created_records(servers: tuple[MariaDB, PostgreSQL], software: str) -> set[Any]:
    mariadb, postgresql = servers
    server: Any = mariadb if software == "mariadb" else postgresql
    return {tuple(row) for row in server.query("SELECT kind, name, detail FROM ccm.created")}


# -- create ------------------------------------------------------------------------------


@pytest.mark.parametrize("software", SOFTWARE)
def test_create_makes_the_database_the_user_with_its_hash_and_the_grant(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str
) -> None:
    put_tenant(store, software, password="first-password-1")
    report = node.apply()

    assert "shop" in databases_of(servers, software)
    assert can_log_in(servers, software, "shop_user", "first-password-1", "shop")
    assert not can_log_in(servers, software, "shop_user", "another-password", "shop")
    changed = report.changed[f"{software}-databases"]
    assert any("database shop" in entry for entry in changed)
    # what ccm made is recorded in the server itself, and nothing else is
    host = "%" if software == "mariadb" else ""
    assert created_records(servers, software) == {
        ("database", "shop", ""),
        ("user", "shop_user", host),
        ("grant", "shop", f"shop_user@{host}"),
    }
    # nothing left to do: the server is what the objects say
    text, _ = node.diff()
    assert text == ""


def test_a_new_postgresql_database_is_closed_to_other_roles(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL]
) -> None:
    """PUBLIC's default CONNECT is revoked: another tenant's role cannot even connect."""
    put_tenant(store, "postgresql", uid=1, base=1, name="shop", password="first-password-1")
    put_tenant(store, "postgresql", uid=2, base=2, name="blog", password="second-password-2")
    node.apply()
    assert can_log_in(servers, "postgresql", "blog_user", "second-password-2", "blog")
    assert not can_log_in(servers, "postgresql", "blog_user", "second-password-2", "shop")


def test_a_mariadb_grant_is_on_exactly_its_database(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL]
) -> None:
    """``_`` is a wildcard in a GRANT's database: ``shop_1`` must not give ``shopx1``."""
    put_tenant(store, "mariadb", uid=1, base=1, name="shop_1", password="first-password-1")
    put_tenant(store, "mariadb", uid=2, base=2, name="shopx1", password="second-password-2")
    store.delete("database-user-grants", 2)
    node.apply()
    mariadb, _ = servers
    assert can_log_in(servers, "mariadb", "shop_1_user", "first-password-1", "shop_1")
    assert not can_log_in(servers, "mariadb", "shop_1_user", "first-password-1", "shopx1")
    assert mariadb.query("SELECT Db FROM mysql.db WHERE User = 'shop_1_user'") == [("shop\\_1",)]


# -- change the password hash ----------------------------------------------------------------


@pytest.mark.parametrize("software", SOFTWARE)
def test_a_changed_hash_changes_the_password_and_never_shows(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str
) -> None:
    put_tenant(store, software, password="first-password-1")
    node.apply()
    new_hash = password_hash(software, "second-password-2")
    old_hash = password_hash(software, "first-password-1")
    user = store.get("database-users", 1).model_dump()
    store.put("database-users", [{**user, "password_hash": new_hash}])

    text, data = node.diff()
    assert "user shop_user" in text and "[secret]" in text
    # not even a repr of the planned steps (a traceback's locals) holds a hash
    planned = repr([ops.steps for ops in node.engine.plan(store.snapshot()).operations])
    assert new_hash not in planned and old_hash not in planned
    for shown in (text, json.dumps(data)):
        assert new_hash not in shown and old_hash not in shown
        assert new_hash.strip("*")[:20] not in shown
    statements = [s for change in data["changes"] for s in change["statements"]]
    expected = {
        "mariadb": "ALTER USER 'shop_user'@'%' IDENTIFIED BY PASSWORD '[secret]'",
        "postgresql": "ALTER ROLE \"shop_user\" PASSWORD '[secret]'",
    }
    assert statements == [expected[software]]

    node.apply()
    assert can_log_in(servers, software, "shop_user", "second-password-2", "shop")
    assert not can_log_in(servers, software, "shop_user", "first-password-1", "shop")


# -- grant and revoke --------------------------------------------------------------------------


def privileges(servers: tuple[MariaDB, PostgreSQL], software: str, user: str) -> Any:
    mariadb, postgresql = servers
    if software == "mariadb":
        return mariadb.query(
            "SELECT Db, Select_priv, Insert_priv FROM mysql.db WHERE User = %s", user
        )
    return postgresql.query(
        "SELECT d.datname, a.privilege_type FROM pg_database d "
        "CROSS JOIN LATERAL aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE r.rolname = %s ORDER BY 2",
        user,
    )


@pytest.mark.parametrize("software", SOFTWARE)
def test_grant_changed_and_revoked(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str
) -> None:
    put_tenant(store, software, privilege="SELECT")
    node.apply()
    select_only = {
        "mariadb": [("shop", "Y", "N")],
        "postgresql": [("shop", "CONNECT")],
    }
    assert privileges(servers, software, "shop_user") == select_only[software]

    grant = store.get("database-user-grants", 1).model_dump()
    store.put("database-user-grants", [{**grant, "privilege": "ALL"}])
    node.apply()
    everything = {
        "mariadb": [("shop", "Y", "Y")],
        "postgresql": [("shop", "CONNECT"), ("shop", "CREATE"), ("shop", "TEMPORARY")],
    }
    assert privileges(servers, software, "shop_user") == everything[software]

    store.delete("database-user-grants", 1)
    node.apply()
    assert privileges(servers, software, "shop_user") == []
    assert not can_log_in(servers, software, "shop_user", "first-password-1", "shop")
    assert can_log_in(servers, software, "shop_user", "first-password-1")  # the user stays


# -- delete: rename (default) or drop ----------------------------------------------------------


@pytest.mark.parametrize("software", SOFTWARE)
def test_a_deleted_database_is_renamed_with_its_data(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str
) -> None:
    put_tenant(store, software)
    node.apply()
    make_table(servers, software, "shop")
    store.delete("database-user-grants", 1)
    store.delete("database-users", 1)
    revision = store.delete("databases", 1)

    text, _ = node.diff()
    assert f"database shop (renamed to shop_deleted_{revision})" in text
    node.apply()
    assert "shop" not in databases_of(servers, software)
    assert rows_in(servers, software, f"shop_deleted_{revision}") == [(42,)]
    assert not can_log_in(servers, software, "shop_user", "first-password-1")
    # the renamed database is no longer ccm's: a later run leaves it alone
    node.apply()
    assert f"shop_deleted_{revision}" in databases_of(servers, software)
    assert created_records(servers, software) == set()


@pytest.mark.parametrize("software", SOFTWARE)
def test_drop_really_drops(
    store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str, tmp_path: Path
) -> None:
    settings = settings_for(seed_root(tmp_path / "root"), servers, databases={"drop": "drop"})
    store.put("nodes", [THIS_NODE])
    node = Node(store, settings)
    put_tenant(store, software)
    node.apply()
    store.delete("database-user-grants", 1)
    store.delete("databases", 1)
    node.apply()
    assert not any(name.startswith("shop") for name in databases_of(servers, software))


# -- what ccm did not make is never touched -------------------------------------------------


def make_database_by_hand(servers: tuple[MariaDB, PostgreSQL], software: str, name: str) -> None:
    mariadb, postgresql = servers
    if software == "mariadb":
        mariadb.query(f"CREATE DATABASE {quote_identifier(name)}")
    else:
        postgresql.execute(f'CREATE DATABASE "{name}"')
    make_table(servers, software, name)


@pytest.mark.parametrize("software", SOFTWARE)
def test_a_hand_made_database_is_left_alone(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str
) -> None:
    make_database_by_hand(servers, software, "legacy")  # not declared at all
    make_database_by_hand(servers, software, "shop")  # declared by a tenant object
    put_tenant(store, software, uid=1, base=1, name="shop")
    put_tenant(store, software, uid=2, base=2, name="blog", password="second-password-2")

    report = node.apply()

    # the object wanting the hand-made name is refused on this node, with what needs it
    assert "databases/1" in report.refused
    assert "not created by ccm" in report.refused["databases/1"].reason
    assert "database-user-grants/1" in report.refused
    # the rest applies
    assert can_log_in(servers, software, "blog_user", "second-password-2", "blog")
    for name in ("legacy", "shop"):
        assert rows_in(servers, software, name) == [(42,)]
    # deleting everything still leaves them alone
    for base in (1, 2):
        store.delete("database-user-grants", base)
        store.delete("database-users", base)
        store.delete("databases", base)
    node.apply()
    assert {"legacy", "shop"} <= databases_of(servers, software)
    for name in ("legacy", "shop"):
        assert rows_in(servers, software, name) == [(42,)]


def test_a_hand_made_user_is_not_taken_over(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL]
) -> None:
    mariadb, _ = servers
    mariadb.query("CREATE USER 'shop_user'@'%' IDENTIFIED BY 'by-hand-password'")
    put_tenant(store, "mariadb")
    report = node.apply()
    assert "database-users/1" in report.refused
    assert can_log_in(servers, "mariadb", "shop_user", "by-hand-password")
    assert not can_log_in(servers, "mariadb", "shop_user", "first-password-1")


# -- a failing statement halts the run --------------------------------------------------------


@pytest.mark.parametrize("software", SOFTWARE)
def test_a_failing_statement_halts_with_the_statement_and_the_servers_error(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str
) -> None:
    """The name a deleted database is renamed to was taken by hand: the rename fails,
    the run names the statement and the server's error, and what the run did before it
    (a new database, a revoked grant) is undone."""
    put_tenant(store, software, password="first-password-1")
    node.apply()
    store.put("unix-users", [{"id": 2, "username": "tenant2"}])
    store.put("databases", [{"id": 2, "name": "blog", "unix_user_id": 2,
                             "server_software": software}])  # fmt: skip
    store.delete("database-user-grants", 1)
    revision = store.delete("databases", 1)  # the run's revision names the renamed one
    make_database_by_hand(servers, software, f"shop_deleted_{revision}")

    with pytest.raises(RunError) as failed:
        node.apply()
    message = str(failed.value)
    statement, error = {
        "mariadb": (f"CREATE DATABASE `shop_deleted_{revision}`", "1007"),
        "postgresql": (
            f'ALTER DATABASE "shop" RENAME TO "shop_deleted_{revision}"',
            f'database "shop_deleted_{revision}" already exists',
        ),
    }[software]
    assert statement in message and error in message
    assert f"{software}-databases" in message
    assert password_hash(software, "first-password-1") not in message
    assert "blog" not in databases_of(servers, software)  # undone
    assert rows_in(servers, software, f"shop_deleted_{revision}") == [(42,)]  # untouched
    # the grant revoked before the failure is back
    assert can_log_in(servers, software, "shop_user", "first-password-1", "shop")


def test_a_deleted_postgresql_role_leaves_its_tables(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL]
) -> None:
    """A role that made tables is dropped after they are handed to the administrator:
    the tenant's data stays with its database, and the run does not fail on it."""
    put_tenant(store, "postgresql", password="first-password-1")
    node.apply()
    make_table(servers, "postgresql", "shop", "shop_user", "first-password-1")
    store.delete("database-user-grants", 1)
    store.delete("database-users", 1)
    node.apply()
    assert not can_log_in(servers, "postgresql", "shop_user", "first-password-1")
    assert rows_in(servers, "postgresql", "shop") == [(42,)]


def test_a_view_blocks_a_mariadb_rename_and_the_run_halts(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL]
) -> None:
    """A view cannot move to another database: the rename's statement fails and the
    run names it and MariaDB's error."""
    put_tenant(store, "mariadb")
    node.apply()
    mariadb, _ = servers
    mariadb.query("CREATE VIEW shop.v AS SELECT 1 AS one")
    store.delete("database-user-grants", 1)
    store.delete("databases", 1)
    with pytest.raises(RunError) as failed:
        node.apply()
    message = str(failed.value)
    assert "RENAME TABLE `shop`.`v` TO `shop_deleted_" in message
    assert "1450" in message  # "Changing schema from 'shop' to '…' is not allowed"
    assert mariadb_hash("first-password-1") not in message
    assert "shop" in databases_of(servers, "mariadb")
    # the revoked grant is back
    assert can_log_in(servers, "mariadb", "shop_user", "first-password-1", "shop")


# -- placement: the primary only ------------------------------------------------------------


def registered(store: ObjectStore, software: str, *, primary: str | None) -> None:
    """``test`` (id 100) and ``db01`` (id 2) with the ``software`` group; ``primary``
    names the one that is its primary (None: neither)."""
    store.put("nodes", [
        {"id": 100, "hostname": "test", "groups": [software], "primary_for": []},
        {"id": 2, "hostname": "db01", "groups": [software], "primary_for": []},
    ])  # fmt: skip
    if primary is not None:
        this = 100 if primary == "test" else 2
        store.put("nodes", [{"id": this, "hostname": primary, "groups": [software],
                             "primary_for": [software]}])  # fmt: skip


@pytest.mark.parametrize("software", SOFTWARE)
def test_only_the_primary_runs_sql(
    store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str, tmp_path: Path
) -> None:
    node = Node(store, settings_for(seed_root(tmp_path / "root"), servers))
    put_tenant(store, software)
    node.apply()  # unregistered: nobody's primary
    assert "shop" not in databases_of(servers, software)

    registered(store, software, primary="db01")
    node.apply()
    assert "shop" not in databases_of(servers, software)
    assert not can_log_in(servers, software, "shop_user", "first-password-1")

    registered(store, software, primary="test")
    node.apply()
    assert "shop" in databases_of(servers, software)

    # the role moves away: this node plans nothing and drops nothing
    registered(store, software, primary="db01")
    store.delete("database-user-grants", 1)
    store.delete("databases", 1)
    node.apply()
    assert "shop" in databases_of(servers, software)


# -- hostile input ----------------------------------------------------------------------------

HOSTILE = ["shop'; DROP DATABASE mysql; --", "shop`x", 'shop"x', "shop;x", "Shop", "a" * 64,
           "ccm", "pg_shadow", "mysql", "shop_deleted_7", "", "shop\nx"]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_naming_the_object_and_field(
    store: ObjectStore, name: str
) -> None:
    store.put("unix-users", [{"id": 1, "username": "tenant1"}])
    for type_name, raw in (
        ("databases", {"id": 1, "name": name, "unix_user_id": 1, "server_software": "mariadb"}),
        ("database-users", {"id": 1, "name": name, "unix_user_id": 1,
                            "server_software": "mariadb", "password_hash": mariadb_hash("x")}),
    ):  # fmt: skip
        with pytest.raises(ValidationFailed) as refused:
            store.put(type_name, [raw])
        assert f"{type_name}/1" in str(refused.value)
    assert store.snapshot().of_type("databases") == {}


@pytest.mark.parametrize("host", ["%'; DROP USER root; --", "a`b", 'a"b', "a;b", "a b", ""])
def test_hostile_hosts_are_refused(store: ObjectStore, host: str) -> None:
    store.put("unix-users", [{"id": 1, "username": "tenant1"}])
    with pytest.raises(ValidationFailed) as refused:
        store.put("database-users", [{"id": 1, "name": "shop_user", "unix_user_id": 1,
                                      "server_software": "mariadb", "host": host,
                                      "password_hash": mariadb_hash("x")}])  # fmt: skip
    assert "host" in str(refused.value)


@pytest.mark.parametrize(
    ("software", "bad"),
    [
        ("mariadb", "plain-password"),
        ("mariadb", "*" + "G" * 40),
        ("mariadb", scram_hash("x")),
        ("postgresql", mariadb_hash("x")),
        ("postgresql", "md5" + "0" * 32),
        ("postgresql", scram_hash("x") + "'; DROP ROLE postgres; --"),
    ],
)
def test_only_stored_hashes_are_accepted_and_never_echoed(
    store: ObjectStore, software: str, bad: str
) -> None:
    store.put("unix-users", [{"id": 1, "username": "tenant1"}])
    with pytest.raises(ValidationFailed) as refused:
        raw = {"id": 1, "name": "shop_user", "unix_user_id": 1, "server_software": software}
        store.put("database-users", [{**raw, "password_hash": bad}])
    assert "database-users/1" in str(refused.value)
    assert bad not in str(refused.value)


def test_a_postgresql_user_has_no_host(store: ObjectStore) -> None:
    store.put("unix-users", [{"id": 1, "username": "tenant1"}])
    with pytest.raises(ValidationFailed, match="host"):
        store.put("database-users", [{"id": 1, "name": "shop_user", "unix_user_id": 1,
                                      "server_software": "postgresql", "host": "%",
                                      "password_hash": scram_hash("x")}])  # fmt: skip


def test_a_grant_never_joins_two_owners_or_two_servers(store: ObjectStore) -> None:
    store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "mallory"}])
    store.put("databases", [
        {"id": 1, "name": "alice_shop", "unix_user_id": 1, "server_software": "mariadb"},
        {"id": 2, "name": "alice_pg", "unix_user_id": 1, "server_software": "postgresql"},
    ])  # fmt: skip
    store.put("database-users", [
        {"id": 1, "name": "mallory", "unix_user_id": 2, "server_software": "mariadb",
         "password_hash": mariadb_hash("x")},
        {"id": 2, "name": "alice", "unix_user_id": 1, "server_software": "mariadb",
         "password_hash": mariadb_hash("x")},
    ])  # fmt: skip
    with pytest.raises(ValidationFailed) as refused:
        store.put("database-user-grants", [{"id": 1, "database_id": 1, "database_user_id": 1,
                                            "privilege": "ALL"}])  # fmt: skip
    message = str(refused.value)
    assert "database-user-grants/1" in message and "database-users/1" in message
    assert "databases/1" in message and "same owner" in message
    with pytest.raises(ValidationFailed) as refused:
        store.put("database-user-grants", [{"id": 1, "database_id": 2, "database_user_id": 2,
                                            "privilege": "ALL"}])  # fmt: skip
    assert "mariadb user" in str(refused.value) and "databases/2" in str(refused.value)
    assert store.snapshot().of_type("database-user-grants") == {}


@pytest.mark.parametrize("name", ["a`b", "a``b", "x'; DROP DATABASE mysql; --", 'q"uote', "s;emi"])
def test_the_identifier_helpers_quote_for_the_real_servers(
    servers: tuple[MariaDB, PostgreSQL], name: str, tmp_path: Path
) -> None:
    """The models refuse such names; the quoting below them must hold anyway: each
    dialect creates exactly the database named, and nothing else happens."""
    settings = settings_for(seed_root(tmp_path / "root"), servers)
    mariadb, postgresql = servers
    for dialect in (MariaDBDialect(settings.mariadb), PostgreSQLDialect(settings.postgresql)):
        before = databases_of(servers, dialect.software)
        dialect.execute([statement("CREATE DATABASE ", Ident(name))])
        assert databases_of(servers, dialect.software) == before | {name}
        assert {"mysql", "postgres"} & before <= databases_of(servers, dialect.software)
    assert grant_pattern("a_b%c\\") == "a\\_b\\%c\\\\"


# -- reading a server's state ---------------------------------------------------------------


@pytest.mark.parametrize("software", SOFTWARE)
def test_the_read_state_tells_all_select_and_other_grants_apart(
    node: Node, store: ObjectStore, servers: tuple[MariaDB, PostgreSQL], software: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """What ``read`` makes of a grant decides what is planned: ``ALL`` and ``SELECT`` as
    ccm gives them, anything else (changed by hand) ``OTHER``; the owner's and the
    administrator's own privileges are read too but never ccm's business."""
    put_tenant(store, software, uid=1, base=1, name="shop", privilege="ALL")
    put_tenant(store, software, uid=2, base=2, name="blog", password="second-password-2",
               privilege="SELECT")  # fmt: skip
    put_tenant(store, software, uid=3, base=3, name="wiki", password="third-password-3",
               privilege="SELECT")  # fmt: skip
    node.apply()
    mariadb, postgresql = servers
    if software == "mariadb":  # by hand: SELECT and INSERT, neither of ccm's two
        mariadb.query("GRANT INSERT ON `wiki`.* TO 'wiki_user'@'%'")
    else:
        postgresql.execute('GRANT TEMPORARY ON DATABASE "wiki" TO "wiki_user"')
    settings = settings_for(seed_root(tmp_path / "reader"), servers)
    dialect = (MariaDBDialect(settings.mariadb) if software == "mariadb"
               else PostgreSQLDialect(settings.postgresql))  # fmt: skip
    host = "%" if software == "mariadb" else ""
    grants = dialect.read().grants
    assert grants[("shop", "shop_user", host)] == "ALL"
    assert grants[("blog", "blog_user", host)] == "SELECT"
    assert grants[("wiki", "wiki_user", host)] == "OTHER"
    assert ("shop", "blog_user", host) not in grants
    # the changed grant is put back to what the object says
    text, _ = node.diff()
    assert "grant SELECT on wiki" in text and "shop" not in text and "blog" not in text


def test_a_mariadb_socket_connection_builds_no_tls_context(
    servers: tuple[MariaDB, PostgreSQL], tmp_path: Path
) -> None:
    """Over the socket TLS protects nothing, and PyMySQL's default builds an SSL context
    from the system's CA store at every connection (30 ms each: 86 s of a cold apply of
    1,000 databases, one connection per step)."""
    settings = settings_for(seed_root(tmp_path / "root"), servers)
    connection = MariaDBDialect(settings.mariadb)._connect()
    try:
        assert connection.ssl is False
        assert not hasattr(connection, "ctx")
    finally:
        connection.close()


# -- the command line --------------------------------------------------------------------


def test_the_command_line_shows_the_statements_then_applies_them(
    servers: tuple[MariaDB, PostgreSQL], etcd_settings: EtcdSettings, tmp_path: Path
) -> None:
    """``ccm diff`` (text and ``--json``) lists the statements with the hash masked, and
    ``ccm apply`` runs them: the settings' ``[mariadb]`` reaches the server."""
    settings = settings_for(seed_root(tmp_path / "root"), servers, etcd=etcd_settings.model_dump())
    cli = CcmNode(settings, tmp_path / "ccm.toml")
    cli.put("nodes", THIS_NODE)
    cli.put("unix-users", {"id": 1, "username": "tenant1"})
    cli.put("databases", {"id": 1, "name": "shop", "unix_user_id": 1,
                          "server_software": "mariadb"})  # fmt: skip
    secret_hash = mariadb_hash("first-password-1")
    user = {"id": 1, "name": "shop_user", "unix_user_id": 1, "server_software": "mariadb"}
    cli.put("database-users", {**user, "password_hash": secret_hash})
    cli.put("database-user-grants", {"id": 1, "database_id": 1, "database_user_id": 1,
                                     "privilege": "SELECT"})  # fmt: skip

    diff, as_json = cli.diff(), cli.diff("--json")
    assert diff.returncode == 2
    for statement_text in (
        "CREATE DATABASE `shop` CHARACTER SET utf8mb4",
        "CREATE USER 'shop_user'@'%' IDENTIFIED BY PASSWORD '[secret]'",
        "GRANT SELECT ON `shop`.* TO 'shop_user'@'%'",
    ):
        assert statement_text in diff.stdout
        assert statement_text in as_json.stdout
    for output in (diff.stdout, diff.stderr, as_json.stdout):
        assert secret_hash not in output

    cli.apply()
    assert can_log_in(servers, "mariadb", "shop_user", "first-password-1", "shop")
    assert cli.diff().returncode == 0
