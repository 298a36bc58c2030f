"""Services across a real cluster: ``redis-instances`` and ``daemons`` on their nodes only.

Real ``ccm daemon`` processes (:mod:`cluster_harness`) against the session's etcd, under a
key prefix of this test's own, with node groups: a Redis instance is applied on the nodes
with the ``redis`` group and nowhere else, a daemon on the nodes its ``node_ids`` name and
nowhere else; moving a daemon, changing or deleting an instance and taking a group away
run the unit lifecycle on exactly the nodes concerned.

Every unit command is a harmless real one that appends a line to ``ROOT/actions.log``.
``stop`` and ``disable`` also write whether the unit's file (Redis's config, the daemon's
unit file) was still on the node when they ran: ``stop redis-server@cache (present)``, so
"stopped before its file goes" is read from what happened, not inferred from an order.
Every wait polls etcd against a deadline; the fixture stops every daemon whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Cluster, NodeProcess

from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer
from ccm.testing.noderoot import harmless_commands

PASSWORD = "cluster-Pass.word~0123"
REDIS_CONF = "etc/redis/redis-cache.conf"
REDIS_UNIT = "redis-server@cache"
DAEMON_UNIT = "ccm-daemon-worker.service"
DAEMON_FILE = f"etc/systemd/system/{DAEMON_UNIT}"

#: ``stop``/``disable`` that log whether the unit's file still exists when they run
_WITNESS = (
    'case "$1" in redis-server@*) f="$3/etc/redis/redis-${1#redis-server@}.conf";; '
    '*) f="$3/etc/systemd/system/$1";; esac; '
    '[ -e "$f" ] && s=present || s=gone; echo "$2 $1 ($s)" >> "$3/actions.log"'
)


class ServiceCluster(Cluster):
    """The harness's nodes, with every unit lifecycle command harmless as well."""

    def node_settings(self, name: str, root: Path, **overrides: Any) -> dict[str, Any]:
        settings = super().node_settings(name, root, **overrides)
        settings["commands"] = {
            **harmless_commands(root),  # start, enable, daemon-reload … log a line
            **settings["commands"],  # the harness's reload and restart
            "stop_unit": ["sh", "-c", _WITNESS, "sh", "{unit}", "stop", str(root)],
            "disable_unit": ["sh", "-c", _WITNESS, "sh", "{unit}", "disable", str(root)],
        }
        return settings


@pytest.fixture
def cluster(
    etcd_server: EtcdServer, etcd_settings: EtcdSettings, tmp_path: Path
) -> Iterator[ServiceCluster]:
    with ServiceCluster(
        etcd_server, tmp_path / "cluster", prefix=etcd_settings.prefix
    ) as harness:  # stopped, and its logs printed, whatever happens
        yield harness


def node(id: int, hostname: str, *groups: str) -> dict[str, Any]:
    return {"id": id, "hostname": hostname, "groups": list(groups)}


def redis(**extra: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "name": "cache",
        "port": 16380,
        "password": PASSWORD,
        "memory_limit_mib": 64,
        **extra,
    }


def worker(*node_ids: int) -> dict[str, Any]:
    return {
        "id": 1,
        "name": "worker",
        "unix_user_id": 1,
        "command": ["/home/alice/bin/worker", "--queue", "default"],
        "node_ids": list(node_ids),
    }


def start(cluster: Cluster, *names: str) -> list[NodeProcess]:
    nodes = [cluster.add(name) for name in names]
    for started in nodes:
        started.wait_ready()
    return nodes


def about(node: NodeProcess, unit: str, since: int = 0) -> list[str]:
    """The unit commands ``node`` ran for ``unit`` (after its first ``since`` lines)."""
    return [line for line in node.actions()[since:] if line.split(" (")[0].endswith(f" {unit}")]


def has_user(node: NodeProcess, username: str) -> bool:
    passwd = (node.root / "etc/passwd").read_text()
    return any(line.startswith(f"{username}:") for line in passwd.splitlines())


def deleted(cluster: Cluster, type_name: str, object_id: int) -> int:
    """``ccm objects delete`` through the CLI; the revision of the deletion's event."""
    cluster.ccm("objects", "delete", type_name, str(object_id))
    return cluster.latest_event_revision()


