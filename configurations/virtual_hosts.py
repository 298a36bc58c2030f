"""``nginx-vhosts``: one nginx server block per ``virtual-hosts`` object, a default server,
then check and reload.

Writes ``/etc/nginx/sites-enabled/<domain>.conf`` (0644 root) from
``templates/virtual-hosts/nginx-vhost.conf.j2``: port 80 on IPv4 and IPv6, the domain and
its aliases, the document root. A vhost with an FPM pool passes ``*.php`` to the pool's socket; the
FastCGI parameters are written inline (Debian's ``fastcgi.conf`` set) so the file
references no other file and checks the same under any root. With a pool and
``front_controller`` (the default), a path that is no file goes to ``/index.php`` with
the query string (WordPress, Laravel); otherwise it is a plain 404. A vhost without a
pool refuses ``*.php`` instead of serving PHP source as plain text. Dotfiles (``.git``,
``.env``, ``.htaccess``) are refused everywhere, except ``/.well-known/``. nginx reads
every tenant's home (group ``www-data``, see ``unix-users``), so it follows no symlink
whose owner differs from its target's (``disable_symlinks if_not_owner``): a tenant
cannot publish another tenant's file through a link. Every component of the path is
checked, from ``/``: the tenant owns everything in its home, the document root too, and
``from=$document_root`` would let a document root that is (or passes through) a link to
another home serve that home. php-fpm then opens ``SCRIPT_FILENAME`` as the tenant, so
a link swapped after nginx's check still reaches only what the tenant may read. No
per-vhost log files: the server's global logs apply, and ``nginx -t`` opens no extra
paths. ``/.well-known/acme-challenge/`` is served as static files only, never behind
basic auth.

**HTTPS.** With a ``certificate_id`` (a ``certificates`` object that covers every name of
the vhost, RFC 6125: ``configurations.server_names``) the block also listens on 443 with
HTTP/2, TLS 1.2 and 1.3 only and Mozilla's "intermediate" ciphers. With ``force_https``
(which needs a certificate) port 80 has a block of its own that answers 301 to
``https://$host$request_uri``, except ACME's HTTP-01 challenges. A
``basic-auth-realms`` object adds ``auth_basic`` for its path (``configurations.basic_auth``).

**One configuration for everything nginx reads.** The certificates' files, the redirects'
server blocks and the realms' user files are planned here too, not by configurations of
their own: ``nginx -t`` loads every certificate a server block names, so a block and its
certificate must appear, change and go in the same configuration's run. In two
configurations one of the two orders would fail its check (a vhost that drops a
certificate deleted in the same run, or one that takes a certificate added in it).

Always, even with no vhosts: ``/etc/nginx/sites-enabled/ccm-default.conf`` from
``templates/virtual-hosts/nginx-default-server.conf.j2``, the ``default_server`` for ports
80 and 443.
A name nobody serves would otherwise reach the alphabetically first vhost (a tenant's
PHP); now port 80 closes the connection (444) and port 443 rejects the TLS handshake.
A domain always contains a dot, so no vhost file can be named ``ccm-default.conf``.
Debian's own ``default`` site is not needed, and must be removed: it claims
``default_server`` too, and ``nginx -t`` refuses two.

Then ``nginx_check`` and a reload of ``nginx``, triggered by ``sites-enabled/`` and
``/etc/ssl/ccm/`` (a renewed certificate reloads nginx once; a changed basic-auth user file
needs no reload: nginx reads it at each request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import Field

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import AbsolutePath, Alias, Hostname, ObjectId, Ref
from ccm.models.names import ServedNames
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, Check, File, Probe, UnitAction
from ccm.plan.configuration import Configuration, Render, referenced
from ccm.plan.paths import file_name
from configurations.basic_auth import BasicAuthRealm, htpasswd_file
from configurations.certificates import CERTIFICATE_DIR, Certificate, certificate_files
from configurations.fpm_pools import FpmPool
from configurations.server_names import coverage_problems, name_problems
from configurations.unix_users import UnixUser
from configurations.url_redirects import UrlRedirect, redirect_files

MAX_SERVER_ALIASES = 100
T = TypeVar("T", bound=CcmObject)


class VirtualHost(CcmObject):
    TYPE: ClassVar[str] = "virtual-hosts"
    #: every vhost: no two may serve the same name (the redirects read the vhosts: one
    #: namespace, checked both ways by their rule; ``configurations.server_names``)
    READS: ClassVar[tuple[str, ...]] = ("virtual-hosts",)
    domain: Hostname
    server_aliases: list[Alias] = Field(default_factory=list, max_length=MAX_SERVER_ALIASES)
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    document_root: AbsolutePath
    fpm_pool_id: Annotated[ObjectId, Ref("fpm-pools")] | None = None
    #: with a pool, unknown paths go to /index.php (WordPress, Laravel); False: plain 404s
    front_controller: bool = Field(default=True, strict=True)
    #: served on port 443 too, with this certificate (it must cover every name)
    certificate_id: Annotated[ObjectId, Ref("certificates")] | None = None
    #: port 80 answers 301 to https (except ACME's HTTP-01 challenges); needs a certificate
    force_https: bool = Field(default=False, strict=True)

    def unique_keys(self) -> dict[str, Any]:
        return {"domain": self.domain}

    @cached_property
    def served(self) -> ServedNames:
        """Every name this vhost serves, as nginx compares them (kept: a write compares
        each written vhost with every stored one)."""
        return ServedNames((self.domain, *self.server_aliases))

    def problems(self, view: ObjectsView) -> list[str]:
        where = self.describe()
        problems = name_problems(self, view, self.READS)
        if self.force_https and self.certificate_id is None:
            problems.append(
                f"{where}: force_https: needs a certificate_id (port 443 would have no "
                "certificate to answer with)"
            )
        problems += coverage_problems(self, view)
        user = view.lookup(UnixUser.TYPE, self.unix_user_id)
        if isinstance(user, UnixUser) and not self.document_root.startswith(user.home + "/"):
            problems.append(
                f"{where}: document_root: {self.document_root!r} is not inside the home "
                f"of {user.username!r} ({user.home}/)"
            )
        if self.fpm_pool_id is not None:
            pool = view.lookup(FpmPool.TYPE, self.fpm_pool_id)
            if isinstance(pool, FpmPool) and pool.unix_user_id != self.unix_user_id:
                problems.append(
                    f"{where}: fpm_pool_id: pool {pool.name!r} runs as unix-users/"
                    f"{pool.unix_user_id}, not as this vhost's unix-users/{self.unix_user_id}"
                )
        return problems


SITES_DIR = "/etc/nginx/sites-enabled/"
#: ``nginx -t`` over every site: another type that writes into ``sites-enabled/``
#: (redirects) reuses it with ``checks = NGINX_CHECKS`` and ``Check(NGINX_CHECK, …)``
NGINX_CHECK = "nginx_check"
NGINX_CHECKS: Mapping[str, tuple[str, ...]] = {NGINX_CHECK: ("nginx", "-t")}
#: nginx accepts connections on port 80 after the reload (bash's /dev/tcp: no tool)
NGINX_PROBE = "nginx_probe"
NGINX_PROBES: Mapping[str, tuple[str, ...]] = {
    NGINX_PROBE: ("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/80")
}
DEFAULT_SERVER = f"{SITES_DIR}ccm-default.conf"


@dataclass(frozen=True)
class VhostView:
    """What ``nginx-vhost.conf.j2`` renders for one vhost."""

    id: int
    server_names: tuple[str, ...]
    document_root: str
    #: the FPM pool's name and socket, or None for a static vhost
    pool_name: str | None
    socket: str | None
    #: unknown paths go to /index.php (only with a pool)
    front_controller: bool
    #: served on 443 with it (None: port 80 only)
    certificate: Certificate | None = None
    #: port 80 answers 301 to https, except ACME's challenges
    force_https: bool = False
    #: the basic-auth realms of its paths, by path
    realms: tuple[BasicAuthRealm, ...] = ()


class NginxVhosts(Configuration):
    """Every file nginx reads: the vhosts, the redirects, the certificates and the basic
    auth user files. One configuration, so one ``nginx -t`` sees a server block and the
    certificate it names appear or go together, whichever order a run meets them in."""

    name = "nginx-vhosts"
    subscribes = (
        VirtualHost.TYPE,
        FpmPool.TYPE,
        UnixUser.TYPE,
        Certificate.TYPE,
        UrlRedirect.TYPE,
        BasicAuthRealm.TYPE,
    )
    depends_on = ("unix-users", "php-fpm-pools")
    summary = (
        "nginx server blocks (vhosts, redirects), certificates, basic auth files and a "
        "default server; check, reload nginx"
    )
    groups = ("nginx",)
    needs_accounts = True
    checks = NGINX_CHECKS
    probes = NGINX_PROBES

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        changes: list[Change] = [
            File(DEFAULT_SERVER, render("virtual-hosts/nginx-default-server.conf.j2"))
        ]
        for certificate in snapshot.all(Certificate):
            changes += certificate_files(certificate)
        realms: dict[int, list[BasicAuthRealm]] = {}
        for realm in snapshot.all(BasicAuthRealm):
            referenced(
                snapshot,
                VirtualHost,
                realm.virtual_host_id,
                referrer=realm,
                field="virtual_host_id",
                configuration=self.name,
            )
            realms.setdefault(realm.virtual_host_id, []).append(realm)
            changes.append(htpasswd_file(realm, render))
        for vhost in snapshot.all(VirtualHost):
            changes.append(self._vhost_file(vhost, snapshot, render, realms.get(vhost.id, [])))
        changes += redirect_files(snapshot, render, self.name)
        # certificates count: a renewal (same id, new PEM) is checked and reloads nginx once
        triggers = (SITES_DIR, CERTIFICATE_DIR)
        changes.append(Check(NGINX_CHECK, triggers=triggers))
        changes.append(UnitAction("nginx", "reload", triggers=triggers))
        changes.append(Probe(NGINX_PROBE, triggers=triggers))
        return changes

    def _vhost_file(
        self,
        vhost: VirtualHost,
        snapshot: Snapshot,
        render: Render,
        realms: list[BasicAuthRealm],
    ) -> File:
        def refers(model: type[T], object_id: int, field: str) -> T:
            return referenced(
                snapshot, model, object_id, referrer=vhost, field=field, configuration=self.name
            )

        refers(UnixUser, vhost.unix_user_id, "unix_user_id")
        pool = None
        if vhost.fpm_pool_id is not None:
            pool = refers(FpmPool, vhost.fpm_pool_id, "fpm_pool_id")
        certificate = None
        if vhost.certificate_id is not None:
            certificate = refers(Certificate, vhost.certificate_id, "certificate_id")
        view = VhostView(
            id=vhost.id,
            server_names=(vhost.domain, *vhost.server_aliases),
            document_root=vhost.document_root,
            pool_name=pool.name if pool else None,
            socket=pool.socket if pool else None,
            front_controller=pool is not None and vhost.front_controller,
            certificate=certificate,
            force_https=vhost.force_https and certificate is not None,
            realms=tuple(sorted(realms, key=lambda realm: (realm.path, realm.id))),
        )
        return File(
            SITES_DIR + file_name(vhost.domain, ".conf"),
            render("virtual-hosts/nginx-vhost.conf.j2", vhost=view, certificate=certificate),
            origin=(vhost.describe(), *(realm.describe() for realm in view.realms)),
        )
