"""Units with a lifecycle, against the real executor on a temporary root.

Every unit command (start, stop, enable, disable, daemon-reload, restart, reload) is a
real ``sh`` that appends its argv to ROOT/actions.log, so each test asserts the exact
order: daemon-reload before a start; stop and disable before the unit file goes; no
restart of a removed unit; one restart for a changed config; a failed start fails the
run and puts every file back. The two shapes are those of the types built on this: a
Redis instance (a config file and Debian's ``redis-server@<name>``, no unit file of
ours) and a customer daemon (our own unit file ``ccm-daemon-<name>.service``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from noderoot import actions, node_settings, seed_root

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ActionFailed, CheckFailed, CommandFailed, LifecycleFailed, PlanError
from ccm.models import Snapshot
from ccm.plan.changes import Change, Check, File, Probe, Unit, UnitAction
from ccm.plan.commands import CommandResult, run_command
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import describe_json, describe_text
from ccm.plan.executor import RunReport
from ccm.settings import CommandSettings, Settings

REDIS = "redis-server@shop"
REDIS_CONF = "/etc/redis/redis-shop.conf"
DAEMON = "ccm-daemon-shop.service"
DAEMON_FILE = f"/etc/systemd/system/{DAEMON}"


class Service(Configuration):
    name = "service"
    checks: ClassVar = {"service_check": ("true",)}
    probes: ClassVar = {"service_probe": ("true",)}
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Service.changes


class Other(Configuration):
    """A second configuration, to declare a unit the first one manages."""

    name = "other"
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Other.changes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Service.changes = []
    Other.changes = []
    return seed_root(tmp_path / "root")


def settings_for(root: Path, **overrides: Any) -> Settings:
    return node_settings(root, logged_checks=(), passing_probes=(), **overrides)


def engine(root: Path, runner: Any = run_command, **overrides: Any) -> Engine:
    return Engine(Registry([Service, Other]), settings_for(root, **overrides), runner=runner)


def apply(root: Path, revision: int, **overrides: Any) -> RunReport:
    return engine(root, **overrides).apply(Snapshot(revision))


def manifest_of(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    return data


def units_of(root: Path, configuration: str = "service") -> dict[str, Any]:
    entry = manifest_of(root)["configurations"].get(configuration, {})
    units: dict[str, Any] = entry.get("units", {})
    return units


def redis(config: str = "port 6380\n", **unit: Any) -> list[Change]:
    """A Redis instance: its config file and Debian's template unit, restarted on change."""
    return [File(REDIS_CONF, config), Unit(REDIS, restart_on=(REDIS_CONF,), **unit)]


def daemon(command: str = "/home/shop/bin/worker", **unit: Any) -> list[Change]:
    """A customer daemon: our own unit file, and the unit."""
    text = f"[Service]\nExecStart={command}\n"
    return [File(DAEMON_FILE, text), Unit(DAEMON, unit_file=DAEMON_FILE, **unit)]


def logged(root: Path, script: str) -> list[str]:
    """``sh -c script`` with ROOT as $1 and the unit as $2: it may log and fail."""
    return ["sh", "-c", script, "sh", str(root), "{unit}"]


# -- bringing a unit up --------------------------------------------------------------------


def test_a_new_daemon_is_daemon_reloaded_then_enabled_and_started_once(root: Path) -> None:
    Service.changes = daemon()
    report = apply(root, 1)
    expected = ["daemon-reload", f"enable {DAEMON}", f"start {DAEMON}"]
    assert actions(root) == expected
    assert report.actions == expected
    assert report.changed == {"service": [DAEMON_FILE, f"unit:{DAEMON}"]}
    assert units_of(root) == {DAEMON: {"enabled": True, "running": True}}
    apply(root, 2)  # nothing changed: nothing runs
    assert actions(root) == expected


def test_a_new_redis_instance_is_enabled_and_started_without_a_daemon_reload(
    root: Path,
) -> None:
    Service.changes = redis()
    apply(root, 1)
    assert actions(root) == [f"enable {REDIS}", f"start {REDIS}"]


