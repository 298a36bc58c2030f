"""The file kinds from the outside, on a real root: what ``File`` and ``Directory`` write,
what ``ccm diff`` says about them, what they refuse (and how the error reads), and what a
failed run puts back — content, mode, owner and group exactly, and never through a
symlink. (Mutation testing of ``ccm.plan.files`` found these promises unchecked.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CheckFailed, PlanError, RunError, TenantConflict
from ccm.models import Snapshot
from ccm.plan import files
from ccm.plan.changes import Account, Change, Check, Directory, File, Prerequisite
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import describe_json, describe_text
from ccm.plan.executor import RunReport
from ccm.plan.steps import Refusal
from ccm.testing.noderoot import node_settings, seed_root

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


def manifest_files(root: Path) -> list[str]:
    data = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    files: list[str] = data["configurations"].get("site", {}).get("files", [])
    return files


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


# -- writing ---------------------------------------------------------------------------------


def test_a_changed_file_gets_its_new_content_mode_and_owner(root: Path) -> None:
    apply(root, File("/etc/site/a.conf", "one\n"))
    apply(root, File("/etc/site/a.conf", "two\n", 0o640, "www-data", "www-data"))
    assert on_disk(root / "etc/site/a.conf") == (b"two\n", 0o640, WWW, WWW)


def test_a_mode_or_owner_change_alone_does_not_rewrite_the_file(root: Path) -> None:
    path = root / "etc/site/a.conf"
    apply(root, File("/etc/site/a.conf", "same\n"))
    before = os.lstat(path)
    report = apply(root, File("/etc/site/a.conf", "same\n", 0o600, "www-data", "www-data"))
    after = os.lstat(path)
    assert report.changed_paths == ["/etc/site/a.conf"]
    assert on_disk(path) == (b"same\n", 0o600, WWW, WWW)
    # the same file, changed in place: not replaced by a copy of itself
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_existing_directory_gets_its_mode_and_group(root: Path) -> None:
    (root / "srv/data").mkdir(parents=True, mode=0o700)
    apply(root, Directory("/srv/data", 0o750, "root", "www-data"))
    assert mode_owner(root / "srv/data") == (0o750, 0, WWW)


def test_a_path_is_placed_under_the_root_exactly_as_named(root: Path) -> None:
    # a leading "X" after the slash is part of the name, whatever strips the slash
    apply(root, File("/Xsite/a.conf", "a\n"), Directory("/Xdata/d"))
    assert (root / "Xsite/a.conf").read_text() == "a\n"
    assert (root / "Xdata/d").is_dir()
    assert not (root / "site").exists() and not (root / "data").exists()
    apply(root, Directory("/Xdata/d"))
    assert not (root / "Xsite/a.conf").exists()


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


# -- never through a symlink while applying ---------------------------------------------------


def test_a_directory_is_never_changed_through_a_symlink_in_its_path(root: Path) -> None:
    (root / "decoy/data").mkdir(parents=True, mode=0o711)
    (root / "srv").mkdir()
    (root / "srv/site").symlink_to(root / "decoy")
    with pytest.raises(RunError) as failed:
        apply(root, Directory("/srv/site/data", 0o700))
    assert failed.value.configuration == "site"
    assert f"refusing to go through {root}/srv/site: it is a symlink" in str(failed.value)
    assert mode_owner(root / "decoy/data") == (0o711, 0, 0)


@pytest.mark.parametrize(
    "wanted",
    [
        File("/etc/site/a.conf", "two\n"),  # atomic_write
        File("/etc/site/a.conf", "one\n", 0o600, "www-data", "www-data"),  # set_mode_owner
    ],
    ids=["content", "mode and owner"],
)
def test_a_parent_swapped_for_a_symlink_after_it_was_made_is_never_written_through(
    root: Path, monkeypatch: pytest.MonkeyPatch, wanted: File
) -> None:
    """The window between making the parents and writing the file: whoever owns the parent
    swaps it for a link to a decoy right then. The write must reach the file from the root
    down again (refusing the link), not trust the path it was given."""
    apply(root, File("/etc/site/a.conf", "one\n"))
    decoy = root / "decoy"
    decoy.mkdir()
    (decoy / "a.conf").write_text("decoy\n")
    os.chmod(decoy / "a.conf", 0o644)
    real = files.make_parents

    def then_swap(target: Path, trusted: Path | None = None) -> list[Path]:
        created = real(target, trusted)
        os.rename(target.parent, root / "site.moved")
        target.parent.symlink_to(decoy)
        return created

    monkeypatch.setattr(files, "make_parents", then_swap)
    with pytest.raises(RunError) as failed:
        apply(root, wanted)
    assert f"refusing to go through {root}/etc/site: it is a symlink" in str(failed.value)
    assert os.listdir(decoy) == ["a.conf"]
    assert on_disk(decoy / "a.conf") == (b"decoy\n", 0o644, 0, 0)
    assert on_disk(root / "site.moved/a.conf") == (b"one\n", 0o644, 0, 0)


def test_a_file_no_longer_planned_is_never_removed_through_a_symlink(root: Path) -> None:
    apply(root, File("/etc/site/a.conf", "a\n"))
    os.rename(root / "etc/site", root / "decoy")
    (root / "etc/site").symlink_to(root / "decoy")
    with pytest.raises(RunError) as failed:
        apply(root)
    assert f"refusing to go through {root}/etc/site: it is a symlink" in str(failed.value)
    assert (root / "decoy/a.conf").read_text() == "a\n"


def test_a_file_under_a_dangling_symlink_is_refused_as_a_symlink(root: Path) -> None:
    (root / "etc/site").symlink_to(root / "nowhere")
    with pytest.raises(RunError) as failed:
        apply(root, File("/etc/site/sub/a.conf", "a\n"))
    assert failed.value.configuration == "site"
    assert f"refusing to go through {root}/etc/site: it is a symlink" in str(failed.value)
    assert not (root / "nowhere").exists()


# -- ccm diff --------------------------------------------------------------------------------


def test_reasons_list_content_then_mode_owner_and_group_each_before_and_after(
    root: Path,
) -> None:
    apply(root, File("/etc/site/a.conf", "one\n"), Directory("/srv/data", 0o711))
    os.chown(root / "etc/site/a.conf", NOBODY, NOBODY)
    os.chmod(root / "etc/site/a.conf", 0o600)
    text, data = diff(
        root,
        File("/etc/site/a.conf", "two\n", 0o640, "www-data", "www-data"),
        Directory("/srv/data", 0o750, "root", "www-data"),
    )
    assert [c["reasons"] for c in data["changes"]] == [
        ["content", "mode 0600 -> 0640", "owner nobody -> www-data", "group nogroup -> www-data"],
        ["mode 0711 -> 0750", "group root -> www-data"],
    ]
    assert (
        "~ file /etc/site/a.conf (content, mode 0600 -> 0640, owner nobody -> www-data, "
        "group nogroup -> www-data; 0640 www-data:www-data)\n"
    ) in text
    assert (
        "~ directory /srv/data (mode 0711 -> 0750, group root -> www-data; 0750 root:www-data)\n"
        in text
    )


def test_ownership_changes_alone_are_shown_as_owner_and_group_before_and_after(
    root: Path,
) -> None:
    apply(root, File("/etc/site/a.conf", "same\n", 0o640, "www-data", "www-data"))
    text, data = diff(root, File("/etc/site/a.conf", "same\n", 0o640, "root", "nogroup"))
    assert text.endswith(
        "~ file /etc/site/a.conf (owner www-data -> root, group www-data -> nogroup; "
        "0640 root:nogroup)\n"
    )
    (change,) = data["changes"]
    assert change["reasons"] == ["owner www-data -> root", "group www-data -> nogroup"]
    assert change["diff"] == ""


def test_a_file_without_a_final_newline_says_so_in_the_diff(root: Path) -> None:
    apply(root, File("/etc/site/a.conf", "a\nb"))
    text, data = diff(root, File("/etc/site/a.conf", "a\nc\n"))
    expected = (
        "--- a/etc/site/a.conf\n+++ b/etc/site/a.conf\n@@ -1,2 +1,2 @@\n"
        " a\n-b\n\\ No newline at end of file\n+c\n"
    )
    assert text.endswith(expected)
    assert data["changes"][0]["diff"] == expected


def test_a_non_utf8_file_shows_in_the_diff_with_replacement_characters(root: Path) -> None:
    apply(root, File("/etc/site/a.conf", "café\n"), File("/etc/site/old.conf", "old\n"))
    (root / "etc/site/a.conf").write_bytes(b"caf\xe9\n")  # latin-1, by hand
    (root / "etc/site/old.conf").write_bytes(b"\xff\xfe\n")
    text, data = diff(root, File("/etc/site/a.conf", "café\n"))
    assert "-caf\ufffd\n+café\n" in text
    assert "--- a/etc/site/old.conf\n+++ /dev/null\n@@ -1 +0,0 @@\n-\ufffd\ufffd\n" in text
    written, removed = data["changes"]
    assert written["diff"].endswith("-caf\ufffd\n+café\n")
    assert removed["diff"].endswith("-\ufffd\ufffd\n")


def test_a_coloured_diff_colours_changed_lines_whole_and_leaves_context_alone(
    root: Path,
) -> None:
    apply(root, File("/etc/site/a.conf", "keep\nold\n"), File("/etc/site/old.conf", "gone\n"))
    text, _ = diff(root, File("/etc/site/a.conf", "keep\nnew  \n"), colour=True)
    green, red, cyan, reset = "\x1b[32m", "\x1b[31m", "\x1b[36m", "\x1b[0m"
    assert (
        f"{red}--- a/etc/site/a.conf{reset}\n{green}+++ b/etc/site/a.conf{reset}\n"
        f"{cyan}@@ -1,2 +1,2 @@{reset}\n keep\n{red}-old{reset}\n{green}+new  {reset}\n"
    ) in text
    # a removed file's diff is coloured too
    assert (
        f"- file /etc/site/old.conf\n{red}--- a/etc/site/old.conf{reset}\n"
        f"{green}+++ /dev/null{reset}\n{cyan}@@ -1 +0,0 @@{reset}\n{red}-gone{reset}\n"
    ) in text


# -- refusals and errors, each naming the configuration ---------------------------------------


def test_a_file_planned_twice_fails_the_plan_naming_the_configuration(root: Path) -> None:
    Site.changes = [File("/etc/site/a.conf", "a\n"), File("/etc/site/a.conf", "b\n")]
    with pytest.raises(PlanError) as failed:
        engine(root).plan(Snapshot(1))
    assert str(failed.value) == "site: /etc/site/a.conf is planned twice"


def test_a_file_another_configuration_owns_fails_the_plan_naming_both(root: Path) -> None:
    apply(root, File("/etc/site/a.conf", "a\n"))
    Other.changes = [File("/etc/site/a.conf", "b\n")]
    with pytest.raises(PlanError) as failed:
        apply(root, File("/etc/site/a.conf", "a\n"))
    assert str(failed.value) == "other: /etc/site/a.conf is already owned by site"
    assert (root / "etc/site/a.conf").read_text() == "a\n"


def test_a_file_whose_owner_is_not_on_this_node_is_refused(root: Path) -> None:
    # a tenant's file: its objects are refused and the run goes on
    report = apply(
        root,
        File("/etc/site/a.conf", "a\n", owner="ghost", origin=("crons/1",)),
        File("/etc/site/b.conf", "b\n"),
    )
    assert report.refused["crons/1"].reason == (
        "/etc/site/a.conf: owner 'ghost' is not an account on this node"
    )
    assert report.changed_paths == ["/etc/site/b.conf"]
    assert not (root / "etc/site/a.conf").exists()
    # the cluster's own file: the run fails, naming the configuration
    with pytest.raises(TenantConflict) as failed:
        apply(root, File("/etc/site/a.conf", "a\n", group="ghosts"))
    assert str(failed.value) == "site: /etc/site/a.conf: group 'ghosts' is not a group on this node"


def test_a_directory_where_a_file_belongs_is_refused(root: Path) -> None:
    (root / "etc/site/a.conf").mkdir(parents=True)
    with pytest.raises(TenantConflict) as failed:
        apply(root, File("/etc/site/a.conf", "a\n"))
    assert str(failed.value) == "site: /etc/site/a.conf is a directory, not a file"


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda path: path.symlink_to("/etc/passwd"),
         "is a symlink (ccm never replaces one with a file)"),
        (lambda path: os.mkfifo(path), "exists and is not a regular file"),
    ],
    ids=["a symlink", "a fifo"],
)  # fmt: skip
def test_a_file_of_ccms_replaced_by_a_link_or_fifo_is_neither_rewritten_nor_removed(
    root: Path, make: Callable[[Path], object], what: str
) -> None:
    """Someone put something else where ccm's file was: a changed file is refused (a
    rollback could not put the link back), and a file no longer planned is left alone
    (removing it, then rolling back, would leave a regular file with the link's 0777)."""
    apply(root, File("/etc/site/a.conf", "a\n"))
    target = root / "etc/site/a.conf"
    target.unlink()
    make(target)
    with pytest.raises(TenantConflict) as failed:
        apply(root, File("/etc/site/a.conf", "b\n"))
    assert str(failed.value) == f"site: /etc/site/a.conf {what}"
    report = apply(root)  # no longer planned: left as it is, and no longer ccm's
    assert report.changed_paths == []
    assert target.is_symlink() or target.is_fifo()
    assert "/etc/site/a.conf" not in manifest_files(root)


def test_a_file_ccm_did_not_write_is_never_overwritten(root: Path) -> None:
    (root / "etc/site").mkdir(parents=True)
    (root / "etc/site/a.conf").write_text("by hand\n")
    with pytest.raises(TenantConflict) as failed:
        apply(root, File("/etc/site/a.conf", "a\n"))
    assert str(failed.value) == (
        "site: /etc/site/a.conf exists but was not written by ccm; refusing to overwrite it "
        "(move it away to let ccm manage it)"
    )
    assert (root / "etc/site/a.conf").read_text() == "by hand\n"


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda path: path.write_text("x\n"), "not a directory"),
        (lambda path: path.symlink_to("/tmp"), "a symlink (ccm never writes through one)"),
    ],
    ids=["a file", "a symlink"],
)
def test_a_file_or_symlink_where_a_directory_belongs_is_refused(
    root: Path, make: Callable[[Path], object], what: str
) -> None:
    (root / "srv").mkdir()
    make(root / "srv/data")
    with pytest.raises(TenantConflict) as failed:
        apply(root, Directory("/srv/data"))
    assert str(failed.value) == f"site: /srv/data exists and is {what}"


