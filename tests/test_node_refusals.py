"""A node refuses one tenant's object, never the whole run, for what that tenant caused;
it never hands over ownership and never writes through a symlink (issue 7, findings 2-4).

Real parts: a temporary root with real ``useradd --prefix``, the built-in configurations,
and for the etcd records a real etcd and the real ``NodeRun``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.history import RunHistory
from ccm.cluster.status import cluster_status, format_status
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import RunError
from ccm.models import CcmObject, Snapshot
from ccm.plan.changes import Change, File
from ccm.plan.configuration import Configuration, Render
from ccm.plan.manifest import Manifest
from ccm.settings import EtcdSettings, Settings
from ccm.testing.noderoot import node_settings, seed_root
from configurations import Crontabs, NginxVhosts, PhpFpmPools, PhpVersions, UnixUsers
from configurations.crons import Cron
from configurations.fpm_pools import FpmPool
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

CONFIGURATIONS = [UnixUsers, Crontabs, PhpVersions, PhpFpmPools, NginxVhosts]
ALICE = UnixUser(id=1, username="alice")
BOB = UnixUser(id=2, username="bob")


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


SNAPSHOT = Snapshot.of(7, [*tenant_objects(ALICE), *tenant_objects(BOB)])
ALICE_OBJECTS = {"unix-users/1", "fpm-pools/1", "virtual-hosts/1", "crons/1"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return seed_root(tmp_path / "root")


def engine(settings: Settings) -> Engine:
    return Engine(Registry(CONFIGURATIONS), settings)


def useradd(root: Path, *args: str) -> None:
    subprocess.run(["useradd", "--prefix", str(root), *args], check=True, capture_output=True)


def bob_was_applied(root: Path) -> None:
    assert (root / "etc/nginx/sites-enabled/bob.example.com.conf").exists()
    assert (root / "etc/php/8.2/fpm/pool.d/bob-web.conf").exists()
    assert (root / "var/spool/cron/crontabs/bob").exists()
    assert "bob:" in (root / "etc/passwd").read_text()


def nothing_of_alice(root: Path) -> None:
    assert not (root / "etc/nginx/sites-enabled/alice.example.com.conf").exists()
    assert not (root / "etc/php/8.2/fpm/pool.d/alice-web.conf").exists()


def test_an_account_made_by_hand_refuses_that_tenant_only(root: Path) -> None:
    useradd(root, "--uid", "5000", "alice")
    report = engine(node_settings(root)).apply(SNAPSHOT)
    assert set(report.refused) == ALICE_OBJECTS
    assert "was not created by ccm" in report.refused["unix-users/1"].reason
    assert report.refused["unix-users/1"].configuration == "unix-users"
    assert "unix-users/1" in report.refused["virtual-hosts/1"].reason
    nothing_of_alice(root)
    assert not (root / "var/spool/cron/crontabs/alice").exists()
    bob_was_applied(root)


def test_a_crontab_the_user_wrote_is_kept_and_only_their_crons_refused(root: Path) -> None:
    settings = node_settings(root)
    assert not engine(settings).apply(Snapshot.of(1, [ALICE])).refused
    own = root / "var/spool/cron/crontabs/alice"  # `crontab -e` before the first cron
    own.parent.mkdir(parents=True)
    own.write_text("* * * * * my-own-job\n")
    report = engine(settings).apply(SNAPSHOT)
    assert set(report.refused) == {"crons/1"}
    assert "not written by ccm" in report.refused["crons/1"].reason
    assert own.read_text() == "* * * * * my-own-job\n"
    assert (root / "etc/nginx/sites-enabled/alice.example.com.conf").exists()
    bob_was_applied(root)


def test_a_uid_held_by_another_account_refuses_the_tenant(root: Path) -> None:
    useradd(root, "--uid", str(20000 + ALICE.id), "legacy")
    report = engine(node_settings(root)).apply(SNAPSHOT)
    assert set(report.refused) == ALICE_OBJECTS
    assert "'legacy'" in report.refused["unix-users/1"].reason
    bob_was_applied(root)


def test_a_group_of_the_users_name_refuses_the_tenant(root: Path) -> None:
    subprocess.run(["groupadd", "--prefix", str(root), "alice"], check=True)
    report = engine(node_settings(root)).apply(SNAPSHOT)
    assert "a group of that name" in report.refused["unix-users/1"].reason
    bob_was_applied(root)


def test_a_uid_the_node_reserves_refuses_the_tenant(root: Path) -> None:
    settings = node_settings(root, accounts={"uid_base": 65534 - ALICE.id})
    report = engine(settings).apply(Snapshot.of(1, [ALICE]))
    assert "reserved" in report.refused["unix-users/1"].reason
    assert "alice:" not in (root / "etc/passwd").read_text()


def test_a_root_owned_home_is_never_handed_to_a_tenant(root: Path) -> None:
    home = root / "home/alice"
    home.mkdir(parents=True, mode=0o700)
    (home / "secret").write_text("root's")
    report = engine(node_settings(root)).apply(SNAPSHOT)
    assert "refusing to hand it over" in report.refused["unix-users/1"].reason
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (0, 0o700)
    # the account is one of the refused object's changes: it is not made either
    assert "alice:" not in (root / "etc/passwd").read_text()
    assert "account:alice" not in report.changed.get("unix-users", [])
    bob_was_applied(root)


def test_a_refused_tenants_earlier_files_stay_as_they_were(root: Path) -> None:
    settings = node_settings(root)
    engine(settings).apply(SNAPSHOT)
    vhost = root / "etc/nginx/sites-enabled/alice.example.com.conf"
    before = vhost.read_bytes()
    # the account vanished by hand (uid now someone else's): refuse, keep alice's files
    subprocess.run(["userdel", "--prefix", str(root), "alice"], check=True)
    useradd(root, "--uid", str(20000 + ALICE.id), "intruder")
    report = engine(settings).apply(SNAPSHOT)
    assert set(report.refused) == ALICE_OBJECTS
    assert vhost.read_bytes() == before
    assert (root / "var/spool/cron/crontabs/alice").exists()


class Quotas(Configuration):
    """A configuration that runs last and plans one file per user: a file there that ccm
    did not write refuses the user after every other configuration planned for them."""

    name = "quotas"
    subscribes = (UnixUser.TYPE,)
    depends_on = ("nginx-vhosts", "crontabs")

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [
            File(f"/etc/quota/{user.username}", "1G\n", origin=(user.describe(),))
            for user in snapshot.all(UnixUser)
        ]


def test_an_object_refused_by_a_later_configuration_leaves_nothing_behind(root: Path) -> None:
    """The account, home, pool, vhost and cron of alice were planned before the last
    configuration refused her: none of them is made, and bob's all are."""
    (root / "etc/quota").mkdir(parents=True)
    (root / "etc/quota/alice").write_text("root's\n")
    report = Engine(Registry([*CONFIGURATIONS, Quotas]), node_settings(root)).apply(SNAPSHOT)
    assert set(report.refused) == ALICE_OBJECTS
    assert "/etc/quota/alice exists but was not written by ccm" in (
        report.refused["unix-users/1"].reason
    )
    assert "alice:" not in (root / "etc/passwd").read_text()
    assert not (root / "home/alice").exists()
    assert not (root / "var/spool/cron/crontabs/alice").exists()
    nothing_of_alice(root)
    assert not [path for path in report.changed_paths if "alice" in path]
    assert (root / "etc/quota/alice").read_text() == "root's\n"
    bob_was_applied(root)
    assert (root / "etc/quota/bob").read_text() == "1G\n"