def test_a_changed_config_restarts_a_running_unit_once(root: Path) -> None:
    Service.changes = redis()
    apply(root, 1)
    # a reload of the same unit, triggered by the same file, is absorbed by the restart
    Service.changes = [*redis("port 6381\n"), UnitAction(REDIS, "reload", (REDIS_CONF,))]
    report = apply(root, 2)
    assert actions(root)[2:] == [f"restart {REDIS}"]
    assert report.actions == [f"restart {REDIS}"]
    assert report.changed == {"service": [REDIS_CONF]}


def test_a_changed_unit_file_is_daemon_reloaded_before_the_restart(root: Path) -> None:
    Service.changes = daemon()
    apply(root, 1)
    Service.changes = daemon("/home/shop/bin/worker --fast")
    apply(root, 2)
    assert actions(root)[3:] == ["daemon-reload", f"restart {DAEMON}"]


def test_a_start_absorbs_a_reload_of_a_unit_that_was_not_running(root: Path) -> None:
    """A reload of a unit that is not running would fail: its start reads the files."""
    Service.changes = [*redis(), UnitAction(REDIS, "reload", (REDIS_CONF,))]
    report = apply(root, 1)
    assert report.actions == [f"enable {REDIS}", f"start {REDIS}"]
    assert actions(root) == report.actions


def test_a_restart_absorbs_a_start_a_crash_left_pending(root: Path) -> None:
    """The crashed start may have run with the old config: only a restart is sure to
    load the new one."""
    Service.changes = redis()
    with pytest.raises(Crash):
        engine(root, crashing_at("start")).apply(Snapshot(1))
    Service.changes = redis("port 6381\n")
    report = apply(root, 2)
    assert report.actions == [f"restart {REDIS}"]
    assert actions(root) == [f"enable {REDIS}", f"restart {REDIS}"]


def test_an_unchanged_unit_whose_other_files_change_is_not_restarted(root: Path) -> None:
    Service.changes = [*redis(), File("/etc/elsewhere.conf", "a\n")]
    apply(root, 1)
    Service.changes = [*redis(), File("/etc/elsewhere.conf", "b\n")]
    apply(root, 2)
    assert actions(root) == [f"enable {REDIS}", f"start {REDIS}"]


def test_a_unit_declared_running_but_not_enabled_is_started_only(root: Path) -> None:
    Service.changes = redis(enabled=False)
    apply(root, 1)
    assert actions(root) == [f"start {REDIS}"]
    assert units_of(root) == {REDIS: {"enabled": False, "running": True}}


def test_a_unit_new_to_ccm_and_declared_stopped_is_left_alone(root: Path) -> None:
    """ccm never stops (or disables) a unit it did not start."""
    Service.changes = redis(enabled=False, running=False)
    report = apply(root, 1)
    assert actions(root) == []
    assert report.changed == {"service": [REDIS_CONF]}
    assert units_of(root) == {REDIS: {"enabled": False, "running": False}}


# -- taking a unit down --------------------------------------------------------------------

#: stop and disable log whether the daemon's unit file was still there
_WITH_FILE = (
    'if [ -e "$1/etc/systemd/system/$2" ]; then where=with; else where=without; fi; '
    'echo "{verb} $2 $where its unit file" >> "$1/actions.log"'
)


def test_a_removed_daemon_is_stopped_and_disabled_before_its_unit_file_goes(
    root: Path,
) -> None:
    commands = {
        "stop_unit": logged(root, _WITH_FILE.format(verb="stop")),
        "disable_unit": logged(root, _WITH_FILE.format(verb="disable")),
    }
    Service.changes = daemon()
    apply(root, 1, commands=commands)
    Service.changes = []  # its object deleted: nothing declares it any more
    report = apply(root, 2, commands=commands)
    assert actions(root)[3:] == [
        f"stop {DAEMON} with its unit file",
        f"disable {DAEMON} with its unit file",
        "daemon-reload",
    ]
    assert report.actions == [f"stop {DAEMON}", f"disable {DAEMON}", "daemon-reload"]
    assert report.changed == {"service": [DAEMON_FILE, f"unit:{DAEMON}"]}
    assert not (root / DAEMON_FILE.lstrip("/")).exists()
    assert units_of(root) == {}
    apply(root, 3, commands=commands)  # and only once
    assert len(actions(root)) == 6


