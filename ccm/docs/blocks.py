"""Generated blocks in a markdown file: found by their marker comments, rewritten whole.

A block starts with ``<!-- generated: NAME [ARG…] -->`` on a line of its own and ends at
the next ``<!-- end generated -->``. Everything between is replaced by what NAME's
generator returns for ARGs; everything outside the blocks is left byte for byte.
Markers inside fenced code blocks are examples, not blocks. A marker without its end,
an end without a start, or a nested start is an error naming the file and line, so a
half-edited file is never silently rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ccm.errors import CcmError

START = re.compile(r"<!-- generated: (?P<name>[a-z][a-z-]*)(?P<args>(?: [A-Za-z0-9_.-]+)*) -->")
END = "<!-- end generated -->"
#: a fenced block's opening line: the fence, then an info string (``python``)
FENCE = re.compile(r"(`{3,}|~{3,}).*")

#: ``generate(name, args)`` → the block's markdown (raises ``DocsError`` for a bad name)
Generate = Callable[[str, tuple[str, ...]], str]


class DocsError(CcmError):
    """A documentation file cannot be generated; the message names the file and line."""


def _closes(line: str, fence: str) -> bool:
    """A closing fence: the opening's character, at least as many, nothing else."""
    return len(line) >= len(fence) and line == fence[0] * len(line)


def replace_blocks(text: str, generate: Generate, source: str) -> str:
    """``text`` with every block regenerated."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    fence: str | None = None  # the fence of the code block we are in
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        stripped = line.strip()
        opening = FENCE.fullmatch(stripped)
        if fence is None and opening:
            fence = opening[1]
        elif fence is not None and _closes(stripped, fence):
            fence = None
        if fence is not None or opening:
            index += 1
            continue
        if stripped == END:
            raise DocsError(f"{source}:{index + 1}: {END} without a generated block before it")
        start = START.fullmatch(stripped)
        if start is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != END:
            if START.fullmatch(lines[end].strip()):
                raise DocsError(f"{source}:{end + 1}: a generated block inside another")
            end += 1
        if end == len(lines):
            raise DocsError(f"{source}:{index + 1}: no {END} after this marker")
        try:
            body = generate(start["name"], tuple(start["args"].split()))
        except DocsError as error:
            raise DocsError(f"{source}:{index + 1}: {error}") from None
        out.append("\n" + body.strip("\n") + "\n\n")
        out.append(lines[end])
        index = end + 1
    return "".join(out)
