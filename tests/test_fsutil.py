"""``atomic_write``'s promises, checked from the outside (valid for any implementation
with the signature ``atomic_write(path, content, *, mode, uid=None, gid=None)``):

- a reader (another process) sees the old file or the new one, complete and with its
  final mode, never a partial, empty or missing file;
- the target is replaced by a rename (a new inode; a hard link keeps the old content);
- a failure part-way leaves the old file as it was and no temp file behind;
- the new file's data and the directory entry are fsynced (seen with ``strace``);
- a write asked not to be durable makes no fsync, and ``sync_filesystems`` then makes
  one ``syncfs`` per filesystem, after the renames (seen with ``strace``), whatever a
  tenant did to the directories meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ccm.plan.fsutil import atomic_write, sync_filesystems

REPO = Path(__file__).resolve().parent.parent


def run_python(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )


def test_a_new_file_gets_its_content_mode_and_owner_and_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "etc/app/conf.d/a.conf"
    atomic_write(target, b"hello\n", mode=0o640, uid=12345, gid=23456)
    stat = target.stat()
    assert target.read_bytes() == b"hello\n"
    assert (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid) == (0o640, 12345, 23456)
    assert os.listdir(target.parent) == ["a.conf"]

    atomic_write(target, b"", mode=0o600, gid=34567)  # uid None: left as written
    stat = target.stat()
    assert target.read_bytes() == b""
    assert (stat.st_mode & 0o7777, stat.st_uid, stat.st_gid) == (0o600, os.getuid(), 34567)
    atomic_write(target, b"x", mode=0o644, uid=12345)  # gid None: left as written
    stat = target.stat()
    assert (stat.st_uid, stat.st_gid) == (12345, os.getgid())


def test_the_target_is_replaced_by_a_rename_not_rewritten_in_place(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    atomic_write(target, b"old\n", mode=0o644)
    link = tmp_path / "old-link"
    os.link(target, link)
    old_inode = target.stat().st_ino

    atomic_write(target, b"new\n", mode=0o600)

    assert target.read_bytes() == b"new\n"
    assert target.stat().st_ino != old_inode
    assert link.read_bytes() == b"old\n", "the old inode was written to in place"
    assert link.stat().st_mode & 0o7777 == 0o644
    assert link.stat().st_nlink == 1  # the target no longer names the old inode
    assert sorted(os.listdir(tmp_path)) == ["a.conf", "old-link"]


# -- a concurrent reader ------------------------------------------------------------------

READER = r"""
import os, sys
path, progress, stop = sys.argv[1], sys.argv[2], sys.argv[3]
size, mode = int(sys.argv[4]), int(sys.argv[5], 8)
versions = (b"A" * size, b"B" * size)
reads = bad = 0
first_bad = ""
counter = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)
while not os.path.exists(stop):
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        bad += 1
        first_bad = first_bad or "the file was missing"
        continue
    try:
        file_mode = os.fstat(fd).st_mode & 0o7777
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    reads += 1
    if data not in versions or file_mode != mode:
        bad += 1
        first_bad = first_bad or f"{len(data)} bytes starting {data[:8]!r}, mode {file_mode:o}"
    os.pwrite(counter, b"%12d" % reads, 0)
print(reads, bad, first_bad, sep="\n")
"""


def test_a_concurrent_reader_never_sees_a_partial_empty_or_missing_file(tmp_path: Path) -> None:
    size = 1 << 20
    target = tmp_path / "big.conf"
    progress, stop = tmp_path / "reads", tmp_path / "stop"
    atomic_write(target, b"A" * size, mode=0o640)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(target), str(progress), str(stop), str(size), "640"],
        stdout=subprocess.PIPE,
        text=True,
    )

    def reads() -> int:
        text = progress.read_bytes().strip() if progress.exists() else b""
        return int(text or 0)

    try:
        replacements = 0
        deadline = time.monotonic() + 60
        # Replace the file while the reader reads it: at least 50 times, and until the
        # reader has read it at least 100 times during the replacements.
        while replacements < 50 or reads() < 100:
            assert time.monotonic() < deadline, f"only {reads()} reads in 60 s"
            assert reader.poll() is None, "the reader died"
            content = b"B" * size if replacements % 2 == 0 else b"A" * size
            atomic_write(target, content, mode=0o640)
            replacements += 1
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    total, bad, first_bad = (out.splitlines() + ["", "", ""])[:3]
    assert reader.returncode == 0
    assert int(total) >= 100
    assert int(bad) == 0, f"{bad} of {total} reads saw a broken file; the first: {first_bad}"
    assert set(os.listdir(tmp_path)) == {"big.conf", "reads", "stop"}  # no temp file left


# -- failures part-way ----------------------------------------------------------------------


def test_a_failed_chown_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    atomic_write(target, b"old\n", mode=0o644)
    inode = target.stat().st_ino
    with pytest.raises((OverflowError, OSError, ValueError)):
        atomic_write(target, b"new\n", mode=0o600, uid=2**32)  # no such uid can exist
    assert target.read_bytes() == b"old\n"
    assert target.stat().st_ino == inode
    assert target.stat().st_mode & 0o7777 == 0o644
    assert os.listdir(tmp_path) == ["a.conf"]


FAILING_WRITE = r"""
import resource, signal, sys
from pathlib import Path
from ccm.plan.fsutil import atomic_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
try:
    atomic_write(Path(sys.argv[1]), b"new\n" * (1 << 18), mode=0o600)
