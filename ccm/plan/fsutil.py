"""Atomic file replacement: temp file in the same directory, fsync, rename, fsync dir.

A reader (nginx, cron, dovecot) sees either the old file or the new one, never half of
one, and a crash leaves at worst a stray ``.ccm-*`` temp file, never a truncated target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_parents(path: Path) -> list[Path]:
    """Create missing parent directories (0755); return the ones created, innermost first
    (the order in which a rollback removes them again)."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)
    return missing


def atomic_write(
    path: Path, content: bytes, *, mode: int, uid: int | None = None, gid: int | None = None
) -> None:
    make_parents(path)
    fd, temp_name = tempfile.mkstemp(prefix=f".ccm-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            os.fchmod(handle.fileno(), mode)
            if uid is not None or gid is not None:
                os.fchown(handle.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