def test_a_removed_redis_instance_is_stopped_and_disabled_and_never_restarted(
    root: Path,
) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = redis("port 6381\n")  # its config file now records the restart
    apply(root, 2)
    assert manifest_of(root)["configurations"]["service"]["file_actions"] == {
        REDIS_CONF: [{"configuration": "service", "unit": REDIS, "action": "restart"}]
    }
    Service.changes = []
    report = apply(root, 3)
    assert actions(root)[3:] == [f"stop {REDIS}", f"disable {REDIS}"]
    assert report.actions == [f"stop {REDIS}", f"disable {REDIS}"]
    assert not (root / REDIS_CONF.lstrip("/")).exists()


def test_a_restart_left_pending_for_a_unit_then_removed_is_dropped(root: Path) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = [*redis("port 6381\n"), File("/etc/other.conf", "x\n")]
    failing = logged(root, 'echo "restart $2" >> "$1/actions.log"; exit 3')
    with pytest.raises(LifecycleFailed):
        apply(root, 2, commands={"restart_unit": failing})
    # a crash would leave the restart pending: put it there as a crash would
    path = root / "var/lib/ccm/manifest.json"
    data = manifest_of(root)
    data["pending_actions"] = [{"configuration": "service", "unit": REDIS, "action": "restart"}]
    path.write_text(json.dumps(data))
    Service.changes = []
    planned = engine(root).plan(Snapshot(3))
    shown = describe_text(
        planned.operations, pending=planned.manifest.pending_actions, manifest=planned.manifest
    )
    assert "restart" not in shown
    apply(root, 3)
    assert actions(root)[-2:] == [f"stop {REDIS}", f"disable {REDIS}"]
    assert manifest_of(root)["pending_actions"] == []


def test_a_unit_no_longer_declared_by_a_configuration_that_plans_nothing_is_taken_down(
    root: Path,
) -> None:
    """A daemon moved to another node: its configuration plans nothing here any more."""
    Service.changes = daemon()
    apply(root, 1)
    Service.changes = []
    planned = engine(root).plan(Snapshot(2))
    assert describe_text(planned.operations) == (
        "# service\n"
        f"- unit {DAEMON} (stop, disable: no longer declared)\n"
        f"- file {DAEMON_FILE}\n"
        f"--- a{DAEMON_FILE}\n"
        "+++ /dev/null\n"
        "@@ -1,2 +0,0 @@\n"
        "-[Service]\n"
        "-ExecStart=/home/shop/bin/worker\n"
        "# actions\n"
        "! daemon-reload\n"
    )


def test_every_unit_no_longer_declared_is_taken_down_past_those_still_declared(
    root: Path,
) -> None:
    Service.changes = [Unit("a.service"), Unit("b.service"), Unit("c.service")]
    apply(root, 1)
    Service.changes = [Unit("b.service")]
    apply(root, 2)
    assert actions(root)[6:] == [
        "stop a.service",
        "disable a.service",
        "stop c.service",
        "disable c.service",
    ]
    assert units_of(root) == {"b.service": {"enabled": True, "running": True}}


def test_a_unit_declared_stopped_is_stopped_and_not_restarted_by_its_config_change(
    root: Path,
) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = redis("port 6381\n", running=False)
    apply(root, 2)
    assert actions(root)[2:] == [f"stop {REDIS}"]
    assert units_of(root) == {REDIS: {"enabled": True, "running": False}}
    Service.changes = redis("port 6381\n", running=True)  # and up again: a start
    apply(root, 3)
    assert actions(root)[3:] == [f"start {REDIS}"]


def test_a_unit_declared_disabled_is_disabled_and_keeps_running(root: Path) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = redis(enabled=False)
    apply(root, 2)
    assert actions(root)[2:] == [f"disable {REDIS}"]
    assert units_of(root) == {REDIS: {"enabled": False, "running": True}}
    Service.changes = redis()
    apply(root, 3)
    assert actions(root)[3:] == [f"enable {REDIS}"]


def test_a_unit_neither_running_nor_enabled_leaves_no_command_when_removed(
    root: Path,
) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = redis(enabled=False, running=False)
    apply(root, 2)
    Service.changes = []
    apply(root, 3)
    assert actions(root)[2:] == [f"stop {REDIS}", f"disable {REDIS}"]
    assert units_of(root) == {}