class Greetings(Configuration):
    """One file per user, owned by that user, for an object (``greetings/<id>``) that the
    store knows nothing of: only the account's absence can refuse it."""

    name = "greetings"
    subscribes = (UnixUser.TYPE,)
    depends_on = ("unix-users",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [
            File(
                f"/etc/greetings/{user.username}",
                "hello\n",
                owner=user.username,
                origin=(f"greetings/{user.id}",),
            )
            for user in snapshot.all(UnixUser)
        ]


def test_an_account_refused_with_its_home_is_not_counted_on_by_later_configurations(
    root: Path,
) -> None:
    """alice's account was planned, then her home refused her: a later file owned by alice
    is refused (no such account), not planned for an account that will not be made."""
    (root / "home/alice").mkdir(parents=True)
    registry = Registry([*CONFIGURATIONS, Greetings])
    report = Engine(registry, node_settings(root)).apply(Snapshot.of(1, [ALICE, BOB]))
    assert set(report.refused) == {"unix-users/1", "greetings/1"}
    reason = report.refused["greetings/1"].reason
    assert reason == "/etc/greetings/alice: owner 'alice' is not an account on this node"
    assert not (root / "etc/greetings/alice").exists()
    assert (root / "etc/greetings/bob").read_text() == "hello\n"


@pytest.mark.parametrize("directory", ["etc/nginx/sites-enabled", "var/spool/cron/crontabs"])
def test_a_directory_replaced_by_a_symlink_is_never_written_through(
    root: Path, tmp_path: Path, directory: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = root / directory
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere)
    with pytest.raises(RunError, match="symlink"):
        engine(node_settings(root)).apply(SNAPSHOT)
    assert os.listdir(elsewhere) == []
    assert "alice:" not in (root / "etc/passwd").read_text()  # the run was rolled back


# -- the records in etcd ---------------------------------------------------------------------


def node_run(root: Path, etcd_settings: EtcdSettings, client: EtcdClient) -> NodeRun:
    settings = node_settings(
        root, node="web01", etcd=etcd_settings.model_dump(), debounce={"quiet": 0}
    )
    return NodeRun(settings, client, engine(settings))


def put_tenants(store: ObjectStore) -> None:
    for user in (ALICE, BOB):
        for obj in tenant_objects(user):
            store.put(obj.TYPE, [obj.model_dump(mode="json")])


def test_refusals_are_recorded_per_object_and_cleared_when_applied(
    root: Path, store: ObjectStore, etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    put_tenants(store)
    useradd(root, "--uid", "5000", "alice")
    run = node_run(root, etcd_settings, etcd_client)

    outcome = run.run(full=True)
    assert outcome.result == "success"
    assert run.halt.get() is None  # the fleet goes on
    record = etcd_client.get(f"{etcd_settings.prefix}/failures/unix-users/1/web01")
    assert record is not None
    data = json.loads(record.value)
    assert data["configuration"] == "unix-users"
    assert "was not created by ccm" in data["error"]
    assert data["revision"] == outcome.revision

    status = cluster_status(etcd_client, etcd_settings.prefix)
    assert {f["object"] for f in status["refused"]} == ALICE_OBJECTS
    assert status["nodes"][0]["last_run"]["refused"].keys() == ALICE_OBJECTS
    assert "unix-users/1 on web01" in format_status(status)

    subprocess.run(["userdel", "--prefix", str(root), "alice"], check=True)
    assert run.run(full=True).result == "success"
    assert cluster_status(etcd_client, etcd_settings.prefix)["refused"] == []
    assert (root / "etc/nginx/sites-enabled/alice.example.com.conf").exists()


def test_a_vhost_of_the_longest_domain_is_written(root: Path) -> None:
    label = "a" * 63
    longest = ".".join([label, label, label, "a" * 57, "com"])
    site = VirtualHost(id=9, domain=longest, unix_user_id=ALICE.id, document_root="/home/alice/www")
    report = engine(node_settings(root)).apply(Snapshot.of(1, [ALICE, site]))
    assert not report.refused
    sites = root / "etc/nginx/sites-enabled"
    written = [p for p in sites.iterdir() if p.name != "ccm-default.conf"]
    assert len(written) == 1 and longest in written[0].read_text()
    assert not [p for p in sites.iterdir() if p.name.startswith(".ccm-")]


def test_a_refused_user_leaves_no_account_and_no_history_of_one(
    root: Path, store: ObjectStore, etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    """Issue 15, finding 5: the home refuses the user after its account was planned."""
    carol = UnixUser(id=3, username="carol")
    (root / "home/carol").mkdir(parents=True)  # root's, made by hand
    store.put(carol.TYPE, [carol.model_dump(mode="json")])
    run = node_run(root, etcd_settings, etcd_client)

    outcome = run.run(full=True)
    assert outcome.result == "success"
    assert "carol:" not in (root / "etc/passwd").read_text()
    assert "carol:" not in (root / "etc/group").read_text()
    (record,) = RunHistory(etcd_client, etcd_settings.prefix).read(node="web01")
    assert "account:carol" not in record.changed
    assert "unix-users/3" in record.refused
    failure = etcd_client.get(f"{etcd_settings.prefix}/failures/unix-users/3/web01")
    assert failure is not None
    assert "refusing to hand it over" in json.loads(failure.value)["error"]
    assert Manifest.load(root / "var/lib/ccm/manifest.json").owner_of_account("carol") is None
