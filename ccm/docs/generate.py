"""Which generator writes which block, and rewriting or checking whole files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ccm.docs import commands, object_types, settings_keys
from ccm.docs.blocks import DocsError, replace_blocks


def generate(name: str, args: tuple[str, ...]) -> str:
    """The markdown of the block ``name`` (``object-types`` takes package names)."""
    if name == "object-types":
        return object_types.markdown(args)
    if args:
        raise DocsError(f"block {name!r} takes no arguments (got {' '.join(args)})")
    if name == "settings":
        return settings_keys.markdown()
    if name == "environment":
        return settings_keys.environment()
    if name == "cli":
        return commands.markdown()
    raise DocsError(
        f"unknown generated block {name!r} (known: object-types, settings, environment, cli)"
    )


def render_file(path: Path) -> str:
    """The file's text with every generated block rewritten."""
    return replace_blocks(path.read_text(), generate, str(path))


def stale(paths: Iterable[Path]) -> list[Path]:
    """The files whose generated blocks differ from what the code says now."""
    return [path for path in paths if render_file(path) != path.read_text()]
