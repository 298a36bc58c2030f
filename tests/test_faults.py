"""Proof under faults: real daemons, a real 3-member etcd, and the faults of a bad day.

* the etcd leader SIGKILLed mid-rollout, a member frozen (SIGSTOP) for longer than the
  lock's lease TTL: no write fails, every node converges, never two nodes at once;
* the writer (CLI and ``ObjectStore``) fails over to a healthy member while one is
  frozen;
* a daemon SIGKILLed at every step of a run (``CCM_CRASH_AT``), restarted: the same
  files as a clean node, every needed reload done, a hand-made file untouched;
* a write storm from 4 writers while daemons restart and etcd members die.

Tests assert behaviour, never wall-clock bounds: ``benchmarks/faults_soak.py`` measures
the times. The helpers here (objects, reload intervals) are shared
with that benchmark.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import (
    Cluster,
    NodeProcess,
    intervals_overlap,
    tree,
    wait_until,
)

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.nodes import LastRun
from ccm.cluster.store import ObjectStore
from ccm.errors import EtcdUnavailable, ObjectNotFound
from ccm.testing.etcd import EtcdCluster, EtcdServer, EtcdServerError

SITES = "etc/nginx/sites-enabled"
FOREIGN = f"{SITES}/handmade.conf"
FOREIGN_TEXT = "# written by hand: ccm never touches it\n"
#: account databases: useradd numbers accounts (and orders lines) in the order a node
#: created them, which is each node's own history: compared by account, not by bytes
ACCOUNT_FILES = tuple(
    f"etc/{name}{suffix}"
    for name in ("passwd", "group", "shadow", "gshadow")
    for suffix in ("", "-")
)
#: harness files in a node root that are not configuration
#: and each node's own random key that fingerprints its secret files in `ccm diff`
NOT_CONFIG = ("actions.log", "slow", "var/lib/ccm/fingerprint.key", *ACCOUNT_FILES)
#: where the files a unit loads live (for "was what is on disk reloaded?")
UNIT_DIRS = {
    "nginx": "etc/nginx",
    "php8.3-fpm": "etc/php/8.3",
    "dovecot": "etc/dovecot",
    "postfix": "etc/postfix/ccm",
}


def user(id: int, username: str) -> dict[str, Any]:
    return {"id": id, "username": username}


def pool(id: int, name: str, unix_user_id: int, children: int = 5) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "unix_user_id": unix_user_id,
        "php_version": "8.3",
        "max_children": children,
        "php_settings": {},
    }


def vhost(
    id: int, domain: str, unix_user_id: int, home: str, *aliases: str, pool_id: int | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": id,
        "domain": domain,
        "server_aliases": list(aliases),
        "unix_user_id": unix_user_id,
        "document_root": f"{home}/www",
    }
    if pool_id is not None:
        found["fpm_pool_id"] = pool_id
    return found


def add_foreign(node: NodeProcess) -> Path:
    """A hand-made file where ccm writes its own: it must stay as it is."""
    path = node.root / FOREIGN
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FOREIGN_TEXT)
    return path


def postmap_entries(database: Path) -> list[str]:
    """The key/value pairs of a Postfix map built by ``postmap`` (``postmap -s``): two
    builds of one map hold the same entries in different bytes."""
    listed = subprocess.run(
        ["postmap", "-s", f"hash:{database.with_suffix('')}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return sorted(listed.stdout.splitlines())


def config_tree(node: NodeProcess) -> dict[str, Any]:
    """The node's files byte for byte, with its accounts as (user, home, shell, groups)."""
    found: dict[str, Any] = dict(tree(node.root, skip=NOT_CONFIG))
    for relative, (kind, mode, _) in list(found.items()):
        if relative.endswith(".db"):  # postmap's Berkeley DB: its entries, not its bytes
            found[relative] = (kind, mode, postmap_entries(node.root / relative))
    etc = node.root / "etc"
    groups: dict[str, set[str]] = {}
    for line in (etc / "group").read_text().splitlines():
        name, _, _, members = line.split(":")
        for member in filter(None, members.split(",")):
            groups.setdefault(member, set()).add(name)
    group_names = sorted(line.split(":")[0] for line in (etc / "group").read_text().splitlines())
    found["(accounts)"] = sorted(
        (fields[0], fields[5], fields[6], sorted(groups.get(fields[0], ())))
        for fields in (line.split(":") for line in (etc / "passwd").read_text().splitlines())
    )
    found["(groups)"] = group_names
    return found


