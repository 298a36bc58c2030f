"""Secret files: what ``ccm diff`` shows instead of their content, and what no command
output may show.

A ``File(..., secret=True)`` (a private key, a Redis config with its ``requirepass``, an
htpasswd file) never shows its content, old or new: a diff shows a fingerprint of each
side and the numbers of the lines that changed. The fingerprint is an HMAC keyed with a
random key kept on the node (``fingerprint.key`` beside the manifest, root only): a plain
hash of a short password in a known template could be reversed by trying guesses; a
keyed one cannot without the key. It still tells "changed or not" and "the same as
yesterday" on one node.

Command output (a check that echoes a config line, a failing start) reaches errors, the
halt flag, logs and the run history: the executor passes it through a ``Redactor`` that
replaces every line and longer word of the run's secret files with ``[secret]``.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

KEY_FILE = "fingerprint.key"
KEY_BYTES = 32
#: how many hex digits of the HMAC a fingerprint shows (64 bits)
_DIGITS = 16
#: lines and words shorter than this are not redacted (``}``, ``yes``, ``port``)
MIN_SECRET = 8
HIDDEN = "[secret]"


@cache
def node_key(directory: Path) -> bytes:
    """The node's fingerprint key in ``directory`` (made on first use, mode 0600). Where
    none can be made or read (a dry run as another user), a key for this process only:
    its fingerprints still compare within one output."""
    path = directory / KEY_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made by an earlier run (or meanwhile, by another ccm): read it
    except OSError:
        return secrets.token_bytes(KEY_BYTES)
    else:
        key = secrets.token_bytes(KEY_BYTES)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key)
        return key
    try:
        key = path.read_bytes()
    except OSError:
        key = b""
    # a key cut short (being written by another ccm, damaged) would be a weak one
    return key if len(key) == KEY_BYTES else secrets.token_bytes(KEY_BYTES)


def fingerprint(key: bytes, content: bytes | None) -> str | None:
    """``hmac-sha256:<16 hex>`` of ``content``; None when there is no file."""
    if content is None:
        return None
    return "hmac-sha256:" + hmac.new(key, content, hashlib.sha256).hexdigest()[:_DIGITS]


def _lines(content: bytes | None) -> list[str]:
    return [] if content is None else content.decode(errors="replace").splitlines()


@dataclass(frozen=True)
class Hidden:
    """What a diff shows of a secret file: fingerprints and changed line numbers."""

    before: str | None
    after: str | None
    #: numbers (1-based) of the lines of the new content that are new or different
    added: tuple[int, ...]
    #: numbers of the lines of the old content that are gone or different
    removed: tuple[int, ...]

    @classmethod
    def of(cls, key: bytes, before: bytes | None, after: bytes | None) -> Hidden:
        old, new = _lines(before), _lines(after)
        added: list[int] = []
        removed: list[int] = []
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                removed += range(i1 + 1, i2 + 1)
                added += range(j1 + 1, j2 + 1)
        return cls(fingerprint(key, before), fingerprint(key, after), tuple(added), tuple(removed))

    def lines(self) -> list[str]:
        changes = []
        if self.added:
            changes.append(f"new lines {ranges(self.added)}")
        if self.removed:
            changes.append(f"old lines {ranges(self.removed)}")
        return [
            f"  secret content not shown: {self.before or '(none)'} -> {self.after or '(none)'}"
            + (f"; {', '.join(changes)}" if changes else "")
            + "\n"
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "added_lines": list(self.added),
            "removed_lines": list(self.removed),
        }


def ranges(numbers: tuple[int, ...]) -> str:
    """``1-3, 7``: sorted line numbers as runs."""
    out: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        out.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(out)


def secret_text(content: bytes | None) -> set[str]:
    """What of a secret file no output may show: each line, and each word of a line,
    of ``MIN_SECRET`` characters or more."""
    found: set[str] = set()
    for line in _lines(content):
        stripped = line.strip()
        if len(stripped) >= MIN_SECRET:
            found.add(stripped)
        found.update(word for word in stripped.split() if len(word) >= MIN_SECRET)
    return found


class Redactor:
    """Replaces the given secret text in command output with ``[secret]``."""

    def __init__(self, texts: set[str]) -> None:
        # longest first: a line goes whole, not word by word
        ordered = sorted(texts, key=lambda text: (-len(text), text))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, output: str) -> str:
        if self._pattern is None:
            return output
        return self._pattern.sub(HIDDEN, output)
