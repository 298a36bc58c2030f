"""``ccm.plan.fsutil`` below a node root: no write through a link, the modes of what it
makes, and a temp file nobody else can read or plant.

``tests/test_fsutil.py`` checks ``atomic_write``'s atomicity and durability; this file
checks the rest of the module's promises, each on a real temporary root:

- every operation given a ``root`` reaches its target from the root down without
  following a link: a directory replaced by a symlink is refused with ``UnsafePath``
  naming it, and nothing is written, changed or removed where the link points;
- a regular file in the way is an ordinary error, not reported as a link;
- missing parents are made 0755 and reported innermost first (the rollback's order);
  a directory is made 0700 until its owner and mode are set;
- the temp file is created 0600 (a private key is never readable by others, not even
  half written), and a name planted where the temp file goes is never written through.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ccm.errors import UnsafePath
from ccm.plan import fsutil
from ccm.plan.fsutil import (
    atomic_write,
    make_directory,
    make_parents,
    remove_file,
    set_mode_owner,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The modes asserted here are the ones a daemon with the usual umask gets."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """A root whose ``etc/site`` is a symlink to a directory outside it (holding
    ``a.conf``); returns (root, outside)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.conf").write_bytes(b"not ccm's\n")
    os.chmod(outside / "a.conf", 0o644)
    (root / "etc/site").symlink_to(outside)
    return root, outside


