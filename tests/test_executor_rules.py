"""The executor's smaller promises, each from the outside (mutation testing found them
untested): ownership is recorded before the change, checks run in order with the root
filled in, errors name the configuration and the exit code, the report says exactly
what ran, and the crash points are where they say.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from ccm import faults
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ActionFailed, CheckFailed, CommandFailed, RunError
from ccm.models import Snapshot
from ccm.plan.changes import Account, Change, Check, File, Playbook, UnitAction
from ccm.plan.configuration import Configuration, Render
from ccm.plan.executor import Executor
from ccm.settings import Settings
from ccm.testing.noderoot import actions, logging_command, node_settings, seed_root
from configurations.unix_users import UnixUser


class Planned:
    changes: ClassVar[list[Change]] = []


class Site(Configuration):
    name = "site"
    subscribes = ("unix-users",)
    checks: ClassVar = {"first": ("true",), "second": ("true",)}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Planned.changes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Planned.changes = []
    return seed_root(tmp_path / "root")


def engine(settings: Settings) -> Engine:
    return Engine(Registry([Site]), settings)


def settings_for(root: Path, **overrides: object) -> Settings:
    return node_settings(root, logged_checks=(), passing_probes=(), **overrides)  # type: ignore[arg-type]


def manifest_of(root: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    return data


def test_a_check_that_did_not_trigger_does_not_stop_the_next_one(root: Path) -> None:
    Planned.changes = [
        File("/etc/site/a.conf", "a\n"),
        Check("first", triggers=("/elsewhere/",)),
        Check("second", triggers=("/etc/site/",)),
    ]
    log = logging_command(root, "second ran in {root}")
    report = engine(settings_for(root, checks={"second": log})).apply(Snapshot(1))
    assert actions(root) == [f"second ran in {root}"]
    assert report.actions == ["check " + " ".join(log).replace("{root}", str(root))]


def test_a_check_no_configuration_declares_names_it_and_its_configuration(root: Path) -> None:
    Planned.changes = [File("/etc/site/a.conf", "a\n"), Check("third", triggers=("/etc/",))]
    with pytest.raises(RunError) as failed:
        engine(settings_for(root)).apply(Snapshot(1))
    assert failed.value.configuration == "site"
    assert str(failed.value) == "site: check 'third' is not declared"


def test_a_failing_check_reports_its_exit_code(root: Path) -> None:
    Planned.changes = [File("/etc/site/a.conf", "a\n"), Check("first", triggers=("/etc/",))]
    settings = settings_for(root, checks={"first": ["sh", "-c", "echo broken; exit 3"]})
    with pytest.raises(CheckFailed) as failed:
        engine(settings).apply(Snapshot(1))
    assert (failed.value.configuration, failed.value.returncode) == ("site", 3)
    assert "broken" in failed.value.output


def test_a_playbook_without_an_executor_names_the_configuration(root: Path) -> None:
    Planned.changes = [Playbook("anything.yml")]
    settings = settings_for(root)
    planned = engine(settings).plan(Snapshot(1))
    with pytest.raises(RunError) as failed:
        Executor(settings, planned.manifest, planned.accounts).apply(planned.operations)
    assert str(failed.value) == "site: no playbook executor is configured"


def test_an_account_is_recorded_as_ccms_before_useradd_runs(root: Path) -> None:
    seen = root / "manifest-at-useradd.json"
    useradd = ["sh", "-c", f'cp "$1/var/lib/ccm/manifest.json" "{seen}"; exit 9', "sh", "{root}"]
    Planned.changes = [Account("alice", "/home/alice", 1)]
    with pytest.raises(CommandFailed) as failed:
        engine(settings_for(root, commands={"useradd": useradd})).apply(Snapshot(1))
    assert (failed.value.configuration, failed.value.returncode) == ("site", 9)
    at_useradd = json.loads(seen.read_text())
    assert at_useradd["configurations"]["site"]["accounts"] == ["alice"]
    # the failed run took the claim back: the account does not exist
    assert "site" not in manifest_of(root)["configurations"]  # type: ignore[operator]


def test_files_are_recorded_as_ccms_and_unchecked_before_they_are_written(root: Path) -> None:
    seen = root / "manifest-at-check.json"
    check = ["sh", "-c", f'cp "$1/var/lib/ccm/manifest.json" "{seen}"', "sh", "{root}"]
    Planned.changes = [File("/etc/site/a.conf", "a\n"), Check("first", triggers=("/etc/",))]
    engine(settings_for(root, checks={"first": check})).apply(Snapshot(1))
    at_check = json.loads(seen.read_text())
    assert at_check["configurations"]["site"]["files"] == ["/etc/site/a.conf"]
    assert at_check["unverified"] == {"site": ["/etc/site/a.conf"]}
    assert manifest_of(root)["unverified"] == {}  # checked: no longer unverified


def test_a_failed_userdel_names_the_configuration_and_stays_to_do(root: Path) -> None:
    user = UnixUser(id=1, username="alice")
    Planned.changes = [Account(user.username, user.home, user.id)]
    settings = settings_for(root)
    engine(settings).apply(Snapshot(1))
    Planned.changes = []
    failing = settings_for(root, commands={"userdel": ["sh", "-c", "echo busy; exit 8"]})
    with pytest.raises(ActionFailed) as failed:
        engine(failing).apply(Snapshot(2))
    assert (failed.value.configuration, failed.value.returncode) == ("site", 8)
    assert manifest_of(root)["configurations"]["site"]["accounts"] == ["alice"]  # type: ignore[index]
    report = engine(settings).apply(Snapshot(3))
    assert report.changed == {"site": ["account:alice"]}
    assert "site" not in manifest_of(root)["configurations"]  # type: ignore[operator]


def test_a_failed_reload_names_its_configuration_and_exit_code(root: Path) -> None:
    Planned.changes = [
        File("/etc/site/a.conf", "a\n"),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
    ]
    failing = settings_for(root, commands={"reload_unit": ["sh", "-c", "exit 5"]})
    with pytest.raises(ActionFailed) as failed:
        engine(failing).apply(Snapshot(1))
    assert (failed.value.configuration, failed.value.returncode) == ("site", 5)


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from ccm.testing.noderoot import node_settings
    from test_executor_rules import Planned, engine
    from pathlib import Path
    from ccm.models import Snapshot
    from ccm.plan.changes import Check, File, UnitAction
    root = Path({root!r})
    Planned.changes = [
        File("/etc/site/a.conf", "a\\n"),
        File("/etc/site/b.conf", "b\\n"),
        Check("first", triggers=("/etc/site/",)),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
    ]
    engine(node_settings(root, logged_checks=(), passing_probes=())).apply(Snapshot(1))
    print("finished")
    """
)


