"""``crontabs``: one crontab per unix user who has crons, from the ``crons`` objects.

Writes ``/var/spool/cron/crontabs/<username>`` (0600, owned by the user, group
``crontab``: what Debian's cron and ``crontab(1)`` expect) from ``templates/crons/crontab.j2``,
one entry per cron ordered by id. A user without crons gets no file, so the executor
removes the crontab when the user's last cron is deleted. cron notices the new file by
the spool directory's mtime: no reload is needed.

The spool directory itself is planned too (when there is a crontab to write), as Debian's
cron package makes it: 1730 root:crontab (the setgid ``crontab`` program writes there;
users cannot list it). Otherwise a node without it would get it 0755 root:root.

The header: Debian's ``crontab -l`` hides up to three leading comment lines (the header
``crontab(1)`` itself writes), so ccm's "do not edit" header repeats after three lines
and the tenant who lists the crontab sees it.

MAILTO: in a crontab an environment line applies to every entry *below* it, until the
next assignment. An entry without ``email_address`` would therefore silently inherit
the address of the entry above it. So every entry gets its own ``MAILTO`` line right
before it: its ``email_address``, or ``MAILTO=""`` (cron then sends no mail at all).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import Email, ObjectId, Ref, Text, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, Directory, File
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.unix_users import UnixUser

_CRON_SPECIAL = {
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
#: (name, lowest, highest, names from the lowest value up) of the five fields, as
#: Debian's cron reads them
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, tuple(_MONTHS)),
    ("day of week", 0, 7, tuple(_DAYS)),
)
_CRON_ITEM = re.compile(
    r"(?P<range>\*|(?P<low>[0-9]{1,2}|[a-z]{3})(?:-(?P<high>[0-9]{1,2}|[a-z]{3}))?)(?:/(?P<step>[0-9]{1,2}))?"
)
#: Debian's cron reads at most 999 bytes of a command (MAX_COMMAND) and drops the rest
MAX_CRON_COMMAND_BYTES = 999


def _cron_value(text: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text) + low
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number or a name")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}")
    return value


def check_cron_field(text: str, index: int) -> None:
    """One of the 5 fields: a list of ``*``, ``N`` or ``N-M``, each with an optional ``/S``."""
    name, low, high, names = _CRON_FIELDS[index]
    for item in text.split(","):
        match = _CRON_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{name}: {item!r} is not *, N, N-M or one of those with /step")
        if match["low"] is not None:
            first = _cron_value(match["low"], low, high, names)
            if match["high"] is not None and _cron_value(match["high"], low, high, names) < first:
                raise ValueError(f"{name}: {item!r} is a range that runs backwards")
        if match["step"] is not None and not 1 <= int(match["step"]) <= high:
            raise ValueError(f"{name}: step {match['step']} is outside 1-{high}")


#: a node group (``nginx``, ``php``, ``cron`` …): which configurations run on a node
GroupName = Annotated[
    str, Field(strict=True), pattern(r"[a-z][a-z0-9-]{0,31}", "a group name of a-z, 0-9, -")
]


class Cron(CcmObject):
    """A cron job. Unpinned it runs on every node with the ``cron`` group; with a
    ``node_id`` on that node only, so a job runs once per schedule, not once per node."""

    TYPE: ClassVar[str] = "crons"
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    name: Annotated[
        str, Field(strict=True, max_length=64), pattern(r"[a-z0-9-]+", "a name of a-z, 0-9, -")
    ]
    schedule: Annotated[str, Field(strict=True)]
    command: Text = Field(min_length=1)
    email_address: Email | None = None
    node_id: Annotated[ObjectId, Ref("nodes")] | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value in _CRON_SPECIAL:
            return value
        fields = value.split(" ")
        if len(fields) != 5:
            raise ValueError(
                f"{value!r} is not 5 cron fields separated by single spaces or one of "
                + ", ".join(sorted(_CRON_SPECIAL))
            )
        for index, field in enumerate(fields):
            check_cron_field(field, index)
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if "%" in value:
            # cron turns an unescaped % into a newline: refuse rather than guess.
            raise ValueError("must not contain '%' (cron treats it as a newline)")
        if value[0] in "*-":
            # Debian's cron reads a leading * as a sixth time field ("bad command") and a
            # leading - as "do not log": either changes what the entry means
            raise ValueError(f"must not start with {value[0]!r}")
        size = len(value.encode())
        if size > MAX_CRON_COMMAND_BYTES:
            raise ValueError(
                f"{size} bytes: cron reads at most {MAX_CRON_COMMAND_BYTES} of a command"
            )
        return value

    def unique_keys(self) -> dict[str, Any]:
        return {"unix_user_id+name": (self.unix_user_id, self.name)}


CRONTABS_DIR = "/var/spool/cron/crontabs"
#: Debian's spool: the setgid crontab(1) writes into it, users cannot list it
CRONTABS_DIR_MODE = 0o1730


@dataclass(frozen=True)
class CronEntry:
    """What ``crontab.j2`` renders for one cron."""

    id: int
    name: str
    schedule: str
    command: str
    #: the MAILTO value in effect for this entry; "" sends no mail
    mailto: str

    @property
    def mailto_line(self) -> str:
        # Addresses match the model's safe pattern (no blanks, no quotes): unquoted.
        return f"MAILTO={self.mailto}" if self.mailto else 'MAILTO=""'


def cron_entry(cron: Cron) -> CronEntry:
    return CronEntry(
        id=cron.id,
        name=cron.name,
        schedule=cron.schedule,
        command=cron.command,
        mailto=cron.email_address or "",
    )


class Crontabs(Configuration):
    name = "crontabs"
    subscribes = (Cron.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users",)
    summary = "per-user crontabs in /var/spool/cron/crontabs"
    groups = ("cron",)
    needs_accounts = True

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        by_user: dict[int, list[Cron]] = {}
        here = snapshot.this_node()
        for cron in snapshot.all(Cron):  # ordered by id
            if cron.node_id is not None and (here is None or here.id != cron.node_id):
                continue  # pinned to another node: it runs once, there
            by_user.setdefault(cron.unix_user_id, []).append(cron)
        changes: list[Change] = []
        if by_user:
            changes.append(Directory(CRONTABS_DIR, CRONTABS_DIR_MODE, "root", "crontab"))
        for user_id, crons in sorted(by_user.items()):
            user = referenced(
                snapshot,
                UnixUser,
                user_id,
                referrer=crons[0],
                field="unix_user_id",
                configuration=self.name,
            )
            content = render(
                "crons/crontab.j2",
                user=user,
                entries=tuple(cron_entry(cron) for cron in crons),
            )
            changes.append(
                File(
                    f"{CRONTABS_DIR}/{user.username}",
                    content,
                    mode=0o600,
                    owner=user.username,
                    group="crontab",
                    origin=tuple(cron.describe() for cron in crons),
                )
            )
        return changes
