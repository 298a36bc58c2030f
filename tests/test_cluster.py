"""The cluster end to end: real ``ccm daemon`` processes against a real etcd.

Every test starts its own etcd (``private_etcd_server``: some kill it) and its own
daemons through :mod:`cluster_harness`; every wait polls etcd, a notify socket or a log
against a deadline. The fixture stops every daemon (SIGTERM, then SIGKILL) whatever
happens, and prints the daemons' log tails — pytest shows them when a test fails.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import (
    BROKEN_MARK,
    CHECK_ERROR,
    Cluster,
    NodeProcess,
    intervals_overlap,
    to_toml,
    tree,
    wait_until,
)

from ccm.errors import ClusterError
from ccm.testing.etcd import EtcdServer
from ccm.testing.noderoot import logging_command

SITES = "etc/nginx/sites-enabled"


@pytest.fixture
def cluster(private_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        private_etcd_server, tmp_path / "cluster"
    ) as harness:  # stopped, and its logs printed, whatever happens
        yield harness


def user(id: int, username: str) -> dict[str, Any]:
    return {"id": id, "username": username}


def vhost(
    id: int, domain: str, *aliases: str, unix_user_id: int = 1, home: str = "/home/alice"
) -> dict[str, Any]:
    return {
        "id": id,
        "domain": domain,
        "server_aliases": list(aliases),
        "unix_user_id": unix_user_id,
        "document_root": f"{home}/www",
    }


#: the mail domain of ``mail`` accounts (owned by unix-users/1)
MAIL_DOMAIN = {"id": 1, "domain": "example.org", "unix_user_id": 1}


def mail(id: int, local_part: str) -> dict[str, Any]:
    return {
        "id": id,
        "local_part": local_part,
        "mail_domain_id": 1,
        "password_hash": "{SHA512-CRYPT}$6$saltsalt$" + "a" * 86,
    }


def site_file(node: NodeProcess, domain: str) -> Path:
    return node.root / SITES / f"{domain}.conf"


def has_user(node: NodeProcess, username: str) -> bool:
    passwd = (node.root / "etc/passwd").read_text()
    return any(line.startswith(f"{username}:") for line in passwd.splitlines())


def runs_after(cluster: Cluster, count: dict[str, int]) -> dict[str, list[Any]]:
    """Each node's runs recorded after the first ``count[node]`` ones."""
    history = cluster.run_history()
    return {name: history.get(name, [])[count.get(name, 0) :] for name in cluster.nodes}


def run_counts(cluster: Cluster) -> dict[str, int]:
    return {name: len(runs) for name, runs in cluster.run_history().items()}


# -- 1. a write converges, one node at a time, once per burst ---------------------------------


def test_a_write_converges_on_every_node_one_at_a_time_once_per_burst(cluster: Cluster) -> None:
    nodes = cluster.start_nodes(3)
    revision = cluster.put_cli("unix-users", user(1, "alice"))
    cluster.wait_applied(revision)
    for node in nodes:
        assert has_user(node, "alice"), node.name
        assert (node.root / "home/alice").is_dir(), node.name

    # a burst: five writes well within `quiet` of each other
    before = run_counts(cluster)
    started = time.monotonic()
    revisions = [
        cluster.put("virtual-hosts", vhost(i, f"site{i}.example.org")) for i in range(1, 6)
    ]
    assert time.monotonic() - started < cluster.quiet, "the burst was not a burst"
    cluster.wait_applied(revisions[-1])
    # an absence (no second run) can only be seen by waiting: longer than `quiet` + a run
    time.sleep(3 * cluster.quiet)
    wait_until(lambda: not cluster.lock_queue(), 10, "the lock to be free")

    expected = {f"/{SITES}/site{i}.example.org.conf" for i in range(1, 6)}
    for node in nodes:
        for i in range(1, 6):
            assert (
                f"server_name site{i}.example.org;"
                in site_file(node, f"site{i}.example.org").read_text()
            )
    new_runs = runs_after(cluster, before)
    for name, runs in new_runs.items():
        assert len(runs) == 1, f"{name} ran {len(runs)} times for one burst: {runs}"
        assert runs[0].result == "success"
        assert expected <= set(runs[0].changed), (name, runs[0].changed)
        assert cluster.records()[name].applied_revision >= revisions[-1]

    # strictly one at a time: every run of every node, from the records' history
    history = cluster.run_history()
    every_run = [(name, run) for name, runs in history.items() for run in runs]
    assert len(every_run) == 3 * 3  # catch-up, alice, the burst
    assert intervals_overlap(every_run) == []


