"""The ``cli`` block: every ``ccm`` command, its usage, help and options, from click."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click

from ccm.cli.main import cli
from ccm.docs.markdown import code, from_rest, table


def _commands(
    command: click.Command, parent: click.Context | None, name: str
) -> Iterator[tuple[click.Context, click.Command]]:
    context = click.Context(command, info_name=name, parent=parent)
    yield context, command
    if isinstance(command, click.Group):
        for sub in sorted(command.list_commands(context)):
            found = command.get_command(context, sub)
            if found is not None and not found.hidden:
                yield from _commands(found, context, sub)


def _help(command: click.Command) -> str:
    text = inspect.cleandoc(command.help or "").split("\f")[0]
    return from_rest(text.replace("\b\n", "")).strip()


def _section(context: click.Context, command: click.Command) -> str:
    path = context.command_path
    usage = " ".join([path, *command.collect_usage_pieces(context)])
    parts = [f"### `{path}`", f"Usage: {code(usage)}"]
    if _help(command):
        parts.append(_help(command))
    rows = []
    for param in command.get_params(context):  # arguments are in the usage line
        record = param.get_help_record(context) if isinstance(param, click.Option) else None
        if record is not None and "--help" not in record[0]:
            rows.append((code(record[0]), record[1]))
    if rows:
        parts.append(table(("option", "meaning"), rows))
    return "\n\n".join(parts)


def markdown() -> str:
    return "\n\n".join(
        _section(context, command) for context, command in _commands(cli, None, "ccm")
    )
