"""``redis-instances`` against a real ``redis-server`` (Debian's 7.0) on a free port.

The rendered file is what Debian's ``redis-server@<name>`` unit would run; the test starts
``redis-server`` on it directly (only the paths a unit provides — run directory, log, data
dir — are pointed into a temporary directory on the command line) and asks it over the
wire what the object said: the password is the only way in, ``maxmemory``, ``databases``
and the eviction policy are the object's, and a client cannot reach beyond its instance
(``CONFIG SET dir``, ``DEBUG``, ``MODULE LOAD`` are refused).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed
from ccm.models import Snapshot, parse_object
from ccm.plan.changes import File
from ccm.plan.templates import TemplateRenderer, package_templates
from configurations.redis_instances import RedisInstance, RedisInstances

PASSWORD = "s3cret-Pass.word~0123"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def instance(id: int = 1, name: str = "shop", port: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "port": port or 16379,
        "password": PASSWORD,
        "memory_limit_mib": 64,
        "max_databases": 4,
        "eviction_policy": "allkeys-lru",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rendered(obj: RedisInstance) -> File:
    render = TemplateRenderer(package_templates(RedisInstances), configuration="redis-instances")
    files = [c for c in RedisInstances().plan(Snapshot.of(1, [obj]), render) if isinstance(c, File)]
    assert [f.path for f in files] == [f"/etc/redis/redis-{obj.name}.conf"]
    return files[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, RedisInstance]]:
    """A real redis-server running the rendered file of an instance on a free port."""
    port = free_port()
    obj = RedisInstance.model_validate(instance(port=port))
    conf = tmp_path / "redis-shop.conf"
    conf.write_text(rendered(obj).content)
    process = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--supervised", "no", "--dir", str(tmp_path),
         "--pidfile", str(tmp_path / "redis.pid"), "--logfile", str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "NOAUTH" not in cli(port, "PING", password=None).stdout:
            if process.poll() is not None or time.monotonic() > deadline:
                log = tmp_path / "redis.log"
                pytest.fail(
                    f"redis-server did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.05)
        yield port, obj
    finally:
        process.terminate()
        process.wait(timeout=10)


def cli(
    port: int, *command: str, password: str | None = PASSWORD
) -> subprocess.CompletedProcess[str]:
    auth = ["-a", password, "--no-auth-warning"] if password is not None else []
    return subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *auth, *command],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip


def test_the_password_is_the_only_way_in(server: tuple[int, RedisInstance]) -> None:
    port, _ = server
    assert cli(port, "PING", password=None).stdout.startswith("NOAUTH")
    wrong = cli(port, "PING", password="wrong-password-123456")
    assert "WRONGPASS" in wrong.stderr
    assert wrong.stdout.startswith("NOAUTH")
    assert cli(port, "PING").stdout.strip() == "PONG"


def test_memory_databases_and_eviction_are_the_objects(server: tuple[int, RedisInstance]) -> None:
    port, obj = server
    assert cli(port, "CONFIG", "GET", "maxmemory").stdout.split() == [
        "maxmemory",
        str(obj.memory_limit_mib * 1024 * 1024),
    ]
    assert cli(port, "CONFIG", "GET", "databases").stdout.split() == ["databases", "4"]
    assert cli(port, "CONFIG", "GET", "maxmemory-policy").stdout.split() == [
        "maxmemory-policy",
        "allkeys-lru",
    ]
    assert cli(port, "-n", "3", "SET", "k", "v").stdout.strip() == "OK"
    assert "ERR" in cli(port, "-n", "4", "SET", "k", "v").stdout + cli(port, "SELECT", "4").stdout


def test_a_client_cannot_reach_beyond_its_instance(server: tuple[int, RedisInstance]) -> None:
    port, _ = server
    moved = cli(port, "CONFIG", "SET", "dir", "/tmp").stdout
    assert "protected config" in moved
    assert "DEBUG command not allowed" in cli(port, "DEBUG", "SLEEP", "0").stdout
    assert "MODULE command not allowed" in cli(port, "MODULE", "LOAD", "/x.so").stdout


def test_the_rendered_file_is_root_redis_0640_and_names_its_instance() -> None:
    file = rendered(RedisInstance.model_validate(instance()))
    assert (file.mode, file.owner, file.group) == (0o640, "root", "redis")
    assert file.origin == ("redis-instances/1",)
    assert f"requirepass {PASSWORD}\n" in file.content
    assert "dbfilename dump-shop.rdb\n" in file.content


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("password", "short", "16 to 128 characters"),
        ("password", "has a space in it, 1234", "16 to 128 characters"),
        ("password", "x" * 16 + "\n", "16 to 128 characters"),
        ("password", 'quote"inside-1234567', "16 to 128 characters"),
        ("port", 80, "greater than or equal to 1024"),
        ("port", 2379, "used by the node itself (etcd (clients))"),
        ("port", 6379, "Redis's own default instance"),
        ("port", 65536, "less than or equal to 65535"),
        ("name", "../etc", "a name of a-z"),
        ("name", "-shop", "a name of a-z"),
        ("name", "shop\n", "a name of a-z"),
        ("max_databases", 0, "greater than or equal to 1"),
        ("max_databases", 257, "less than or equal to 256"),
        ("eviction_policy", "lru", "Input should be"),
        ("memory_limit_mib", 1, "greater than or equal to 16"),
    ],
)
def test_bad_input_names_the_field_and_the_reason(field: str, value: Any, reason: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("redis-instances", instance(**{field: value}))
    (problem,) = refused.value.problems
    assert problem.startswith(f"redis-instances/1: {field}: ")
    assert reason in problem


def test_a_password_is_required() -> None:
    raw = instance()
    del raw["password"]
    with pytest.raises(ValidationFailed, match="redis-instances/1: password: Field required"):
        parse_object("redis-instances", raw)


def test_ports_and_names_are_unique_across_instances(store: ObjectStore) -> None:
    store.put("redis-instances", [instance(1, "shop", 16379)])
    with pytest.raises(ValidationFailed, match="port: 16379 is already used by redis-instances/1"):
        store.put("redis-instances", [instance(2, "blog", 16379)])
    with pytest.raises(ValidationFailed, match="name: 'shop' is already used by redis-instances/1"):
        store.put("redis-instances", [instance(2, "shop", 16380)])
    store.put("redis-instances", [instance(2, "blog", 16380)])
    assert len(store.list("redis-instances")) == 2
