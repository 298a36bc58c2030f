"""The ``extrausers`` accounts backend on a node, for real (issue 19, part 1).

A temporary root seeded with this machine's account files, the built-in configurations,
the real executor and, where a run applies, the real ``playbooks/extrausers.yml`` through
ansible-runner (packages off: the root is not ``/``). The same tenant rules as the
``useradd`` backend's tests (``test_node_refusals``): a refusal names the object and
refuses that tenant only; a home is never handed over; a refused account made earlier
stays. Plus what only this backend has: the rendered files, no ``useradd``, the move of
``useradd`` accounts keeping their uids, and no silent way back.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine, PlannedRun
from ccm.errors import PlanError
from ccm.models import CcmObject, Snapshot
from ccm.models.reserved import reserved_name
from ccm.plan.diff import describe_text
from ccm.plan.manifest import Manifest
from ccm.settings import Settings
from ccm.testing.noderoot import node_settings, prepare_extrausers_image, seed_root
from configurations import Crontabs, NginxVhosts, PhpFpmPools, PhpVersions, UnixUsers
from configurations.crons import Cron
from configurations.fpm_pools import FpmPool
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

CONFIGURATIONS = [UnixUsers, Crontabs, PhpVersions, PhpFpmPools, NginxVhosts]
UID_BASE = 20000
ALICE = UnixUser(id=1, username="alice", email="alice@example.com")
BOB = UnixUser(id=2, username="bob", shell="/usr/bin/zsh")
EXTRA = "var/lib/extrausers"


def tenant_objects(user: UnixUser) -> list[CcmObject]:
    """A pool, a vhost on it and a cron for ``user`` (ids follow the user's id)."""
    name = user.username
    return [
        user,
        FpmPool(id=user.id, name=f"{name}-web", unix_user_id=user.id, php_version="8.2"),
        VirtualHost(
            id=user.id,
            domain=f"{name}.example.com",
            unix_user_id=user.id,
            document_root=f"/home/{name}/www",
            fpm_pool_id=user.id,
        ),
        Cron(id=user.id, unix_user_id=user.id, name="job", schedule="@daily", command="true"),
    ]


def objects_of(user: UnixUser) -> set[str]:
    return {f"{kind}/{user.id}" for kind in ("unix-users", "fpm-pools", "virtual-hosts", "crons")}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return seed_root(tmp_path / "root")


def settings_for(root: Path, backend: str = "extrausers") -> Settings:
    return node_settings(root, accounts={"backend": backend})


def engine(settings: Settings) -> Engine:
    return Engine(Registry(CONFIGURATIONS), settings)


def rendered(planned: PlannedRun, name: str) -> str:
    """The content the plan writes to ``/var/lib/extrausers/<name>`` ("" if none)."""
    for ops in planned.operations:
        for step in ops.steps:
            if step.changed == f"/{EXTRA}/{name}" and hasattr(step, "change"):
                content: str = step.change.content
                return content
    return ""


def read(root: Path, path: str) -> str:
    return (root / path).read_text()


def passwd_line(user: UnixUser) -> str:
    uid = UID_BASE + user.id
    return f"{user.username}:x:{uid}:{uid}:{user.email or ''}:{user.home}:{user.shell}\n"


def test_a_cold_apply_renders_the_files_and_runs_no_useradd(root: Path) -> None:
    etc_before = {name: read(root, f"etc/{name}") for name in ("passwd", "group", "shadow")}
    snapshot = Snapshot.of(1, [*tenant_objects(ALICE), *tenant_objects(BOB)])
    report = engine(settings_for(root)).apply(snapshot)

    assert not report.refused
    assert {name: read(root, f"etc/{name}") for name in etc_before} == etc_before, "no useradd"
    assert read(root, f"{EXTRA}/passwd") == passwd_line(ALICE) + passwd_line(BOB)
    assert read(root, f"{EXTRA}/group") == "alice:x:20001:\nbob:x:20002:\n"
    assert read(root, f"{EXTRA}/shadow") == "alice:!:::::::\nbob:!:::::::\n"
    modes = {name: (root / EXTRA / name).stat() for name in ("passwd", "group", "shadow")}
    shadow_gid = int(read(root, "etc/group").split("\nshadow:x:")[1].split(":")[0])
    assert (modes["shadow"].st_mode & 0o777, modes["shadow"].st_uid) == (0o640, 0)
    assert modes["shadow"].st_gid == shadow_gid
    assert {modes[n].st_mode & 0o777 for n in ("passwd", "group")} == {0o644}
    # homes and tenant files owned by the rendered uids, as with useradd
    www_data = int(read(root, "etc/group").split("\nwww-data:x:")[1].split(":")[0])
    for user in (ALICE, BOB):
        home = (root / user.home.lstrip("/")).stat()
        assert (home.st_uid, home.st_gid, home.st_mode & 0o777) == (
            UID_BASE + user.id,
            www_data,
            0o750,
        )
        crontab = root / f"var/spool/cron/crontabs/{user.username}"
        assert crontab.stat().st_uid == UID_BASE + user.id
    assert "user = alice" in read(root, "etc/php/8.2/fpm/pool.d/alice-web.conf")
    # the playbook set nsswitch up (under the root; no package touched)
    assert "playbook extrausers.yml" in report.actions
    nsswitch = read(root, "etc/nsswitch.conf")
    for database in ("passwd", "group", "shadow"):
        assert f"\n{database}:".ljust(17) + "files extrausers" in "\n" + nsswitch
    assert Manifest.load(root / "var/lib/ccm/manifest.json").owned("unix-users").accounts == set()

    again = engine(settings_for(root)).plan(snapshot)
    assert not again.has_changes, describe_text(again.operations)


def test_the_diff_shows_the_accounts_and_never_the_shadow_content(root: Path) -> None:
    planned = engine(settings_for(root)).plan(Snapshot.of(1, [ALICE]))
    text = describe_text(planned.operations)
    assert f"+{passwd_line(ALICE)}" in text
    assert "+ file /var/lib/extrausers/shadow (new; 0640 root:shadow)" in text
    assert "alice:!" not in text
    assert "secret content not shown" in text
    assert "+ account" not in text, "no useradd is planned"
    # no password in it ("!"): not one regex alternative per account in every run's redaction
    assert not any(ops.secret_text for ops in planned.operations)


def test_uid_and_gid_collisions_with_etc_refuse_that_tenant_only_naming_it(root: Path) -> None:
    carol, dave = UnixUser(id=3, username="carol"), UnixUser(id=4, username="dave")
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write("legacy:x:20003:20003::/srv/legacy:/bin/sh\n")
    with (root / "etc/group").open("a") as group:
        group.write("ops:x:20004:\n")
    snapshot = Snapshot.of(1, [*tenant_objects(ALICE), *tenant_objects(carol), dave])
    planned = engine(settings_for(root)).plan(snapshot)

    assert set(planned.refused) == objects_of(carol) | {"unix-users/4"}
    carol_reason = planned.refused["unix-users/3"].reason
    assert "unix-users/3" in carol_reason and "uid 20003 is held by 'legacy'" in carol_reason
    dave_reason = planned.refused["unix-users/4"].reason
    assert "unix-users/4" in dave_reason and "gid 20004 is held by the group 'ops'" in dave_reason
    assert rendered(planned, "passwd") == passwd_line(ALICE)


def test_a_name_in_etc_is_never_taken_over(root: Path) -> None:
    erin, frank = UnixUser(id=5, username="erin"), UnixUser(id=6, username="frank")
    subprocess.run(["useradd", "--prefix", str(root), "--uid", "5000", "erin"], check=True)
    subprocess.run(["groupadd", "--prefix", str(root), "frank"], check=True)
    planned = engine(settings_for(root)).plan(Snapshot.of(1, [ALICE, erin, frank]))
    assert set(planned.refused) == {"unix-users/5", "unix-users/6"}
    assert "not made by ccm; refusing to take it over" in planned.refused["unix-users/5"].reason
    assert "a group of that name is in /etc/group" in planned.refused["unix-users/6"].reason
    assert rendered(planned, "passwd") == passwd_line(ALICE)


def test_a_reserved_name_or_uid_never_appears(root: Path) -> None:
    """A stored object from before a name was reserved (read without the writer's rules),
    and an id whose uid the node reserves, are refused here and never rendered."""
    old = UnixUser.model_construct(id=7, username="www", email=None, shell="/bin/sh")
    high = UnixUser(id=60000 - UID_BASE, username="high")
    planned = engine(settings_for(root)).plan(Snapshot.of(1, [ALICE, old, high]))
    assert "reserved" in planned.refused["unix-users/7"].reason
    assert "reserved range 60000-65535" in planned.refused[high.describe()].reason
    for name in ("passwd", "group", "shadow"):
        assert [line.split(":")[0] for line in rendered(planned, name).splitlines()] == ["alice"]


def test_a_deleted_users_home_is_kept_and_never_handed_to_a_new_user(root: Path) -> None:
    settings = settings_for(root)
    engine(settings).apply(Snapshot.of(1, [ALICE]))
    home = root / "home/alice"
    (home / "data.txt").write_text("alice's\n")

    report = engine(settings).apply(Snapshot.of(2, []))
    assert read(root, f"{EXTRA}/passwd") == ""
    assert "/var/lib/extrausers/passwd" in report.changed["unix-users"]
    assert (home / "data.txt").read_text() == "alice's\n"
    assert home.stat().st_uid == UID_BASE + ALICE.id

    newcomer = UnixUser(id=9, username="alice")
    report = engine(settings).apply(Snapshot.of(3, [newcomer]))
    assert "belongs to uid 20001" in report.refused["unix-users/9"].reason
    assert read(root, f"{EXTRA}/passwd") == ""
    assert home.stat().st_uid == UID_BASE + ALICE.id


def test_a_refused_account_the_files_hold_keeps_its_lines(root: Path) -> None:
    settings = settings_for(root)
    engine(settings).apply(Snapshot.of(1, [ALICE, BOB]))
    files = {name: read(root, f"{EXTRA}/{name}") for name in ("passwd", "group", "shadow")}
    # someone hands alice's home to another uid: alice is refused now
    os.chown(root / "home/alice", 4242, -1)
    changed_bob = BOB.model_copy(update={"shell": "/bin/sh"})
    report = engine(settings).apply(Snapshot.of(2, [ALICE, changed_bob]))
    assert set(report.refused) == {"unix-users/1"}
    assert read(root, f"{EXTRA}/passwd") == passwd_line(ALICE) + passwd_line(changed_bob)
    assert read(root, f"{EXTRA}/shadow") == files["shadow"]
    assert read(root, f"{EXTRA}/group") == files["group"]


def test_switching_from_useradd_moves_every_account_keeping_its_uid(root: Path) -> None:
    snapshot = Snapshot.of(1, [*tenant_objects(ALICE), *tenant_objects(BOB)])
    assert not engine(settings_for(root, "useradd")).apply(snapshot).refused
    made = {
        line.split(":")[0]: line.split(":")[2:4]
        for line in read(root, "etc/passwd").splitlines()
        if line.startswith(("alice:", "bob:"))
    }
    assert made == {"alice": ["20001", "20001"], "bob": ["20002", "20002"]}
    owners = {
        path: (root / path).stat().st_uid
        for path in ("home/alice", "home/bob", "var/spool/cron/crontabs/alice")
    }

    # ccm diff, before anything happens
    switched = engine(settings_for(root))
    planned = switched.plan(snapshot)
    text = describe_text(planned.operations)
    assert "~ account alice moves from /etc/passwd to /var/lib/extrausers (uid 20001 kept)" in text
    assert "~ account bob moves from /etc/passwd to /var/lib/extrausers (uid 20002 kept)" in text
    assert f"+{passwd_line(ALICE)}" in text
    assert "alice:" in read(root, "etc/passwd"), "a diff changes nothing"

    report = switched.apply(snapshot)
    assert not report.refused
    assert not any(
        line.startswith(("alice:", "bob:"))
        for name in ("passwd", "group", "shadow", "gshadow")
        for line in read(root, f"etc/{name}").splitlines()
    )
    assert read(root, f"{EXTRA}/passwd") == passwd_line(ALICE) + passwd_line(BOB)
    assert {path: (root / path).stat().st_uid for path in owners} == owners
    manifest = Manifest.load(root / "var/lib/ccm/manifest.json")
    assert manifest.owned("unix-users").accounts == set()
    again = engine(settings_for(root)).plan(snapshot)
    assert not again.has_changes, describe_text(again.operations)


def test_an_account_ccm_did_not_make_with_useradd_is_not_moved(root: Path) -> None:
    """A hand-made account of the tenant's name and uid is still someone else's."""
    subprocess.run(
        ["useradd", "--prefix", str(root), "--uid", "20001", "--user-group", "alice"], check=True
    )
    planned = engine(settings_for(root)).plan(Snapshot.of(1, [ALICE]))
    assert "not made by ccm" in planned.refused["unix-users/1"].reason
    assert rendered(planned, "passwd") == ""


def test_switching_back_to_useradd_fails_the_run_and_changes_nothing(root: Path) -> None:
    snapshot = Snapshot.of(1, [ALICE])
    engine(settings_for(root)).apply(snapshot)
    before = read(root, f"{EXTRA}/passwd")
    with pytest.raises(PlanError, match="switching back is not automatic"):
        engine(settings_for(root, "useradd")).apply(snapshot)
    assert read(root, f"{EXTRA}/passwd") == before
    assert "alice:" not in read(root, "etc/passwd")


def test_a_reconcile_runs_the_playbook_only_when_nsswitch_drifted(root: Path) -> None:
    snapshot = Snapshot.of(1, [ALICE])
    engine(settings_for(root)).apply(snapshot)
    nsswitch = root / "etc/nsswitch.conf"
    ready = nsswitch.read_text()

    full = engine(settings_for(root))
    assert not full.plan(snapshot, full=True).has_changes, "no seconds of Ansible every hour"
    assert "playbook extrausers.yml" not in full.apply(snapshot, full=True).actions

    nsswitch.write_text(ready.replace("files extrausers", "files"))
    assert engine(settings_for(root)).plan(snapshot).has_changes is False, "only a full run"
    report = engine(settings_for(root)).apply(snapshot, full=True)
    assert "playbook extrausers.yml" in report.actions
    assert nsswitch.read_text() == ready


def test_a_name_reserved_after_it_was_rendered_leaves_the_files(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused account keeps its lines, except when the refusal is its name: a name
    reserved later (a package brought that system account) never stays rendered."""
    settings = settings_for(root)
    engine(settings).apply(Snapshot.of(1, [ALICE, BOB]))
    monkeypatch.setattr(
        "ccm.plan.extrausers.reserved_name", lambda name: name == "alice" or reserved_name(name)
    )
    report = engine(settings).apply(Snapshot.of(2, [ALICE, BOB]))
    assert "reserved" in report.refused["unix-users/1"].reason
    for name in ("passwd", "group", "shadow"):
        assert [line.split(":")[0] for line in read(root, f"{EXTRA}/{name}").splitlines()] == [
            "bob"
        ]


def test_ccm_diff_shows_the_switch_before_ccm_apply_does_it(
    ccm_settings: Settings, tmp_path: Path
) -> None:
    """The documented migration through the real ``ccm`` command and a real etcd: apply
    with useradd; set ``backend = "extrausers"``; ``ccm diff`` (exit 2) shows each move
    with its uid and the new passwd lines, changing nothing; ``ccm apply --all`` moves
    them (a plain ``ccm apply`` catches up on events only, and a settings change is none);
    ``ccm diff`` then has nothing to do (exit 0)."""
    from ccm.testing.node import CcmNode

    before = CcmNode(ccm_settings, tmp_path / "useradd.toml")
    before.put("unix-users", [ALICE, BOB])
    before.apply()
    assert "alice:x:20001:20001:" in before.read("/etc/passwd")

    extrausers = ccm_settings.model_copy(
        update={"accounts": ccm_settings.accounts.model_copy(update={"backend": "extrausers"})}
    )
    after = CcmNode(extrausers, tmp_path / "extrausers.toml")
    shown = after.diff()
    assert shown.returncode == 2, shown
    for user in (ALICE, BOB):
        uid = UID_BASE + user.id
        line = f"~ account {user.username} moves from /etc/passwd to /var/lib/extrausers"
        assert f"{line} (uid {uid} kept)" in shown.stdout, shown
        assert f"+{passwd_line(user)}" in shown.stdout, shown
    assert "alice:x:20001" in after.read("/etc/passwd"), "ccm diff changed nothing"
    assert not after.path(f"/{EXTRA}/passwd").exists()

    # a settings change is no event: a plain `ccm apply` has nothing to catch up on
    after.apply()
    assert "alice:x:20001" in after.read("/etc/passwd")
    after.apply("--all")
    assert "alice:" not in after.read("/etc/passwd")
    assert after.read(f"/{EXTRA}/passwd") == passwd_line(ALICE) + passwd_line(BOB)
    assert after.diff().returncode == 0


def test_a_new_node_from_a_prepared_image_skips_the_playbook_until_it_changes(
    root: Path,
) -> None:
    prepare_extrausers_image(root)
    snapshot = Snapshot.of(1, [ALICE])
    report = engine(settings_for(root)).apply(snapshot)
    assert not report.refused and "playbook extrausers.yml" not in report.actions
    assert read(root, f"{EXTRA}/passwd") == passwd_line(ALICE)
    assert not engine(settings_for(root)).plan(snapshot, full=True).has_changes
    # recorded as run: a changed playbook (its extra-vars) runs it on this node too
    changed = node_settings(
        root, accounts={"backend": "extrausers"}, ansible={"extra_vars": {"x": "1"}}
    )
    assert "playbook extrausers.yml" in engine(changed).apply(snapshot).actions


@pytest.mark.parametrize("missing", ["module", "nsswitch"])
def test_a_new_node_missing_either_half_of_the_image_runs_the_playbook(
    root: Path, missing: str
) -> None:
    prepare_extrausers_image(root)
    if missing == "module":
        (root / "usr/lib/libnss_extrausers.so.2").unlink()
    else:
        (root / "etc/nsswitch.conf").write_text("passwd: files systemd\n")
    report = engine(settings_for(root)).apply(Snapshot.of(1, [ALICE]))
    assert "playbook extrausers.yml" in report.actions
