"""Progress of a run: the executor reports each configuration's steps in order, the
milestones pick the lines worth showing, and `ccm apply` and the daemon show them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from ccm.cli.progress import LineProgress, TerminalProgress, progress_for
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CheckFailed
from ccm.models import Snapshot
from ccm.plan.changes import Account, Change, Check, File, Unit
from ccm.plan.configuration import Configuration, Render
from ccm.plan.progress import LoggedProgress, Milestones
from ccm.testing.noderoot import node_settings, seed_root


class Planned:
    changes: ClassVar[dict[str, list[Change]]] = {}


class Accounts(Configuration):
    name = "accounts"

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Planned.changes.get("accounts", [])


class Web(Configuration):
    name = "web"
    depends_on = ("accounts",)
    checks: ClassVar = {"web_check": ("false",)}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Planned.changes.get("web", [])


Report = tuple[str, int, int]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Planned.changes = {}
    return seed_root(tmp_path / "root")


def run(root: Path, revision: int) -> list[Report]:
    told: list[Report] = []
    engine = Engine(
        Registry([Accounts, Web]),
        node_settings(root, logged_checks=(), passing_probes=()),
        progress=lambda configuration, done, total: told.append((configuration, done, total)),
    )
    engine.apply(Snapshot(revision))
    return told


def test_each_configuration_reports_zero_then_every_step_in_order(root: Path) -> None:
    Planned.changes["accounts"] = [
        Account("alice", "/home/alice", 1),
        Account("bob", "/home/bob", 2),
    ]
    Planned.changes["web"] = [File(f"/etc/web/{n}", f"{n}\n") for n in range(3)]
    Planned.changes["web"].append(Unit("redis-server@shop"))
    assert run(root, 1) == [
        ("accounts", 0, 2),
        ("accounts", 1, 2),
        ("accounts", 2, 2),
        ("web", 0, 3),
        ("web", 1, 3),
        ("web", 2, 3),
        ("web", 3, 3),
    ]


def test_units_taken_down_count_before_the_files(root: Path) -> None:
    Planned.changes["web"] = [File("/etc/web/a", "a\n"), Unit("redis-server@shop")]
    run(root, 1)
    Planned.changes["web"] = [File("/etc/web/a", "changed\n")]  # the unit goes: stop+disable
    assert run(root, 2) == [("web", 0, 2), ("web", 1, 2), ("web", 2, 2)]


def test_a_run_with_nothing_to_do_reports_nothing(root: Path) -> None:
    Planned.changes["web"] = [File("/etc/web/a", "a\n")]
    run(root, 1)
    assert run(root, 2) == []


def test_a_failing_check_reports_the_steps_it_undoes(root: Path) -> None:
    Planned.changes["web"] = [File("/etc/web/a", "a\n"), Check("web_check", ("/etc/web/",))]
    told: list[Report] = []
    engine = Engine(
        Registry([Accounts, Web]),
        node_settings(root, logged_checks=(), passing_probes=()),
        progress=lambda *report: told.append(report),
    )
    with pytest.raises(CheckFailed):
        engine.apply(Snapshot(1))
    assert told == [("web", 0, 1), ("web", 1, 1)]
    assert not (root / "etc/web/a").exists()


def test_milestones_are_the_start_every_tenth_and_the_end() -> None:
    milestones = Milestones()
    shown = [done for done in range(201) if milestones("accounts", done, 200)]
    assert shown == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200]


def test_milestones_of_a_short_configuration_are_its_start_and_end() -> None:
    milestones = Milestones(minimum=50)
    assert [d for d in range(50) if milestones("web", d, 49)] == [0, 49]
    assert [d for d in range(51) if milestones("web", d, 50)] == list(range(0, 51, 5))


def test_milestones_start_again_for_each_configuration() -> None:
    milestones = Milestones()
    assert [d for d in range(101) if milestones("a", d, 100)][:3] == [0, 10, 20]
    assert [d for d in range(101) if milestones("b", d, 100)][:3] == [0, 10, 20]


def test_lines_into_a_pipe() -> None:
    out = io.StringIO()
    progress = progress_for(out)
    assert isinstance(progress, LineProgress)
    for done in range(101):
        progress("unix-users", done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "unix-users: 0/100"
    assert lines[1] == "unix-users: 10/100"
    assert lines[-1] == "unix-users: 100/100"
    assert len(lines) == 11


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal() -> None:
    out = Terminal()
    progress = progress_for(out)
    assert isinstance(progress, TerminalProgress)
    for done in range(2001):
        progress("unix-users", done, 2000)
    drawn = out.getvalue()
    assert "unix-users" in drawn
    assert "2000/2000" in drawn
    assert "1000/2000" in drawn  # drawn as it went, not only at the end
    assert drawn.endswith("\n")  # the finished bar leaves the line to what follows


def test_the_daemon_logs_the_milestones() -> None:
    logged: list[dict[str, object]] = []

    class Log:
        def info(self, event: str, **fields: object) -> None:
            logged.append({"event": event, **fields})

    progress = LoggedProgress(Log())
    for done in range(101):
        progress("unix-users", done, 100)
    assert logged[0] == {
        "event": "progress",
        "configuration": "unix-users",
        "done": 0,
        "total": 100,
    }
    assert [entry["done"] for entry in logged] == list(range(0, 101, 10))
