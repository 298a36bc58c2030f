"""The account kind and the action kinds from the outside, on a real root (mutation testing
found these promises unchecked): an account ccm may not make or take over fails the run
naming the configuration, or is refused and kept; a modification is undone field for
field when the run fails; reloads, restarts and commands left pending by a failed run
come back from the manifest as they were, merged with the next run's; ``ccm diff``
names each check and probe with its variables.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ActionFailed, CheckFailed, CommandFailed, RunError, TenantConflict
from ccm.models import Snapshot
from ccm.plan.accounts import Account
from ccm.plan.changes import Change, Check, Command, File, Probe, Unit, UnitAction
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import describe_text
from ccm.settings import Settings
from ccm.testing.noderoot import actions, logging_command, node_settings, seed_root

UID = 20000 + 1  # alice's uid: the default uid_base + her id


class Tenant(Configuration):
    name = "site"
    checks: ClassVar = {"first": ("true",), "second": ("true",)}
    probes: ClassVar = {"alive": ("true",), "ready": ("true",)}
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Tenant.changes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Tenant.changes = []
    return seed_root(tmp_path / "root")


def settings_for(root: Path, **overrides: Any) -> Settings:
    return node_settings(root, logged_checks=(), passing_probes=(), **overrides)


def engine(settings: Settings) -> Engine:
    return Engine(Registry([Tenant]), settings)


def apply(root: Path, revision: int, **overrides: Any) -> Any:
    return engine(settings_for(root, **overrides)).apply(Snapshot(revision))


def passwd_line(root: Path, username: str) -> str:
    lines = (root / "etc/passwd").read_text().splitlines()
    found = [line for line in lines if line.startswith(f"{username}:")]
    return found[0] if found else ""


def manifest_of(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    return data


def shadow_tool(root: Path, *argv: str) -> None:
    """useradd, usermod or groupadd by hand, on the root's own files."""
    subprocess.run([argv[0], "--prefix", str(root), *argv[1:]], check=True, capture_output=True)


# -- accounts ccm may not make or take over ----------------------------------------------


def made_by_ccm_then_uid_changed_by_hand(root: Path) -> None:
    Tenant.changes = [Account("alice", "/home/alice", 1)]
    apply(root, 1)
    shadow_tool(root, "usermod", "--uid", "30001", "alice")


CONFLICTS: dict[str, tuple[Callable[[Path], None], dict[str, Any], str]] = {
    "uid reserved": (
        lambda root: None,
        {"accounts": {"uid_base": 65534 - 1}},
        "account 'alice' cannot be made here: uid 65534 lies in the reserved range",
    ),
    "uid held": (
        lambda root: shadow_tool(root, "useradd", "--uid", str(UID), "legacy"),
        {},
        f"account 'alice' needs uid {UID}, which 'legacy' holds",
    ),
    "group of the name": (
        lambda root: shadow_tool(root, "groupadd", "alice"),
        {},
        "account 'alice' cannot be made: a group of that name exists on this node",
    ),
    "made by hand": (
        lambda root: shadow_tool(root, "useradd", "--uid", "5000", "alice"),
        {},
        "account 'alice' exists on this node but was not created by ccm; refusing to take it over",
    ),
    "uid changed by hand": (
        made_by_ccm_then_uid_changed_by_hand,
        {},
        f"account 'alice' has uid 30001, not {UID} (unix-users/1): it belongs to another "
        "object or was not made by ccm; refusing it",
    ),
}


@pytest.mark.parametrize("conflict", CONFLICTS)
def test_an_account_the_node_refuses_fails_a_run_that_names_no_object_naming_the_configuration(
    root: Path, conflict: str
) -> None:
    """Without an ``origin`` there is no object to refuse: the run fails, and says where
    and why, before anything is changed."""
    prepare, overrides, reason = CONFLICTS[conflict]
    prepare(root)
    before = (root / "etc/passwd").read_text()
    Tenant.changes = [Account("alice", "/home/alice", 1, "/bin/sh")]
    with pytest.raises(TenantConflict) as failed:
        engine(settings_for(root, **overrides)).plan(Snapshot(2))
    assert failed.value.configuration == "site"
    assert str(failed.value).startswith(f"site: {reason}")
    assert (root / "etc/passwd").read_text() == before