except OSError as error:
    print("failed:", error.strerror)
else:
    print("written")
"""


def test_a_write_that_fails_part_way_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "a.conf"
    atomic_write(target, b"old\n", mode=0o644)
    inode = target.stat().st_ino
    result = run_python(FAILING_WRITE, str(target))
    assert result.stdout.strip() == "failed: File too large", result.stderr
    assert target.read_bytes() == b"old\n"
    assert target.stat().st_ino == inode
    assert os.listdir(tmp_path) == ["a.conf"]


def test_a_failure_on_a_new_file_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    with pytest.raises((OverflowError, OSError, ValueError)):
        atomic_write(target, b"new\n", mode=0o600, gid=2**32)
    assert os.listdir(tmp_path) == []


# -- durability -----------------------------------------------------------------------------

TRACED_WRITE = r"""
import sys
from pathlib import Path
from ccm.plan.fsutil import atomic_write
atomic_write(Path(sys.argv[1]), b"new content\n", mode=0o644)
"""


def traced_calls(tmp_path: Path, target: Path, script: str = TRACED_WRITE) -> list[str]:
    """The fsync/fdatasync/syncfs/rename system calls of ``script`` (by default one
    ``atomic_write`` of ``target``), each descriptor shown as its path (``strace -y``)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is needed to see the fsync calls (apt-get install strace)")
    log = tmp_path / "strace.log"
    subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-qq",
            "-o",
            str(log),
            "-e",
            "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2",
            sys.executable,
            "-c",
            script,
            str(target),
        ],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    calls = []
    for line in log.read_text().splitlines():
        call = line.split(None, 1)[1] if line[:1].isdigit() else line  # drop "-f" pids
        wanted = ("fsync(", "fdatasync(", "syncfs(", "rename")
        if call.startswith(wanted) and call.rstrip().endswith("= 0"):
            calls.append(call)
    return calls


def test_the_file_is_fsynced_before_the_rename_and_the_directory_after_it(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    target = directory / "a.conf"
    target.write_bytes(b"old\n")
    calls = traced_calls(tmp_path, target)
    assert target.read_bytes() == b"new content\n"

    renames = [i for i, call in enumerate(calls) if call.startswith("rename")]
    assert len(renames) == 1, calls
    rename = renames[0]
    assert str(target.name) in calls[rename], calls

    def synced(call: str) -> str:  # the path of the descriptor, from "fsync(3</a/b>) = 0"
        return call[call.index("<") + 1 : call.index(">)")]

    before = [synced(call) for call in calls[:rename] if not call.startswith("rename")]
    after = [synced(call) for call in calls[rename + 1 :]]
    # the data: a file in the target's directory (the temp file), before it is renamed
    assert any(Path(path).parent == directory and Path(path) != directory for path in before), calls
    # the new directory entry: the directory itself, after the rename
    assert str(directory) in after, calls


TRACED_BATCH = r"""
import sys
from pathlib import Path
from ccm.plan.fsutil import atomic_write, sync_filesystems
targets = [Path(name) for name in sys.argv[1:]]
for target in targets:
    atomic_write(target, b"batch\n", mode=0o644, durable=False)
print(sync_filesystems(targets))
"""


def test_writes_of_a_run_are_not_synced_one_by_one_but_once_per_filesystem_after(
    tmp_path: Path,
) -> None:
    targets = [tmp_path / "etc/a/one.conf", tmp_path / "etc/b/two.conf"]
    for target in targets:
        target.parent.mkdir(parents=True)
    script = TRACED_BATCH.replace("sys.argv[1:]", repr([str(t) for t in targets]))
    calls = traced_calls(tmp_path, targets[0], script)
    assert [t.read_bytes() for t in targets] == [b"batch\n", b"batch\n"]
    assert not [call for call in calls if call.startswith(("fsync(", "fdatasync("))], calls
    syncs = [i for i, call in enumerate(calls) if call.startswith("syncfs(")]
    renames = [i for i, call in enumerate(calls) if call.startswith("rename")]
    assert len(syncs) == 1 and len(renames) == 2, calls  # one filesystem: one syncfs
    assert syncs[0] > max(renames), calls


def test_sync_filesystems_syncs_each_filesystem_once_and_survives_a_tenants_links(
    tmp_path: Path,
) -> None:
    other = Path("/dev/shm")  # a tmpfs: another filesystem than the tests' temporary root
    assert os.stat(other).st_dev != os.stat(tmp_path).st_dev
    home = tmp_path / "home/alice"
    home.mkdir(parents=True)
    (home / "www").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "www").rmdir()
    (home / "www").symlink_to(other)  # the directory written into became a link since
    written = [
        tmp_path / "etc/nginx/a.conf",  # its directory is gone (removed with its files)
        home / "www/index.html",
        elsewhere / "x.conf",
        tmp_path / "y.conf",
    ]
    # the link is judged by the real directory holding it: one filesystem, not the tmpfs
    assert sync_filesystems(written) == 1
    with open(other / f"ccm-test-{os.getpid()}", "w") as shm:
        try:
            assert sync_filesystems([*written, Path(shm.name)]) == 2
        finally:
            os.unlink(shm.name)
    assert sync_filesystems([]) == 0