def test_a_refused_object_keeps_its_unit_running(root: Path) -> None:
    Service.changes = [File("/etc/redis/shop.conf", "a\n", origin=("redis-instances/1",))]
    Service.changes += [Unit(REDIS, origin=("redis-instances/1",))]
    apply(root, 1)
    # now refused on this node (a hand-made file in the way of another of its changes)
    (root / "etc/redis/taken.conf").write_text("hand-made\n")
    Service.changes = [
        File("/etc/redis/taken.conf", "b\n", origin=("redis-instances/1",)),
        File("/etc/redis/shop.conf", "a\n", origin=("redis-instances/1",)),
        Unit(REDIS, origin=("redis-instances/1",)),
    ]
    report = apply(root, 2)
    assert "redis-instances/1" in report.refused
    assert actions(root) == [f"enable {REDIS}", f"start {REDIS}"]
    assert units_of(root) == {REDIS: {"enabled": True, "running": True}}


def test_an_action_on_a_unit_the_run_takes_down_is_dropped(root: Path) -> None:
    Service.changes = [*redis(), File("/etc/shared.conf", "a\n")]
    apply(root, 1)
    Service.changes = [
        *redis(enabled=False, running=False),
        File("/etc/shared.conf", "b\n"),
        UnitAction(REDIS, "reload", ("/etc/shared.conf",)),
        UnitAction("nginx", "reload", ("/etc/shared.conf",)),
    ]
    apply(root, 2)
    assert actions(root)[2:] == [f"stop {REDIS}", f"disable {REDIS}", "reload nginx"]


# -- failures and the restore ----------------------------------------------------------------


def test_a_failed_start_fails_the_run_and_restores_every_file(root: Path) -> None:
    failing = logged(root, 'echo "start $2" >> "$1/actions.log"; echo "no such binary"; exit 5')
    Service.changes = [*daemon(), File("/etc/shop/worker.conf", "x\n")]
    with pytest.raises(LifecycleFailed) as failed:
        apply(root, 1, commands={"start_unit": failing})
    assert failed.value.configuration == "service"
    assert (failed.value.returncode, failed.value.output) == (5, "no such binary\n")
    assert "every change of the run was restored" in str(failed.value)
    assert actions(root) == [
        "daemon-reload",
        f"enable {DAEMON}",
        f"start {DAEMON}",
        # mirror order: taken back while the unit file is there, then systemd re-reads
        f"stop {DAEMON}",
        f"disable {DAEMON}",
        "daemon-reload",
    ]
    assert not (root / DAEMON_FILE.lstrip("/")).exists()
    assert not (root / "etc/shop/worker.conf").exists()
    manifest = manifest_of(root)
    assert manifest["pending_actions"] == []
    assert manifest["configurations"] == {}
    apply(root, 2)  # fixed: the next run does it all again
    assert actions(root)[6:] == ["daemon-reload", f"enable {DAEMON}", f"start {DAEMON}"]


def test_a_failed_enable_names_the_configuration_and_is_taken_back_with_the_root(
    root: Path,
) -> None:
    commands = {
        "enable_unit": logged(root, 'echo "enable $2" >> "$1/actions.log"; exit 2'),
        "disable_unit": logged(root, 'echo "disable $2 in {root}" >> "$1/actions.log"'),
    }
    Service.changes = redis()
    with pytest.raises(LifecycleFailed) as failed:
        apply(root, 1, commands=commands)
    assert (failed.value.configuration, failed.value.returncode) == ("service", 2)
    assert actions(root) == [f"enable {REDIS}", f"disable {REDIS} in {root}"]


def test_a_started_unit_is_stopped_with_the_root_filled_in_when_the_run_is_restored(
    root: Path,
) -> None:
    commands = {"stop_unit": logged(root, 'echo "stop $2 in {root}" >> "$1/actions.log"')}
    Service.changes = [*redis(), Probe("service_probe", ("/etc/",))]
    with pytest.raises(Exception, match="kept failing"):
        apply(
            root,
            1,
            commands=commands,
            probes={"service_probe": ["false"]},
            rollout={"probe_timeout": 0},
        )
    assert actions(root) == [
        f"enable {REDIS}",
        f"start {REDIS}",
        f"stop {REDIS} in {root}",
        f"disable {REDIS}",
    ]
    # the manifest is as before the run: the next run starts the unit again
    assert manifest_of(root)["configurations"] == {}
    Service.changes = redis()
    apply(root, 2)
    assert actions(root)[4:] == [f"enable {REDIS}", f"start {REDIS}"]


