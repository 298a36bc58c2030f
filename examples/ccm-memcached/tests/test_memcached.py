"""ccm-memcached's own tests, on ``ccm.testing`` alone (the fixtures installing ccm gives
pytest; no conftest, nothing of ccm's own tests).

``ccm_node`` runs the installed ``ccm`` command against a real etcd and a node root; the
plugin is found through its entry point, as on a node. Unit commands only log to
``ROOT/actions.log``; ``stop`` and ``disable`` here also log whether the instance's
config file was still on the node when they ran, so "stopped before its file goes" is
read from what happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ccm.settings import Settings
from ccm.testing import CcmNode

PASSWORD = "mc-Secret.pass~0123"
NEW_PASSWORD = "mc-Other.pass~4567"
CONF = "/etc/memcached_shop.conf"
AUTH = "/etc/memcached/shop.auth"
UNIT = "memcached@shop"

_WITNESS = (
    'f="$3/etc/memcached_${1#memcached@}.conf"; [ -e "$f" ] && s=present || s=gone; '
    'echo "$2 $1 ($s)" >> "$3/actions.log"'
)


@pytest.fixture
def ccm_settings(ccm_settings: Settings) -> Settings:
    """ccm.testing's settings, with a ``stop`` and ``disable`` that see the config file."""
    root = str(ccm_settings.root)
    commands = ccm_settings.commands.model_copy(
        update={
            "stop_unit": ("sh", "-c", _WITNESS, "sh", "{unit}", "stop", root),
            "disable_unit": ("sh", "-c", _WITNESS, "sh", "{unit}", "disable", root),
        }
    )
    return ccm_settings.model_copy(update={"commands": commands})


def alice() -> dict[str, Any]:
    return {"id": 1, "username": "alice"}


def memcached(id: int = 1, name: str = "shop", **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "unix_user_id": 1,
        "port": 16411,
        "memory_mb": 64,
        "password": PASSWORD,
        **extra,
    }


def redis(id: int = 1, port: int = 16400) -> dict[str, Any]:
    return {
        "id": id,
        "name": f"cache{id}",
        "port": port,
        "password": "redis-Pass.word~0123",
        "memory_limit_mib": 64,
    }


def since(node: CcmNode, mark: int) -> list[str]:
    return node.actions()[mark:]


def test_apply_renders_the_files_and_starts_the_instance_in_order(ccm_node: CcmNode) -> None:
    ccm_node.put("unix-users", alice())
    ccm_node.put("memcached-instances", memcached())
    ccm_node.apply("--all")

    config = ccm_node.read(CONF)
    for line in ("-l 127.0.0.1", "-p 16411", "-U 0", "-u alice", "-m 64", "-B ascii"):
        assert f"\n{line}\n" in config, line
    assert f"\n-Y {AUTH}\n" in config
    assert ccm_node.read(AUTH) == f"shop:{PASSWORD}\n"
    auth = ccm_node.path(AUTH).stat()
    assert auth.st_mode & 0o777 == 0o640 and auth.st_uid == 0
    assert auth.st_gid == _gid(ccm_node.root, "alice")  # memcached reads it as alice
    unit = ccm_node.read("/etc/systemd/system/memcached@.service")
    assert "systemd-memcached-wrapper /etc/memcached_%i.conf" in unit

    ran = ccm_node.actions()
    lifecycle = [
        line
        for line in ran
        if line in ("daemon-reload", "check memcached_unit_check") or line.endswith(UNIT)
    ]
    # the template unit is checked before systemd re-reads it and the instance starts
    assert lifecycle == [
        "check memcached_unit_check",
        "daemon-reload",
        f"enable {UNIT}",
        f"start {UNIT}",
    ]
    assert ccm_node.diff().returncode == 0  # nothing left to change

    mark = len(ccm_node.actions())
    ccm_node.put("memcached-instances", memcached(memory_mb=128))
    ccm_node.apply()
    assert "\n-m 128\n" in ccm_node.read(CONF)
    assert since(ccm_node, mark) == [f"restart {UNIT}"]  # a changed config: a restart


