"""Databases in a real multi-daemon cluster: SQL runs on the group's primary only.

Three ``ccm daemon`` processes (:mod:`cluster_harness`) against the session's etcd, under
a key prefix of this module's own: ``db1`` and ``db2`` (groups ``mariadb`` and
``postgresql``, ``db1`` the primary of both) and ``web1`` (``nginx``). One real MariaDB
and one real PostgreSQL (:mod:`sql_servers`) stand for the replicated servers: every
node's settings reach them, so a node that ran SQL where it should not would change
them.

Who ran what is read from the servers themselves: each node connects as an
administrator of its own (``ccm_db1``, ``ccm_db2``, ``ccm_web1``), and the servers log
every statement with its user (MariaDB's general log as a table, PostgreSQL's
``log_statement = 'all'`` with the user in each line's prefix). The daemons' own record
(``last_run.changed`` of each run: ``sql:<server>:<subject>`` for a SQL change) and
ccm's table ``ccm.created`` on each server are checked against it.

The servers and the cluster are started once for the module (each test uses names of
its own, and starts with db1 the primary); the primary moves in the last test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Cluster, wait_until
from sql_servers import MariaDB, PostgreSQL, mariadb_server, postgresql_server
from test_databases import (
    can_log_in,
    created_records,
    databases_of,
    make_database_by_hand,
    make_table,
    password_hash,
    privileges,
    rows_in,
)

from ccm.cluster.nodes import LastRun
from ccm.testing.etcd import EtcdServer

NODES = ("db1", "db2", "web1")
SOFTWARE = ("mariadb", "postgresql")
#: each node's administrator's password on both servers (in the node's settings file)
ADMIN_PASSWORD = "admin-Pass-for-the-cluster-1"

Servers = tuple[MariaDB, PostgreSQL]
Entry = tuple[str, str, str]  # (software, user, statement)


def admin(node: str) -> str:
    return f"ccm_{node}"


# -- who ran what: the servers' own logs -------------------------------------------------------


def statements(servers: Servers) -> dict[str, list[Entry]]:
    """Every statement the servers received from a node's administrator, per server, in
    order (MariaDB's general log; PostgreSQL's log lines ``<user>|LOG:  statement: …``)."""
    mariadb, postgresql = servers
    found: dict[str, list[Entry]] = {
        "mariadb": [
            ("mariadb", str(user_host).split("[", 1)[0], str(argument))
            for user_host, argument in mariadb.query(
                "SELECT user_host, CONVERT(argument USING utf8mb4) FROM mysql.general_log "
                "WHERE command_type = 'Query' AND user_host LIKE 'ccm\\_%%'"
            )
        ],
        "postgresql": [],
    }
    log = Path(postgresql.socket_dir) / "postgres.log"
    for line in log.read_text(errors="replace").splitlines():
        user, _, rest = line.partition("|")
        match = re.fullmatch(r"LOG:  (?:statement|execute [^:]*): (.*)", rest)
        if user.startswith("ccm_") and match:
            found["postgresql"].append(("postgresql", user, match.group(1)))
    return found


class Statements:
    """The statements the servers receive from a mark on (:meth:`new`)."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.seen = {software: len(entries) for software, entries in statements(servers).items()}

    def new(self) -> list[Entry]:
        now = statements(self.servers)
        return [entry for software in SOFTWARE for entry in now[software][self.seen[software] :]]

    def by(self, node: str) -> list[Entry]:
        return [entry for entry in self.new() if entry[1] == admin(node)]

    def writes(self) -> list[Entry]:
        """What changed a server (every statement but the reads of its state)."""
        return [entry for entry in self.new() if not entry[2].lstrip().upper().startswith(
            ("SELECT", "SET ", "SHOW"))]  # fmt: skip

    def matching(self, text: str) -> list[tuple[str, str]]:
        """``(user, statement)`` of each new statement containing ``text``."""
        return [(user, stmt) for _, user, stmt in self.new() if text in stmt]