# -- 2. a failing check halts the rollout; resume converges ---------------------------------


def test_a_failing_check_rolls_back_and_halts_everyone_until_resume(cluster: Cluster) -> None:
    nodes = cluster.start_nodes(3)
    cluster.put("unix-users", user(1, "alice"))
    revision = cluster.put("virtual-hosts", vhost(1, "alice.example.org"))
    cluster.wait_applied(revision)
    good = {node.name: site_file(node, "alice.example.org").read_bytes() for node in nodes}
    trees = {node.name: tree(node.root) for node in nodes}
    records = cluster.records()

    # one burst: a harmless mail domain and account, then a vhost the check refuses
    cluster.put("mail-domains", MAIL_DOMAIN)
    cluster.put("mail-accounts", mail(1, "info"))
    bad = cluster.put("virtual-hosts", vhost(1, "alice.example.org", f"{BROKEN_MARK}.example.org"))

    halt = wait_until(cluster.halt, 20, "the halt record", on_timeout=cluster.report)
    assert set(halt) == {"node", "configuration", "error", "revision", "at"}
    failed = cluster[halt["node"]]
    assert halt["configuration"] == "nginx-vhosts"
    assert CHECK_ERROR in halt["error"]
    assert halt["revision"] >= bad
    others = [node for node in nodes if node is not failed]

    # every other node reaches the flag under the lock and stops before applying
    for node in others:
        wait_until(
            lambda node=node: node.logged("halt flag is set: not applying"),
            20,
            f"{node.name} to see the halt flag",
            on_timeout=cluster.report,
        )
    wait_until(lambda: not cluster.lock_queue(), 10, "the lock to be free")
    for node in nodes:  # the failed node restored byte for byte, the others untouched
        assert tree(node.root) == trees[node.name], node.name
        assert site_file(node, "alice.example.org").read_bytes() == good[node.name]
    after = cluster.records()
    for node in others:
        assert after[node.name] == records[node.name], f"{node.name}'s record moved"
    assert after[failed.name].applied_revision == records[failed.name].applied_revision
    assert after[failed.name].last_run is not None
    assert after[failed.name].last_run.result == "failed"
    failures = [
        e for e in failed.log_events() if str(e.get("event")).startswith("run failed: halt")
    ]
    assert [e["configuration"] for e in failures] == ["nginx-vhosts"]

    status = cluster.status()
    assert status["halt"] == halt

    # fix the object, resume: every node converges and nothing is lost
    fixed = cluster.put_cli("virtual-hosts", vhost(1, "alice.example.org", "www.example.org"))
    assert cluster.ccm("resume").stdout.strip() == "resumed"
    cluster.wait_applied(fixed)
    assert cluster.halt() is None
    for node in nodes:
        text = site_file(node, "alice.example.org").read_text()
        assert "server_name alice.example.org www.example.org;" in text, node.name
        assert BROKEN_MARK not in text
        assert "info@example.org:" in (node.root / "etc/dovecot/users").read_text(), node.name
        last = cluster.records()[node.name].last_run
        assert last is not None and last.result == "success"
    history = cluster.run_history()
    assert intervals_overlap([(n, run) for n, runs in history.items() for run in runs]) == []


