"""Every command a run starts, from the outside: the argv the configuration declares
(the settings may override it) with the root filled in, what the report says ran, a
bound on how long any of them may take, and a rollback that goes on when one of its
steps fails. (Mutation testing found these promises unchecked.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from test_executor_rules import SCRIPT

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import (
    ActionFailed,
    CheckFailed,
    CommandFailed,
    PlanError,
    ProbeFailed,
    RunError,
)
from ccm.models import Snapshot
from ccm.plan.changes import Account, Change, Check, Command, File, Probe, UnitAction
from ccm.plan.configuration import Configuration, Render
from ccm.settings import Settings
from ccm.testing.noderoot import actions, logging_command, node_settings, seed_root

#: ``sh -c`` scripts that append a line to ROOT/actions.log (ROOT is ``$1``)
_LOG = 'echo "{what}" >> "$1/actions.log"'


class Node(Configuration):
    """A configuration whose checks and probes log where they ran."""

    name = "node"
    subscribes = ("unix-users",)
    checks: ClassVar = {
        "declared_check": ("sh", "-c", _LOG.format(what="check in $1"), "sh", "{root}"),
    }
    probes: ClassVar = {
        name: ("sh", "-c", _LOG.format(what=f"{name} in $1 on $2"), "sh", "{root}", "{port}")
        for name in ("first_probe", "second_probe", "third_probe")
    }
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Node.changes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Node.changes = []
    return seed_root(tmp_path / "root")


def engine(settings: Settings) -> Engine:
    return Engine(Registry([Node]), settings)


def settings_for(root: Path, **overrides: object) -> Settings:
    """No override of the declared checks and probes; reloads and commands log."""
    return node_settings(root, logged_checks=(), passing_probes=(), **overrides)


def declared(kind: dict[str, tuple[str, ...]], name: str, root: Path, **values: str) -> str:
    """What the report shows for a declared command: its argv, placeholders filled."""
    argv = " ".join(kind[name]).replace("{root}", str(root))
    for key, value in values.items():
        argv = argv.replace("{" + key + "}", value)
    return argv


def test_declared_checks_and_probes_run_with_the_root_filled_in_and_are_reported(
    root: Path,
) -> None:
    command = ("sh", "-c", _LOG.format(what="command in $1"), "sh", "{root}")
    Node.changes = [
        File("/etc/web/site.conf", "v1\n"),
        Check("declared_check", triggers=("/etc/web/",)),
        UnitAction("web", "reload", triggers=("/etc/web/",)),
        Command(command, ("/etc/",)),
        Probe("first_probe", triggers=("/etc/web/",), variables={"port": "8080"}),
    ]
    report = engine(settings_for(root)).apply(Snapshot(1))
    assert actions(root) == [
        f"check in {root}",
        "reload web",
        f"command in {root}",
        f"first_probe in {root} on 8080",
    ]
    assert report.actions == [
        "check " + declared(Node.checks, "declared_check", root),
        "reload web",
        "run " + " ".join(command).replace("{root}", str(root)),
        "probe " + declared(Node.probes, "first_probe", root, port="8080"),
    ]


def test_every_probe_of_the_run_runs_past_one_that_did_not_trigger_and_one_that_passed(
    root: Path,
) -> None:
    Node.changes = [
        File("/etc/web/site.conf", "v1\n"),
        Probe("first_probe", triggers=("/etc/elsewhere/",), variables={"port": "1"}),
        Probe("second_probe", triggers=("/etc/web/",), variables={"port": "2"}),
        Probe("third_probe", triggers=("/etc/web/",), variables={"port": "3"}),
    ]
    engine(settings_for(root)).apply(Snapshot(1))
    assert actions(root) == [f"second_probe in {root} on 2", f"third_probe in {root} on 3"]


def test_a_probe_no_configuration_declares_fails_the_run_naming_it(root: Path) -> None:
    Node.changes = [
        File("/etc/web/site.conf", "v1\n"),
        UnitAction("web", "reload", triggers=("/etc/web/",)),
        Probe("fourth_probe", triggers=("/etc/web/",)),
    ]
    with pytest.raises(ProbeFailed) as failed:
        engine(settings_for(root)).apply(Snapshot(1))
    assert (failed.value.configuration, failed.value.argv) == ("node", ["fourth_probe"])
    assert (failed.value.returncode, failed.value.output) == (127, "not declared")
    assert not (root / "etc/web/site.conf").exists()  # restored, and reloaded again
    assert actions(root) == ["reload web", "reload web"]


HANG = ["sh", "-c", "exec sleep 60"]
#: hangs the second time it runs (the reload after a failed probe's restore)
HANG_SECOND = ["sh", "-c", '[ -e "$1/ran" ] && exec sleep 60; touch "$1/ran"', "sh", "{root}"]


@pytest.mark.parametrize(
    ("where", "changes", "overrides", "error"),
    [
        ("useradd", [Account("alice", "/home/alice", 1)],
         {"commands": {"useradd": HANG}}, CommandFailed),
        ("check", [Check("declared_check", triggers=("/etc/",))],
         {"checks": {"declared_check": HANG}}, CheckFailed),
        ("reload", [UnitAction("web", "reload", triggers=("/etc/",))],
         {"commands": {"reload_unit": HANG}}, ActionFailed),
        ("probe", [Probe("first_probe", triggers=("/etc/",))],
         {"probes": {"first_probe": HANG}, "rollout": {"probe_timeout": 0}}, ProbeFailed),
    ],
)  # fmt: skip
def test_a_hung_command_is_stopped_at_the_command_timeout_and_fails_the_run(
    root: Path, where: str, changes: list[Change], overrides: dict[str, object], error: type
) -> None:
    Node.changes = [File("/etc/web/site.conf", "v1\n"), *changes]
    settings = settings_for(root, **{**overrides, "commands": {
        **overrides.get("commands", {}), "timeout": 0.3}})  # type: ignore[dict-item]  # fmt: skip
    with pytest.raises(error) as failed:
        engine(settings).apply(Snapshot(1))
    caught = failed.value
    assert isinstance(caught, CommandFailed | CheckFailed | ProbeFailed)
    assert caught.returncode == 124, where
    assert "timed out after 0.3 s" in caught.output


def test_a_hung_reload_after_a_failed_probe_is_stopped_too(root: Path) -> None:
    Node.changes = [
        File("/etc/web/site.conf", "v1\n"),
        UnitAction("web", "reload", triggers=("/etc/web/",)),
        Probe("first_probe", triggers=("/etc/web/",)),
    ]
    settings = settings_for(
        root,
        commands={"reload_unit": HANG_SECOND, "timeout": 0.3},
        probes={"first_probe": ["sh", "-c", "echo down; exit 7"]},
        rollout={"probe_timeout": 0},
    )
    with pytest.raises(ProbeFailed) as failed:
        engine(settings).apply(Snapshot(1))
    assert (failed.value.returncode, failed.value.output) == (7, "down\n")
    assert not (root / "etc/web/site.conf").exists()


def test_useradd_and_usermod_get_every_field_of_the_account(root: Path) -> None:
    what = "{username} {uid} {home} {shell} {comment}"
    settings = settings_for(
        root,
        commands={
            "useradd": logging_command(root, "useradd " + what),
            "usermod": logging_command(root, "usermod " + what),
        },
    )
    Node.changes = [Account("alice", "/home/alice", 1, "/bin/sh", "Alice A")]
    engine(settings).apply(Snapshot(1))
    uid = settings.accounts.uid_base + 1
    assert actions(root) == [f"useradd alice {uid} /home/alice /bin/sh Alice A"]


def test_a_file_whose_owner_useradd_did_not_make_fails_naming_the_configuration(
    root: Path,
) -> None:
    """A useradd that exits 0 and makes nothing (a broken wrapper): the file step finds
    no owner, and the run fails naming the configuration, not a crash."""
    Node.changes = [
        Account("alice", "/home/alice", 1),
        File("/etc/web/alice.conf", "v1\n", owner="alice"),
    ]
    settings = settings_for(root, commands={"useradd": ["true"], "userdel": ["true"]})
    with pytest.raises(PlanError) as failed:
        engine(settings).apply(Snapshot(1))
    assert failed.value.configuration == "node"
    assert "owner 'alice' is not an account" in str(failed.value)
    assert not (root / "etc/web/alice.conf").exists()


def test_a_failure_after_the_last_configuration_is_not_blamed_on_it(root: Path) -> None:
    """The guard's last call comes after every configuration is in place: an error
    there (the etcd connection, say) is the run's, and everything is restored."""
    Node.changes = [
        File("/etc/web/site.conf", "v1\n"),
        Check("declared_check", triggers=("/etc/web/",)),
    ]

    def guard() -> None:
        if actions(root):  # the check ran: this is the call after the configurations
            raise ConnectionError("etcd went away")

    with pytest.raises(RunError) as failed:
        engine(settings_for(root)).apply(Snapshot(1), guard=guard)
    assert failed.value.configuration == "(run)"
    assert str(failed.value) == "(run): ConnectionError: etcd went away"
    assert not (root / "etc/web/site.conf").exists()


