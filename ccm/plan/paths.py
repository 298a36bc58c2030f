"""File names made from tenant names: always a valid name, one per distinct input.

A domain may have 253 characters, but a file name at most 255 bytes: ``<domain>.conf``
of a 253-character domain would not fit. ``file_name`` keeps short names as they are
(readable, what an operator looks for) and shortens a name that would not fit to a
readable head plus a digest of the whole name, so two long names never share a file.
"""

from __future__ import annotations

import hashlib

#: NAME_MAX of Linux file systems, in bytes
NAME_MAX = 255
_DIGEST = 16


def file_name(stem: str, suffix: str = "") -> str:
    """``stem + suffix``, or a shortened ``head~digest + suffix`` if that exceeds 255 bytes."""
    whole = stem + suffix
    if len(whole.encode()) <= NAME_MAX:
        return whole
    digest = hashlib.sha256(stem.encode()).hexdigest()[:_DIGEST]
    room = NAME_MAX - len(suffix.encode()) - len(digest) - 1
    head = stem.encode()[:room].decode(errors="ignore")
    return f"{head}~{digest}{suffix}"