def test_a_failed_restart_puts_the_old_config_back_and_restarts_with_it(root: Path) -> None:
    restart = logged(
        root,
        'echo "restart $2" >> "$1/actions.log"; ! grep -q bad "$1/etc/redis/redis-shop.conf"',
    )
    Service.changes = redis("port 6380\n")
    apply(root, 1, commands={"restart_unit": restart})
    Service.changes = redis("port 6380\nbad\n")
    with pytest.raises(LifecycleFailed) as failed:
        apply(root, 2, commands={"restart_unit": restart})
    assert failed.value.returncode == 1
    assert (root / REDIS_CONF.lstrip("/")).read_text() == "port 6380\n"
    assert actions(root)[2:] == [f"restart {REDIS}", f"restart {REDIS}"]
    assert units_of(root) == {REDIS: {"enabled": True, "running": True}}
    assert manifest_of(root)["pending_actions"] == []


def test_a_failed_reload_of_an_unmanaged_unit_still_keeps_the_files_pending(
    root: Path,
) -> None:
    """Not every action restores the run: a reload of nginx (no Unit of this run) keeps
    the checked files and stays pending, as before units had a lifecycle."""
    Service.changes = [File("/etc/web.conf", "a\n"), UnitAction("nginx", "reload", ("/etc/",))]
    with pytest.raises(ActionFailed):
        apply(root, 1, commands={"reload_unit": ["false"]})
    assert (root / "etc/web.conf").read_text() == "a\n"
    assert manifest_of(root)["pending_actions"] == [
        {"configuration": "service", "unit": "nginx", "action": "reload"}
    ]


def test_a_failed_check_after_a_stop_starts_and_enables_the_unit_again(root: Path) -> None:
    Service.changes = daemon()
    apply(root, 1)
    Service.changes = [
        File("/etc/shop/site.conf", "x\n"),
        Check("service_check", ("/etc/shop/",)),
    ]
    with pytest.raises(CheckFailed):
        apply(root, 2, checks={"service_check": ["false"]})
    assert actions(root)[3:] == [
        f"stop {DAEMON}",
        f"disable {DAEMON}",
        f"enable {DAEMON}",
        f"start {DAEMON}",
    ]
    assert (root / DAEMON_FILE.lstrip("/")).exists()
    assert units_of(root) == {DAEMON: {"enabled": True, "running": True}}


def test_a_failed_probe_after_a_removal_brings_the_unit_back_after_a_daemon_reload(
    root: Path,
) -> None:
    Service.changes = daemon()
    apply(root, 1)
    Service.changes = [File("/etc/shop/site.conf", "x\n"), Probe("service_probe", ("/etc/",))]
    with pytest.raises(Exception, match="kept failing"):
        apply(root, 2, probes={"service_probe": ["false"]}, rollout={"probe_timeout": 0})
    assert actions(root)[3:] == [
        f"stop {DAEMON}",
        f"disable {DAEMON}",
        "daemon-reload",
        # restored: the unit file is back, systemd re-reads it, then the unit comes back
        "daemon-reload",
        f"enable {DAEMON}",
        f"start {DAEMON}",
    ]
    assert (root / DAEMON_FILE.lstrip("/")).exists()
    assert not (root / "etc/shop/site.conf").exists()
    assert units_of(root) == {DAEMON: {"enabled": True, "running": True}}


def test_a_failed_stop_fails_the_run_and_keeps_the_unit_file(root: Path) -> None:
    Service.changes = daemon()
    apply(root, 1)
    Service.changes = []
    with pytest.raises(CommandFailed, match="exit 1") as failed:
        apply(root, 2, commands={"stop_unit": ["false"]})
    assert failed.value.configuration == "service"
    assert (root / DAEMON_FILE.lstrip("/")).exists()
    assert units_of(root) == {DAEMON: {"enabled": True, "running": True}}
    assert actions(root) == ["daemon-reload", f"enable {DAEMON}", f"start {DAEMON}"]


