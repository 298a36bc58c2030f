"""Markdown output: table cells, tables, and docstrings turned into markdown text."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

#: a Sphinx role (``:meth:`~x.y```) or a reST literal (````x````): both become `x`
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")


def from_rest(text: str) -> str:
    """Docstring text (reST-ish, as ccm writes it) as markdown."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(r"`\1`", text))


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line, as markdown ("" when none)."""
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return from_rest(" ".join(paragraph.split()))


def cell(text: str) -> str:
    """One table cell: on one line, with ``|`` escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def code(value: str) -> str:
    """Inline code that survives any backticks inside."""
    fence = "``" if "`" in value else "`"
    padding = " " if "`" in value else ""
    return f"{fence}{padding}{value}{padding}{fence}"


def literal(value: Any) -> str:
    """A value as JSON (TOML reads these the same way), as inline code."""
    if isinstance(value, tuple | list):
        value = list(value)
    return code(json.dumps(value, ensure_ascii=False, default=str))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]
    return "\n".join(lines)


def one_line(doc: str | None) -> str:
    """A whole description (every paragraph) on one line, as markdown."""
    return from_rest(" ".join(inspect.cleandoc(doc).split())) if doc else ""