@pytest.mark.parametrize("owner", ["www-data", "ghost"])
def test_an_existing_directory_of_another_owner_is_never_handed_over(
    root: Path, owner: str
) -> None:
    """Whether the wanted owner is an account here or not (yet): root's directory stays."""
    (root / "srv/data").mkdir(parents=True, mode=0o700)
    with pytest.raises(TenantConflict) as failed:
        apply(root, Directory("/srv/data", 0o750, owner, "www-data"))
    assert str(failed.value) == (
        f"site: /srv/data exists and belongs to uid 0 (root), not to {owner}; refusing to "
        "hand it over (move it away if it is meant for this account)"
    )
    assert mode_owner(root / "srv/data") == (0o700, 0, 0)


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        (Directory("/srv/data", owner="ghost"), "owner 'ghost' is not an account"),
        (Directory("/srv/data", group="ghosts"), "group 'ghosts' is not a group"),
        (File("/srv/data", "a\n", owner="carol"), "owner 'carol' is not an account"),
        (File("/srv/data", "a\n", group="carol"), "group 'carol' is not a group"),
    ],
    ids=["directory owner", "directory group", "file owner", "file group"],
)
def test_an_owner_or_group_missing_when_the_step_applies_fails_the_run(
    root: Path, change: Change, missing: str
) -> None:
    """A directory's owner is looked up when it is made; a file's may be an account the
    run makes (here useradd makes nothing): either way the run fails, naming the
    configuration, and leaves nothing behind."""
    carol = Account("carol", "/home/carol", 5)
    with pytest.raises(PlanError) as failed:
        apply(root, carol, change, commands={"useradd": ["true"], "userdel": ["true"]})
    database = "passwd" if missing.startswith("owner") else "group"
    assert str(failed.value) == f"site: {missing} in {root}/etc/{database}"
    assert not (root / "srv").exists()