def test_an_account_whose_uid_was_changed_by_hand_is_refused_and_never_deleted(
    root: Path,
) -> None:
    Tenant.changes = [Account("alice", "/home/alice", 1, origin=("unix-users/1",))]
    apply(root, 1)
    shadow_tool(root, "usermod", "--uid", "30001", "alice")
    changed_by_hand = passwd_line(root, "alice")
    report = apply(root, 2)
    assert report.refused["unix-users/1"].configuration == "site"
    assert report.refused["unix-users/1"].reason == CONFLICTS["uid changed by hand"][2]
    assert passwd_line(root, "alice") == changed_by_hand
    assert manifest_of(root)["configurations"]["site"]["accounts"] == ["alice"]


# -- a modified account ----------------------------------------------------------------


def tenant(shell: str, comment: str, content: str) -> list[Change]:
    return [
        Account("alice", "/home/alice", 1, shell, comment),
        File("/etc/site/a.conf", content),
        Check("first", triggers=("/etc/site/",)),
    ]


@pytest.mark.parametrize(
    ("shell", "comment"),
    [("/bin/sh", "Alice B"), ("/bin/bash", "Alice B"), ("/bin/sh", "Alice A")],
)
def test_a_modified_account_is_put_back_with_its_old_shell_and_comment_when_the_run_fails(
    root: Path, shell: str, comment: str
) -> None:
    Tenant.changes = tenant("/bin/bash", "Alice A", "v1\n")
    apply(root, 1)
    before = (root / "etc/passwd").read_text()
    assert passwd_line(root, "alice").endswith(":Alice A:/home/alice:/bin/bash")
    Tenant.changes = tenant(shell, comment, "v2\n")
    with pytest.raises(CheckFailed):
        apply(root, 2, checks={"first": ["false"]})
    assert (root / "etc/passwd").read_text() == before
    apply(root, 3)  # and a run that passes makes the change
    assert passwd_line(root, "alice").endswith(f":{comment}:/home/alice:{shell}")


def test_usermod_gets_every_field_of_the_account_and_its_undo_the_old_ones(root: Path) -> None:
    Tenant.changes = tenant("/bin/bash", "Alice A", "v1\n")
    apply(root, 1)
    usermod = logging_command(root, "usermod {username} {uid} {home} {shell} {comment}")
    Tenant.changes = tenant("/bin/sh", "Alice B", "v2\n")
    with pytest.raises(CheckFailed):
        apply(root, 2, checks={"first": ["false"]}, commands={"usermod": usermod})
    assert actions(root) == [
        f"usermod alice {UID} /home/alice /bin/sh Alice B",
        f"usermod alice {UID} /home/alice /bin/bash Alice A",
    ]


def test_a_failing_usermod_names_the_configuration_and_leaves_the_account_as_it_was(
    root: Path,
) -> None:
    Tenant.changes = tenant("/bin/bash", "Alice A", "v1\n")
    apply(root, 1)
    before = (root / "etc/passwd").read_text()
    Tenant.changes = tenant("/bin/sh", "Alice A", "v2\n")
    usermod = ["sh", "-c", "echo locked; exit 6"]
    with pytest.raises(CommandFailed) as failed:
        apply(root, 2, commands={"usermod": usermod})
    assert (failed.value.configuration, failed.value.returncode) == ("site", 6)
    assert failed.value.output == "locked\n"
    assert (root / "etc/passwd").read_text() == before
    assert (root / "etc/site/a.conf").read_text() == "v1\n"