def test_the_diff_never_shows_the_password_only_fingerprints(ccm_node: CcmNode) -> None:
    ccm_node.put("unix-users", alice())
    ccm_node.put("memcached-instances", memcached())
    first = ccm_node.diff()
    assert first.returncode == 2
    assert f"+++ b{CONF}" in first.stdout  # the config is no secret
    assert "hmac-sha256:" in first.stdout  # the auth file is
    ccm_node.apply("--all")

    ccm_node.put("memcached-instances", memcached(password=NEW_PASSWORD))
    text = ccm_node.diff()
    as_json = ccm_node.diff("--json")
    assert text.returncode == 2 and AUTH in text.stdout
    assert text.stdout.count("hmac-sha256:") >= 2  # the old and the new side
    assert json.loads(as_json.stdout)  # well-formed, and …
    for output in (first, text, as_json):
        for secret in (PASSWORD, NEW_PASSWORD):
            assert secret not in output.stdout + output.stderr
    mark = len(ccm_node.actions())
    applied = ccm_node.apply()
    assert PASSWORD not in applied.stdout + applied.stderr
    assert ccm_node.read(AUTH) == f"shop:{NEW_PASSWORD}\n"
    assert since(ccm_node, mark) == [f"restart {UNIT}"]  # a new password: a restart


def test_a_removal_stops_and_disables_the_instance_before_its_files_go(
    ccm_node: CcmNode,
) -> None:
    ccm_node.put("unix-users", alice())
    ccm_node.put("memcached-instances", [memcached(), memcached(2, "other", port=16412)])
    ccm_node.apply("--all")
    mark = len(ccm_node.actions())

    ccm_node.delete("memcached-instances", 1)
    preview = ccm_node.diff()
    assert f"- unit {UNIT}" in preview.stdout and PASSWORD not in preview.stdout
    ccm_node.apply()
    assert since(ccm_node, mark) == [f"stop {UNIT} (present)", f"disable {UNIT} (present)"]
    assert not ccm_node.path(CONF).exists() and not ccm_node.path(AUTH).exists()
    assert ccm_node.path("/etc/memcached_other.conf").exists()  # the other one stays


def test_a_redis_port_is_refused_both_ways_naming_the_memcached_instance(
    ccm_node: CcmNode,
) -> None:
    ccm_node.put("unix-users", alice())
    ccm_node.put("redis-instances", redis(port=16400))

    # written after the Redis instance: its own rule
    refused = ccm_node.put("memcached-instances", memcached(port=16400), check=False)
    assert refused.returncode == 1
    assert "memcached-instances/1: port: 16400 is the port of redis-instances/1" in refused.stderr
    assert ccm_node.objects("memcached-instances") == []

    # written before: a Redis instance written later on its port is refused all the same
    ccm_node.put("memcached-instances", memcached(port=16411))
    twin = ccm_node.put("memcached-instances", memcached(2, "twin", port=16411), check=False)
    assert twin.returncode == 1  # unique among memcached instances too
    assert "memcached-instances/2: port: 16411 is already used by memcached-instances/1" in (
        twin.stderr
    )
    refused = ccm_node.put("redis-instances", redis(2, port=16411), check=False)
    assert refused.returncode == 1
    assert "memcached-instances/1: port: 16411 is the port of redis-instances/2" in refused.stderr
    assert [r["id"] for r in ccm_node.objects("redis-instances")] == [1]
    moved = ccm_node.put("redis-instances", redis(1, port=16411), check=False)  # a change too
    assert moved.returncode == 1 and "memcached-instances/1: port" in moved.stderr
    assert ccm_node.objects("redis-instances")[0]["port"] == 16400
    ccm_node.put("redis-instances", redis(2, port=16412))  # another port is fine