@pytest.mark.slow
def test_redis_and_daemons_run_on_the_nodes_of_their_group_only(cluster: Cluster) -> None:
    cluster.put_cli(
        "nodes",
        node(1, "cache1", "redis"),
        node(2, "cache2", "redis", "daemons"),
        node(3, "run1", "daemons"),
        node(4, "web1", "nginx"),
    )
    cache1, cache2, run1, web1 = start(cluster, "cache1", "cache2", "run1", "web1")
    everyone = (cache1, cache2, run1, web1)
    cluster.put_cli("unix-users", {"id": 1, "username": "alice"})
    cluster.put_cli("redis-instances", redis())
    revision = cluster.put_cli("daemons", worker(3))
    cluster.wait_applied(revision)
    assert cluster.halt() is None

    # the instance: its config and its start on the redis nodes, nothing elsewhere
    for placed in (cache1, cache2):
        conf = placed.root / REDIS_CONF
        assert "port 16380\n" in conf.read_text(), placed.name
        assert conf.stat().st_mode & 0o777 == 0o640
        assert about(placed, REDIS_UNIT) == [f"enable {REDIS_UNIT}", f"start {REDIS_UNIT}"]
    for other in (run1, web1):
        assert not (other.root / "etc/redis").exists(), other.name
        assert about(other, REDIS_UNIT) == [], other.name
    # the daemon: on node 3 only, although cache2 has the daemons group too
    unit_file = run1.root / DAEMON_FILE
    assert "User=alice" in unit_file.read_text()
    ran = run1.actions()
    assert ran.index("daemon-reload") < ran.index(f"start {DAEMON_UNIT}")
    assert about(run1, DAEMON_UNIT) == [f"enable {DAEMON_UNIT}", f"start {DAEMON_UNIT}"]
    for other in (cache1, cache2, web1):
        assert not (other.root / DAEMON_FILE).exists(), other.name
        assert about(other, DAEMON_UNIT) == [], other.name
    # the accounts are made where a configuration needs them (daemons), not on cache1
    assert has_user(run1, "alice") and has_user(cache2, "alice")
    assert not has_user(cache1, "alice")

    # node_ids [3] -> [2]: one write moves it, stopped and disabled before its file goes
    marks = {n.name: len(n.actions()) for n in everyone}
    revision = cluster.put_cli("daemons", worker(2))
    cluster.wait_applied(revision)
    assert not unit_file.exists()
    assert about(run1, DAEMON_UNIT, marks["run1"]) == [
        f"stop {DAEMON_UNIT} (present)",
        f"disable {DAEMON_UNIT} (present)",
    ]
    assert "daemon-reload" in run1.actions()[marks["run1"] :]  # systemd forgets the file
    assert (cache2.root / DAEMON_FILE).exists()
    assert about(cache2, DAEMON_UNIT) == [f"enable {DAEMON_UNIT}", f"start {DAEMON_UNIT}"]
    for other in (cache1, web1):
        assert about(other, DAEMON_UNIT) == [], other.name
    for unmoved in (cache1, cache2):  # the instance is left as it was
        assert about(unmoved, REDIS_UNIT, marks[unmoved.name]) == [], unmoved.name

    # a changed instance restarts on the redis nodes, and only there
    marks = {n.name: len(n.actions()) for n in everyone}
    revision = cluster.put_cli("redis-instances", redis(memory_limit_mib=128))
    cluster.wait_applied(revision)
    for placed in (cache1, cache2):
        assert "maxmemory 128mb" in (placed.root / REDIS_CONF).read_text().lower()
        assert about(placed, REDIS_UNIT, marks[placed.name]) == [f"restart {REDIS_UNIT}"]
    for other in (run1, web1):
        assert about(other, REDIS_UNIT) == [], other.name

    # deleted: stopped and disabled on its nodes while its config is still there, then
    # the config goes; no restart of what was taken down
    marks = {n.name: len(n.actions()) for n in everyone}
    revision = deleted(cluster, "redis-instances", 1)
    cluster.wait_applied(revision)
    for placed in (cache1, cache2):
        assert not (placed.root / REDIS_CONF).exists(), placed.name
        assert about(placed, REDIS_UNIT, marks[placed.name]) == [
            f"stop {REDIS_UNIT} (present)",
            f"disable {REDIS_UNIT} (present)",
        ]
    for other in (run1, web1):
        assert about(other, REDIS_UNIT) == [], other.name
    assert cluster.halt() is None


@pytest.mark.slow
def test_taking_the_redis_group_away_stops_the_instance_on_that_node_only(
    cluster: Cluster,
) -> None:
    cluster.put_cli("nodes", node(1, "cache1", "redis"), node(2, "cache2", "redis"))
    cache1, cache2 = start(cluster, "cache1", "cache2")
    revision = cluster.put_cli("redis-instances", redis())
    cluster.wait_applied(revision)
    assert (cache1.root / REDIS_CONF).exists() and (cache2.root / REDIS_CONF).exists()

    marks = {n.name: len(n.actions()) for n in (cache1, cache2)}
    revision = cluster.put_cli("nodes", node(2, "cache2", "nginx"))
    cluster.wait_applied(revision)
    assert not (cache2.root / REDIS_CONF).exists()
    assert about(cache2, REDIS_UNIT, marks["cache2"]) == [
        f"stop {REDIS_UNIT} (present)",
        f"disable {REDIS_UNIT} (present)",
    ]
    assert (cache1.root / REDIS_CONF).exists()
    assert about(cache1, REDIS_UNIT, marks["cache1"]) == []
    assert cluster.halt() is None