def watching_the_manifest(root: Path, seen: list[tuple[str, Any]]) -> Any:
    """A runner that notes, as each command starts, what the manifest says of the units."""

    def runner(argv: list[str], *, timeout: float) -> CommandResult:
        seen.append((argv[-1].split()[0], units_of(root)))
        return run_command(argv, timeout=timeout)

    return runner


def test_each_stop_and_disable_is_in_the_manifest_before_the_next_command(root: Path) -> None:
    """A crash between two commands never leaves the manifest behind the node: the next
    run does not disable a unit whose file is gone, nor start one ccm stopped."""
    Service.changes = daemon()
    apply(root, 1)
    Service.changes = [File("/etc/shop/site.conf", "x\n"), Check("service_check", ("/etc/",))]
    seen: list[tuple[str, Any]] = []
    checks = {"service_check": ["sh", "-c", "exit 0", "check"]}
    engine(root, watching_the_manifest(root, seen), checks=checks).apply(Snapshot(2))
    assert seen[:3] == [
        ("stop", {DAEMON: {"enabled": True, "running": True}}),
        ("disable", {DAEMON: {"enabled": True, "running": False}}),
        ("check", {DAEMON: {"enabled": False, "running": False}}),
    ]


def test_a_unit_taken_down_gets_the_root_in_its_commands(root: Path) -> None:
    Service.changes = redis()
    apply(root, 1)
    commands = {
        "stop_unit": logged(root, 'echo "stop $2 in {root}" >> "$1/actions.log"'),
        "disable_unit": logged(root, 'echo "disable $2 in {root}" >> "$1/actions.log"'),
    }
    Service.changes = []
    apply(root, 2, commands=commands)
    assert actions(root)[2:] == [f"stop {REDIS} in {root}", f"disable {REDIS} in {root}"]


class Crash(BaseException):
    """The process dies here (a SIGKILL, a power cut): nothing after it runs."""


def crashing_at(prefix: str) -> Any:
    def runner(argv: list[str], *, timeout: float) -> CommandResult:
        if argv[-1].startswith(prefix):
            raise Crash
        return run_command(argv, timeout=timeout)

    return runner


def test_a_start_a_crash_left_pending_runs_on_the_next_run(root: Path) -> None:
    Service.changes = daemon()
    with pytest.raises(Crash):
        engine(root, crashing_at("start")).apply(Snapshot(1))
    assert manifest_of(root)["pending_actions"] == [
        {"configuration": "service", "unit": DAEMON, "action": "start"}
    ]
    report = apply(root, 2)
    assert report.actions == [f"start {DAEMON}"]
    assert actions(root) == ["daemon-reload", f"enable {DAEMON}", f"start {DAEMON}"]


def test_a_start_a_crash_left_pending_is_dropped_when_the_unit_is_removed(root: Path) -> None:
    Service.changes = daemon()
    with pytest.raises(Crash):
        engine(root, crashing_at("start")).apply(Snapshot(1))
    Service.changes = []
    apply(root, 2)
    assert actions(root) == [
        "daemon-reload",
        f"enable {DAEMON}",
        f"stop {DAEMON}",
        f"disable {DAEMON}",
        "daemon-reload",
    ]
    assert manifest_of(root)["pending_actions"] == []