# -- prerequisites ---------------------------------------------------------------------------

POOL_D = "/etc/php/9.9/fpm/pool.d/"


def test_a_prerequisite_the_node_lacks_refuses_its_objects_or_fails_the_run(root: Path) -> None:
    report = apply(
        root,
        Prerequisite(POOL_D, "PHP 9.9 is not installed", origin=("fpm-pools/1",)),
        File("/etc/site/pool.conf", "pool\n", origin=("fpm-pools/1",)),
        File("/etc/site/b.conf", "b\n"),
    )
    assert report.refused == {
        "fpm-pools/1": Refusal("site", f"PHP 9.9 is not installed (no {POOL_D} here)")
    }
    assert report.changed_paths == ["/etc/site/b.conf"]
    # the cluster's own prerequisite (no objects to refuse): the run fails, naming it
    with pytest.raises(TenantConflict) as failed:
        apply(root, Prerequisite(POOL_D, "PHP 9.9 is not installed"))
    assert failed.value.configuration == "site"
    assert str(failed.value) == f"site: PHP 9.9 is not installed (no {POOL_D} here)"


def test_a_prerequisite_is_met_by_the_directory_as_named_never_by_a_link_to_one(
    root: Path,
) -> None:
    (root / POOL_D.lstrip("/")).mkdir(parents=True)
    (root / "srv/boX").mkdir(parents=True)  # a name ending in a letter: only "/" is cut
    apply(root, Prerequisite(POOL_D, "no 9.9"), Prerequisite("/srv/boX/", "no boX"))
    (root / "elsewhere").mkdir()
    (root / "etc/php/9.8/fpm").mkdir(parents=True)
    (root / "etc/php/9.8/fpm/pool.d").symlink_to(root / "elsewhere")
    with pytest.raises(TenantConflict, match=r"^site: no 9\.8 \(no /etc/php/9\.8/fpm/pool\.d/"):
        apply(root, Prerequisite("/etc/php/9.8/fpm/pool.d/", "no 9.8"))


def test_a_prerequisite_is_only_looked_at_a_huge_file_there_is_refused_unread(
    root: Path,
) -> None:
    where = root / "etc/php/9.7/fpm/pool.d"
    where.parent.mkdir(parents=True)
    with open(where, "wb") as sparse:
        sparse.truncate(1 << 40)  # a terabyte (sparse): reading it would never end well
    with pytest.raises(TenantConflict, match=r"^site: no 9\.7 \(no /etc/php/9\.7/fpm/pool\.d/"):
        apply(root, Prerequisite("/etc/php/9.7/fpm/pool.d/", "no 9.7"))