# -- the cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """A MariaDB and a PostgreSQL of this module's own (their logs record every
    statement), with an administrator for each node."""
    with (
        mariadb_server(tmp_path_factory.mktemp("cluster-mariadb")) as mariadb,
        postgresql_server() as postgresql,
    ):
        for node in NODES:
            mariadb.query("CREATE USER %s@'%%' IDENTIFIED BY %s", admin(node), ADMIN_PASSWORD)
            mariadb.query(f"GRANT ALL PRIVILEGES ON *.* TO `{admin(node)}`@'%' WITH GRANT OPTION")
            postgresql.execute(
                f"CREATE ROLE {admin(node)} SUPERUSER LOGIN PASSWORD '{ADMIN_PASSWORD}'"
            )
        mariadb.query("SET GLOBAL log_output = 'TABLE'")
        mariadb.query("SET GLOBAL general_log = 1")
        postgresql.execute("ALTER SYSTEM SET log_statement = 'all'")
        postgresql.execute("ALTER SYSTEM SET log_line_prefix = '%u|'")
        postgresql.execute("SELECT pg_reload_conf()")
        wait_until(  # the postmaster reloads on a signal: new sessions then log
            lambda: postgresql.query("SHOW log_statement") == [("all",)],
            10,
            "PostgreSQL to log every statement",
        )
        yield mariadb, postgresql


def sql_settings(node: str, servers: Servers) -> dict[str, Any]:
    """``[mariadb]`` and ``[postgresql]`` of ``node``: the test servers over TCP, as the
    node's own administrator."""
    mariadb, postgresql = servers
    account = {"user": admin(node), "password": ADMIN_PASSWORD}
    return {
        "mariadb": {"unix_socket": "", "host": "127.0.0.1", "port": mariadb.port, **account},
        "postgresql": {"host": "127.0.0.1", "port": postgresql.port, **account},
    }