# -- 3. the lock holder dies mid-apply ---------------------------------------------------------


def test_a_killed_lock_holder_loses_the_lock_within_its_ttl_and_catches_up(
    cluster: Cluster,
) -> None:
    nodes = cluster.start_nodes(3)
    revision = cluster.put("unix-users", user(1, "alice"))
    cluster.wait_applied(revision)
    for node in nodes:
        node.set_slow(10)  # every reload takes 10 s: the first holder is the victim

    revision = cluster.put("virtual-hosts", vhost(1, "alice.example.org"))

    def holder_mid_apply() -> NodeProcess | None:
        queue = cluster.lock_queue()
        if len(queue) != 3:  # the holder and both others waiting behind it
            return None
        holder = cluster[queue[0].node]
        return holder if "reload nginx start" in " ".join(holder.actions()) else None

    victim = wait_until(holder_mid_apply, 15, "a holder in its reload with two waiters")
    survivors = [node for node in nodes if node is not victim]
    for node in survivors:
        node.set_slow(0)
    victim.kill()

    # the dead holder's lease expires `ttl` after its last refresh (how soon the lock
    # moves on: benchmarks/cluster_outage.py); the bound here only guards against a hang
    new_holder = wait_until(
        lambda: next((e.node for e in cluster.lock_queue()[:1] if e.node != victim.name), None),
        cluster.ttl + 15,
        "another node to take the lock",
    )
    assert new_holder in {node.name for node in survivors}

    cluster.wait_applied(revision, [node.name for node in survivors])
    assert cluster.records()[victim.name].applied_revision < revision  # no success recorded

    victim.set_slow(0)
    restarted_at = len(victim.actions())
    victim.start().wait_ready()
    cluster.wait_applied(revision, [victim.name])
    assert "server_name alice.example.org;" in site_file(victim, "alice.example.org").read_text()
    # the reload the crash interrupted is not lost: the catch-up run reloads nginx again
    assert "reload nginx end" in " ".join(victim.actions()[restarted_at:]), victim.actions()
    history = cluster.run_history()
    assert intervals_overlap([(n, run) for n, runs in history.items() for run in runs]) == []


# -- 4. etcd dies and comes back ----------------------------------------------------------------


def test_an_etcd_outage_loses_nothing(cluster: Cluster, private_etcd_server: EtcdServer) -> None:
    nodes = cluster.start_nodes(3)
    cluster.put("unix-users", user(1, "alice"))
    cluster.put("virtual-hosts", vhost(1, "before.example.org"))
    private_etcd_server.kill()

    time.sleep(2.5)  # an outage the daemons live through (their CPU: benchmarks/)
    assert all(node.running for node in nodes), cluster.report()

    private_etcd_server.start()

    def put_after() -> int | None:
        try:
            return cluster.put("virtual-hosts", vhost(2, "after.example.org"))
        except ClusterError:
            return None  # the harness's own client reconnecting

    revision = wait_until(put_after, 15, "a write after the restart", interval=0.2)
    cluster.wait_applied(revision, timeout=40)
    for node in nodes:
        for domain in ("before.example.org", "after.example.org"):
            assert f"server_name {domain};" in site_file(node, domain).read_text(), node.name
        assert node.running
    history = cluster.run_history()
    assert intervals_overlap([(n, run) for n, runs in history.items() for run in runs]) == []


# -- 5. a new node catches up from its first run ----------------------------------------------


