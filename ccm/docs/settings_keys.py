"""The ``settings`` and ``environment`` blocks: every key of ``ccm.settings.Settings``.

One table per TOML table (``[etcd]``, ``[commands]`` …, nested models of ``Settings``),
the top-level keys first; each key with its TOML type, default, constraints and the
description its attribute docstring gives (``use_attribute_docstrings``).
"""

from __future__ import annotations

from pydantic import BaseModel

from ccm.docs.fields import TOML, field_docs, model_checks
from ccm.docs.markdown import code, first_paragraph, table
from ccm.settings import ENV_OVERRIDES, Settings


def _tables(
    model: type[BaseModel], path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], type[BaseModel]]]:
    """``model`` and every model nested in it, with their TOML table paths."""
    found = [(path, model)]
    for name, info in model.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            found += _tables(nested, (*path, name))
    return found


def _section(path: tuple[str, ...], model: type[BaseModel]) -> str:
    title = "top-level keys" if not path else f"`[{'.'.join(path)}]`"
    parts = [f"### {title}"]
    doc = first_paragraph(model.__dict__.get("__doc__"))
    if doc:
        parts.append(doc)
    parts += [f"As a whole: {text}." for text in model_checks(model)]
    rows = [
        (code(f.name), f.type, f.default, "; ".join(f.constraints), f.description)
        for f in field_docs(model, TOML)
        if not _is_table(model, f.name)  # a nested table is a section of its own
    ]
    parts.append(table(("key", "type", "default", "constraints", "description"), rows))
    return "\n\n".join(parts)


def _is_table(model: type[BaseModel], name: str) -> bool:
    nested = model.model_fields[name].annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel)


def markdown() -> str:
    return "\n\n".join(_section(path, model) for path, model in _tables(Settings, ()))


def environment() -> str:
    rows = [(code(variable), code(".".join(path))) for variable, path in ENV_OVERRIDES.items()]
    return table(("variable", "overrides"), rows)