def reloads(node: NodeProcess) -> list[tuple[str, float, float | None]]:
    """(unit, start, end) of every reload the node ran; end None if it was killed."""
    found: list[tuple[str, float, float | None]] = []
    open_: dict[str, int] = {}
    for line in node.actions():
        parts = line.split()
        if len(parts) != 4 or parts[0] != "reload":
            continue
        _, unit, edge, epoch = parts
        if edge == "start":
            open_[unit] = len(found)
            found.append((unit, float(epoch), None))
        elif edge == "end" and unit in open_:
            index = open_.pop(unit)
            found[index] = (unit, found[index][1], float(epoch))
    return found


def reload_overlaps(nodes: Iterable[NodeProcess]) -> list[str]:
    """Pairs of completed reloads on different nodes whose intervals overlap."""
    spans = sorted(
        (start, end, node.name, unit)
        for node in nodes
        for unit, start, end in reloads(node)
        if end is not None
    )
    problems = []
    for (s1, e1, n1, u1), (s2, _e2, n2, u2) in zip(spans, spans[1:], strict=False):
        if n1 != n2 and s2 < e1:
            problems.append(f"{n1} reload {u1} {s1:.3f}..{e1:.3f} overlaps {n2} {u2} at {s2:.3f}")
    return problems


def unreloaded(node: NodeProcess, units: Iterable[str]) -> list[str]:
    """Units whose files on disk are newer than the node's last completed reload."""
    problems = []
    done = reloads(node)
    for unit in units:
        directory = node.root / UNIT_DIRS[unit]
        # postmap's .db builds follow the reload (commands run after unit actions): Postfix
        # picks a rebuilt table up by itself; its source maps are what the reload is for
        newest = max(
            (p.lstat().st_mtime for p in directory.rglob("*") if p.is_file() and p.suffix != ".db"),
            default=0.0,
        )
        starts = [start for u, start, end in done if u == unit and end is not None]
        if not starts or max(starts) < newest:
            last = max(starts) if starts else None
            problems.append(f"{node.name}: {unit} files changed at {newest}, last reload {last}")
    return problems


def run_overlaps(cluster: Cluster) -> list[str]:
    history = cluster.run_history()
    runs: list[tuple[str, LastRun]] = [(n, run) for n, runs in history.items() for run in runs]
    return intervals_overlap(runs)


def alice_objects() -> list[tuple[str, list[dict[str, Any]]]]:
    """A small site: a user, a pool, two vhosts (nginx and php-fpm reloads)."""
    return [
        ("unix-users", [user(1, "alice")]),
        ("fpm-pools", [pool(1, "alice", 1)]),
        (
            "virtual-hosts",
            [
                vhost(1, "alice.example.org", 1, "/home/alice", pool_id=1),
                vhost(2, "shop.example.org", 1, "/home/alice", "www.shop.example.org"),
            ],
        ),
    ]


def concurrently(calls: list[Any]) -> list[str]:
    """Run every call in its own thread; the errors they raised, as text."""
    errors: list[str] = []

    def run(call: Any) -> None:
        try:
            call()
        except Exception as error:  # reported to the test
            errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def put_all(cluster: Cluster, objects: list[tuple[str, list[dict[str, Any]]]]) -> int:
    revision = 0
    for type_name, items in objects:
        revision = cluster.put(type_name, *items)
    return revision


def three_member_cluster(etcd: EtcdCluster, base: Path, **options: Any) -> Cluster:
    """A harness whose daemons, CLI and own client list every member."""
    return Cluster(etcd[0], base, etcd_extra={"endpoints": etcd.endpoints}, **options)


