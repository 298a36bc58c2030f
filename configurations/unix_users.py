"""``unix-users``: one unix account and one home directory per ``unix-users`` object.

Plans, per user (ordered by id): the ``Account`` (home ``/home/<username>``, the shell,
the e-mail address as comment) and then ``/home/<username>`` (0750, owned by the user
and the user's own group, which ``useradd`` creates). The executor creates accounts
before it writes files and deletes accounts it created once they are no longer planned;
home directories are never removed (they hold the user's data).
"""

from __future__ import annotations

from collections.abc import Sequence

from ccm.models import Snapshot, UnixUser
from ccm.plan.changes import Account, Change, Directory
from ccm.plan.configuration import Configuration, Render


class UnixUsers(Configuration):
    name = "unix-users"
    subscribes = (UnixUser.TYPE,)
    summary = "unix accounts and their home directories"
    #: every group whose configurations run something as a tenant's account
    groups = ("nginx", "php", "cron")

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        changes: list[Change] = []
        for user in snapshot.all(UnixUser):
            changes.append(
                Account(
                    username=user.username,
                    home=user.home,
                    id=user.id,
                    shell=user.shell,
                    comment=user.email or "",
                    origin=(user.describe(),),
                )
            )
            changes.append(
                Directory(
                    user.home,
                    mode=0o750,
                    owner=user.username,
                    group=user.username,
                    owner_id=user.id,
                    origin=(user.describe(),),
                )
            )
        return changes
