"""``nginx-vhosts``: one nginx server block per ``virtual-hosts`` object, then check and reload.

Writes ``/etc/nginx/sites-enabled/<domain>.conf`` (0644 root) from
``templates/nginx-vhost.conf.j2``: port 80 on IPv4 and IPv6, the domain and its aliases,
the document root. A vhost with an FPM pool passes ``*.php`` to the pool's socket; the
FastCGI parameters are written inline (Debian's ``fastcgi.conf`` set) so the file
references no other file and checks the same under any root. A vhost without a pool
refuses ``*.php`` instead of serving PHP source as plain text. Dotfiles (``.git``,
``.env``, ``.htaccess``) are refused everywhere, except ``/.well-known/``. No per-vhost
log files: the server's global logs apply, and ``nginx -t`` opens no extra paths.

Then ``nginx_check`` and a reload of ``nginx``, triggered by ``sites-enabled/``; they
are planned even with no vhosts, so deleting the last vhost still reloads nginx.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ccm.models import FpmPool, Snapshot, UnixUser, VirtualHost
from ccm.plan.changes import Change, Check, File, UnitAction
from ccm.plan.configuration import Configuration, Render
from ccm.plan.paths import file_name
from configurations._common import referenced

SITES_DIR = "/etc/nginx/sites-enabled/"


@dataclass(frozen=True)
class VhostView:
    """What ``nginx-vhost.conf.j2`` renders for one vhost."""

    id: int
    server_names: tuple[str, ...]
    document_root: str
    #: the FPM pool's name and socket, or None for a static vhost
    pool_name: str | None
    socket: str | None


class NginxVhosts(Configuration):
    name = "nginx-vhosts"
    subscribes = (VirtualHost.TYPE, FpmPool.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users", "php-fpm-pools")
    summary = "nginx server blocks in sites-enabled; check, then reload nginx"
    groups = ("nginx",)
    checks = {"nginx_check": ("nginx", "-t")}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        changes: list[Change] = []
        for vhost in snapshot.all(VirtualHost):
            referenced(
                snapshot,
                UnixUser,
                vhost.unix_user_id,
                referrer=vhost,
                field="unix_user_id",
                configuration=self.name,
            )
            pool = None
            if vhost.fpm_pool_id is not None:
                pool = referenced(
                    snapshot,
                    FpmPool,
                    vhost.fpm_pool_id,
                    referrer=vhost,
                    field="fpm_pool_id",
                    configuration=self.name,
                )
            view = VhostView(
                id=vhost.id,
                server_names=(vhost.domain, *vhost.server_aliases),
                document_root=vhost.document_root,
                pool_name=pool.name if pool else None,
                socket=pool.socket if pool else None,
            )
            changes.append(
                File(
                    SITES_DIR + file_name(vhost.domain, ".conf"),
                    render("nginx-vhost.conf.j2", vhost=view),
                    origin=(vhost.describe(),),
                )
            )
        changes.append(Check("nginx_check", triggers=(SITES_DIR,)))
        changes.append(UnitAction("nginx", "reload", triggers=(SITES_DIR,)))
        return changes
