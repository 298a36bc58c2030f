"""Write a ``Settings`` as the TOML file the ``ccm`` command reads (``--config``).

A test builds its settings in Python (``node_settings``) and the real command must read
the very same ones. The standard library reads TOML but does not write it, and ccm does
not depend on a writer for a test helper: the settings are plain tables of strings,
numbers, booleans and lists, which this writes. ``write_settings`` reads the file back
with ccm's own loader and refuses a file that would not give the same settings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ccm.settings import Settings, load_settings

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def write_settings(settings: Settings, path: Path) -> Path:
    """Write ``settings`` to ``path`` (TOML) and check that ccm reads them back equal."""
    path.write_text(settings_toml(settings))
    loaded = load_settings(path, environ={})
    if loaded != settings:
        raise ValueError(f"{path} does not read back as the settings written")
    return path


def settings_toml(settings: Settings) -> str:
    """The TOML text of ``settings`` (every key, defaults included)."""
    return "\n".join(_table(settings.model_dump(mode="json"), ())) + "\n"


def _table(table: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    """Key/value lines first, then each sub-table under its ``[a.b]`` header."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    out = [f"[{'.'.join(_key(part) for part in path)}]", *lines] if path else lines
    for key, value in tables:
        out += _table(value, (*path, key))
    return out


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML wants DEL
    escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} has no TOML form: {value!r}")
