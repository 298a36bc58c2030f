"""Render benchmark: 10,000 objects, whole ``ccm`` processes, a temporary root.

Generates 2,000 users, 2,000 pools, 2,000 vhosts and 4,000 crons, plus 2,000 certificates
(one per vhost, from a test CA: the vhosts serve HTTPS), 500 redirects, and 1,000 mail
domains with 2,000 accounts and 5,000 aliases (Postfix's maps are built by the real
``postmap``), and 2,000 databases with a user and a grant each, split over a real MariaDB
and a real PostgreSQL (``tests/sql_servers.py``: started on free ports with temporary
data; the benchmark node is registered with every group and is the primary of both, so
it plans from the servers' actual state and applies the statements), in a real local
etcd, then times, as separate ``ccm apply`` processes (so import and start-up count):

* a cold apply into an empty root (account creation by the real ``useradd`` dominates),
* a no-op full run (must write nothing and reload nothing),
* a run after one cron changed (must write only that user's crontab),

and prints wall time, files written, reloads and peak RSS of each. Targets (2 cores):
no-op ≤ 1 s, one change ≤ 1 s, cold ≤ 60 s, peak RSS ≤ 150 MB. It also times the writer:
one vhost and one redirect put against all of that (their name rules read every vhost and
redirect; a vhost's write re-runs every redirect's rule).

    .venv/bin/python benchmarks/render.py [--users 2000] [--redirects 500] [--databases 2000]

The cold apply also makes every database, user and grant: about two minutes more on a
loaded 2-core machine (one connection per step; PostgreSQL's CREATE DATABASE copies its
template, 7.5 MB on disk each, for the benchmark's lifetime), so the 60 s cold target is
for the rest. ``no-op, databases`` is the database configurations' run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sql_servers import (  # noqa: E402
    PG_PASSWORD,
    MariaDB,
    PostgreSQL,
    mariadb_server,
    postgresql_server,
)

from ccm.cluster.etcd import EtcdClient  # noqa: E402
from ccm.cluster.store import ObjectStore  # noqa: E402
from ccm.settings import EtcdSettings  # noqa: E402
from ccm.testing.etcd import EtcdServer  # noqa: E402
from ccm.testing.noderoot import seed_root  # noqa: E402

BATCH = 100  # objects per put (etcd's default --max-txn-ops is 128)


#: a mail account's hash (SHA-512 crypt, with Dovecot's scheme prefix)
MAIL_HASH = "{SHA512-CRYPT}$6$benchsal$" + "h" * 86


def mail_objects(made: dict[str, list[dict[str, object]]], domains: int, aliases: int) -> None:
    """``domains`` mail domains (each its owner's vhost name), two accounts each, and
    ``aliases`` aliases that forward to an account and outside."""
    made["mail-domains"] = [
        {
            "id": i,
            "domain": f"u{i:05d}.example.com",
            "unix_user_id": i,
            "catch_all_forward_addresses": ["postmaster@example.org"] if i % 10 == 0 else [],
        }
        for i in range(1, domains + 1)
    ]
    made["mail-accounts"] = [
        {
            "id": j,
            "local_part": ("info", "office")[j % 2],
            "mail_domain_id": (j + 1) // 2,
            "password_hash": MAIL_HASH,
            "quota_mib": 1024,
        }
        for j in range(1, 2 * domains + 1)
    ]
    made["mail-aliases"] = [
        {
            "id": k,
            "local_part": f"alias{k}",
            "mail_domain_id": (k - 1) % domains + 1,
            "forward_addresses": [f"info@u{(k % domains) + 1:05d}.example.com", "ext@example.org"],
        }
        for k in range(1, aliases + 1)
    ]


SQL_SERVERS = ("postgresql", "mariadb")  # by id % 2: odd ids on MariaDB
#: the passwords of the benchmark's database users (their stored hashes: see database_objects)
DB_PASSWORD = "bench-db-password"


def database_objects(made: dict[str, list[dict[str, object]]], databases: int, users: int) -> None:
    """``databases`` databases owned by the unix users in turn, each with a user of the
    same owner and an ``ALL`` grant; odd ids on MariaDB, even ids on PostgreSQL."""
    from test_databases import password_hash

    hashes = {software: password_hash(software, DB_PASSWORD) for software in SQL_SERVERS}
    software = [SQL_SERVERS[i % 2] for i in range(databases + 1)]
    owner = [1 + (i - 1) % users for i in range(databases + 1)]
    made["databases"] = [
        {"id": i, "name": f"db{i:05d}", "unix_user_id": owner[i], "server_software": software[i]}
        for i in range(1, databases + 1)
    ]
    made["database-users"] = [
        {
            "id": i,
            "name": f"db{i:05d}_user",
            "unix_user_id": owner[i],
            "server_software": software[i],
            "password_hash": hashes[software[i]],
        }
        for i in range(1, databases + 1)
    ]
    made["database-user-grants"] = [
        {"id": i, "database_id": i, "database_user_id": i, "privilege": "ALL"}
        for i in range(1, databases + 1)
    ]


def bench_node() -> dict[str, object]:
    """The benchmark node, registered: every group a configuration declares (so every
    configuration runs, as on the unregistered node before), primary for the SQL
    servers (so the database configurations plan and apply there)."""
    from ccm.engine.registry import Registry

    groups = sorted(Registry.from_entry_points().groups)
    primary = ["mariadb", "postgresql"]
    return {"id": 1, "hostname": "bench", "groups": groups, "primary_for": primary}


def objects(users: int, redirects: int, tls: bool = True) -> dict[str, list[dict[str, object]]]:
    """``tls``: a certificate per vhost (``scale.py`` keeps the older proportions)."""
    from certs import TestCa

    ca = TestCa("ccm bench")
    made: dict[str, list[dict[str, object]]] = {
        "unix-users": [],
        "certificates": [],
        "fpm-pools": [],
        "virtual-hosts": [],
        "crons": [],
        "url-redirects": [],
    }
    for i in range(1, users + 1):
        name = f"u{i:05d}"
        made["unix-users"].append({"id": i, "username": name, "email": f"{name}@example.com"})
        made["fpm-pools"].append(
            {
                "id": i,
                "name": name,
                "unix_user_id": i,
                "php_version": "8.2",
                "max_children": 5,
                "php_settings": {"memory_limit": "256M"},
            }
        )
        made["virtual-hosts"].append(
            {
                "id": i,
                "domain": f"{name}.example.com",
                "server_aliases": [f"www.{name}.example.com"],
                "unix_user_id": i,
                "document_root": f"/home/{name}/www",
                "fpm_pool_id": i,
                **({"certificate_id": i, "force_https": i % 2 == 0} if tls else {}),
            }
        )
        if tls:
            made["certificates"].append(
                ca.issue([f"{name}.example.com", f"www.{name}.example.com"]).raw(i)
            )
        for j in range(2):
            made["crons"].append(
                {
                    "id": 2 * i - 1 + j,
                    "unix_user_id": i,
                    "name": f"job{j}",
                    "schedule": f"{j} * * * *",
                    "command": f"php /home/{name}/j{j}.php",
                }
            )
    for i in range(1, redirects + 1):
        made["url-redirects"].append(
            {
                "id": i,
                "domain": f"r{i:05d}.example.org",
                "server_aliases": [f"www.r{i:05d}.example.org"],
                "unix_user_id": 1 + (i - 1) % users,
                "destination_url": f"https://u{1 + (i - 1) % users:05d}.example.com/",
            }
        )
    return made


def timed_put(store: ObjectStore, type_name: str, raw: dict[str, object]) -> None:
    started = time.perf_counter()
    store.put(type_name, [raw])
    print(f"write: one {type_name:<16} {time.perf_counter() - started:6.2f} s")


def write_config(path: Path, root: Path, endpoint: str, extra: str = "") -> None:
    """``extra``: more TOML tables at the end (the SQL servers' settings)."""
    log = root.parent / "actions.log"
    record = ["sh", "-c", f'echo "$1" >> "{log}"', "sh"]
    path.write_text(
        f'node = "bench"\nroot = "{root}"\nlog_format = "json"\n'
        f'[etcd]\nendpoints = ["{endpoint}"]\nprefix = "/bench"\n'
        f"[commands]\n"
        f"reload_unit = {json.dumps(record + ['reload {unit}'])}\n"
        f"restart_unit = {json.dumps(record + ['restart {unit}'])}\n"
        f"nginx_check = {json.dumps(record + ['check nginx'])}\n"
        f"php_fpm_check = {json.dumps(record + ['check php{version}'])}\n"
        f"[checks]\npostfix_check = {json.dumps(record + ['check postfix'])}\n"
        # the rendered snippet names /etc/proftpd/ccm.passwd, which only a real node has
        f"proftpd_check = {json.dumps(record + ['check proftpd'])}\n"
        f'[probes]\nnginx_probe = ["true"]\nphp_fpm_probe = ["true"]\n'
        f"{extra}"
    )


def sql_config(mariadb: MariaDB, postgresql: PostgreSQL) -> str:
    """``[mariadb]`` (root over the socket) and ``[postgresql]`` (the superuser over TCP)."""
    return (
        f"[mariadb]\nunix_socket = {json.dumps(mariadb.socket)}\n"
        f'[postgresql]\nhost = "127.0.0.1"\nport = {postgresql.port}\n'
        f"password = {json.dumps(PG_PASSWORD)}\n"
    )


def sql_made(mariadb: MariaDB, postgresql: PostgreSQL) -> str:
    """What the cold apply made on the servers (read from them, not from ccm)."""
    maria = mariadb.query(
        "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'db%'),"
        " (SELECT COUNT(*) FROM mysql.global_priv WHERE User LIKE 'db%'),"
        " (SELECT COUNT(*) FROM mysql.db WHERE User LIKE 'db%')"
    )[0]
    postgres = postgresql.query(
        "SELECT (SELECT COUNT(*) FROM pg_database WHERE datname LIKE 'db%'),"
        " (SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE 'db%')"
    )[0]
    return (
        f"on the servers: MariaDB {maria[0]} databases, {maria[1]} users, {maria[2]} grants; "
        f"PostgreSQL {postgres[0]} databases, {postgres[1]} roles"
    )


def timed_apply(config: Path, label: str, log: Path, *extra: str) -> None:
    before = log.read_text().count("\n") if log.exists() else 0
    started = time.perf_counter()
    process = subprocess.run(
        [str(Path(sys.executable).parent / "ccm"), "--config", str(config), "apply", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if process.returncode != 0:
        raise SystemExit(f"{label}: ccm apply failed:\n{process.stderr[-3000:]}")
    first = process.stdout.splitlines()[0]
    changes = first.split(": ")[-1]
    reloads = (log.read_text().count("\n") if log.exists() else 0) - before
    print(
        f"{label:<22} {elapsed:7.2f} s   {changes:<14} {reloads} check/reload(s)   "
        f"peak RSS so far {peak_kib / 1024:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--redirects", type=int, default=500)
    parser.add_argument("--mail-domains", type=int, default=1000)
    parser.add_argument("--mail-aliases", type=int, default=5000)
    parser.add_argument("--databases", type=int, default=2000)
    args = parser.parse_args()
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with (
        tempfile.TemporaryDirectory(prefix="ccm-bench-") as tmp,
        EtcdServer() as server,
        mariadb_server(Path(tmp) / "mariadb") as mariadb,
        postgresql_server() as postgresql,
    ):
        base = Path(tmp)
        root = seed_root(base / "root")
        config = base / "ccm.toml"
        write_config(config, root, server.endpoint, sql_config(mariadb, postgresql))
        settings = EtcdSettings(endpoints=(server.endpoint,), prefix="/bench")
        made = {"nodes": [bench_node()], **objects(args.users, args.redirects)}
        mail_objects(made, min(args.mail_domains, args.users), args.mail_aliases)
        database_objects(made, args.databases, args.users)
        started = time.perf_counter()
        with EtcdClient.from_settings(settings) as client:
            store = ObjectStore(client, "/bench", writer="bench")
            for type_name in made:
                items = made[type_name]
                for offset in range(0, len(items), BATCH):
                    store.put(type_name, items[offset : offset + BATCH])
        total = sum(len(v) for v in made.values())
        print(
            f"wrote {total} objects in {time.perf_counter() - started:.1f} s "
            f"({os.cpu_count()} cores)"
        )
        with EtcdClient.from_settings(settings) as client:
            store = ObjectStore(client, "/bench", writer="bench")
            timed_put(store, "virtual-hosts", made["virtual-hosts"][0])
            if made["url-redirects"]:
                timed_put(store, "url-redirects", made["url-redirects"][0])
        log = base / "actions.log"
        timed_apply(config, "cold apply", log)
        print(sql_made(mariadb, postgresql))
        # the machine's disk and neighbours make single runs noisy: three of each
        for _ in range(3):
            timed_apply(config, "no-op full run", log, "--all")
        for round_ in range(3):
            with EtcdClient.from_settings(settings) as client:
                store = ObjectStore(client, "/bench", writer="bench")
                cron = made["crons"][0] | {"schedule": f"*/{round_ + 2} * * * *"}
                store.put("crons", [cron])
            timed_apply(config, "one cron changed", log, "--type", "crons")
        for _ in range(3):
            timed_apply(config, "no-op, --type crons", log, "--type", "crons")
        in_daemon(config, settings, made)
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def in_daemon(config: Path, etcd: EtcdSettings, made: dict[str, list[dict[str, object]]]) -> None:
    """The same runs inside one long-lived process, as ``ccm daemon`` does them."""
    from test_databases import password_hash

    from ccm.cli.main import tune_garbage_collection
    from ccm.daemon.node_run import NodeRun
    from ccm.engine.registry import Registry
    from ccm.engine.run import Engine
    from ccm.log import configure_logging
    from ccm.settings import load_settings

    configure_logging("json", 40)
    tune_garbage_collection()  # as the ccm command does for the daemon
    settings = load_settings(config)
    engine = Engine(Registry.from_entry_points(), settings)
    with EtcdClient.from_settings(etcd) as client:
        store = ObjectStore(client, "/bench", writer="bench")
        node_run = NodeRun(settings, client, engine, reuse_parsed=True)  # as ccm daemon does
        for label, types, full, change in (
            ("no-op full run", (), True, False),
            ("one cron changed", ("crons",), False, True),
            ("no-op, crons", ("crons",), False, False),
            ("one alias changed", ("mail-aliases",), False, True),
            ("one db user changed", ("database-users",), False, True),
            ("no-op, databases", ("database-users",), False, False),
        ):
            times = []
            for round_ in range(3):
                if change and types == ("crons",):
                    cron = made["crons"][0] | {"schedule": f"{round_ + 10} * * * *"}
                    store.put("crons", [cron])
                elif change and types == ("database-users",) and made["database-users"]:
                    user = made["database-users"][round_ % len(made["database-users"])]
                    software = str(user["server_software"])
                    hashed = password_hash(software, f"changed-{round_}")
                    store.put("database-users", [user | {"password_hash": hashed}])
                elif change:
                    alias = made["mail-aliases"][0] | {"forward_addresses": [f"r{round_}@x.org"]}
                    store.put("mail-aliases", [alias])
                started = time.perf_counter()
                outcome = node_run.run(types, full=full)
                times.append(time.perf_counter() - started)
            changed = len(outcome.report.changed_paths)
            each = ", ".join(f"{t:.2f}" for t in times)
            print(
                f"in-daemon {label:<19} {min(times):6.2f} s (best of 3: {each})   "
                f"{changed} change(s)"
            )


if __name__ == "__main__":
    main()