@pytest.mark.parametrize(
    ("shell", "comment", "shown"),
    [
        ("/bin/sh", "Alice A", "shell /bin/bash -> /bin/sh"),
        ("/bin/bash", "Alice B", "comment 'Alice A' -> 'Alice B'"),
        ("/bin/sh", "", "shell /bin/bash -> /bin/sh, comment 'Alice A' -> ''"),
    ],
)
def test_ccm_diff_shows_which_of_the_shell_and_the_comment_an_account_change_changes(
    root: Path, shell: str, comment: str, shown: str
) -> None:
    Tenant.changes = [Account("alice", "/home/alice", 1, "/bin/bash", "Alice A")]
    apply(root, 1)
    Tenant.changes = [Account("alice", "/home/alice", 1, shell, comment)]
    planned = engine(settings_for(root)).plan(Snapshot(2))
    text = describe_text(planned.operations, manifest=planned.manifest)
    assert text == f"# site\n~ account alice ({shown})\n"


# -- reloads, restarts and commands left pending ------------------------------------------

#: a command that fails until ROOT/ok exists, then logs where it ran
COMMAND = (
    "sh",
    "-c",
    'test -e "$1/ok" && echo "command in $1" >> "$1/actions.log"',
    "sh",
    "{root}",
)
FAILING = ["sh", "-c", "echo down; exit 4"]


def pending_of(root: Path) -> list[dict[str, Any]]:
    pending: list[dict[str, Any]] = manifest_of(root)["pending_actions"]
    return pending


def test_a_command_left_pending_by_a_failed_run_runs_again_with_the_root_filled_in(
    root: Path,
) -> None:
    Tenant.changes = [File("/etc/site/a.conf", "v1\n"), Command(COMMAND, ("/etc/site/",))]
    filled = [arg.replace("{root}", str(root)) for arg in COMMAND]
    with pytest.raises(ActionFailed) as failed:
        apply(root, 1)
    assert (failed.value.configuration, failed.value.argv) == ("site", filled)
    assert pending_of(root) == [{"configuration": "site", "argv": list(COMMAND)}]
    planned = engine(settings_for(root)).plan(Snapshot(2))
    shown = describe_text(
        planned.operations, pending=planned.manifest.pending_actions, manifest=planned.manifest
    )
    assert shown == f"# actions\n! run {' '.join(COMMAND)} (pending from an earlier run)\n"
    with pytest.raises(ActionFailed) as again:  # nothing changed: still pending, and named
        apply(root, 2)
    assert (again.value.configuration, again.value.argv) == ("site", filled)
    (root / "ok").touch()
    report = apply(root, 3)
    assert report.actions == ["run " + " ".join(filled)]
    assert actions(root) == [f"command in {root}"]
    assert pending_of(root) == []


def test_a_pending_restart_left_by_a_failed_run_is_not_made_a_reload_by_a_later_change(
    root: Path,
) -> None:
    Tenant.changes = [
        File("/etc/site/a.conf", "v1\n"),
        UnitAction("web", "restart", triggers=("/etc/site/",)),
    ]
    with pytest.raises(ActionFailed):
        apply(root, 1, commands={"restart_unit": FAILING})
    assert pending_of(root) == [{"configuration": "site", "unit": "web", "action": "restart"}]
    Tenant.changes = [
        File("/etc/site/a.conf", "v2\n"),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
    ]
    report = apply(root, 2)
    assert report.actions == ["restart web"]
    assert actions(root) == ["restart web"]
    assert pending_of(root) == []


def test_a_pending_reload_left_by_a_failed_run_is_retried_and_merged_with_a_restart(
    root: Path,
) -> None:
    Tenant.changes = [
        File("/etc/site/a.conf", "v1\n"),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
    ]
    with pytest.raises(ActionFailed):
        apply(root, 1, commands={"reload_unit": FAILING})
    Tenant.changes = [
        File("/etc/site/a.conf", "v2\n"),
        UnitAction("web", "restart", triggers=("/etc/site/",)),
    ]
    with pytest.raises(ActionFailed) as failed:  # the merged restart fails: still named
        apply(root, 2, commands={"restart_unit": FAILING})
    assert (failed.value.configuration, failed.value.returncode) == ("site", 4)
    assert pending_of(root) == [{"configuration": "site", "unit": "web", "action": "restart"}]
    report = apply(root, 3)
    assert report.actions == ["restart web"]
    assert actions(root) == ["restart web"]


