"""The file kinds from the outside, on a real root: what ``File`` and ``Directory`` write,
what ``ccm diff`` says about them, what they refuse (and how the error reads), and what a
failed run puts back — content, mode, owner and group exactly, and never through a
symlink. (Mutation testing of ``ccm.plan.files`` found these promises unchecked.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from noderoot import node_settings, seed_root

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CheckFailed
from ccm.models import Snapshot
from ccm.plan.changes import Change, Check, Directory, File
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import describe_json, describe_text
from ccm.plan.executor import RunReport

WWW = 33  # www-data's uid and gid on Debian (the seeded root copies the host's accounts)
NOBODY = 65534  # nobody, nogroup

#: the check every run may declare: fails the run after the steps, so it is rolled back
FAIL = Check("first", triggers=("/",))


class Site(Configuration):
    name = "site"
    subscribes = ("unix-users",)
    checks: ClassVar = {"first": ("true",)}
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Site.changes


class Other(Configuration):
    name = "other"
    subscribes = ("unix-users",)
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Other.changes


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Site.changes, Other.changes = [], []
    return seed_root(tmp_path / "root")


def engine(root: Path, **overrides: object) -> Engine:
    settings = node_settings(root, logged_checks=(), passing_probes=(), **overrides)
    return Engine(Registry([Site, Other]), settings)


def apply(root: Path, *changes: Change, **overrides: object) -> RunReport:
    Site.changes = list(changes)
    return engine(root, **overrides).apply(Snapshot(1))


def apply_failing(root: Path, *changes: Change, check: Sequence[str] = ("false",)) -> CheckFailed:
    """Apply ``changes`` with a check that fails once they are in place."""
    Site.changes = [*changes, FAIL]
    with pytest.raises(CheckFailed) as failed:
        engine(root, checks={"first": list(check)}).apply(Snapshot(1))
    return failed.value


def diff(root: Path, *changes: Change, colour: bool = False) -> tuple[str, Any]:
    Site.changes = list(changes)
    planned = engine(root).plan(Snapshot(2))
    text = describe_text(planned.operations, colour=colour)
    data = describe_json(planned.operations, 2)
    return text, data


def on_disk(path: Path) -> tuple[bytes, int, int, int]:
    """Content, mode, uid and gid of ``path``."""
    info = os.lstat(path)
    return path.read_bytes(), info.st_mode & 0o7777, info.st_uid, info.st_gid


def mode_owner(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_mode & 0o7777, info.st_uid, info.st_gid


# -- putting back what was there (the run fails after the steps) -----------------------------


@pytest.mark.parametrize(
    ("mode", "uid", "gid"),
    [(0o640, WWW, WWW), (0o000, NOBODY, 0), (0o604, 0, NOBODY)],
    ids=["www-data", "mode 0000, nobody", "root, nogroup"],
)
def test_a_restored_file_gets_back_its_exact_content_mode_and_owner(
    root: Path, mode: int, uid: int, gid: int
) -> None:
    path = root / "etc/site/a.conf"
    apply(root, File("/etc/site/a.conf", "ccm\n"))
    path.write_bytes(b"edited by hand\n")
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    before = on_disk(path)
    apply_failing(root, File("/etc/site/a.conf", "new\n"))
    assert on_disk(path) == before
    # a mode or owner change alone (no new content) is put back the same way
    apply_failing(root, File("/etc/site/a.conf", "edited by hand\n", 0o644, "root", "root"))
    assert on_disk(path) == before


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "wanted"),
    [
        (0o000, 0, 0, Directory("/srv/data", 0o750, "root", "www-data")),
        (0o711, WWW, WWW, Directory("/srv/data", 0o700, "www-data", "nogroup")),
    ],
    ids=["root, mode 0000", "www-data, mode 0711"],
)
def test_a_directory_whose_mode_or_group_changed_is_put_back_on_rollback(
    root: Path, mode: int, uid: int, gid: int, wanted: Directory
) -> None:
    path = root / "srv/data"
    path.mkdir(parents=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    apply_failing(root, wanted)
    assert mode_owner(path) == (mode, uid, gid)


def test_a_new_directory_and_the_parents_it_made_are_gone_after_a_rollback(root: Path) -> None:
    apply_failing(root, Directory("/srv/new/deep", 0o750, "www-data", "www-data"))
    assert not (root / "srv").exists()


@pytest.mark.parametrize("content", ["old\n", ""], ids=["with content", "empty"])
def test_a_removed_file_comes_back_with_its_content_mode_and_owner(
    root: Path, content: str
) -> None:
    path = root / "etc/site/old.conf"
    apply(root, File("/etc/site/old.conf", content, 0o640, "www-data", "www-data"))
    os.chmod(path, 0o000)
    before = on_disk(path)
    apply_failing(root)  # old.conf is no longer planned: removed, then put back
    assert on_disk(path) == before


def test_a_rollback_never_goes_through_a_directory_swapped_for_a_symlink(root: Path) -> None:
    """The check swaps /etc/site for a link to a decoy during the run: putting the run back
    must fail on the link, never write, remove or chmod anything in the decoy."""
    apply(
        root,
        File("/etc/site/changed.conf", "one\n"),
        File("/etc/site/old.conf", "old\n"),
        Directory("/etc/site/data"),
    )
    decoy = root / "decoy"
    (decoy / "data").mkdir(parents=True)
    os.chmod(decoy / "data", 0o711)
    (decoy / "changed.conf").write_text("decoy\n")
    (decoy / "new.conf").write_text("decoy\n")
    swap = 'mv "$1/etc/site" "$1/site.moved" && ln -s "$1/decoy" "$1/etc/site"; exit 1'
    apply_failing(
        root,
        File("/etc/site/changed.conf", "two\n"),
        File("/etc/site/new.conf", "new\n"),
        Directory("/etc/site/data", 0o700),
        check=["sh", "-c", swap, "sh", "{root}"],
    )
    assert (root / "etc/site").is_symlink()
    assert sorted(p.name for p in decoy.iterdir()) == ["changed.conf", "data", "new.conf"]
    assert (decoy / "changed.conf").read_text() == "decoy\n"
    assert (decoy / "new.conf").read_text() == "decoy\n"
    assert mode_owner(decoy / "data") == (0o711, 0, 0)
