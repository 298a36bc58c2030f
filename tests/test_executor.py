"""The executor against a real temporary root: writes, no-ops, removals, rollback, reloads."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ActionFailed, CheckFailed, LockLost, PlanError, RunError
from ccm.models import Snapshot
from ccm.plan.changes import Account, Change, Check, Command, Directory, File, UnitAction
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import actions_that_would_run
from ccm.plan.executor import Executor
from ccm.settings import Settings
from ccm.testing.noderoot import actions, logging_command, node_settings, seed_root
from configurations.unix_users import UnixUser


class Planned:
    """Mutable intended state shared by the test configurations below."""

    files: ClassVar[dict[str, list[Change]]] = {}


#: the checks the tests' configurations declare (settings override them by name)
CHECKS = {"nginx_check": ("true",), "php_fpm_check": ("true",)}
PROBES = {"nginx_probe": ("true",), "php_fpm_probe": ("true",)}


class Alpha(Configuration):
    name = "alpha"
    subscribes = ("unix-users",)
    checks = CHECKS
    probes = PROBES

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Planned.files.get("alpha", [])


class Beta(Configuration):
    name = "beta"
    depends_on = ("alpha",)
    checks = CHECKS
    probes = PROBES

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Planned.files.get("beta", [])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Planned.files = {}
    return seed_root(tmp_path / "root")


def engine_for(settings: Settings) -> Engine:
    return Engine(Registry([Alpha, Beta]), settings)


EMPTY = Snapshot(1)


def group_id(root: Path, name: str) -> int:
    """The gid of group ``name`` in the root's own etc/group (seed_root keeps the host's)."""
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no group {name} in {root}/etc/group")


def read(root: Path, path: str) -> tuple[bytes, int]:
    real = root / path.lstrip("/")
    return real.read_bytes(), real.stat().st_mode & 0o7777


def test_new_files_are_written_with_mode_and_a_second_run_is_a_no_op(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [
        File("/etc/app/a.conf", "a\n", mode=0o640, group="crontab"),
        Directory("/srv/data", mode=0o711),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
    ]
    report = engine_for(settings).apply(EMPTY)
    assert report.changed == {"alpha": ["/etc/app/a.conf", "/srv/data"]}
    assert read(root, "/etc/app/a.conf") == (b"a\n", 0o640)
    assert (root / "etc/app/a.conf").stat().st_gid == group_id(root, "crontab")
    assert (root / "srv/data").stat().st_mode & 0o7777 == 0o711
    assert actions(root) == ["reload app"]

    before = {p: os.stat(p).st_mtime_ns for p in root.rglob("*")}
    again = engine_for(settings).apply(EMPTY)
    assert again.changed == {} and again.actions == []
    assert actions(root) == ["reload app"]
    assert {p: os.stat(p).st_mtime_ns for p in root.rglob("*")} == before
    assert not engine_for(settings).plan(EMPTY).has_changes


def test_mode_only_change_keeps_content_and_triggers(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n", mode=0o644)]
    engine_for(settings).apply(EMPTY)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n", mode=0o600)]
    planned = engine_for(settings).plan(EMPTY)
    assert [op.reasons for op in planned.operations[0].files] == [("mode 0644 -> 0600",)]  # type: ignore[union-attr]
    engine_for(settings).apply(EMPTY)
    assert read(root, "/etc/app/a.conf") == (b"a\n", 0o600)


def test_files_no_longer_planned_are_removed_but_foreign_files_are_not(root: Path) -> None:
    settings = node_settings(root)
    foreign = root / "etc/app/foreign.conf"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("not ccm's\n")
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n"), File("/etc/app/b.conf", "b\n")]
    engine_for(settings).apply(EMPTY)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n")]
    report = engine_for(settings).apply(EMPTY)
    assert report.changed == {"alpha": ["/etc/app/b.conf"]}
    assert not (root / "etc/app/b.conf").exists()
    assert foreign.read_text() == "not ccm's\n"
    assert (root / "etc/app/a.conf").exists()


def test_a_removed_file_replays_its_reload_but_never_its_command(root: Path) -> None:
    """A reload is what nginx needs when a vhost file goes; a command works on the file
    that triggered it (postmap builds that map), so with the file gone it has nothing to
    do and would fail the run (seen in the demo when a node left the postfix group)."""
    settings = node_settings(root)
    built = root / "built.log"
    build = ("sh", "-c", f'test -e "$1" && echo "$1" >> {built}', "sh", "{root}/etc/app/map")
    Planned.files["alpha"] = [
        File("/etc/app/map", "k v\n"),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
        Command(build, triggers=("/etc/app/map",)),
    ]
    engine_for(settings).apply(EMPTY)
    assert actions(root) == ["reload app"]
    assert built.read_text().count("\n") == 1
    Planned.files["alpha"] = []
    report = engine_for(settings).apply(EMPTY)  # a failing command would raise here
    assert report.changed == {"alpha": ["/etc/app/map"]}
    assert actions(root) == ["reload app", "reload app"]
    assert built.read_text().count("\n") == 1  # not run again for the removed map


def test_a_file_owned_by_another_configuration_is_a_plan_error(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n")]
    engine_for(settings).apply(EMPTY)
    Planned.files["beta"] = [File("/etc/app/a.conf", "b\n")]
    with pytest.raises(PlanError, match="already owned by alpha"):
        engine_for(settings).plan(EMPTY)


def test_failing_check_restores_every_file_of_the_run_and_reloads_nothing(root: Path) -> None:
    marker = root / "check-passes"
    settings = node_settings(root, commands={"nginx_check": ["test", "-e", str(marker)]})
    Planned.files["alpha"] = [
        File("/etc/app/kept.conf", "old kept\n", mode=0o600),
        File("/etc/app/gone.conf", "will be removed\n", mode=0o640),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
    ]
    Planned.files["beta"] = [
        File("/etc/web/site.conf", "old site\n", mode=0o644),
        Check("nginx_check", triggers=("/etc/web/",)),
        UnitAction("web", "reload", triggers=("/etc/web/",)),
    ]
    marker.touch()
    engine_for(settings).apply(EMPTY)
    marker.unlink()
    snapshot_before = {
        p.relative_to(root): (p.read_bytes(), p.stat().st_mode, p.stat().st_uid)
        for p in root.rglob("*")
        if p.is_file() and p.name != "actions.log"
    }
    actions_before = actions(root)

    Planned.files["alpha"] = [
        File("/etc/app/kept.conf", "NEW kept\n", mode=0o644),
        File("/etc/app/brand-new.conf", "new\n"),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
    ]
    Planned.files["beta"] = [
        File("/etc/web/site.conf", "NEW site\n", mode=0o600),
        File("/etc/web/deeper/new.conf", "x\n"),
        File("/etc/web2/a/b/new.conf", "x\n"),
        Check("nginx_check", triggers=("/etc/web/",)),
        UnitAction("web", "reload", triggers=("/etc/web/",)),
    ]
    with pytest.raises(CheckFailed) as failure:
        engine_for(settings).apply(EMPTY)
    assert failure.value.configuration == "beta"
    assert "test -e" in str(failure.value)
    after = {
        p.relative_to(root): (p.read_bytes(), p.stat().st_mode, p.stat().st_uid)
        for p in root.rglob("*")
        if p.is_file() and p.name != "actions.log"
    }
    assert after == snapshot_before
    assert not (root / "etc/web/deeper").exists()
    assert not (root / "etc/web2").exists(), "every directory the run created is gone"
    assert actions(root) == actions_before
    # the manifest still describes the old state: a later good run removes gone.conf
    marker.touch()
    engine_for(settings).apply(EMPTY)
    assert not (root / "etc/app/gone.conf").exists()


def test_reloads_are_deduplicated_and_a_restart_absorbs_a_reload(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [
        File("/etc/x/a", "1\n"),
        UnitAction("php8.2-fpm", "reload", triggers=("/etc/x/",)),
        UnitAction("nginx", "reload", triggers=("/etc/x/",)),
        UnitAction("untouched", "reload", triggers=("/etc/elsewhere/",)),
    ]
    Planned.files["beta"] = [
        File("/etc/y/b", "1\n"),
        UnitAction("nginx", "reload", triggers=("/etc/y/",)),
        UnitAction("php8.2-fpm", "restart", triggers=("/etc/y/",)),
    ]
    engine_for(settings).apply(EMPTY)
    assert sorted(actions(root)) == ["reload nginx", "restart php8.2-fpm"]


def test_accounts_are_made_by_real_useradd_and_foreign_accounts_are_refused(root: Path) -> None:
    settings = node_settings(root)
    user = UnixUser(id=1, username="ccmtest1", shell="/bin/sh")
    Planned.files["alpha"] = [
        Account(user.username, user.home, user.id, user.shell),
        Directory(user.home, 0o750, owner=user.username, group=user.username, owner_id=user.id),
    ]
    engine_for(settings).apply(EMPTY)
    passwd = (root / "etc/passwd").read_text()
    assert "ccmtest1:x:" in passwd and ":/home/ccmtest1:/bin/sh" in passwd
    assert "ccmtest1" not in Path("/etc/passwd").read_text()
    home = root / "home/ccmtest1"
    assert home.stat().st_mode & 0o7777 == 0o750
    assert home.stat().st_uid != 0

    Planned.files["alpha"] = [Account(user.username, user.home, user.id, "/bin/bash")]
    engine_for(settings).apply(EMPTY)
    assert ":/home/ccmtest1:/bin/bash" in (root / "etc/passwd").read_text()

    Planned.files["alpha"] = []
    engine_for(settings).apply(EMPTY)
    assert "ccmtest1:" not in (root / "etc/passwd").read_text()
    assert home.exists(), "a deleted account's home directory is kept (it holds data)"

    Planned.files["alpha"] = [Account("games", "/usr/games", 5, "/bin/sh")]
    with pytest.raises(PlanError, match="not created by ccm"):
        engine_for(settings).plan(EMPTY)


def test_an_account_created_in_a_failed_run_is_removed_again(root: Path) -> None:
    settings = node_settings(root, commands={"nginx_check": ["false"]})
    Planned.files["alpha"] = [Account("ccmtest2", "/home/ccmtest2", 2)]
    Planned.files["beta"] = [File("/etc/web/x", "x\n"), Check("nginx_check", triggers=("/etc/",))]
    with pytest.raises(CheckFailed):
        engine_for(settings).apply(EMPTY)
    assert "ccmtest2:" not in (root / "etc/passwd").read_text()


def test_unknown_owner_is_a_clear_error_and_nothing_is_written(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [File("/etc/a", "a\n", owner="nosuchuser")]
    with pytest.raises(PlanError, match="'nosuchuser' is not an account"):
        engine_for(settings).apply(EMPTY)
    assert not (root / "etc/a").exists()


def test_commands_fill_placeholders_from_settings(root: Path) -> None:
    settings = node_settings(
        root, commands={"php_fpm_check": logging_command(root, "php-fpm{version} -t")}
    )
    Planned.files["alpha"] = [
        File("/etc/php/8.2/fpm/pool.d/a.conf", "[a]\n"),
        Check("php_fpm_check", triggers=("/etc/php/8.2/",), variables={"version": "8.2"}),
    ]
    engine_for(settings).apply(EMPTY)
    assert actions(root) == ["php-fpm8.2 -t"]


def test_an_existing_file_ccm_did_not_write_is_refused_not_overwritten(root: Path) -> None:
    settings = node_settings(root)
    existing = root / "etc/app/a.conf"
    existing.parent.mkdir(parents=True)
    existing.write_text("hand-written\n")
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n")]
    with pytest.raises(PlanError, match="not written by ccm"):
        engine_for(settings).apply(EMPTY)
    assert existing.read_text() == "hand-written\n"


def test_a_failed_reload_keeps_the_files_and_runs_again_on_the_next_run(root: Path) -> None:
    reload_ok = root / "reload-works"
    settings = node_settings(
        root,
        commands={
            "reload_unit": [
                "sh",
                "-c",
                f'test -e {reload_ok} && echo "reload $1" >> {root}/actions.log',
                "sh",
                "{unit}",
            ]
        },
    )
    Planned.files["alpha"] = [
        File("/etc/app/a.conf", "a\n"),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
    ]
    with pytest.raises(ActionFailed) as failure:
        engine_for(settings).apply(EMPTY)
    assert failure.value.configuration == "alpha"
    assert read(root, "/etc/app/a.conf") == (b"a\n", 0o644), "checked files stay in place"
    pending = engine_for(settings).plan(EMPTY)
    assert pending.has_changes, "ccm diff must show the reload still to do"
    assert actions_that_would_run(pending.operations, pending.manifest.pending_actions) == [
        "reload app (pending from an earlier run)"
    ]
    reload_ok.touch()
    report = engine_for(settings).apply(EMPTY)
    assert report.changed == {} and report.actions == ["reload app"]
    assert actions(root) == ["reload app"]
    assert engine_for(settings).apply(EMPTY).actions == [], "done once it succeeded"


def test_an_os_error_is_a_run_error_naming_the_configuration_and_restores(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n")]
    engine_for(settings).apply(EMPTY)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "changed\n")]
    Planned.files["beta"] = [File("/etc/blocked/b.conf", "b\n")]
    planned = engine_for(settings).plan(EMPTY)
    # the node changes between plan and apply: a file where a directory must go
    (root / "etc/blocked").write_text("in the way\n")
    executor = Executor(settings, planned.manifest, planned.accounts)
    with pytest.raises(RunError) as failure:
        executor.apply(planned.operations)
    assert failure.value.configuration == "beta"
    assert "NotADirectoryError" in str(failure.value)
    assert read(root, "/etc/app/a.conf") == (b"a\n", 0o644)
    # and planning against such a node is a clear plan error, not a traceback
    with pytest.raises(PlanError, match="beta: NotADirectoryError"):
        engine_for(settings).plan(EMPTY)


def test_a_guard_that_stops_the_run_restores_it_and_leaves_nothing_foreign(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n"), File("/etc/app/b.conf", "b\n")]
    calls = 0

    def guard() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # after the first file was written
            raise LockLost("lease gone")

    engine = engine_for(settings)
    with pytest.raises(LockLost):
        engine.apply(EMPTY, guard=guard)
    assert not (root / "etc/app").exists()
    engine_for(settings).apply(EMPTY)  # nothing left behind is refused as foreign
    assert read(root, "/etc/app/b.conf") == (b"b\n", 0o644)


def test_uids_follow_object_ids_and_a_kept_home_is_never_handed_to_another_object(
    root: Path,
) -> None:
    settings = node_settings(root, accounts={"uid_base": 30000})

    def user(object_id: int) -> list[Change]:
        return [
            Account("ccmtest3", "/home/ccmtest3", object_id),
            Directory("/home/ccmtest3", 0o750, "ccmtest3", "ccmtest3", owner_id=object_id),
        ]

    Planned.files["alpha"] = user(7)
    engine_for(settings).apply(EMPTY)
    assert ":30007:" in (root / "etc/passwd").read_text()
    assert (root / "home/ccmtest3").stat().st_uid == 30007

    Planned.files["alpha"] = []  # deleted: the account goes, its home (data) stays
    engine_for(settings).apply(EMPTY)
    # another object takes the same name: it must not get the old home and its data
    Planned.files["alpha"] = user(8)
    with pytest.raises(PlanError, match="belongs to uid 30007.*refusing to hand it over"):
        engine_for(settings).plan(EMPTY)
    # the same object coming back gets its own uid, and so its own home, again
    Planned.files["alpha"] = user(7)
    engine_for(settings).apply(EMPTY)
    assert (root / "home/ccmtest3").stat().st_uid == 30007


def test_a_user_is_deleted_after_the_reloads_and_a_failed_userdel_is_retried(root: Path) -> None:
    userdel_ok = root / "userdel-works"
    log = root / "actions.log"
    settings = node_settings(
        root,
        commands={
            "userdel": [
                "sh",
                "-c",
                f'echo "try userdel $1" >> {log}; '
                f'test -e {userdel_ok} && echo "userdel $1" >> {log} && userdel --prefix "$2" "$1"',
                "sh",
                "{username}",
                "{root}",
            ]
        },
    )
    Planned.files["alpha"] = [Account("ccmtest4", "/home/ccmtest4", 4)]
    Planned.files["beta"] = [
        File("/etc/php/pool.d/ccmtest4.conf", "[ccmtest4]\n"),
        UnitAction("php-fpm", "reload", triggers=("/etc/php/",)),
    ]
    engine_for(settings).apply(EMPTY)
    assert actions(root) == ["reload php-fpm"]
    # the customer is deleted: pool and user in one run (the unit's reload stays planned)
    Planned.files = {"beta": [UnitAction("php-fpm", "reload", triggers=("/etc/php/",))]}
    with pytest.raises(ActionFailed, match="userdel"):
        engine_for(settings).apply(EMPTY)
    deletion_run = actions(root)[1:]
    # the pool's workers went first: this run's own reload, then the (failing) userdel
    assert deletion_run == ["reload php-fpm", "try userdel ccmtest4"]
    assert not (root / "etc/php/pool.d/ccmtest4.conf").exists()
    assert "ccmtest4:" in (root / "etc/passwd").read_text()
    userdel_ok.touch()
    engine_for(settings).apply(EMPTY)
    assert actions(root)[3:] == ["try userdel ccmtest4", "userdel ccmtest4"]
    assert "ccmtest4:" not in (root / "etc/passwd").read_text()


def test_an_unreadable_manifest_halts_instead_of_orphaning_every_file(root: Path) -> None:
    settings = node_settings(root)
    Planned.files["alpha"] = [File("/etc/app/a.conf", "a\n")]
    engine = engine_for(settings)
    engine.apply(EMPTY)
    engine.manifest_path.write_text('{"version": 1, "configurations": {"alpha": {"fi')
    with pytest.raises(RunError, match="cannot be read.*restore it"):
        engine_for(settings).plan(EMPTY)


CRASH_DURING_CHECK = """
import sys
sys.path.insert(0, {tests!r})
from ccm.testing.noderoot import node_settings
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import Snapshot
from configurations import CONFIGURATIONS
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost
settings = node_settings(__import__("pathlib").Path({root!r}),
                         commands={{"nginx_check": ["sh", "-c", "kill -9 $PPID; sleep 5"]}})
