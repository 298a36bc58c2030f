"""Running external commands: argv lists from the settings, placeholders filled in.

Never a shell string. Only ``{name}`` tokens whose name is given are replaced, so an
argument with other braces passes through untouched. The runner is injectable (a
``CommandRunner``) so the daemon, tests and the demo can observe or redirect it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill(argv: Sequence[str], variables: Mapping[str, str]) -> list[str]:
    def replace(match: re.Match[str]) -> str:
        return variables.get(match.group(1), match.group(0))

    return [_PLACEHOLDER.sub(replace, arg) for arg in argv]


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    output: str


class CommandRunner(Protocol):
    def __call__(self, argv: list[str], *, timeout: float) -> CommandResult: ...


def run_command(argv: list[str], *, timeout: float) -> CommandResult:
    """Run argv, capture stdout+stderr together; a missing program is exit 127."""
    try:
        completed = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as error:
        return CommandResult(argv, 127, f"{argv[0]}: {error.strerror}")
    except subprocess.TimeoutExpired as error:
        output = error.output.decode(errors="replace") if error.output else ""
        return CommandResult(argv, 124, f"timed out after {timeout} s\n{output}")
    return CommandResult(argv, completed.returncode, completed.stdout.decode(errors="replace"))
