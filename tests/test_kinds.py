"""How each change kind shows itself in ``ccm diff`` (text and ``--json``), on a real root.

A tenant is created, changed and deleted through the real configurations; at each step
the dry run must say exactly what the run then does: which files are written (new or
changed content), which directories are ensured, which accounts are created, modified
or deleted, which files are removed, with their unified diffs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import Snapshot
from ccm.plan.diff import describe_json, describe_text
from ccm.testing.noderoot import node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.crons import Cron
from configurations.fpm_pools import FpmPool
from configurations.unix_users import UnixUser

ALICE = UnixUser(id=1, username="alice")
POOL = FpmPool(id=1, name="alice-web", unix_user_id=1, php_version="8.2")
BACKUP = Cron(id=1, unix_user_id=1, name="backup", schedule="0 3 * * *", command="true")
CRONTAB = "/var/spool/cron/crontabs/alice"
POOL_FILE = "/etc/php/8.2/fpm/pool.d/alice-web.conf"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(Registry(CONFIGURATIONS), node_settings(seed_root(tmp_path / "root")))


def dry_run(engine: Engine, snapshot: Snapshot, *, colour: bool = False) -> tuple[str, Any]:
    planned = engine.plan(snapshot)
    text = describe_text(planned.operations, manifest=planned.manifest, colour=colour)
    data = describe_json(planned.operations, snapshot.revision, manifest=planned.manifest)
    return text, data


def change(data: dict[str, Any], **match: str) -> dict[str, Any]:
    found = [c for c in data["changes"] if all(c.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, data["changes"])
    return found[0]


def test_a_new_tenant_shows_its_account_directories_and_new_files(engine: Engine) -> None:
    text, data = dry_run(engine, Snapshot.of(1, [ALICE, POOL, BACKUP]))
    assert data["revision"] == 1
    assert change(data, kind="account") == {
        "configuration": "unix-users",
        "kind": "account",
        "operation": "CreateAccount",
        "username": "alice",
    }
    assert change(data, path="/home/alice") == {
        "configuration": "unix-users",
        "path": "/home/alice",
        "kind": "directory",
        "operation": "ensure",
        "reasons": ["new"],
    }
    crontab = change(data, path=CRONTAB)
    assert {k: v for k, v in crontab.items() if k != "diff"} == {
        "configuration": "crontabs",
        "path": CRONTAB,
        "kind": "file",
        "operation": "write",
        "reasons": ["new"],
    }
    assert crontab["diff"].startswith(f"--- /dev/null\n+++ b{CRONTAB}\n@@ -0,0 +1,10 @@\n")
    assert crontab["diff"].endswith('+MAILTO=""\n+0 3 * * * true\n')

    assert "+ account alice (home /home/alice, shell /bin/bash)\n" in text
    assert "~ directory /home/alice (new; 0750 alice:www-data)\n" in text
    assert f"+ file {CRONTAB} (new; 0600 alice:crontab)\n--- /dev/null\n" in text
    assert "+0 3 * * * true\n" in text
    assert (
        text.index("# unix-users\n")
        < text.index("+ account alice")
        < text.index("~ directory /home/alice")
    )  # the account before its files
    engine.apply(Snapshot.of(1, [ALICE, POOL, BACKUP]))
    assert dry_run(engine, Snapshot.of(1, [ALICE, POOL, BACKUP]))[1]["changes"] == []


def test_a_changed_tenant_shows_the_modification_and_the_content_diff(engine: Engine) -> None:
    engine.apply(Snapshot.of(1, [ALICE, POOL, BACKUP]))
    later = [
        UnixUser(id=1, username="alice", shell="/bin/sh"),
        Cron(id=1, unix_user_id=1, name="backup", schedule="0 4 * * *", command="true"),
    ]
    text, data = dry_run(engine, Snapshot.of(2, later))
    assert change(data, kind="account") == {
        "configuration": "unix-users",
        "kind": "account",
        "operation": "ModifyAccount",
        "username": "alice",
    }
    crontab = change(data, path=CRONTAB)
    assert (crontab["operation"], crontab["reasons"]) == ("write", ["content"])
    assert crontab["diff"].startswith(f"--- a{CRONTAB}\n+++ b{CRONTAB}\n@@ -7,4 +7,4 @@\n")
    assert "-0 3 * * * true\n+0 4 * * * true\n" in crontab["diff"]
    removed = change(data, path=POOL_FILE)
    assert {k: v for k, v in removed.items() if k != "diff"} == {
        "configuration": "php-fpm-pools",
        "path": POOL_FILE,
        "kind": "file",
        "operation": "remove",
    }
    assert removed["diff"].startswith(f"--- a{POOL_FILE}\n+++ /dev/null\n@@ -1,29 +0,0 @@\n")
    assert data["actions"] == ["reload php8.2-fpm"]

    assert "~ account alice (shell /bin/bash -> /bin/sh)\n" in text
    assert f"~ file {CRONTAB} (content; 0600 alice:crontab)\n--- a{CRONTAB}\n" in text
    assert f"- file {POOL_FILE}\n--- a{POOL_FILE}\n+++ /dev/null\n" in text
    assert text.endswith("# actions\n! reload php8.2-fpm\n")


def test_a_deleted_tenant_shows_the_account_going_and_its_home_kept(engine: Engine) -> None:
    engine.apply(Snapshot.of(1, [ALICE, BACKUP]))
    text, data = dry_run(engine, Snapshot.of(2, []))
    assert change(data, kind="account") == {
        "configuration": "unix-users",
        "kind": "account",
        "operation": "DeleteAccount",
        "username": "alice",
    }
    assert change(data, path=CRONTAB)["operation"] == "remove"
    assert "- account alice (its home directory is kept)\n" in text
    assert f"- file {CRONTAB}\n" in text


def test_a_coloured_diff_colours_whole_lines_only(engine: Engine) -> None:
    plain, _ = dry_run(engine, Snapshot.of(1, [ALICE, BACKUP]))
    coloured, _ = dry_run(engine, Snapshot.of(1, [ALICE, BACKUP]), colour=True)
    assert "\x1b[" not in plain
    added = [line for line in coloured.splitlines() if "0 3 * * * true" in line]
    assert len(added) == 1
    assert added[0].startswith("\x1b[") and added[0].endswith("\x1b[0m")
    assert "+0 3 * * * true" in added[0]
    # with the escape codes taken out, the same text
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
