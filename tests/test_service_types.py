"""redis-instances and daemons through the real engine on a node root: what a run does
with their units, in order (every unit command logs its argv to ROOT/actions.log), and
what ``ccm diff`` shows of a secret.

- a new Redis instance: its file (0640 root:redis), then enable and start; a changed file
  restarts it once; a deleted one is stopped and disabled before its file goes, and never
  restarted;
- a daemon: its unit file, daemon-reload, enable, start; moved by ``node_ids``: stopped,
  disabled and its file removed on the node it leaves, started on the node it joins;
- the Redis password never appears in a plan's text or JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import CcmObject, Node, Snapshot
from ccm.plan.diff import describe_json, describe_text
from ccm.testing.noderoot import actions, node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.daemons import Daemon
from configurations.redis_instances import RedisInstance
from configurations.unix_users import UnixUser

PASSWORD = "correct-horse-battery-staple-42"
ALICE = UnixUser(id=1, username="alice")
RUN1 = Node(id=1, hostname="run1", groups=["daemons", "redis"])
RUN2 = Node(id=2, hostname="run2", groups=["daemons"])


def redis(**extra: Any) -> RedisInstance:
    fields: dict[str, Any] = {
        "id": 1,
        "name": "shop",
        "port": 16379,
        "password": PASSWORD,
        "memory_limit_mib": 64,
    }
    return RedisInstance.model_validate({**fields, **extra})


def worker(*node_ids: int) -> Daemon:
    return Daemon(
        id=1,
        name="worker",
        unix_user_id=1,
        command=["/usr/bin/python3", "/home/alice/worker.py"],
        node_ids=list(node_ids),
    )


def engine(root: Path, node: str) -> Engine:
    return Engine(Registry(CONFIGURATIONS), node_settings(root, node=node))


def run(root: Path, node: str, *objects: CcmObject, revision: int = 1) -> list[str]:
    """Apply a snapshot of ``objects`` on ``node``; the unit commands this run started."""
    before = len(actions(root))
    snapshot = Snapshot.of(revision, [RUN1, RUN2, ALICE, *objects])
    engine(root, node).apply(snapshot)
    return [line for line in actions(root)[before:] if not line.startswith("check ")]


def test_a_redis_instance_is_started_restarted_on_change_and_stopped_before_its_file_goes(
    tmp_path: Path,
) -> None:
    root = seed_root(tmp_path / "run1")
    config = root / "etc/redis/redis-shop.conf"
    assert run(root, "run1", redis()) == ["enable redis-server@shop", "start redis-server@shop"]
    assert config.stat().st_mode & 0o777 == 0o640
    assert run(root, "run1", redis(), revision=2) == []  # nothing changed: nothing runs
    assert run(root, "run1", redis(memory_limit_mib=128), revision=3) == [
        "restart redis-server@shop"
    ]
    assert "maxmemory 128mb" in config.read_text()
    removed = run(root, "run1", revision=4)
    assert removed == ["stop redis-server@shop", "disable redis-server@shop"]
    assert not config.exists()
    assert run(root, "run1", revision=5) == []  # stays down: never restarted


def test_a_daemon_moves_between_nodes_in_one_rollout(tmp_path: Path) -> None:
    run1, run2 = seed_root(tmp_path / "run1"), seed_root(tmp_path / "run2")
    unit_file = "etc/systemd/system/ccm-daemon-worker.service"
    started = run(run1, "run1", worker(1))
    assert started[-3:] == [
        "daemon-reload",
        "enable ccm-daemon-worker.service",
        "start ccm-daemon-worker.service",
    ]
    assert run(run2, "run2", worker(1)) == []  # not placed there: nothing, not even a file
    assert not (run2 / unit_file).exists()
    # node_ids [1] -> [2]: the node it leaves takes it down before the file goes
    left = run(run1, "run1", worker(2), revision=2)
    assert left[:2] == ["stop ccm-daemon-worker.service", "disable ccm-daemon-worker.service"]
    assert left[2:] == ["daemon-reload"]
    assert not (run1 / unit_file).exists()
    joined = run(run2, "run2", worker(2), revision=2)
    assert joined[-3:] == [
        "daemon-reload",
        "enable ccm-daemon-worker.service",
        "start ccm-daemon-worker.service",
    ]
    assert "User=alice" in (run2 / unit_file).read_text()


def test_a_redis_password_never_shows_in_a_plan(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "run1")
    planned = engine(root, "run1").plan(Snapshot.of(1, [RUN1, redis()]))
    text = describe_text(planned.operations)
    as_json = json.dumps(describe_json(planned.operations, 1))
    assert "/etc/redis/redis-shop.conf" in text
    assert PASSWORD not in text and PASSWORD not in as_json
    assert "start redis-server@shop" in text