def cleanup(cluster: Cluster, etcd: EtcdCluster | None = None) -> None:
    try:
        cluster.close()
    finally:
        print(cluster.report())
        if etcd is not None:
            print(etcd.log_tails())


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd of this test's own (members get killed and frozen)."""
    etcd = EtcdCluster(3)
    try:
        etcd.start()
    except EtcdServerError as error:
        etcd.close()
        pytest.fail(f"cannot run the 3-member etcd the tests need: {error}", pytrace=False)
    try:
        yield etcd
    finally:
        etcd.close()


@pytest.fixture
def cluster3(etcd3: EtcdCluster, tmp_path: Path) -> Iterator[Cluster]:
    harness = three_member_cluster(etcd3, tmp_path / "cluster")
    try:
        yield harness
    finally:
        cleanup(harness, etcd3)


def converged(cluster: Cluster, nodes: list[NodeProcess], timeout: float = 60.0) -> int:
    """Wait until every node applied the newest event revision; return it."""
    revision = cluster.latest_event_revision()
    cluster.wait_applied(revision, [n.name for n in nodes], timeout=timeout)
    return revision


def assert_serial(cluster: Cluster, nodes: list[NodeProcess]) -> None:
    assert run_overlaps(cluster) == []
    assert reload_overlaps(nodes) == []


# -- 1. a 3-member etcd: leader killed, member frozen, writer failover ----------------------


def test_killing_the_etcd_leader_mid_rollout_costs_no_update_and_no_serial_order(
    etcd3: EtcdCluster, cluster3: Cluster
) -> None:
    cluster = cluster3
    nodes = cluster.start_nodes(3)
    converged(cluster, nodes)
    put_all(cluster, alice_objects())
    converged(cluster, nodes)
    for node in nodes:
        node.set_slow(0.5)  # a rollout that lasts: each reload takes 0.5 s

    revision = cluster.put_cli(
        "virtual-hosts", vhost(2, "shop.example.org", 1, "/home/alice", "new.shop.example.org")
    )
    wait_until(
        lambda: any(
            len(cluster.lock_queue()) and "reload nginx" in " ".join(n.actions()[-1:])
            for n in nodes
        ),
        20,
        "a node in the middle of its reload",
        on_timeout=cluster.report,
    )
    leader = etcd3.leader()
    leader.kill()
    # writes keep working on the two members left (the CLI lists all three)
    during = cluster.put_cli("virtual-hosts", vhost(3, "late.example.org", 1, "/home/alice"))
    assert during > revision
    cluster.wait_applied(during, timeout=60)
    leader.start()
    etcd3.wait_healthy()

    assert cluster.halt() is None
    reference = config_tree(nodes[0])
    for node in nodes:
        text = (node.root / SITES / "shop.example.org.conf").read_text()
        assert "new.shop.example.org" in text, node.name
        assert (node.root / SITES / "late.example.org.conf").exists(), node.name
        assert config_tree(node) == reference, node.name
        assert unreloaded(node, ["nginx"]) == []
    assert_serial(cluster, nodes)


def test_a_member_frozen_longer_than_the_lease_ttl_fails_no_write_and_converges(
    etcd3: EtcdCluster, cluster3: Cluster
) -> None:
    cluster = cluster3
    nodes = cluster.start_nodes(3)
    put_all(cluster, alice_objects())
    converged(cluster, nodes)

    # freeze the member most likely to serve someone: every member is tried in turn
    for round_, member in enumerate(etcd3.members):
        member.freeze()
        frozen_at = time.monotonic()
        try:
            revisions = [
                cluster.put_cli(
                    "virtual-hosts",
                    vhost(10 + round_, f"frozen{round_}-{i}.example.org", 1, "/home/alice"),
                )
                for i in range(2)
            ]
            cluster.wait_applied(revisions[-1], timeout=60)
            # frozen for longer than the lock's lease TTL, then one more write
            time.sleep(max(0.0, frozen_at + cluster.ttl + 1 - time.monotonic()))
            revisions.append(cluster.put("unix-users", user(2 + round_, f"bob{round_}")))
            cluster.wait_applied(revisions[-1], timeout=60)
        finally:
            member.thaw()
        etcd3.wait_healthy()

    final = cluster.put_cli("unix-users", user(9, "carol"))
    cluster.wait_applied(final, timeout=60)
    assert cluster.halt() is None
    reference = config_tree(nodes[0])
    for node in nodes:
        assert config_tree(node) == reference, node.name
        assert unreloaded(node, ["nginx", "php8.3-fpm"]) == []
    assert_serial(cluster, nodes)


