"""``unix-users``: one unix account and one home directory per ``unix-users`` object.

Plans, per user (ordered by id): the ``Account`` (home ``/home/<username>``, the shell,
the e-mail address as comment) and then ``/home/<username>``: mode 0750, owned by the user,
group ``www-data`` (the web server's group). The executor creates accounts before it
writes files and deletes accounts it created once they are no longer planned; home
directories are never removed (they hold the user's data), and a home whose mode or group
drifted is set back on the next run.

Why this home model: nginx's workers run as ``www-data`` and must traverse the home to
reach a document root inside it; with group ``www-data`` and 0750 they can, and nobody
else but the user can. php-fpm runs each pool as its tenant, and tenants are never
members of ``www-data``, so one tenant's PHP cannot even enter another tenant's home.
(Alternatives: adding ``www-data`` to every tenant's group works the same way, but it
puts state into ``/etc/group`` for each tenant and gives the web server the tenant's
group on every file; a 0711 home lets anyone who knows a path inside it read it.) The
web server may read every home, so a tenant's symlink to another tenant's file is
refused by nginx itself (``disable_symlinks if_not_owner``, in ``nginx-vhosts``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ccm.models import Snapshot, UnixUser
from ccm.plan.changes import Account, Change, Directory
from ccm.plan.configuration import Configuration, Render

#: the web server's group (Debian's nginx workers run as www-data)
WEB_SERVER_GROUP = "www-data"


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
                    group=WEB_SERVER_GROUP,
                    owner_id=user.id,
                    origin=(user.describe(),),
                )
            )
        return changes
