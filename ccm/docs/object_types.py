"""The ``object-types`` block: every registered object type, from its model.

The types are those in ``ccm.models.base.object_types`` once the ``ccm.configurations``
entry points are loaded, exactly as the CLI loads them: a type defined in
``configurations/`` or in a third-party package appears with no edit here. Nothing is
instantiated: fields come from the JSON schema and the validators (``ccm.docs.fields``),
identity from the class attributes (``REFERENCES``, ``IMMUTABLE``, ``READS``), and the
unique keys from the source of ``unique_keys()`` (the names of the dict it returns).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable, Sequence

from ccm.docs.blocks import DocsError
from ccm.docs.fields import JSON, field_docs, model_checks
from ccm.docs.markdown import code, first_paragraph, table
from ccm.engine.registry import Registry
from ccm.models.base import CcmObject, object_types
from ccm.plan.configuration import Configuration


def load() -> tuple[dict[str, type[CcmObject]], list[Configuration]]:
    """Every registered type and configuration, the entry points loaded as the CLI does."""
    registry = Registry.from_entry_points()
    return dict(object_types), list(registry)


def _key_text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"primary_for {group}" → primary_for {group}
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + ast.unparse(value.value) + "}")
        return "".join(parts)
    return "(computed)"


def _override(model: type[CcmObject], name: str) -> object | None:
    """The type's own ``name`` method (its or a base's below ``CcmObject``), or None."""
    for cls in model.__mro__:
        if name in vars(cls):
            return None if cls is CcmObject else vars(cls)[name]
    return None


def unique_keys(model: type[CcmObject]) -> list[str] | None:
    """The names of the values ``unique_keys()`` returns: [] when the type does not
    override it, None when its source cannot be read."""
    method = _override(model, "unique_keys")
    if method is None:
        return []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(method)))  # type: ignore[arg-type]
    except (OSError, TypeError, SyntaxError):
        return None
    keys: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys += [_key_text(key) for key in node.keys if key is not None]
        elif isinstance(node, ast.DictComp):
            keys.append(_key_text(node.key))
    return list(dict.fromkeys(keys))


def _names(values: Iterable[str]) -> str:
    return ", ".join(code(value) for value in values)


def _facts(
    model: type[CcmObject],
    types: dict[str, type[CcmObject]],
    configurations: Sequence[Configuration],
) -> list[str]:
    facts = [f"Model: {code(model.__module__ + '.' + model.__qualname__)}."]
    if model.REFERENCES:
        refs = ", ".join(f"{code(f)} → {code(t)}" for f, t in model.REFERENCES.items())
        facts.append(f"References (must exist when written): {refs}.")
    referrers = sorted(
        f"{other.TYPE}.{name}"
        for other in types.values()
        for name, target in other.REFERENCES.items()
        if target == model.TYPE
    )
    if referrers:
        facts.append(f"Referred to by (a delete is refused while they exist): {_names(referrers)}.")
    unique = unique_keys(model)
    if unique is None:
        facts.append("Unique: see `unique_keys()` (its source is not available).")
    elif unique:
        facts.append(f"Unique among the {code(model.TYPE)}: {_names(unique)}.")
    if model.IMMUTABLE:
        facts.append(
            f"Immutable: {_names(model.IMMUTABLE)} (never changed; kept in a tombstone when "
            "the object is deleted, and never given to another id)."
        )
    if model.READS:
        facts.append(f"Its rules read every object of: {_names(model.READS)}.")
    readers = sorted(t for t, other in types.items() if model.TYPE in other.READS)
    if readers:
        facts.append(
            f"Rules of these types read it (re-checked when it changes): {_names(readers)}."
        )
    rules = _override(model, "problems")
    if rules is not None:
        said = first_paragraph(getattr(rules, "__doc__", None)) or "`problems()` in the model"
        facts.append(f"Cross-object rules: {said.rstrip('.')}.")
    facts += [f"As a whole: {text}." for text in model_checks(model)]
    used = [c for c in configurations if model.TYPE in c.subscribes]
    for configuration in used:
        groups = ", ".join(configuration.groups) or "every node"
        if configuration.provides_accounts:
            groups = "wherever a configuration that needs accounts runs"
        summary = f": {configuration.summary}" if configuration.summary else ""
        facts.append(f"Configuration {code(configuration.name)} (groups: {groups}){summary}.")
    return facts


def _section(
    model: type[CcmObject],
    types: dict[str, type[CcmObject]],
    configurations: Sequence[Configuration],
) -> str:
    doc = first_paragraph(model.__dict__.get("__doc__"))
    parts = [f"### `{model.TYPE}`"]
    if doc:
        parts.append(doc)
    parts.append("\n".join(f"- {fact}" for fact in _facts(model, types, configurations)))
    rows = [
        (code(f.name), f.type, f.default, "; ".join(f.constraints), f.description)
        for f in field_docs(model, JSON)
    ]
    parts.append(table(("field", "JSON type", "default", "constraints", "description"), rows))
    return "\n\n".join(parts)


def markdown(packages: Sequence[str]) -> str:
    """The block for the types defined in ``packages`` (top-level names; none: every type)."""
    types, configurations = load()
    chosen = {
        name: model
        for name, model in sorted(types.items())
        if not packages or model.__module__.partition(".")[0] in packages
    }
    if not chosen:
        raise DocsError(
            f"no registered object type is defined in {', '.join(packages)} "
            f"(registered: {', '.join(sorted(types)) or 'none'}); is it installed?"
        )
    index = table(
        ("type", "configurations", "what it is"),
        [
            (
                f"[`{name}`](#{name})",
                _names(c.name for c in configurations if name in c.subscribes),
                first_paragraph(model.__dict__.get("__doc__")),
            )
            for name, model in chosen.items()
        ],
    )
    sections = [_section(model, types, configurations) for model in chosen.values()]
    return "\n\n".join([index, *sections])
