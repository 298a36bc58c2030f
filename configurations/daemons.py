"""``daemons``: a tenant's long-running process as a systemd unit, on the nodes it names.

Writes ``/etc/systemd/system/ccm-daemon-<name>.service`` (0644 root) from
``templates/daemons/daemon.service.j2`` on every node in ``node_ids`` that has the
``daemons`` group, and nowhere else: changing ``node_ids`` moves the daemon in one rollout
(stopped on the node it leaves, started on the one it joins).

The unit runs ``command`` as the tenant's account, in its home, and cannot reach past it:
``ProtectSystem=strict`` (the whole tree read-only), ``ProtectHome=tmpfs`` with the home
bound back in (other tenants' homes are not even visible), a private ``/tmp``, no new
privileges, no capabilities, no devices, no kernel tunables or modules. ``MemoryMax=`` and
``CPUQuota=`` come from the object. ``Type=simple`` and ``Restart=on-failure``: starting the
unit never fails for a reason the tenant controls (a missing or crashing program is the
tenant's to see in its journal), so no accepted daemon can halt the rollout.

``command[0]`` is an absolute path inside the tenant's home or one of the interpreters in
``INTERPRETERS``; every argument is written double-quoted with systemd's escapes (``\\``,
``"``), and ``%`` and ``$`` doubled, so no argument is read as a specifier or a variable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import ObjectId, Ref, pattern, safe_absolute_path
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, File, Unit
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.unix_users import UnixUser

UNIT_DIR = "/etc/systemd/system/"
#: programs outside the tenant's home a daemon may start (with its script as an argument)
INTERPRETERS = frozenset(
    {
        "/bin/sh",
        "/bin/bash",
        "/usr/bin/python3",
        "/usr/bin/perl",
        "/usr/bin/node",
        "/usr/bin/nodejs",
        "/usr/bin/ruby",
        "/usr/bin/php",
        *(f"/usr/bin/php{major}.{minor}" for major in (7, 8) for minor in range(10)),
    }
)
MAX_ARGUMENTS = 64
MAX_ARGUMENT_BYTES = 1024
_ARGUMENT = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,1024}"


def _arguments(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("at least the program to run")
    for argument in value:
        if len(argument.encode()) > MAX_ARGUMENT_BYTES:
            raise ValueError(f"an argument holds more than {MAX_ARGUMENT_BYTES} bytes")
    program = value[0]
    safe_absolute_path(program)  # no quoting, no systemd prefix (@ - : + !) before it
    return value


class Daemon(CcmObject):
    """A tenant's process kept running by systemd on the nodes in ``node_ids``."""

    TYPE: ClassVar[str] = "daemons"
    #: the unit's name derives from it: never changed, never reused
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("name",)
    name: Annotated[
        str,
        Field(strict=True, max_length=64),
        pattern(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", "a name of a-z, 0-9 and inner -"),
    ]
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    command: list[
        Annotated[str, Field(strict=True), pattern(_ARGUMENT, "text without control characters")]
    ] = Field(max_length=MAX_ARGUMENTS)
    node_ids: list[Annotated[ObjectId, Ref("nodes")]] = Field(min_length=1, max_length=100)
    memory_limit_mib: int | None = Field(default=None, ge=16, le=1024 * 1024, strict=True)
    cpu_limit_percent: int | None = Field(default=None, ge=1, le=100 * 1024, strict=True)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        return _arguments(value)

    @field_validator("node_ids")
    @classmethod
    def _distinct_nodes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("each node may be named once")
        return value

    @property
    def unit(self) -> str:
        return f"ccm-daemon-{self.name}.service"

    def unique_keys(self) -> dict[str, Any]:
        return {"name": self.name}

    def problems(self, view: ObjectsView) -> list[str]:
        """The program is an interpreter ccm knows or lies inside the tenant's home."""
        user = view.lookup(UnixUser.TYPE, self.unix_user_id)
        program = self.command[0]
        if not isinstance(user, UnixUser) or program in INTERPRETERS:
            return []
        if program.startswith(user.home + "/"):
            return []
        return [
            f"{self.describe()}: command: {program!r} is neither inside the home of "
            f"{user.username!r} ({user.home}/) nor one of the interpreters "
            f"{', '.join(sorted(INTERPRETERS)[:8])}, …"
        ]


def systemd_quote(argument: str) -> str:
    """One ``ExecStart=`` word that systemd reads back as exactly ``argument``: double
    quotes with ``\\`` and ``"`` escaped, ``%`` (a specifier) and ``$`` (a variable)
    doubled. The model already refuses control characters."""
    escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


@dataclass(frozen=True)
class DaemonView:
    """What ``daemon.service.j2`` renders for one daemon."""

    id: int
    name: str
    username: str
    home: str
    exec_start: str
    memory_max: str | None
    cpu_quota: str | None


class Daemons(Configuration):
    name = "daemons"
    subscribes = (Daemon.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users",)
    summary = "tenants' processes as ccm-daemon-<name> units on the nodes they name"
    groups = ("daemons",)
    needs_accounts = True

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        node = snapshot.this_node()
        changes: list[Change] = []
        for daemon in snapshot.all(Daemon):
            if node is None or node.id not in daemon.node_ids:
                continue  # placed elsewhere: its unit here (if any) is removed
            user = referenced(
                snapshot,
                UnixUser,
                daemon.unix_user_id,
                referrer=daemon,
                field="unix_user_id",
                configuration=self.name,
            )
            view = DaemonView(
                id=daemon.id,
                name=daemon.name,
                username=user.username,
                home=user.home,
                exec_start=" ".join(systemd_quote(argument) for argument in daemon.command),
                memory_max=f"{daemon.memory_limit_mib}M" if daemon.memory_limit_mib else None,
                cpu_quota=f"{daemon.cpu_limit_percent}%" if daemon.cpu_limit_percent else None,
            )
            origin = (daemon.describe(), user.describe())
            unit_file = UNIT_DIR + daemon.unit
            changes.append(
                File(unit_file, render("daemons/daemon.service.j2", daemon=view), origin=origin)
            )
            # enabled and running; a changed unit file restarts it (after daemon-reload)
            changes.append(Unit(daemon.unit, unit_file=unit_file, origin=origin))
        return changes