def test_a_node_started_after_many_writes_converges_in_its_first_run(cluster: Cluster) -> None:
    (first,) = cluster.start_nodes(1)
    for i in range(1, 11):
        cluster.put("unix-users", user(i, f"user{i}"))
        cluster.put(
            "virtual-hosts", vhost(i, f"site{i}.example.org", unix_user_id=i, home=f"/home/user{i}")
        )
        if i == 1:
            cluster.put("mail-domains", MAIL_DOMAIN)
        cluster.put("mail-accounts", mail(i, f"box{i}"))
    latest = cluster.latest_event_revision()

    newcomer = cluster.add("node2")
    assert newcomer.name not in cluster.records()
    newcomer.wait_ready()  # READY comes after the catch-up run
    record = cluster.records()[newcomer.name]
    assert record.applied_revision >= latest
    users = (newcomer.root / "etc/dovecot/users").read_text()
    for i in range(1, 11):
        assert has_user(newcomer, f"user{i}")
        assert (newcomer.root / f"home/user{i}").is_dir()
        assert site_file(newcomer, f"site{i}.example.org").exists()
        assert f"box{i}@example.org:" in users
    assert len(cluster.run_history()[newcomer.name]) == 1, "it took more than one run"
    # its first run logged how far each configuration got: start and end at least
    progress = [e for e in newcomer.log_events() if e.get("event") == "progress"]
    accounts = [(e["done"], e["total"]) for e in progress if e["configuration"] == "unix-users"]
    assert accounts[0][0] == 0 and accounts[-1][0] == accounts[-1][1] >= 10, accounts
    cluster.wait_applied(latest, [first.name])


# -- 6. ccm status --json ----------------------------------------------------------------------


def test_status_json_has_the_designed_shape_and_shows_a_stopped_node(cluster: Cluster) -> None:
    nodes = cluster.start_nodes(2)
    revision = cluster.put_cli("unix-users", user(1, "alice"))
    cluster.wait_applied(revision)
    assert nodes[1].stop() == 0

    status = cluster.status()
    assert set(status) == {"revision", "halt", "lock", "nodes", "refused", "certificate_managers"}
    assert status["revision"] == revision
    assert status["halt"] is None
    assert status["lock"] == {"holder": None, "waiting": []}
    assert [n["node"] for n in status["nodes"]] == ["node1", "node2"]
    for entry, alive in zip(status["nodes"], (True, False), strict=True):
        assert set(entry) == {"node", "alive", "applied_revision", "behind", "groups", "last_run"}
        assert entry["alive"] is alive
        assert isinstance(entry["applied_revision"], int) and entry["applied_revision"] >= revision
        assert entry["behind"] is False
        last_run = entry["last_run"]
        # DESIGN's four keys; `error` (empty unless the run failed) is ccm's addition
        assert set(last_run) - {"error"} == {"started", "finished", "result", "changed", "refused"}
        assert last_run["result"] == "success"
        assert isinstance(last_run["changed"], list)
        assert last_run["started"] <= last_run["finished"]

    text = cluster.ccm("status").stdout
    assert "halt: not set" in text and "lock: free" in text


# -- 7. SIGTERM --------------------------------------------------------------------------------


def test_sigterm_exits_0_and_removes_the_alive_and_lock_keys(cluster: Cluster) -> None:
    idle, busy = cluster.start_nodes(2)
    assert cluster.alive() == {"node1", "node2"}

    idle.signal(15)
    assert idle.process is not None and idle.process.wait(10) == 0
    wait_until(lambda: "node1" not in cluster.alive(), 1.0, "node1's alive key to go")

    # SIGTERM while holding the lock: the run finishes, the lock goes with the process
    # (after node2's first run, which reloads nginx for the default server)
    wait_until(lambda: "node2" in cluster.records(), 15, "node2's first run")
    reloads_before = " ".join(busy.actions()).count("reload nginx start")
    busy.set_slow(2)
    revision = cluster.put("unix-users", user(1, "alice"))
    revision = cluster.put("virtual-hosts", vhost(1, "alice.example.org"))

    def busy_in_reload() -> bool:
        queue = cluster.lock_queue()
        holding = bool(queue) and queue[0].node == busy.name
        return holding and " ".join(busy.actions()).count("reload nginx start") > reloads_before

    wait_until(busy_in_reload, 15, "node2 to hold the lock in its reload")
    busy.signal(15)
    assert busy.process is not None and busy.process.wait(15) == 0
    wait_until(
        lambda: "node2" not in cluster.alive() and not cluster.lock_queue(),
        1.0,
        "node2's alive and lock keys to go",
    )
    assert "reload nginx end" in " ".join(busy.actions())  # the run was finished
    assert cluster.records()["node2"].applied_revision >= revision