def registered(primary: str) -> list[dict[str, Any]]:
    """The three nodes' objects, ``primary`` the primary of both servers."""
    return [
        {"id": 1, "hostname": "db1", "groups": list(SOFTWARE),
         "primary_for": list(SOFTWARE) if primary == "db1" else []},
        {"id": 2, "hostname": "db2", "groups": list(SOFTWARE),
         "primary_for": list(SOFTWARE) if primary == "db2" else []},
        {"id": 3, "hostname": "web1", "groups": ["nginx"]},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(
    etcd_server: EtcdServer, servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with Cluster(
        etcd_server,
        tmp_path_factory.mktemp("database-cluster"),
        prefix=f"/ccm-database-cluster-{os.getpid()}",
    ) as harness:  # stopped, and its logs printed, whatever happens
        harness.put_cli("nodes", *registered("db1"))
        for name in NODES:
            harness.add(name, **sql_settings(name, servers))
        for name in NODES:
            harness[name].wait_ready()
        yield harness


@pytest.fixture(autouse=True)
def db1_the_primary(cluster: Cluster) -> None:
    """Every test starts with db1 the primary and no halt (tests 1 to 3 assume it; the
    last test moves the primary: run alone or in another order, they still hold)."""
    assert cluster.halt() is None
    if getattr(cluster.store.get("nodes", 1), "primary_for", None) != list(SOFTWARE):
        counts = run_counts(cluster)
        applied(cluster, cluster.put_cli("nodes", *registered("db1")), counts)


# -- helpers -------------------------------------------------------------------------------


def tenant(cluster: Cluster, uid: int, software: str, name: str, password: str,
           privilege: str = "ALL") -> int:  # fmt: skip
    """unix-users/<uid>; databases, database-users and grants /<uid>: ``name`` and
    ``<name>_user``. The revision of the last write."""
    cluster.put("unix-users", {"id": uid, "username": f"tenant{uid}"})
    cluster.put("databases", {"id": uid, "name": name, "unix_user_id": uid,
                              "server_software": software})  # fmt: skip
    cluster.put("database-users", user(uid, software, name, password))
    grant = {"id": uid, "database_id": uid, "database_user_id": uid, "privilege": privilege}
    return cluster.put("database-user-grants", grant)


def user(uid: int, software: str, name: str, password: str) -> dict[str, Any]:
    return {"id": uid, "name": f"{name}_user", "unix_user_id": uid, "server_software": software,
            "password_hash": password_hash(software, password)}  # fmt: skip


def delete(cluster: Cluster, type_name: str, object_id: int) -> int:
    return cluster.store.delete(type_name, object_id)


def run_counts(cluster: Cluster) -> dict[str, int]:
    return {name: len(runs) for name, runs in cluster.run_history().items()}


def runs_since(cluster: Cluster, counts: dict[str, int]) -> dict[str, list[LastRun]]:
    history = cluster.run_history()
    return {name: history.get(name, [])[counts.get(name, 0) :] for name in NODES}


def sql_changed(runs: list[LastRun]) -> list[str]:
    return [entry for run in runs for entry in run.changed if entry.startswith("sql:")]


def applied(cluster: Cluster, revision: int, counts: dict[str, int]) -> dict[str, list[LastRun]]:
    """Wait until every node applied ``revision`` with no halt; each node's runs since
    ``counts``, every one a success."""
    cluster.wait_applied(revision, timeout=60)
    assert cluster.halt() is None
    runs = runs_since(cluster, counts)
    for name, node_runs in runs.items():
        assert [run.result for run in node_runs] == ["success"] * len(node_runs), (name, node_runs)
    return runs


def only_the_primary_ran_sql(runs: dict[str, list[LastRun]], log: Statements,
                             primary: str) -> list[str]:  # fmt: skip
    """The others changed nothing by SQL and never even connected; the primary's SQL
    changes (from its runs' records)."""
    for other in NODES:
        if other != primary:
            assert sql_changed(runs[other]) == [], other
            assert log.by(other) == [], other
    return sql_changed(runs[primary])


# -- 1. create, change, revoke, delete: each once, on the primary ------------------------------


@pytest.mark.slow
def test_sql_runs_once_on_the_primary_and_the_servers_follow(
    cluster: Cluster, servers: Servers
) -> None:
    make_database_by_hand(servers, "mariadb", "legacy")  # on the servers before ccm
    make_database_by_hand(servers, "postgresql", "legacy")
    counts, log = run_counts(cluster), Statements(servers)
    tenant(cluster, 1, "mariadb", "shop", "first-password-1")
    revision = tenant(cluster, 2, "postgresql", "blog", "first-password-2")
    runs = applied(cluster, revision, counts)

    changed = only_the_primary_ran_sql(runs, log, "db1")
    assert sorted(changed) == sorted([
        "sql:mariadb:database shop", "sql:mariadb:user shop_user@%",
        "sql:mariadb:grant ALL on shop to shop_user@%",
        "sql:postgresql:database blog", "sql:postgresql:user blog_user",
        "sql:postgresql:grant ALL on blog to blog_user",
    ])  # fmt: skip
    # each statement reached its server once, from db1
    for text in ("CREATE DATABASE `shop`", "CREATE USER 'shop_user'@'%'",
                 "GRANT ALL PRIVILEGES ON `shop`.* TO 'shop_user'@'%'",
                 'CREATE DATABASE "blog"', 'CREATE ROLE "blog_user" LOGIN',
                 'GRANT ALL PRIVILEGES ON DATABASE "blog" TO "blog_user"'):  # fmt: skip
        assert [user for user, _ in log.matching(text)] == ["ccm_db1"], text
    assert can_log_in(servers, "mariadb", "shop_user", "first-password-1", "shop")
    assert can_log_in(servers, "postgresql", "blog_user", "first-password-2", "blog")
    assert created_records(servers, "mariadb") == {
        ("database", "shop", ""), ("user", "shop_user", "%"), ("grant", "shop", "shop_user@%"),
    }  # fmt: skip
    assert created_records(servers, "postgresql") == {
        ("database", "blog", ""), ("user", "blog_user", ""), ("grant", "blog", "blog_user@"),
    }  # fmt: skip

    # the password hash changes: one ALTER each, from db1; the new password logs in
    counts, log = run_counts(cluster), Statements(servers)
    cluster.put("database-users", user(1, "mariadb", "shop", "second-password-1"))
    revision = cluster.put("database-users", user(2, "postgresql", "blog", "second-password-2"))
    runs = applied(cluster, revision, counts)
    assert sorted(only_the_primary_ran_sql(runs, log, "db1")) == [
        "sql:mariadb:user shop_user@% (password hash)",
        "sql:postgresql:user blog_user (password hash)",
    ]
    assert [u for _, u, stmt in log.writes()] == ["ccm_db1", "ccm_db1"]
    for software, name, number in (("mariadb", "shop", 1), ("postgresql", "blog", 2)):
        assert can_log_in(servers, software, f"{name}_user", f"second-password-{number}", name)
        assert not can_log_in(servers, software, f"{name}_user", f"first-password-{number}", name)

    # revoke: the grants go; the users stay and can no longer reach the databases
    counts, log = run_counts(cluster), Statements(servers)
    delete(cluster, "database-user-grants", 1)
    revision = delete(cluster, "database-user-grants", 2)
    runs = applied(cluster, revision, counts)
    assert sorted(only_the_primary_ran_sql(runs, log, "db1")) == [
        "sql:mariadb:grant on shop to shop_user@%",
        "sql:postgresql:grant on blog to blog_user",
    ]
    assert {u for _, u, _ in log.writes()} == {"ccm_db1"}
    assert privileges(servers, "mariadb", "shop_user") == []
    assert privileges(servers, "postgresql", "blog_user") == []
    assert not can_log_in(servers, "mariadb", "shop_user", "second-password-1", "shop")
    assert not can_log_in(servers, "postgresql", "blog_user", "second-password-2", "blog")
    assert can_log_in(servers, "mariadb", "shop_user", "second-password-1")

    # delete: the databases are renamed with their data, the users dropped; the
    # hand-made databases are never touched
    for software, name in (("mariadb", "shop"), ("postgresql", "blog")):
        make_table(servers, software, name)
    counts, log = run_counts(cluster), Statements(servers)
    for type_name in ("database-users", "databases"):
        delete(cluster, type_name, 1)
        revision = delete(cluster, type_name, 2)
    runs = applied(cluster, revision, counts)
    changed = only_the_primary_ran_sql(runs, log, "db1")
    assert {u for _, u, _ in log.writes()} == {"ccm_db1"}
    for software, name in (("mariadb", "shop"), ("postgresql", "blog")):
        names = databases_of(servers, software)
        renamed = [n for n in names if re.fullmatch(rf"{name}_deleted_\d+", n)]
        assert len(renamed) == 1 and int(renamed[0].rsplit("_", 1)[1]) >= revision, names
        assert name not in names
        assert f"sql:{software}:database {name} (renamed to {renamed[0]})" in changed
        assert rows_in(servers, software, renamed[0]) == [(42,)]
        assert rows_in(servers, software, "legacy") == [(42,)]
        assert created_records(servers, software) == set()
    assert not can_log_in(servers, "mariadb", "shop_user", "second-password-1")
    assert not can_log_in(servers, "postgresql", "blog_user", "second-password-2")
    assert not [stmt for _, _, stmt in log.new() if "legacy" in stmt]


# -- 2. what ccm did not make: refused on the primary, left alone ------------------------------


@pytest.mark.slow
def test_a_hand_made_database_is_refused_on_the_primary_and_left_alone(
    cluster: Cluster, servers: Servers
) -> None:
    make_database_by_hand(servers, "postgresql", "taken")
    counts, log = run_counts(cluster), Statements(servers)
    revision = tenant(cluster, 3, "postgresql", "taken", "first-password-3")
    runs = applied(cluster, revision, counts)
    # the objects needing the hand-made name are refused on db1 alone; the user is made
    refused = runs["db1"][-1].refused
    assert "not created by ccm" in refused["databases/3"]
    assert "database-user-grants/3" in refused
    for other in ("db2", "web1"):
        assert all(not run.refused for run in runs[other]), other
    status = {entry["node"]: entry for entry in cluster.status()["nodes"]}
    assert "databases/3" in status["db1"]["last_run"]["refused"]
    assert only_the_primary_ran_sql(runs, log, "db1") == ["sql:postgresql:user taken_user"]
    assert rows_in(servers, "postgresql", "taken") == [(42,)]
    assert not [stmt for _, _, stmt in log.writes() if '"taken"' in stmt]

    counts = run_counts(cluster)
    for type_name in ("database-user-grants", "database-users", "databases"):
        revision = delete(cluster, type_name, 3)
    applied(cluster, revision, counts)
    assert rows_in(servers, "postgresql", "taken") == [(42,)]
    assert "taken" in databases_of(servers, "postgresql")


# -- 3. a failing statement halts the rollout on the primary -----------------------------------


@pytest.mark.slow
def test_a_failing_statement_halts_on_the_primary_with_the_statement_and_the_error(
    cluster: Cluster, servers: Servers
) -> None:
    """A view cannot move to another database: renaming the deleted database fails on
    MariaDB. db1 halts naming the statement and the server's error and undoes its run;
    no other node runs SQL. Once the view is gone, ``ccm resume`` converges."""
    mariadb, _ = servers
    counts = run_counts(cluster)
    applied(cluster, tenant(cluster, 4, "mariadb", "orders", "first-password-4"), counts)
    mariadb.query("CREATE VIEW orders.v AS SELECT 1 AS one")
    records = cluster.records()
    log = Statements(servers)

    delete(cluster, "database-user-grants", 4)
    deleted = delete(cluster, "databases", 4)
    halt = wait_until(cluster.halt, 60, "the halt record", on_timeout=cluster.report)
    assert halt["node"] == "db1"
    assert halt["configuration"] == "mariadb-databases"
    assert halt["revision"] >= deleted
    assert "RENAME TABLE `orders`.`v` TO `orders_deleted_" in halt["error"]
    assert "1450" in halt["error"]  # MariaDB: changing the schema of a view is not allowed
    assert password_hash("mariadb", "first-password-4") not in halt["error"]
    assert cluster.status()["halt"] == halt
    # db1's run was undone: the database is where it was, the revoked grant is back
    assert "orders" in databases_of(servers, "mariadb")
    assert can_log_in(servers, "mariadb", "orders_user", "first-password-4", "orders")
    last = cluster.records()["db1"].last_run
    assert last is not None and last.result == "failed" and last.error == halt["error"]
    # the others: SQL from nobody but db1; a run they made (before db1's) changed no SQL
    assert {u for _, u, _ in log.new()} <= {"ccm_db1"}
    for other in ("db2", "web1"):
        record = cluster.records()[other]
        if record != records[other]:
            assert record.last_run is not None and record.last_run.result == "success"
            assert sql_changed([record.last_run]) == []

    # the view goes; resume: db1 renames the database, everyone converges
    mariadb.query("DROP VIEW orders.v")
    counts, log = run_counts(cluster), Statements(servers)
    assert cluster.ccm("resume").stdout.strip() == "resumed"
    runs = applied(cluster, deleted, counts)
    changed = only_the_primary_ran_sql(runs, log, "db1")
    assert any(c.startswith("sql:mariadb:database orders (renamed to") for c in changed)
    assert "orders" not in databases_of(servers, "mariadb")


# -- 4. the primary moves ----------------------------------------------------------------------


@pytest.mark.slow
def test_moving_primary_for_moves_the_sql_to_the_new_primary(
    cluster: Cluster, servers: Servers
) -> None:
    counts, log = run_counts(cluster), Statements(servers)
    revision = cluster.put_cli("nodes", *registered("db2"))
    runs = applied(cluster, revision, counts)
    # the move itself changes nothing: db2 finds the record db1 kept on the servers
    assert sql_changed([run for node_runs in runs.values() for run in node_runs]) == []
    assert log.writes() == []

    counts, log = run_counts(cluster), Statements(servers)
    tenant(cluster, 5, "mariadb", "moved", "first-password-5")
    revision = tenant(cluster, 6, "postgresql", "moved_pg", "first-password-6")
    runs = applied(cluster, revision, counts)
    changed = only_the_primary_ran_sql(runs, log, "db2")
    assert "sql:mariadb:database moved" in changed
    assert "sql:postgresql:database moved_pg" in changed
    assert {u for _, u, _ in log.new()} == {"ccm_db2"}
    assert [u for u, _ in log.matching("CREATE DATABASE `moved`")] == ["ccm_db2"]
    assert [u for u, _ in log.matching('CREATE DATABASE "moved_pg"')] == ["ccm_db2"]
    assert can_log_in(servers, "mariadb", "moved_user", "first-password-5", "moved")
    assert can_log_in(servers, "postgresql", "moved_pg_user", "first-password-6", "moved_pg")
    assert ("database", "moved_pg", "") in created_records(servers, "postgresql")
