"""A pool of a PHP version the node lacks never halts the fleet (issue 15, finding 3).

Without a ``clusters`` object (the README allows it: PHP versions are then not managed)
the writer cannot know which versions the nodes have, so it accepts any ``php_version``
from 5.0 to 9.9. Before the fix, the node wrote ``/etc/php/9.9/fpm/pool.d/<pool>.conf``,
ran ``php-fpm9.9 -t`` (exit 127) and halted the whole fleet. Now:

- a version a ``clusters`` object lists is the playbook's to install, in the same run,
  before the pools (and the writer refuses a pool of an unlisted version while one
  exists);
- any other version is provided by the node only if someone installed it there (its
  ``pool.d/`` exists); otherwise the pool, and the vhosts on it, are refused on that
  node alone, recorded in ``/ccm/failures``, and the rest applies.

Real parts: a real etcd and ``NodeRun`` for the records, a temporary root with real
``useradd --prefix``, and the property test's real ``php-fpm -t`` check (a version the
machine lacks fails it with exit 127, as on a node).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_accepted_applies import PHP_FPM_CHECK, PlaceholderPlaybooks

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import CcmObject, Snapshot
from ccm.plan.diff import describe_text
from ccm.settings import EtcdSettings, Settings
from ccm.testing.noderoot import actions, node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.clusters import Cluster
from configurations.fpm_pools import FpmPool
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

ALICE = UnixUser(id=1, username="alice")
BOB = UnixUser(id=2, username="bob")
MISSING = "PHP 9.9 is not installed on this node and no clusters object lists it"


def tenant(user: UnixUser, version: str) -> list[CcmObject]:
    """``user``, a pool of ``version`` and a vhost on it (ids follow the user's)."""
    name = user.username
    return [
        user,
        FpmPool(id=user.id, name=f"{name}-web", unix_user_id=user.id, php_version=version),
        VirtualHost(
            id=user.id,
            domain=f"{name}.example.com",
            unix_user_id=user.id,
            document_root=f"/home/{name}/www",
            fpm_pool_id=user.id,
        ),
    ]


def pool_file(root: Path, version: str, user: UnixUser) -> Path:
    return root / f"etc/php/{version}/fpm/pool.d/{user.username}-web.conf"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A node with PHP 8.2 installed (its pool.d/), as this machine."""
    return seed_root(tmp_path / "root")


def engine(settings: Settings) -> Engine:
    return Engine(Registry(CONFIGURATIONS), settings, playbooks=PlaceholderPlaybooks(settings))


# -- the finding, end to end: records in etcd, the real php-fpm check ------------------------


def test_a_version_the_node_lacks_is_refused_there_and_the_fleet_goes_on(
    root: Path, store: ObjectStore, etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    for obj in [*tenant(ALICE, "9.9"), *tenant(BOB, "8.2")]:  # no clusters object
        store.put(obj.TYPE, [obj.model_dump(mode="json")])
    settings = node_settings(
        root,
        node="web01",
        etcd=etcd_settings.model_dump(),
        debounce={"quiet": 0},
        commands={"php_fpm_check": PHP_FPM_CHECK},
    )
    run = NodeRun(settings, etcd_client, engine(settings))

    outcome = run.run(full=True)
    assert outcome.result == "success", outcome
    assert run.halt.get() is None  # the fleet goes on
    for name in ("fpm-pools/1", "virtual-hosts/1"):
        record = etcd_client.get(f"{etcd_settings.prefix}/failures/{name}/web01")
        assert record is not None, name
        assert json.loads(record.value)["revision"] == outcome.revision
    pool = json.loads(etcd_client.get(f"{etcd_settings.prefix}/failures/fpm-pools/1/web01").value)
    assert pool["configuration"] == "php-fpm-pools"
    assert pool["error"] == f"{MISSING} (no /etc/php/9.9/fpm/pool.d/ here)"
    # nothing of alice's pool on the node; bob's applied, checked by the real php-fpm8.2
    assert not (root / "etc/php/9.9").exists()
    assert not (root / "etc/nginx/sites-enabled/alice.example.com.conf").exists()
    assert pool_file(root, "8.2", BOB).is_file()
    assert (root / "etc/nginx/sites-enabled/bob.example.com.conf").is_file()
    assert "reload php8.2-fpm" in actions(root)
    assert not [line for line in actions(root) if "9.9" in line]


# -- who provides a version ----------------------------------------------------------------


def test_a_version_installed_by_hand_applies_without_a_clusters_object(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root", php_versions=("8.2", "8.1"))
    report = engine(node_settings(root)).apply(Snapshot.of(1, tenant(ALICE, "8.1")))
    assert report.refused == {}
    assert pool_file(root, "8.1", ALICE).is_file()
    assert "check php8.1" in actions(root)


def test_a_listed_version_is_the_playbooks_and_applies_in_the_same_run(root: Path) -> None:
    """The node lacks 8.3 when the run is planned; the playbook installs it first."""
    cluster = Cluster(id=1, php_versions=["8.2", "8.3"])
    report = engine(node_settings(root)).apply(Snapshot.of(1, [cluster, *tenant(ALICE, "8.3")]))
    assert report.refused == {}
    assert pool_file(root, "8.3", ALICE).is_file()
    assert "check php8.3" in actions(root)


def test_the_refused_pool_applies_once_the_version_is_installed(root: Path) -> None:
    snapshot = Snapshot.of(1, [*tenant(ALICE, "9.9"), *tenant(BOB, "8.2")])
    settings = node_settings(root)
    first = engine(settings).apply(snapshot)
    assert set(first.refused) == {"fpm-pools/1", "virtual-hosts/1"}
    assert first.refused["virtual-hosts/1"].reason == (
        "it refers to fpm-pools/1, which this node refuses"
    )
    assert not (root / "etc/php/9.9").exists()

    (root / "etc/php/9.9/fpm/pool.d").mkdir(parents=True)  # someone installs php9.9-fpm
    second = engine(settings).apply(snapshot, full=True)
    assert second.refused == {}
    assert pool_file(root, "9.9", ALICE).is_file()
    assert (root / "etc/nginx/sites-enabled/alice.example.com.conf").is_file()


def test_a_symlink_in_place_of_pool_d_is_not_an_installed_version(
    root: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "etc/php/9.9/fpm").mkdir(parents=True)
    (root / "etc/php/9.9/fpm/pool.d").symlink_to(elsewhere)
    report = engine(node_settings(root)).apply(Snapshot.of(1, tenant(ALICE, "9.9")))
    assert "fpm-pools/1" in report.refused
    assert list(elsewhere.iterdir()) == []


def test_the_dry_run_shows_the_refusal(root: Path) -> None:
    planned = engine(node_settings(root)).plan(Snapshot.of(1, tenant(ALICE, "9.9")))
    text = describe_text(planned.operations, manifest=planned.manifest, refused=planned.refused)
    assert "# refused on this node" in text
    assert MISSING in text
    assert "/etc/php/9.9/fpm/pool.d/alice-web.conf" not in text
