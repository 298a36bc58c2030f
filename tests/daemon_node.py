"""One node for the daemon's tests: a real temporary root, a small configuration, and the
node's settings against the test's etcd prefix.

``Sites`` writes one file per ``unix-users`` object under ``/etc/sites/``, checks it,
reloads ``sites`` and probes it. Its commands are harmless real commands that log to
``ROOT/actions.log`` (``noderoot.actions``). The check fails while ``ROOT/broken`` exists
(:func:`break_check`), so a test breaks a node, and mends it, without a new write: the
same revision then applies after ``ccm resume``. Its probe fails once ``ROOT/unhealthy``
exists (:func:`make_unhealthy`).

Every command a run starts goes through :class:`Commands`, a real runner (the commands
run) that lets a test act at an exact point of a run: ``on("probe", f)`` calls ``f``
just before the probe runs, on the test's own thread of control, no sleeping.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.lock import lock_queue
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import Snapshot
from ccm.plan.ansible import PlaybookPreview, fingerprint
from ccm.plan.changes import Change, Check, File, Playbook, Probe, UnitAction
from ccm.plan.commands import CommandResult, run_command
from ccm.plan.configuration import Configuration, Render
from ccm.settings import EtcdSettings, Settings
from ccm.testing.noderoot import logging_command, node_settings, seed_root
from configurations.unix_users import UnixUser

SITES = "/etc/sites/"


class Sites(Configuration):
    """A file per user (a file there by hand refuses that user), a check, a reload, a probe."""

    name = "sites"
    subscribes = ("unix-users",)
    checks: ClassVar = {"sites_check": ("true",)}
    probes: ClassVar = {"sites_probe": ("true",)}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        users = snapshot.all(UnixUser)
        return [
            *(
                File(f"{SITES}{u.username}.conf", f"{u.username}\n", origin=(u.describe(),))
                for u in users
            ),
            Check("sites_check", triggers=(SITES,)),
            UnitAction("sites", "reload", triggers=(SITES,)),
            Probe("sites_probe", triggers=(SITES,)),
        ]


def site(root: Path, username: str) -> Path:
    return root / SITES.lstrip("/") / f"{username}.conf"


def make_unhealthy(root: Path) -> None:
    """Make the node's probe fail from now on."""
    (root / "unhealthy").write_text("unhealthy\n")


def break_check(root: Path, broken: bool = True) -> None:
    """Make the node's check fail (``broken``) or pass again."""
    mark = root / "broken"
    if broken:
        mark.write_text("broken\n")
    else:
        mark.unlink(missing_ok=True)


def settings_for(root: Path, etcd: EtcdSettings, name: str = "web01", **overrides: Any) -> Settings:
    check = (
        'if [ -e "$1/broken" ]; then echo "sites: broken config" >&2; exit 1; fi; '
        'echo check >> "$1/actions.log"'
    )
    probe = (
        'if [ -e "$1/unhealthy" ]; then echo "sites: no answer"; exit 1; fi; '
        'echo "probe sites" >> "$1/actions.log"'
    )
    commands = {"reload_unit": logging_command(root, "reload {unit}")}
    commands |= overrides.pop("commands", {})
    return node_settings(
        root,
        logged_checks=(),
        passing_probes=(),
        node=name,
        etcd=etcd.model_dump(),
        commands=commands,
        checks={"sites_check": ["sh", "-c", check, "sh", "{root}"]},
        probes={"sites_probe": ["sh", "-c", probe, "sh", "{root}"]},
        **{"reconcile_interval": 0.0, "rollout": {"probe_timeout": 0.0}, **overrides},
    )


def new_root(base: Path, name: str = "web01") -> Path:
    return seed_root(base / name)


class Commands:
    """The node's command runner: runs each command for real; a hook registered with
    :meth:`on` runs first when a command's argv mentions its word."""

    def __init__(self) -> None:
        self.hooks: list[tuple[str, Callable[[], None]]] = []
        self.ran: list[list[str]] = []

    def on(self, word: str, hook: Callable[[], None]) -> None:
        self.hooks.append((word, hook))

    def __call__(self, argv: list[str], *, timeout: float) -> CommandResult:
        self.ran.append(argv)
        for word, hook in list(self.hooks):
            if any(word in part for part in argv):
                self.hooks.remove((word, hook))
                hook()
        return run_command(argv, timeout=timeout)


def engine_with(
    commands: Commands, *configurations: type[Configuration]
) -> Callable[[Settings], Engine]:
    """An engine factory (as the daemon takes) for ``configurations`` (default: Sites)
    whose commands go through ``commands``."""

    def build(settings: Settings) -> Engine:
        return Engine(Registry(configurations or [Sites]), settings, runner=commands)

    return build


def revoke_lock_lease(client: EtcdClient, prefix: str) -> Callable[[], None]:
    """A hook that revokes the lease of the lock's holder: the lock is lost mid-run."""

    def revoke() -> None:
        holder = lock_queue(client, prefix)[0]
        client.revoke_lease(holder.lease_id)

    return revoke


class NotifySocket:
    """The systemd end of ``NOTIFY_SOCKET``: an abstract datagram socket the test reads."""

    def __init__(self) -> None:
        self.name = f"ccm-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name}

    def received(self) -> list[str]:
        """Every message sent so far (without waiting)."""
        found = []
        while True:
            try:
                found.append(self.sock.recv(4096, socket.MSG_DONTWAIT).decode())
            except BlockingIOError:
                return found

    def next(self, timeout: float) -> str:
        """The next message, waiting at most ``timeout`` seconds for it."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        finally:
            self.sock.settimeout(None)

    def close(self) -> None:
        self.sock.close()


class MarkerPlaybooks:
    """A playbook executor without Ansible: each run appends to ROOT/playbooks.log."""

    def __init__(self, root: Path, playbooks_dir: Path) -> None:
        self.root = root
        self.playbooks_dir = playbooks_dir

    def __call__(self, configuration: str, playbook: Playbook) -> None:
        with open(self.root / "playbooks.log", "a") as log:
            log.write(f"{configuration} {playbook.playbook} {dict(playbook.extra_vars)}\n")

    def check(self, configuration: str, playbook: Playbook) -> PlaybookPreview:
        return PlaybookPreview(configuration, playbook.playbook)

    def fingerprint(self, playbook: Playbook) -> str:
        return fingerprint(playbook, self.playbooks_dir)

    def runs(self) -> list[str]:
        log = self.root / "playbooks.log"
        return log.read_text().splitlines() if log.exists() else []