def test_the_writer_fails_over_to_a_healthy_member_while_one_is_frozen(
    etcd3: EtcdCluster, cluster3: Cluster
) -> None:
    cluster = cluster3
    cluster.put("unix-users", user(1, "alice"))
    settings = cluster.etcd_settings()
    long_lived = [EtcdClient.from_settings(settings) for _ in range(6)]
    try:
        for client in long_lived:  # connected, to one member or another
            ObjectStore(client, cluster.prefix, writer="w").put("unix-users", [user(1, "alice")])
        for member in etcd3.members:
            member.freeze()
            try:
                for i in range(3):  # the CLI: a new process, a random first endpoint
                    cluster.put_cli("unix-users", user(20 + i, f"cli{i}"))
                # at once: some of them are connected to the frozen member
                failed = concurrently(
                    [
                        lambda i=i, client=client: ObjectStore(
                            client, cluster.prefix, writer="w"
                        ).put("unix-users", [user(30 + i, f"lived{i}")])
                        for i, client in enumerate(long_lived)
                    ]
                )
                assert failed == [], failed
                with EtcdClient.from_settings(settings) as fresh:
                    assert fresh.get(f"{cluster.prefix}/objects/unix-users/1") is not None
            finally:
                member.thaw()
            etcd3.wait_healthy()
    finally:
        for client in long_lived:
            client.close()


# -- 2. a daemon killed at every step of a run ----------------------------------------------

#: (step, n): the n-th time a run reaches the step (the 2nd file: mid-way through them)
CRASH_POINTS = [("claimed", 1), ("written", 2), ("checked", 1), ("acted", 1), ("recorded", 1)]


