"""``memcached-instances``: one authenticated memcached per object, run as its tenant.

The whole extension is this module and ``templates/``: the object type (registered by
being defined), its rules, and the configuration that runs on the nodes with the
``memcached`` group. It uses only ccm's public toolkit (``ccm.models``, ``ccm.plan``) and
one built-in type it reads (``redis-instances``).

On a node, per instance:

* ``/etc/memcached_<name>.conf`` (0644): one option per line, the form Debian's
  ``systemd-memcached-wrapper`` reads (``-p`` port, ``-m`` memory, ``-u`` the tenant's
  account, ``-Y`` the auth file); listening on 127.0.0.1 only, TCP only, the ASCII
  protocol only (memcached 1.6 authenticates ASCII clients from ``--auth-file``; the
  binary protocol would need SASL, which is off);
* ``/etc/memcached/<name>.auth`` (0640 root:<tenant>): ``<name>:<password>``, a secret
  (``ccm diff`` shows only fingerprints). memcached reads it *after* dropping to the
  tenant's account, so the tenant's group must read it; root owns it, so the tenant
  cannot rewrite it;
* the unit ``memcached@<name>``: enabled and started when the instance appears, restarted
  when its config, auth file or the template unit changes, stopped and disabled before
  its files go when the instance is deleted (or the node loses the group).

The template unit ``/etc/systemd/system/memcached@.service`` (checked with
``systemd-analyze verify`` whenever it changes, before anything starts) (Debian's wrapper on
``/etc/memcached_%i.conf``, with the sandboxing of Debian's ``memcached.service``) is
written on every node of the group: bookworm's memcached package ships only the single
``memcached.service``.

Rules: a port is 1024–65535, unique among memcached instances, never one the node uses
itself (the built-in list of ``redis-instances``), and never the port of a Redis
instance, both ways: the rule is this type's, and ``READS`` makes the writer run it when
a ``redis-instances`` object is written too, so a Redis instance written later on a
memcached port is refused, naming the memcached instance it would break. The instance
runs as its tenant's account (``unix_user_id``), so the configuration ``needs_accounts``:
the accounts are made on the memcached nodes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ccm.models import (
    CcmObject,
    ObjectId,
    ObjectsView,
    Ref,
    Secret,
    Snapshot,
    objects_of,
    pattern,
)
from ccm.plan.changes import Change, Check, File, Unit
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.redis_instances import NODE_PORTS, RedisInstance
from configurations.unix_users import UnixUser

#: the template unit every instance is one of
TEMPLATE_UNIT = "/etc/systemd/system/memcached@.service"
#: its check, before anything is started: systemd's own verification of the template
#: (through an instance name, which loads the template beside it)
UNIT_CHECK = "memcached_unit_check"
UNIT_CHECKS = {
    UNIT_CHECK: ("systemd-analyze", "verify", "{root}/etc/systemd/system/memcached@check.service")
}
#: what memcached reads unquoted from ``user:password`` lines and an ASCII ``set auth``
PASSWORD = r"[A-Za-z0-9._~+/=-]{16,128}"
NAME = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"


class MemcachedInstance(CcmObject):
    """A memcached of a tenant's own, on every node with the ``memcached`` group."""

    TYPE: ClassVar[str] = "memcached-instances"
    #: the unit and file names derive from it: never changed, never reused
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("name",)
    #: ``problems`` reads every Redis instance: writing one re-runs it (both ways)
    READS: ClassVar[tuple[str, ...]] = (RedisInstance.TYPE,)

    name: Annotated[
        str, Field(strict=True, max_length=64), pattern(NAME, "a name of a-z, 0-9 and inner -")
    ]
    unix_user_id: Annotated[ObjectId, Ref(UnixUser.TYPE)]
    port: int = Field(ge=1024, le=65535, strict=True)
    memory_mb: int = Field(ge=16, le=64 * 1024, strict=True)
    password: Annotated[
        str,
        Field(strict=True),
        pattern(PASSWORD, "16 to 128 characters of A-Z a-z 0-9 . _ ~ + / = -"),
        Secret,
    ]

    @field_validator("port")
    @classmethod
    def _not_the_nodes(cls, value: int) -> int:
        if value in NODE_PORTS:
            raise ValueError(f"port {value} is used by the node itself ({NODE_PORTS[value]})")
        return value

    @property
    def unit(self) -> str:
        return f"memcached@{self.name}"

    @property
    def config_path(self) -> str:
        return f"/etc/memcached_{self.name}.conf"

    @property
    def auth_path(self) -> str:
        return f"/etc/memcached/{self.name}.auth"

    def unique_keys(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port}

    def problems(self, view: ObjectsView) -> list[str]:
        """No Redis instance listens on this instance's port (every instance of both
        types runs on 127.0.0.1 of the same nodes)."""
        return [
            f"{self.describe()}: port: {self.port} is the port of {redis.describe()} "
            f"({redis.name}); a memcached and a Redis instance cannot share it"
            for redis in objects_of(view, RedisInstance)
            if redis.port == self.port
        ]


class MemcachedInstances(Configuration):
    name = "memcached-instances"
    subscribes = (MemcachedInstance.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users",)
    summary = "a memcached@<name> per instance, as its tenant, with an auth file"
    groups = ("memcached",)
    needs_accounts = True
    checks = UNIT_CHECKS

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        template = File(TEMPLATE_UNIT, render("memcached@.service.j2"))
        # a changed template unit is verified before any unit is (re)started
        changes: list[Change] = [template, Check(UNIT_CHECK, triggers=(TEMPLATE_UNIT,))]
        for instance in snapshot.all(MemcachedInstance):
            user = referenced(
                snapshot,
                UnixUser,
                instance.unix_user_id,
                referrer=instance,
                field="unix_user_id",
                configuration=self.name,
            )
            origin = (instance.describe(), user.describe())
            config = render("memcached.conf.j2", instance=instance, user=user)
            changes.append(File(instance.config_path, config, origin=origin))
            changes.append(
                File(
                    instance.auth_path,
                    render("memcached.auth.j2", instance=instance),
                    mode=0o640,
                    owner="root",
                    group=user.username,  # memcached reads it as the tenant
                    origin=origin,
                    secret=True,
                )
            )
            restart_on = (instance.config_path, instance.auth_path, TEMPLATE_UNIT)
            changes.append(Unit(instance.unit, restart_on=restart_on, origin=origin))
        return changes


CONFIGURATIONS = (MemcachedInstances,)