snapshot = Snapshot.of(1, [
    UnixUser(id=1, username="ccmtest5"),
    VirtualHost(id=1, domain="crash.example.com", unix_user_id=1,
                document_root="/home/ccmtest5/www"),
])
Engine(Registry(CONFIGURATIONS), settings).apply(snapshot)
"""


def test_files_written_by_a_run_killed_before_their_check_are_checked_next_time(
    root: Path,
) -> None:
    """A SIGKILL between a write and its check: the next run checks and reloads anyway."""
    import subprocess
    import sys

    from configurations import CONFIGURATIONS
    from configurations.unix_users import UnixUser
    from configurations.virtual_hosts import VirtualHost

    script = CRASH_DURING_CHECK.format(tests=str(Path(__file__).parent), root=str(root))
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert crashed.returncode == -9, crashed.stderr.decode()
    vhost = root / "etc/nginx/sites-enabled/crash.example.com.conf"
    assert vhost.exists(), "the kill came after the write"
    assert "reload nginx" not in actions(root)

    snapshot = Snapshot.of(
        1,
        [
            UnixUser(id=1, username="ccmtest5"),
            VirtualHost(
                id=1, domain="crash.example.com", unix_user_id=1, document_root="/home/ccmtest5/www"
            ),
        ],
    )
    engine = Engine(Registry(CONFIGURATIONS), node_settings(root))
    assert engine.plan(snapshot).has_changes
    report = engine.apply(snapshot)
    assert "check nginx" in actions(root) and "reload nginx" in actions(root)
    assert "reload nginx" in report.actions
    assert not Engine(Registry(CONFIGURATIONS), node_settings(root)).plan(snapshot).has_changes


def test_the_files_of_a_run_are_synced_once_after_all_are_written_and_before_any_reload(
    root: Path,
) -> None:
    """Written without an fsync each (thousands on a new node), the run's files are
    put on disk in one go: after the last write and its check, before the manifest
    calls them checked and before anything reloads them."""
    settings = node_settings(root)
    Planned.files["alpha"] = [
        File("/etc/app/a.conf", "a\n"),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
    ]
    Planned.files["beta"] = [File("/srv/b/b.conf", "b\n")]
    seen: list[tuple[list[Path], list[str], bytes, bytes]] = []

    def sync(paths: Iterable[Path]) -> None:
        manifest = (root / settings.state_dir.lstrip("/") / "manifest.json").read_bytes()
        content = (root / "srv/b/b.conf").read_bytes()
        seen.append((sorted(paths), actions(root), content, manifest))

    planned = engine_for(settings).plan(EMPTY)
    Executor(settings, planned.manifest, planned.accounts, sync=sync).apply(planned.operations)
    ((paths, reloaded, content, manifest),) = seen  # once
    assert paths == [root / "etc/app/a.conf", root / "srv/b/b.conf"]
    assert reloaded == [] and content == b"b\n"  # everything written, nothing reloaded
    assert b"/srv/b/b.conf" in manifest.split(b'"unverified"')[1]  # not yet called checked
    assert actions(root) == ["reload app"]


def test_a_run_of_other_configurations_keeps_the_unchecked_files_of_an_interrupted_run(
    root: Path,
) -> None:
    """A run killed between alpha's write and its check leaves alpha's file listed as
    unchecked; a run of beta alone (``ccm apply --type``) must not forget that, or the
    next run of alpha finds the file in place and never checks or reloads it."""
    settings = node_settings(root)
    Planned.files["alpha"] = [
        File("/etc/app/a.conf", "a\n"),
        UnitAction("app", "reload", triggers=("/etc/app/",)),
    ]
    Planned.files["beta"] = [File("/srv/b/b.conf", "b\n")]
    engine_for(settings).apply(EMPTY)
    path = root / "var/lib/ccm/manifest.json"
    data = json.loads(path.read_text())
    data["unverified"] = {"alpha": ["/etc/app/a.conf"]}  # as the interrupted run left it
    path.write_text(json.dumps(data))

    Planned.files["beta"] = [File("/srv/b/b.conf", "b2\n")]
    planned = engine_for(settings).plan(EMPTY)
    only_beta = [ops for ops in planned.operations if ops.configuration == "beta"]
    Executor(settings, planned.manifest, planned.accounts).apply(only_beta)
    assert json.loads(path.read_text())["unverified"] == {"alpha": ["/etc/app/a.conf"]}
    report = engine_for(settings).apply(EMPTY)
    assert "reload app" in report.actions and actions(root)[-1] == "reload app"
    assert json.loads(path.read_text())["unverified"] == {}
