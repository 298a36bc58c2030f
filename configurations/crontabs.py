"""``crontabs``: one crontab per unix user who has crons, from the ``crons`` objects.

Writes ``/var/spool/cron/crontabs/<username>`` (0600, owned by the user, group
``crontab``: what Debian's cron and ``crontab(1)`` expect) from ``templates/crontab.j2``,
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

from collections.abc import Sequence
from dataclasses import dataclass

from ccm.models import Cron, Snapshot, UnixUser
from ccm.plan.changes import Change, Directory, File
from ccm.plan.configuration import Configuration, Render
from configurations._common import referenced

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
                "crontab.j2",
                user=user,
                entries=[cron_entry(cron) for cron in crons],
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
