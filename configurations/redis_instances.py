"""``redis-instances``: one Redis server per object, on the nodes with the ``redis`` group.

Writes ``/etc/redis/redis-<name>.conf`` for Debian's template unit ``redis-server@<name>``
(``ExecStart=/usr/bin/redis-server /etc/redis/redis-%i.conf``, as user ``redis``), from
``templates/redis-instances/redis.conf.j2``; mode 0640, root:redis, a secret (it holds the
password). A changed file restarts the instance; a removed object stops and disables the
instance before its file goes.

Every tenant on a node can reach every loopback port, so an instance is never open:
``password`` is required (DESIGN made it optional; a Redis without one on a shared node is
every tenant's) and is the ``default`` user's only way in. What a client could use to reach
beyond its own instance is switched off in the rendered file: ``CONFIG SET`` of the
protected settings (``dir``, ``dbfilename`` would let it write files as ``redis`` over the
other instances' data), ``DEBUG`` and ``MODULE LOAD`` (native code in the server).
Each instance keeps its data in ``/var/lib/redis/dump-<name>.rdb``.

Ports: 1024–65535, unique across instances (a write-time rule) and never one the node uses
itself (etcd, ccm's metrics, the web, mail and SQL servers, Redis's own default 6379, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import Secret, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, File, Unit
from ccm.plan.configuration import Configuration, Render

#: ports a node uses itself: an instance may not take one
NODE_PORTS: dict[int, str] = {
    2379: "etcd (clients)",
    2380: "etcd (peers)",
    9813: "ccm's metrics",
    3306: "MariaDB",
    5432: "PostgreSQL",
    6379: "Redis's own default instance",
    8080: "HTTP alternative",
    8443: "HTTPS alternative",
    9000: "PHP-FPM (TCP)",
    11211: "memcached",
    4190: "ManageSieve",
}

EvictionPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]

#: what Redis reads unquoted on a config line and on redis-cli's command line
REDIS_PASSWORD = r"[A-Za-z0-9._~+/=-]{16,128}"


class RedisInstance(CcmObject):
    """A Redis server of its own, on every node with the ``redis`` group."""

    TYPE: ClassVar[str] = "redis-instances"
    #: the instance's unit and file names derive from it: never changed, never reused
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("name",)
    name: Annotated[
        str,
        Field(strict=True, max_length=64),
        pattern(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", "a name of a-z, 0-9 and inner -"),
    ]
    port: int = Field(ge=1024, le=65535, strict=True)
    password: Annotated[
        str,
        Field(strict=True),
        pattern(REDIS_PASSWORD, "16 to 128 characters of A-Z a-z 0-9 . _ ~ + / = -"),
        Secret,
    ]
    memory_limit_mib: int = Field(ge=16, le=1024 * 1024, strict=True)
    max_databases: int = Field(default=16, ge=1, le=256, strict=True)
    eviction_policy: EvictionPolicy = "noeviction"

    @field_validator("port")
    @classmethod
    def _not_the_nodes(cls, value: int) -> int:
        if value in NODE_PORTS:
            raise ValueError(f"port {value} is used by the node itself ({NODE_PORTS[value]})")
        return value

    @property
    def unit(self) -> str:
        return f"redis-server@{self.name}"

    @property
    def config_path(self) -> str:
        return f"/etc/redis/redis-{self.name}.conf"

    def unique_keys(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port}


class RedisInstances(Configuration):
    name = "redis-instances"
    subscribes = (RedisInstance.TYPE,)
    summary = "a redis-server@<name> per instance: its config, restarted when it changes"
    groups = ("redis",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        changes: list[Change] = []
        for instance in snapshot.all(RedisInstance):
            changes.append(
                File(
                    instance.config_path,
                    render("redis-instances/redis.conf.j2", instance=instance),
                    mode=0o640,
                    owner="root",
                    group="redis",
                    origin=(instance.describe(),),
                    secret=True,  # requirepass
                )
            )
            # Debian's template unit: enabled, running, restarted when its file changes
            changes.append(
                Unit(
                    instance.unit, restart_on=(instance.config_path,), origin=(instance.describe(),)
                )
            )
        return changes