@pytest.fixture
def single(private_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    harness = Cluster(private_etcd_server, tmp_path / "cluster")
    try:
        yield harness
    finally:
        cleanup(harness)


@pytest.mark.parametrize(("step", "count"), CRASH_POINTS, ids=[s for s, _ in CRASH_POINTS])
def test_a_daemon_killed_at_each_step_converges_after_a_restart(
    single: Cluster, step: str, count: int
) -> None:
    cluster = single
    put_all(cluster, alice_objects())
    reference = cluster.add("reference", start=False)
    victim = cluster.add("victim", start=False)
    for node in (reference, victim):
        add_foreign(node)
    reference.start().wait_ready()
    revision = converged(cluster, [reference])

    victim.start({"CCM_CRASH_AT": f"{step}:{count}"})
    assert victim.process is not None
    code = victim.process.wait(timeout=60)
    assert code == -signal.SIGKILL, f"the victim did not die at {step}:{count}: {code}"
    victim.start().wait_ready()
    cluster.wait_applied(revision, ["victim"], timeout=30)
    wait_until(lambda: not cluster.lock_queue(), 20, "the lock to be free")

    assert config_tree(victim) == config_tree(reference)
    assert (victim.root / FOREIGN).read_text() == FOREIGN_TEXT
    units = {unit for unit, _, _ in reloads(reference)}
    assert {"nginx", "php8.3-fpm"} <= units
    assert unreloaded(victim, units) == []  # every needed reload ran after the last write
    assert cluster.halt() is None
    assert_serial(cluster, [reference, victim])


# -- 3. a write storm while daemons restart and etcd members die ----------------------------


#: retries of one write that etcd could not serve within its whole request timeout
STORM_RETRIES = 3


def storm(
    cluster: Cluster,
    writes: int,
    writers: int,
    faults: list[tuple[float, Any]],
    pause: float = 0.02,
) -> tuple[list[str], float, int]:
    """``writes`` object writes from ``writers`` threads (each with its own client),
    while ``faults`` (seconds after the start, callable) run; the failed writes, the
    seconds it took, and how many times etcd could not serve a write in time.

    A writer does what ccm promises a Cluster API it may do: a write that raised
    ``EtcdUnavailable`` after its whole request timeout (etcd electing a leader on a
    starved machine) stored nothing, and is sent again. Every other failure counts: a
    ``StoreError`` (lost races), any other error, and an ``EtcdUnavailable`` raised
    before the timeout was used up (the client gave up while a member lived).
    """
    settings = cluster.etcd_settings()
    failures: list[str] = []
    unavailable: list[str] = []
    per_writer = writes // writers

    def attempt(label: str, write: Any) -> None:
        for _ in range(STORM_RETRIES + 1):
            started = time.monotonic()
            try:
                write()
                return
            except ObjectNotFound:
                return  # deleted already, or never written: a no-op for the storm
            except EtcdUnavailable as error:
                took = time.monotonic() - started
                if took < settings.timeout - 0.5:
                    failures.append(f"{label}: gave up after {took:.1f} s: {error}")
                    return
                unavailable.append(f"{label}: {error}")
            except Exception as error:
                failures.append(f"{label}: {type(error).__name__}: {error}")
                return
        failures.append(f"{label}: etcd unavailable {STORM_RETRIES + 1} times in a row")

    def write(index: int) -> None:
        rng = random.Random(index)
        with EtcdClient.from_settings(settings) as client:
            store = ObjectStore(client, cluster.prefix, writer=f"w{index}")
            uid = 100 + index
            home = f"/home/storm{index}"
            attempt(f"w{index} user", lambda: store.put("unix-users", [user(uid, f"storm{index}")]))
            for n in range(per_writer - 1):
                vid = 1000 * (index + 1) + rng.randrange(8)
                if rng.random() < 0.15:
                    attempt(f"w{index} #{n}", lambda vid=vid: store.delete("virtual-hosts", vid))
                else:
                    host = vhost(vid, f"v{vid}.example.org", uid, home, f"n{n}.v{vid}.example.org")
                    attempt(f"w{index} #{n}", lambda host=host: store.put("virtual-hosts", [host]))
                time.sleep(pause * rng.random() * 2)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for at, fault in sorted(faults, key=lambda item: item[0]):
        time.sleep(max(0.0, started + at - time.monotonic()))
        fault()
    for thread in threads:
        thread.join()
    return failures, time.monotonic() - started, len(unavailable)


def test_a_write_storm_while_daemons_restart_and_etcd_members_die(
    etcd3: EtcdCluster, cluster3: Cluster
) -> None:
    cluster = cluster3
    nodes = cluster.start_nodes(3)
    killed: list[Any] = []

    def kill_leader() -> None:
        leader = etcd3.leader()
        leader.kill()
        killed.append(leader)

    def restart_member() -> None:
        killed.pop().start()

    def restart_daemon(node: NodeProcess) -> Any:
        def restart() -> None:
            node.kill()
            node.start()

        return restart

    failures, _, _ = storm(
        cluster,
        writes=STORM_WRITES,
        writers=4,
        pause=0.08,  # 75 writes per writer over ~6 s: the faults land inside the storm
        faults=[
            (1.0, kill_leader),
            (2.0, restart_daemon(nodes[0])),
            (3.5, restart_member),
            (4.0, kill_leader),
            (4.5, nodes[1].stop),
            (5.0, nodes[1].start),
            (6.0, restart_member),
        ],
    )
    assert failures == [], failures
    etcd3.wait_healthy()
    final = converged(cluster, nodes, timeout=90)
    wait_until(lambda: not cluster.lock_queue(), 20, "the lock to be free")

    # a clean node, started now, is the reference for the final revision
    reference = cluster.add("reference")
    reference.wait_ready()
    cluster.wait_applied(final, ["reference"], timeout=60)
    expected = config_tree(reference)
    for node in nodes:
        assert config_tree(node) == expected, node.name
        assert unreloaded(node, ["nginx"]) == []
    assert cluster.halt() is None
    assert_serial(cluster, [*nodes, reference])


#: writes in the CI storm; ``benchmarks/faults_soak.py`` runs 1,000 and more
STORM_WRITES = 300