#: a run in a child process that ccm.faults kills (SIGKILL) at CCM_CRASH_AT
_CRASHING_RUN = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_units import Service, engine
from ccm.models import Snapshot
engine(Path({root!r})).apply(Snapshot(2))
"""


def test_a_crash_after_a_disable_never_disables_again_once_the_file_is_gone(
    root: Path,
) -> None:
    """Each stop and disable is in the manifest at once: a run killed right after the
    unit file's removal does not ask systemd, next time, to disable a unit it cannot
    find; the next run still re-reads the unit files."""
    Service.changes = daemon()
    apply(root, 1)
    script = _CRASHING_RUN.format(tests=str(Path(__file__).parent), root=str(root))
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"CCM_CRASH_AT": "written", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stdout + done.stderr
    assert units_of(root) == {DAEMON: {"enabled": False, "running": False}}
    assert not (root / DAEMON_FILE.lstrip("/")).exists()
    Service.changes = []
    apply(root, 3)
    assert actions(root)[3:] == [f"stop {DAEMON}", f"disable {DAEMON}", "daemon-reload"]
    assert units_of(root) == {}


# -- what ccm diff shows ---------------------------------------------------------------------


def test_ccm_diff_shows_each_unit_change_and_action_in_text_and_json(root: Path) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = [*daemon(), *redis("port 6381\n", enabled=False)]
    planned = engine(root).plan(Snapshot(2))
    text = describe_text(planned.operations, manifest=planned.manifest)
    assert text.splitlines()[:3] == [
        "# service",
        f"- unit {REDIS} (disable: declared so)",
        f"+ file {DAEMON_FILE} (new; 0644 root:root)",
    ]
    assert f"+ unit {DAEMON} (enable, start)\n# actions\n" in text
    assert text.endswith(
        f"! daemon-reload\n! enable {DAEMON}\n! start {DAEMON}\n! restart {REDIS}\n"
    )
    data = describe_json(planned.operations, 2, manifest=planned.manifest)
    units = [change for change in data["changes"] if change["kind"] == "unit"]
    assert units == [
        {
            "configuration": "service",
            "kind": "unit",
            "unit": REDIS,
            "operation": "down",
            "commands": ["disable"],
        },
        {
            "configuration": "service",
            "kind": "unit",
            "unit": DAEMON,
            "operation": "up",
            "commands": ["enable", "start"],
        },
    ]
    assert data["actions"] == [
        "daemon-reload",
        f"enable {DAEMON}",
        f"start {DAEMON}",
        f"restart {REDIS}",
    ]
    assert planned.has_changes


def test_ccm_diff_shows_a_removal_as_remove_in_json(root: Path) -> None:
    Service.changes = redis()
    apply(root, 1)
    Service.changes = []
    planned = engine(root).plan(Snapshot(2))
    data = describe_json(planned.operations, 2, manifest=planned.manifest)
    assert data["changes"][0] == {
        "configuration": "service",
        "kind": "unit",
        "unit": REDIS,
        "operation": "remove",
        "commands": ["stop", "disable"],
    }
    assert data["actions"] == []


# -- declarations ccm refuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        (Unit("--force"), "unit name '--force' is not a systemd unit name"),
        (Unit("a b"), "unit name 'a b' is not a systemd unit name"),
        (Unit("x" * 256), "is not a systemd unit name"),
        (
            Unit("shop.service", unit_file="/etc/shop.service"),
            "unit shop.service: its unit file /etc/shop.service is not in /etc/systemd/system/",
        ),
        (
            Unit("shop.service", unit_file="/etc/systemd/system/sub/shop.service"),
            "is not in /etc/systemd/system/",
        ),
        (
            Unit("shop.service", unit_file="/etc/systemd/system/other.service"),
            "unit shop.service: its unit file /etc/systemd/system/other.service is named "
            "for another unit",
        ),
    ],
)
def test_a_unit_ccm_cannot_act_on_fails_the_plan_naming_why(
    root: Path, unit: Unit, reason: str
) -> None:
    Service.changes = [unit]
    with pytest.raises(PlanError) as failed:
        engine(root).plan(Snapshot(1))
    assert failed.value.configuration == "service"
    assert reason in failed.value.message


@pytest.mark.parametrize("name", ["shop", "shop.service", "redis-server@shop", "a:b_c.d-e@f"])
def test_unit_names_systemd_takes_are_accepted(root: Path, name: str) -> None:
    Service.changes = [Unit(name, unit_file=f"/etc/systemd/system/{name}")]
    assert Unit(name).problem() == ""
    assert Service.changes[0].problem() == ""  # type: ignore[union-attr]


def test_a_unit_file_named_for_the_unit_without_its_suffix_is_accepted() -> None:
    assert Unit("shop", unit_file="/etc/systemd/system/shop.service").problem() == ""


def test_a_unit_declared_twice_or_managed_by_another_configuration_fails(root: Path) -> None:
    Service.changes = [Unit(REDIS), Unit(REDIS)]
    with pytest.raises(PlanError, match=f"unit {REDIS} is declared twice") as twice:
        engine(root).plan(Snapshot(1))
    assert twice.value.configuration == "service"
    Service.changes = [Unit(REDIS)]
    apply(root, 1)
    Other.changes = [Unit(REDIS)]
    with pytest.raises(PlanError) as failed:
        engine(root).plan(Snapshot(2))
    assert failed.value.configuration == "other"
    assert f"unit {REDIS} is already managed by service" in failed.value.message


# -- the settings and the manifest -----------------------------------------------------------


def test_the_unit_commands_default_to_systemctl_argv_lists() -> None:
    commands = CommandSettings()
    assert commands.start_unit == ("systemctl", "start", "{unit}")
    assert commands.stop_unit == ("systemctl", "stop", "{unit}")
    assert commands.enable_unit == ("systemctl", "enable", "{unit}")
    assert commands.disable_unit == ("systemctl", "disable", "{unit}")
    assert commands.daemon_reload == ("systemctl", "daemon-reload")


@pytest.mark.parametrize(
    "setting", ["start_unit", "stop_unit", "enable_unit", "disable_unit", "daemon_reload"]
)
def test_an_empty_unit_command_is_refused(setting: str) -> None:
    with pytest.raises(ValueError, match="must be a non-empty argv list"):
        CommandSettings.model_validate({setting: []})


def test_the_unit_commands_get_the_root_filled_in(root: Path) -> None:
    commands = {
        setting: logged(root, f'echo "{verb} $2 in {{root}}" >> "$1/actions.log"')
        for verb, setting in [("start", "start_unit"), ("enable", "enable_unit")]
    }
    commands["daemon_reload"] = ["sh", "-c", 'echo "reload in $1" >> "$1/actions.log"', "sh"]
    commands["daemon_reload"].append("{root}")
    Service.changes = daemon()
    apply(root, 1, commands=commands)
    assert actions(root) == [
        f"reload in {root}",
        f"enable {DAEMON} in {root}",
        f"start {DAEMON} in {root}",
    ]


RELOAD_WEB = {"configuration": "service", "unit": "web", "action": "reload"}


def test_a_manifest_written_before_units_loads_and_is_written_back_unchanged(
    root: Path,
) -> None:
    path = root / "var/lib/ccm/manifest.json"
    path.parent.mkdir(parents=True)
    (root / "etc/web.conf").write_text("a\n")
    old = {
        "version": 1,
        "configurations": {
            "service": {
                "files": ["/etc/web.conf"],
                "accounts": [],
                "playbooks": {},
                "file_actions": {
                    "/etc/web.conf": [
                        {"configuration": "service", "unit": "web", "action": "reload"}
                    ]
                },
            }
        },
        "pending_actions": [{"configuration": "service", "argv": ["true"]}],
        "unverified": {},
    }
    text = json.dumps(old, indent=1) + "\n"
    path.write_text(text)
    Service.changes = [File("/etc/web.conf", "a\n"), UnitAction("web", "reload", ("/etc/",))]
    report = apply(root, 1)
    assert report.actions == ["run true"]
    old["pending_actions"] = []
    assert json.loads(path.read_text()) == old


def test_a_manifest_with_a_pending_daemon_reload_loads_it(root: Path) -> None:
    path = root / "var/lib/ccm/manifest.json"
    path.parent.mkdir(parents=True)
    pending = [{"configuration": "service", "daemon_reload": True}]
    path.write_text(json.dumps({"version": 1, "pending_actions": pending}))
    with pytest.raises(LifecycleFailed) as failed:  # still named after the restart
        apply(root, 1, commands={"daemon_reload": ["false"]})
    assert failed.value.configuration == "service"
    report = apply(root, 2)
    assert report.actions == ["daemon-reload"]
    assert actions(root) == ["daemon-reload"]


def test_a_daemon_reload_a_crash_left_pending_is_kept_in_the_manifest_and_runs_next(
    root: Path,
) -> None:
    Service.changes = daemon()
    with pytest.raises(Crash):
        engine(root, crashing_at("daemon-reload")).apply(Snapshot(1))
    assert manifest_of(root)["pending_actions"] == [
        {"configuration": "service", "daemon_reload": True},
        {"configuration": "service", "unit": DAEMON, "action": "enable"},
        {"configuration": "service", "unit": DAEMON, "action": "start"},
    ]
    apply(root, 2)
    assert actions(root) == ["daemon-reload", f"enable {DAEMON}", f"start {DAEMON}"]