def test_a_restart_absorbs_a_reload_of_the_same_unit_planned_after_it(root: Path) -> None:
    Tenant.changes = [
        File("/etc/site/a.conf", "v1\n"),
        UnitAction("web", "restart", triggers=("/etc/site/",)),
        UnitAction("db", "reload", triggers=("/etc/site/",)),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
    ]
    report = apply(root, 1)
    assert report.actions == ["restart web", "reload db"]
    assert actions(root) == ["restart web", "reload db"]


def test_a_new_unit_declared_enabled_but_stopped_is_enabled_and_never_started(
    root: Path,
) -> None:
    """Enabled but not running (it starts at the next boot): the enable is kept although
    the unit stays stopped; a start, or a restart for its changed config, is not."""
    conf = "/etc/redis/redis-shop.conf"
    unit = Unit("redis-server@shop", running=False, restart_on=(conf,))
    Tenant.changes = [File(conf, "port 6380\n"), unit]
    report = apply(root, 1)
    assert report.actions == ["enable redis-server@shop"]
    assert actions(root) == ["enable redis-server@shop"]
    Tenant.changes = [File(conf, "port 6381\n"), unit]
    assert apply(root, 2).actions == []


def test_reloads_and_restarts_get_the_root_filled_in(root: Path) -> None:
    Tenant.changes = [
        File("/etc/site/a.conf", "v1\n"),
        UnitAction("web", "reload", triggers=("/etc/site/",)),
        UnitAction("db", "restart", triggers=("/etc/site/",)),
    ]
    commands = {
        "reload_unit": logging_command(root, "reload {unit} in {root}"),
        "restart_unit": logging_command(root, "restart {unit} in {root}"),
    }
    apply(root, 1, commands=commands)
    assert actions(root) == [f"reload web in {root}", f"restart db in {root}"]


def test_a_manifest_entry_with_an_unknown_unit_action_is_refused_with_a_clear_error(
    root: Path,
) -> None:
    path = root / "var/lib/ccm/manifest.json"
    path.parent.mkdir(parents=True)
    entry = {"configuration": "site", "unit": "web", "action": "stop"}
    path.write_text(json.dumps({"version": 1, "pending_actions": [entry]}))
    with pytest.raises(RunError) as failed:
        engine(settings_for(root)).plan(Snapshot(1))
    assert failed.value.configuration == "(manifest)"
    assert f"{path} cannot be read (ValueError: unknown unit action 'stop')" in str(failed.value)


# -- what ccm diff lists -----------------------------------------------------------------


def test_ccm_diff_lists_each_check_and_probe_with_its_variables_sorted(root: Path) -> None:
    triggers = ("/etc/site/",)
    Tenant.changes = [
        File("/etc/site/a.conf", "v1\n"),
        Check("first", triggers, {"version": "8.2", "pool": "alice"}),
        Check("second", triggers),
        Probe("alive", triggers, {"port": "80", "host": "alice.example.com"}),
        Probe("ready", triggers),
    ]
    planned = engine(settings_for(root)).plan(Snapshot(1))
    text = describe_text(planned.operations, manifest=planned.manifest)
    assert text.split("# actions\n")[1] == (
        "! check first (pool=alice, version=8.2)\n"
        "! check second\n"
        "! probe alive (host=alice.example.com, port=80)\n"
        "! probe ready\n"
    )


def test_a_diff_given_no_manifest_lists_the_reloads_of_a_run_that_removes_a_file(
    root: Path,
) -> None:
    reload = UnitAction("web", "reload", triggers=("/etc/site/",))
    Tenant.changes = [File("/etc/site/a.conf", "a\n"), File("/etc/site/b.conf", "b\n"), reload]
    apply(root, 1)
    Tenant.changes = [File("/etc/site/a.conf", "a\n"), reload]
    planned = engine(settings_for(root)).plan(Snapshot(2))
    assert describe_text(planned.operations).endswith("# actions\n! reload web\n")