@pytest.mark.parametrize(
    ("step", "files"),
    [("claimed", []), ("written:1", ["a.conf"]), ("written:2", ["a.conf", "b.conf"]),
     ("checked", ["a.conf", "b.conf"]), ("acted", ["a.conf", "b.conf"])],
)  # fmt: skip
def test_the_crash_points_are_where_they_say(root: Path, step: str, files: list[str]) -> None:
    script = SCRIPT.format(tests=str(Path(__file__).parent), root=str(root))
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"CCM_CRASH_AT": step, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stdout + done.stderr
    site = root / "etc/site"
    written = sorted(p.name for p in site.iterdir()) if site.exists() else []
    assert written == files
    reloaded = "reload web" in actions(root)
    assert reloaded == (step == "acted")


def test_a_run_reaches_its_crash_points_in_the_documented_order(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same positions in this process (armed for a step no run reaches): an account
    claimed before useradd, files claimed before the first write, one ``written`` per
    file, ``checked`` after the check, ``acted`` after the reload."""
    monkeypatch.setenv("CCM_CRASH_AT", "nowhere")
    monkeypatch.setattr(faults, "trail", [])
    Planned.changes = [
        Account("alice", "/home/alice", 1),
        File("/etc/site/a.conf", "a\n"),
        File("/etc/site/b.conf", "b\n"),
        Check("first", triggers=("/etc/site/",)),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
    ]
    engine(settings_for(root)).apply(Snapshot(1))
    assert faults.trail == ["claimed", "claimed", "written", "written", "checked", "acted"]
    faults.trail.clear()
    engine(settings_for(root)).apply(Snapshot(2))  # nothing to change: no crash point
    assert faults.trail == []
    Planned.changes.append(Account("bob", "/home/bob", 2))
    engine(settings_for(root)).apply(Snapshot(3))  # an account only: no file to claim
    assert faults.trail == ["claimed"]


def test_an_account_is_deleted_in_a_run_that_also_changes_files(root: Path) -> None:
    def changes(content: str, *users: str) -> list[Change]:
        accounts: list[Change] = [Account(n, f"/home/{n}", i) for i, n in enumerate(users, 1)]
        return [*accounts, File("/etc/site/a.conf", content)]

    Planned.changes = changes("a\n", "alice", "bob")
    engine(settings_for(root)).apply(Snapshot(1))
    Planned.changes = changes("b\n", "alice")
    report = engine(settings_for(root)).apply(Snapshot(2))
    assert report.changed == {"site": ["/etc/site/a.conf", "account:bob"]}
    users = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
    assert "alice" in users and "bob" not in users
    assert manifest_of(root)["configurations"]["site"]["accounts"] == ["alice"]  # type: ignore[index]