#: (field, hostile value, what the refusal says) for one object each
HOSTILE: list[tuple[str, Any, str]] = [
    ("name", "../etc", "a name of a-z"),
    ("name", "shop\n", "a name of a-z"),
    ("name", "x" * 65, "at most 64"),
    ("port", 80, "greater than or equal to 1024"),
    ("port", 2379, "used by the node itself"),
    ("port", "16411", "valid integer"),
    ("memory_mb", 1 << 40, "less than or equal to"),
    ("password", "short", "16 to 128 characters"),
    ("password", "with space-0123456789", "16 to 128 characters"),
    ("password", "line\nbreak-0123456789", "16 to 128 characters"),
]


def test_hostile_input_is_refused_naming_object_and_field_and_stores_nothing(
    ccm_node: CcmNode,
) -> None:
    """One write of every hostile object: the refusal names each object, its field and
    the reason, one line each, never echoes a password, and stores none of them."""
    objects = [memcached(10 + i, **{field: value}) for i, (field, value, _) in enumerate(HOSTILE)]
    refused = ccm_node.put("memcached-instances", objects, check=False)
    assert refused.returncode == 1
    lines = refused.stderr.splitlines()
    for i, (field, value, reason) in enumerate(HOSTILE):
        named = [line for line in lines if f"memcached-instances/{10 + i}: {field}:" in line]
        assert len(named) == 1 and reason in named[0], (field, value, refused.stderr)
        if field == "password":  # a refusal never echoes a secret, nor a part of it
            parts = [value, repr(value)[1:-1], *(w for w in value.split() if len(w) >= 8)]
            assert not [part for part in parts if part in refused.stderr], refused.stderr
    assert ccm_node.objects("memcached-instances") == []


def test_a_reference_to_a_missing_user_is_refused(ccm_node: CcmNode) -> None:
    refused = ccm_node.put("memcached-instances", memcached(unix_user_id=9), check=False)
    assert refused.returncode == 1
    assert "memcached-instances/1" in refused.stderr and "unix-users/9" in refused.stderr
    assert ccm_node.objects("memcached-instances") == []


def test_it_runs_on_memcached_nodes_with_the_tenants_account(ccm_node: CcmNode) -> None:
    """A registered node runs it only with the ``memcached`` group, and the tenant's
    account is made there although no web or cron group is."""
    ccm_node.put("nodes", {"id": 1, "hostname": "test", "groups": ["redis"]})
    ccm_node.put("unix-users", alice())
    ccm_node.put("memcached-instances", memcached())
    ccm_node.apply("--all")
    assert not ccm_node.path(CONF).exists()
    assert not _has_account(ccm_node.root, "alice")
    assert not [line for line in ccm_node.actions() if UNIT in line]

    ccm_node.put("nodes", {"id": 1, "hostname": "test", "groups": ["memcached"]})
    ccm_node.apply()
    assert _has_account(ccm_node.root, "alice")
    assert "\n-u alice\n" in ccm_node.read(CONF)
    assert [line for line in ccm_node.actions() if UNIT in line] == [
        f"enable {UNIT}",
        f"start {UNIT}",
    ]

    mark = len(ccm_node.actions())
    ccm_node.put("nodes", {"id": 1, "hostname": "test", "groups": ["redis"]})
    ccm_node.apply()
    assert since(ccm_node, mark)[:2] == [f"stop {UNIT} (present)", f"disable {UNIT} (present)"]
    assert not ccm_node.path(CONF).exists()


def _account_line(root: Path, name: str, file: str) -> list[str] | None:
    for line in (root / "etc" / file).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def _has_account(root: Path, name: str) -> bool:
    return _account_line(root, name, "passwd") is not None


def _gid(root: Path, group: str) -> int:
    fields = _account_line(root, group, "group")
    assert fields is not None, f"no group {group} on the node"
    return int(fields[2])
