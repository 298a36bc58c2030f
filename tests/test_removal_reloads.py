"""A removed file gets the reloads its writing got, even when nothing plans them any more.

Deleting the last pool of a PHP version that no ``clusters`` object lists: the pool file
goes, and php<v>-fpm must still be reloaded (or the deleted tenant's workers keep
running, and the user cannot be deleted). The manifest remembers, per file, the actions
its write triggered.
"""

from __future__ import annotations

from pathlib import Path

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import Snapshot
from ccm.plan.diff import describe_text
from ccm.testing.noderoot import actions, node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.fpm_pools import FpmPool
from configurations.unix_users import UnixUser

ALICE = UnixUser(id=1, username="alice")
POOL = FpmPool(id=1, name="alice-old", unix_user_id=1, php_version="8.1")


def test_deleting_the_last_pool_of_a_version_still_reloads_its_php_fpm(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root", php_versions=("8.1",))  # installed by hand
    engine = Engine(Registry(CONFIGURATIONS), node_settings(root))
    engine.apply(Snapshot.of(1, [ALICE, POOL]))
    assert "reload php8.1-fpm" in actions(root)
    before = len(actions(root))

    planned = engine.plan(Snapshot.of(2, [ALICE]))
    preview = describe_text(planned.operations, manifest=planned.manifest)
    assert "- file /etc/php/8.1/fpm/pool.d/alice-old.conf" in preview
    assert "! reload php8.1-fpm" in preview

    engine.apply(Snapshot.of(2, [ALICE]))
    assert not (root / "etc/php/8.1/fpm/pool.d/alice-old.conf").exists()
    assert actions(root)[before:] == ["reload php8.1-fpm"]
    # and once: the next run has nothing left to reload
    engine.apply(Snapshot.of(3, [ALICE]))
    assert actions(root)[before:] == ["reload php8.1-fpm"]


def test_the_user_of_a_deleted_pool_goes_after_the_reload(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root", php_versions=("8.1",))  # installed by hand
    settings = node_settings(
        root,
        commands={
            "userdel": [
                "sh",
                "-c",
                f'echo "userdel $1" >> "{root}/actions.log"',
                "sh",
                "{username}",
            ]
        },
    )
    engine = Engine(Registry(CONFIGURATIONS), settings)
    engine.apply(Snapshot.of(1, [ALICE, POOL]))
    before = len(actions(root))
    engine.apply(Snapshot.of(2, []))
    assert actions(root)[before:] == ["reload php8.1-fpm", "userdel alice"]