# -- 8. a notify socket nobody reads -----------------------------------------------------------


def test_a_notify_socket_nobody_reads_does_not_wedge_the_daemon(cluster: Cluster) -> None:
    """Telling systemd is best effort (``ccm.daemon.notify``): it must never stop the loop.

    An unread ``AF_UNIX`` datagram socket queues ``net.unix.max_dgram_qlen`` messages
    (10 by default; systemd busy, or a supervisor that only wants READY=1): a blocking
    send of the 11th must not freeze the daemon.
    """
    node = cluster.add("node1", drain=False)
    cluster.wait_applied(1, [node.name])  # its catch-up run is recorded (READY=1 unread)
    revision = 0
    for i in range(1, 16):  # separate writes, each its own watch batch and loop turn
        revision = cluster.put("unix-users", user(i, f"user{i}"))
        time.sleep(0.02)
    cluster.wait_applied(revision, [node.name], timeout=10)
    assert has_user(node, "user15")


# -- 9. periodic reconcile repairs drift; SIGHUP re-reads the settings -------------------------


def test_the_periodic_reconcile_repairs_drift_on_the_node(cluster: Cluster) -> None:
    node = cluster.add("node1", reconcile_interval=1).wait_ready()
    cluster.put("unix-users", user(1, "alice"))
    revision = cluster.put("virtual-hosts", vhost(1, "drift.example.org"))
    cluster.wait_applied(revision, [node.name])
    managed = site_file(node, "drift.example.org")
    good = managed.read_bytes()
    managed.write_text("# edited by hand\n")
    managed.chmod(0o600)
    wait_until(
        lambda: managed.read_bytes() == good and managed.stat().st_mode & 0o777 == 0o644,
        10,
        "the reconcile run to restore the file",
        on_timeout=cluster.report,
    )


def test_sighup_rereads_the_settings_file(cluster: Cluster) -> None:
    node = cluster.add("node1").wait_ready()
    settings = cluster.node_settings(node.name, node.root)
    settings["commands"]["reload_unit"] = logging_command(node.root, "after-hup reload {unit}")
    node.config.write_text(to_toml(settings))
    node.signal(signal.SIGHUP)
    wait_until(lambda: node.logged("settings reloaded"), 10, "the settings reload")
    cluster.put("unix-users", user(1, "alice"))
    revision = cluster.put("virtual-hosts", vhost(1, "hup.example.org"))
    cluster.wait_applied(revision, [node.name])
    assert "after-hup reload nginx" in node.actions()

    # a new lock TTL takes effect without a restart: the next lock's lease has it
    settings["lock"] = {"ttl": cluster.ttl + 40}
    node.config.write_text(to_toml(settings))
    node.signal(signal.SIGHUP)
    wait_until(lambda: len(node.logged("settings reloaded")) == 2, 10, "the second reload")
    node.set_slow(3)
    cluster.put("virtual-hosts", vhost(2, "ttl.example.org"))
    holder = wait_until(lambda: cluster.lock_queue()[:1], 15, "node1 to take the lock")[0]
    assert cluster.client.lease_ttl(holder.lease_id) > cluster.ttl
    node.set_slow(0)

    node.config.write_text("this is not toml = [\n")
    node.signal(signal.SIGHUP)
    wait_until(
        lambda: node.logged("settings not reloaded; keeping the running ones"),
        10,
        "the refusal of a broken settings file",
    )
    assert node.running, "a broken settings file does not stop the daemon"
