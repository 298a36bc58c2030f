"""Typed changes: what a configuration intends, as values.

A configuration returns the FULL intended state as a list of these; it never reads the
node. The executor compares them with the node (under the root) to find what actually
has to happen, so the same list serves ``ccm diff`` and ``ccm apply``.

Paths are node paths (``/etc/nginx/…``); the executor places them under the root.
``triggers`` are node-path prefixes: a check, reload or command runs only when a file
or directory under one of them changed in this run.

``origin`` names the tenant objects a change renders (``("crons/3", "crons/4")``). When
the node refuses such a change for a reason the tenant caused (an account made by hand
under that name, a crontab the user wrote with ``crontab -e``), only those objects are
refused — reported, left as they are on the node — and the run goes on. A change with
no origin is the cluster's own (Dovecot's passwd-file): a conflict there fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class File:
    """A file with exactly this content, mode and ownership."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    origin: tuple[str, ...] = ()


@dataclass(frozen=True)
class Directory:
    """A directory with this mode and ownership. Never removed by ccm (it may hold data).

    ``owner_id``: the owner is the account ccm makes for that object id. An existing
    directory owned by any other uid (a deleted user's kept home, say) is refused, never
    handed over.
    """

    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"
    owner_id: int | None = None
    origin: tuple[str, ...] = ()


@dataclass(frozen=True)
class Account:
    """A unix account made by ccm (``useradd``/``usermod``/``userdel`` from settings).

    Its uid is ``accounts.uid_base + id``: the object id, not the name, is the account's
    identity, so a uid is never handed to another object and files keep their owner.
    """

    username: str
    home: str
    id: int
    shell: str = "/bin/bash"
    comment: str = ""
    origin: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    """A check run after the configuration's files are in place, before any reload.

    ``command`` names an argv setting (``nginx_check``); ``variables`` fill its
    placeholders (``{version}``); ``{root}`` is always available.
    """

    command: str
    triggers: tuple[str, ...]
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitAction:
    """Reload or restart a systemd unit; de-duplicated across a run (restart wins)."""

    unit: str
    action: Literal["reload", "restart"]
    triggers: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """Run an argv list (``{root}`` filled in) after the run's checks passed."""

    argv: tuple[str, ...]
    triggers: tuple[str, ...]


@dataclass(frozen=True)
class Playbook:
    """Run an Ansible playbook from ``playbooks/`` with these extra-vars."""

    playbook: str
    extra_vars: Mapping[str, Any] = field(default_factory=dict)


Change = File | Directory | Account | Check | UnitAction | Command | Playbook
