"""Safe file operations under the root: no symlink is ever followed below it.

Atomic replacement: a temp file in the same directory, fsync, rename, fsync of the
directory. A reader (nginx, cron, dovecot) sees either the old file or the new one,
never half of one, and a crash leaves at worst a stray ``.ccm-*.tmp`` file, never a
truncated target. A run writing thousands of files asks for ``durable=False`` and calls
``sync_filesystems`` once they are all in place (two fsyncs per file were a fifth of a
cold apply): a process killed in between loses nothing (the page cache holds the
files); only a power loss in that window can leave a new file empty, and the next run,
which compares with what is on disk, writes it again. The temp name has a fixed length,
so a target name of up to 255 bytes (a long domain's vhost file) still gets one.

No writing through links: given the ``root``, every directory below it is opened with
``O_NOFOLLOW`` relative to its parent (``openat``), from the root down, and the file
itself is created, renamed, chowned or removed relative to that directory's descriptor.
A directory that was replaced by a symlink (``sites-enabled`` → somewhere else) is
refused with an error naming it instead of being written through, even if the link
appears between the plan and the write. The root itself is trusted (it is a setting).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ccm.errors import UnsafePath

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _parts(path: Path, root: Path | None) -> tuple[Path, list[str]]:
    """The trusted start and the components from it to ``path``'s parent."""
    if root is None:
        return path.parent, []
    relative = path.parent.relative_to(root)
    return root, [part for part in relative.parts if part not in ("", ".")]


@contextmanager
def directory_of(
    path: Path, root: Path | None = None, *, create: bool = False
) -> Iterator[tuple[int, list[Path]]]:
    """A descriptor of ``path``'s parent, reached from ``root`` without following links.

    With ``create``, missing directories are made (0755); the ones made are yielded too,
    innermost first (the order in which a rollback removes them again).
    """
    start, parts = _parts(path, root)
    fd = os.open(start, _DIRECTORY)
    created: list[Path] = []
    current = start
    try:
        for part in parts:
            current = current / part
            try:
                child = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                created.insert(0, current)
                child = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise UnsafePath(
                        error.errno,
                        f"refusing to go through {current}: it is a symlink (ccm never "
                        "writes through a link it did not make)",
                    ) from None
                raise
            os.close(fd)
            fd = child
        yield fd, created
    finally:
        os.close(fd)


def _is_link(name: str, directory: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return False


def make_parents(path: Path, root: Path | None = None) -> list[Path]:
    """Create missing parent directories (0755); return the ones created, innermost first
    (the order in which a rollback removes them again)."""
    if root is None:
        missing: list[Path] = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
        return missing
    with directory_of(path, root, create=True) as (_, created):
        return created


def atomic_write(
    path: Path,
    content: bytes,
    *,
    mode: int,
    uid: int | None = None,
    gid: int | None = None,
    root: Path | None = None,
    durable: bool = True,
) -> None:
    if root is None:
        make_parents(path)
    with directory_of(path, root, create=True) as (directory, _):
        temp = f".ccm-{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                os.fchmod(handle.fileno(), mode)
                if uid is not None or gid is not None:
                    os.fchown(
                        handle.fileno(), -1 if uid is None else uid, -1 if gid is None else gid
                    )
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            os.replace(temp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=directory)
            except FileNotFoundError:
                pass
            raise
        if durable:
            os.fsync(directory)


def sync_filesystems(paths: Iterable[Path]) -> int:
    """``syncfs(2)`` once per filesystem holding one of ``paths`` (``/etc`` and
    ``/home`` may be different mounts); returns how many were synced. The files written
    with ``durable=False`` are on disk when it returns. A directory that is gone, or
    that a tenant turned into a link since, is judged by its nearest real ancestor (a
    rename never crosses filesystems): nothing a tenant does in its home fails a run
    here."""
    devices: dict[int, Path] = {}
    for directory in {path.parent for path in paths}:
        while directory.parent != directory and not _is_directory(directory):
            directory = directory.parent
        devices.setdefault(os.stat(directory, follow_symlinks=False).st_dev, directory)
    for directory in devices.values():
        _syncfs(directory)
    return len(devices)


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _syncfs(directory: Path) -> None:
    fd = os.open(directory, _DIRECTORY | os.O_NOFOLLOW)
    try:
        if _libc().syncfs(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"syncfs: {os.strerror(number)}", str(directory))
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library: ``os`` has no ``syncfs``, and ``os.sync`` would flush every
    filesystem of the machine, tenants' writes included."""
    return ctypes.CDLL(None, use_errno=True)


def set_mode_owner(path: Path, mode: int, uid: int, gid: int, root: Path | None = None) -> None:
    """chmod + chown of ``path`` itself: a symlink there (or on the way) fails, never
    followed (a user may own the directory it sits in and swap one in)."""
    with directory_of(path, root) as (directory, _):
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def make_directory(path: Path, root: Path | None = None) -> list[Path]:
    """mkdir ``path`` (0700 until its mode is set) and missing parents; what was made,
    innermost first."""
    with directory_of(path, root, create=True) as (directory, created):
        os.mkdir(path.name, 0o700, dir_fd=directory)
        return [path, *created]


def remove_file(path: Path, root: Path | None = None) -> None:
    """unlink ``path`` if it is there, reached without following links."""
    try:
        with directory_of(path, root) as (directory, _):
            os.unlink(path.name, dir_fd=directory)
    except FileNotFoundError:
        pass
