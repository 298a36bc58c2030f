"""``ccm apply``'s progress on stderr: a bar per configuration on a terminal (click's
progress bar), a plain line per milestone into a pipe or a log file
(``unix-users: 812/2000``)."""

from __future__ import annotations

from typing import Any, TextIO

import click

from ccm.plan.progress import Milestones


class TerminalProgress:
    """One click progress bar per configuration, drawn while its steps run."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._bar: Any = None

    def __call__(self, configuration: str, done: int, total: int, /) -> None:
        if done == 0:
            self._bar = click.progressbar(
                length=total, label=f"{configuration:<18}", file=self.stream, show_pos=True
            )
            self._bar.render_progress()
            return
        if self._bar is None:
            return
        self._bar.update(done - self._bar.pos)
        if done >= total:
            self._bar.render_finish()
            self._bar = None


class LineProgress:
    """A line per milestone: the start, every 10 %, the end."""

    def __init__(self, stream: TextIO, milestones: Milestones | None = None) -> None:
        self.stream = stream
        self.milestones = milestones or Milestones()

    def __call__(self, configuration: str, done: int, total: int, /) -> None:
        if self.milestones(configuration, done, total):
            click.echo(f"{configuration}: {done}/{total}", file=self.stream)


def progress_for(stream: TextIO) -> TerminalProgress | LineProgress:
    return TerminalProgress(stream) if stream.isatty() else LineProgress(stream)