def untouched(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["a.conf"]
    assert (outside / "a.conf").read_bytes() == b"not ccm's\n"
    assert mode_of(outside / "a.conf") == 0o644
    stat = (outside / "a.conf").stat()
    assert (stat.st_uid, stat.st_gid) == (os.getuid(), os.getgid())


# -- never through a link ---------------------------------------------------------------

OPERATIONS: dict[str, Callable[[Path, Path], object]] = {
    "atomic_write": lambda target, root: atomic_write(target, b"ccm\n", mode=0o600, root=root),
    "set_mode_owner": lambda target, root: set_mode_owner(target, 0o600, 12345, 23456, root),
    "remove_file": lambda target, root: remove_file(target, root),
    "make_directory": lambda target, root: make_directory(target.with_name("d"), root),
    "make_parents": lambda target, root: make_parents(target.parent / "new" / "x", root),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_directory_replaced_by_a_symlink_is_refused_naming_it(
    linked: tuple[Path, Path], operation: str
) -> None:
    root, outside = linked
    target = root / "etc/site/a.conf"
    with pytest.raises(UnsafePath, match=r"etc/site: it is a symlink"):
        OPERATIONS[operation](target, root)
    untouched(outside)
    assert (root / "etc/site").is_symlink()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_dangling_symlink_on_the_way_is_refused_too(tmp_path: Path, operation: str) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/site").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafePath, match=r"etc/site: it is a symlink"):
        OPERATIONS[operation](root / "etc/site/a.conf", root)
    assert not (tmp_path / "nowhere").exists()


def test_a_symlink_deeper_down_is_refused_naming_that_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/nginx").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc/nginx/sites-enabled").symlink_to(outside)
    with pytest.raises(UnsafePath, match=r"etc/nginx/sites-enabled: it is a symlink"):
        atomic_write(root / "etc/nginx/sites-enabled/x.conf", b"x", mode=0o644, root=root)
    assert os.listdir(outside) == []


def test_a_regular_file_in_the_way_is_an_error_but_not_called_a_symlink(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/site").write_bytes(b"a file\n")
    with pytest.raises(NotADirectoryError) as raised:
        atomic_write(root / "etc/site/a.conf", b"x", mode=0o644, root=root)
    assert not isinstance(raised.value, UnsafePath)
    assert (root / "etc/site").read_bytes() == b"a file\n"


def test_a_regular_file_in_the_way_that_vanishes_at_once_is_still_not_called_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between the refused open and the look at what refused it: the file in
    the way is gone by then. The error is the one the open raised, not a symlink's."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/site").write_bytes(b"a file\n")
    real_open = os.open

    def open_then_remove(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
        try:
            return real_open(path, flags, *args, **kwargs)
        except NotADirectoryError:
            os.unlink(path, dir_fd=kwargs["dir_fd"])
            raise

    monkeypatch.setattr(fsutil, "os", SimpleNamespace(**{**vars(os), "open": open_then_remove}))
    with pytest.raises(NotADirectoryError) as raised:
        atomic_write(root / "etc/site/a.conf", b"x", mode=0o644, root=root)
    assert not isinstance(raised.value, UnsafePath)
    assert not (root / "etc/site").exists()


def test_the_file_itself_being_a_symlink_is_never_followed(linked: tuple[Path, Path]) -> None:
    root, outside = linked
    (root / "etc/real").mkdir()
    link = root / "etc/real/a.conf"
    link.symlink_to(outside / "a.conf")

    with pytest.raises(OSError):
        set_mode_owner(link, 0o600, 12345, 23456, root)
    untouched(outside)

    remove_file(link, root)  # removes the link, not what it points to
    assert not link.is_symlink()
    untouched(outside)

    link.symlink_to(outside / "a.conf")
    atomic_write(link, b"ccm\n", mode=0o600, root=root)  # replaces the link by a file
    assert not link.is_symlink()
    assert link.read_bytes() == b"ccm\n"
    untouched(outside)


# -- what is made, and its modes ------------------------------------------------------------


def test_atomic_write_under_a_root_makes_the_missing_parents_0755(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = root / "etc/php/8.2/fpm/pool.d/a.conf"
    atomic_write(target, b"[a]\n", mode=0o640, root=root)
    assert target.read_bytes() == b"[a]\n"
    assert mode_of(target) == 0o640
    for directory in ("etc", "etc/php", "etc/php/8.2", "etc/php/8.2/fpm", "etc/php/8.2/fpm/pool.d"):
        assert mode_of(root / directory) == 0o755, directory


def test_atomic_write_without_a_root_makes_the_missing_parents_0755(tmp_path: Path) -> None:
    target = tmp_path / "a/b/c.conf"
    atomic_write(target, b"c\n", mode=0o644)
    assert mode_of(tmp_path / "a") == mode_of(tmp_path / "a/b") == 0o755


@pytest.mark.parametrize("with_root", [True, False], ids=["root", "no-root"])
def test_make_parents_returns_what_it_made_innermost_first(tmp_path: Path, with_root: bool) -> None:
    (tmp_path / "etc").mkdir()
    target = tmp_path / "etc/a/b/c/file"
    made = make_parents(target, tmp_path if with_root else None)
    assert made == [tmp_path / "etc/a/b/c", tmp_path / "etc/a/b", tmp_path / "etc/a"]
    assert all(mode_of(path) == 0o755 for path in made)
    assert not target.exists()
    assert make_parents(target, tmp_path if with_root else None) == []


def test_a_directory_is_made_0700_until_its_mode_is_set(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    home = tmp_path / "home/alice"
    assert make_directory(home, tmp_path) == [home]
    assert mode_of(home) == 0o700

    deep = tmp_path / "srv/www/site"
    assert make_directory(deep, tmp_path) == [deep, tmp_path / "srv/www", tmp_path / "srv"]
    assert mode_of(deep) == 0o700
    assert mode_of(tmp_path / "srv/www") == mode_of(tmp_path / "srv") == 0o755

    with pytest.raises(FileExistsError):
        make_directory(home, tmp_path)


def test_set_mode_owner_and_remove_file_reach_the_file_under_the_root(tmp_path: Path) -> None:
    target = tmp_path / "var/spool/cron/crontabs/alice"
    atomic_write(target, b"x\n", mode=0o644, root=tmp_path)
    set_mode_owner(target, 0o600, 12345, 23456, tmp_path)
    stat = target.stat()
    assert (mode_of(target), stat.st_uid, stat.st_gid) == (0o600, 12345, 23456)
    remove_file(target, tmp_path)
    assert not target.exists()
    remove_file(target, tmp_path)  # gone already: nothing to do
    remove_file(tmp_path / "var/nothing/here", tmp_path)  # nor a missing directory


# -- the temp file ------------------------------------------------------------------------

TRACED_WRITE = r"""
import sys
from pathlib import Path
from ccm.plan.fsutil import atomic_write
atomic_write(Path(sys.argv[1]), b"-----BEGIN PRIVATE KEY-----\n", mode=0o600)
"""


def test_the_temp_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Seen with strace: the mode given when the temp file is created (before its final
    mode is set), so a private key is never readable by others while it is written."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is needed to see the open calls (apt-get install strace)")
    target = tmp_path / "privkey.pem"
    atomic_write(target, b"an older key\n", mode=0o600)  # replaced: the usual case
    log = tmp_path / "strace.log"
    subprocess.run(
        [strace, "-f", "-qq", "-o", str(log), "-e", "trace=open,openat,creat"]
        + [sys.executable, "-c", TRACED_WRITE, str(target)],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    created = [
        line for line in log.read_text().splitlines() if ".ccm-" in line and "O_CREAT" in line
    ]
    assert len(created) == 1, log.read_text()
    mode = int(created[0].rsplit(",", 1)[1].split(")")[0].strip(), 8)
    assert mode & 0o077 == 0, created[0]
    assert mode_of(target) == 0o600


def test_a_name_planted_where_the_temp_file_goes_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the directory and guesses the temp name cannot make ccm write
    into another file, nor put their link in the target's place."""
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "0" * 16)
    directory = tmp_path / "etc"
    directory.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim\n")
    (directory / ".ccm-0000000000000000.tmp").symlink_to(victim)
    target = directory / "a.conf"
    target.write_bytes(b"old\n")

    with pytest.raises(FileExistsError):
        atomic_write(target, b"new\n", mode=0o644, root=tmp_path)
    assert victim.read_bytes() == b"victim\n"
    assert target.read_bytes() == b"old\n"
    assert not target.is_symlink()