SWAP = 'mv "$1/etc/site" "$1/etc/site.moved" && ln -s "$1/etc/site.moved" "$1/etc/site"; exit 1'


@pytest.mark.parametrize("swapped_by", ["check", "probe"])
def test_a_rollback_step_that_fails_does_not_stop_the_rest_of_the_rollback(
    root: Path, swapped_by: str
) -> None:
    """A directory swapped for a link during the run (by a tenant's process, say):
    restoring the file in it fails, and every other file is still restored."""

    def changes(content: str) -> list[Change]:
        return [
            File("/etc/other/other.conf", content),
            File("/etc/site/site.conf", content),  # written last: restored first, and fails
            Check("declared_check", triggers=("/etc/",)),
            UnitAction("web", "reload", triggers=("/etc/",)),
            Probe("first_probe", triggers=("/etc/",)),
        ]

    Node.changes = changes("old\n")
    engine(settings_for(root)).apply(Snapshot(1))
    Node.changes = changes("new\n")
    swap = ["sh", "-c", SWAP, "sh", "{root}"]
    overrides: dict[str, object] = (
        {"checks": {"declared_check": swap}}
        if swapped_by == "check"
        else {"probes": {"first_probe": swap}, "rollout": {"probe_timeout": 0}}
    )
    with pytest.raises(CheckFailed if swapped_by == "check" else ProbeFailed):
        engine(settings_for(root, **overrides)).apply(Snapshot(2))
    assert (root / "etc/other/other.conf").read_text() == "old\n"
    assert (root / "etc/site.moved/site.conf").read_text() == "new\n"  # not written through


def test_a_failed_run_keeps_what_an_interrupted_run_left_unchecked(root: Path) -> None:
    """A run killed after its first write leaves both files listed as unchecked; a later
    run that fails its check must not forget them (the next one checks and reloads)."""
    script = SCRIPT.format(tests=str(Path(__file__).parent), root=str(root))
    killed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "CCM_CRASH_AT": "written:1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    manifest = root / "var/lib/ccm/manifest.json"
    unchecked = {"site": ["/etc/site/a.conf", "/etc/site/b.conf"]}
    assert json.loads(manifest.read_text())["unverified"] == unchecked

    from test_executor_rules import Planned, Site  # the crashed run's configuration

    Planned.changes = [
        File("/etc/site/a.conf", "a\n"),
        File("/etc/site/b.conf", "b\n"),
        File("/etc/site/c.conf", "c\n"),
        Check("first", triggers=("/etc/site/",)),
    ]
    failing = node_settings(root, logged_checks=(), passing_probes=(), checks={"first": ["false"]})
    with pytest.raises(CheckFailed):
        Engine(Registry([Site]), failing).apply(Snapshot(2))
    assert json.loads(manifest.read_text())["unverified"] == unchecked
