"""Sites really serve: real nginx, php-fpm, Dovecot and crontab(1) on ccm's rendered files.

ccm's own planning and executor render a node root under a temporary directory (real
``useradd --prefix``); the tenants' site files are put in their homes as the tenants
would. Then Debian's nginx and php-fpm 8.2 (stock main configurations) and a Dovecot
(a small configuration of ours, pointing at the root's passwd-file) run those files
unchanged, inside a private mount + network + PID namespace (``serving_node.py``): the
root's accounts, homes, pool and site directories and cron spool are bind-mounted over
the real paths there, and the machine's own ``/etc``, ``/home`` and ``/var`` are never
written. The servers start once for this module; real HTTP requests over loopback (curl)
check what a visitor and a tenant get, and what a tenant gets of another's files: through
a link, a document root that is a link, or the OPcache all pools share. Missing programs
fail the tests (never skipped).
"""

from __future__ import annotations

import grp
import http.server
import itertools
import json
import os
import stat
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from acme_servers import free_port
from certs import TestCa
from serving_node import ServedNode, ServingError

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import CcmObject, Snapshot
from ccm.plan.commands import fill
from ccm.testing.noderoot import node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.basic_auth import BasicAuthRealm
from configurations.certificates import Certificate
from configurations.crons import Cron
from configurations.fpm_pools import OPCACHE_API_NOWHERE, FpmPool, PhpFpmPools
from configurations.mail_accounts import MailAccount
from configurations.mail_domains import MailDomain
from configurations.unix_users import UnixUser
from configurations.url_redirects import UrlRedirect
from configurations.virtual_hosts import NginxVhosts, VirtualHost

UID_BASE = 20000
ALICE_UID, BOB_UID = UID_BASE + 1, UID_BASE + 2
PASSWORD = "correct horse battery staple"
SECRET = "bob's secret: 7f3a9c"
DB_BACKUP = "-- bob's database dump: 5be1d0\n"
PHP_SECRET = "bob's compiled secret: 0c4e7d"
#: the test CA of the HTTPS sites (valid now: curl checks it at the real time)
CA = TestCa("ccm serving")
TLS_NAMES = ["secure.alice.example.com", "forced.alice.example.com", "go.alice.example.com"]
ADMIN, ADMIN_PASSWORD = "admin", "open sesame 4711"
VISITOR, VISITOR_PASSWORD = "visitor", "friend-and-enter"


def web_objects() -> list[CcmObject]:
    """HTTPS, force_https, redirects and basic auth, on alice's sites."""
    issued = CA.issue(TLS_NAMES)
    # crypt hashes as nginx reads them: doveadm's, without its {SCHEME} prefix
    bcrypt = password_hash(ADMIN_PASSWORD, "BLF-CRYPT").partition("}")[2]
    sha512 = password_hash(VISITOR_PASSWORD).partition("}")[2]
    common = {"unix_user_id": 1, "document_root": "/home/alice/www", "fpm_pool_id": 1}
    wildcard = CA.issue(["wild.alice.example.com", "*.wild.alice.example.com"])
    return [
        Certificate.model_validate(issued.raw()),
        Certificate.model_validate(wildcard.raw(2)),
        VirtualHost(
            id=11,
            domain="wild.alice.example.com",
            server_aliases=["*.wild.alice.example.com"],
            unix_user_id=1,
            document_root="/home/alice/static",
            certificate_id=2,
        ),
        VirtualHost(id=8, domain="secure.alice.example.com", certificate_id=1, **common),
        VirtualHost(
            id=9, domain="forced.alice.example.com", certificate_id=1, force_https=True, **common
        ),
        UrlRedirect(
            id=1,
            domain="go.alice.example.com",
            unix_user_id=1,
            destination_url="https://alice.example.com/landing/",
            certificate_id=1,
        ),
        UrlRedirect(
            id=2,
            domain="old.alice.example.com",
            unix_user_id=1,
            destination_url="https://alice.example.com/",
            status_code=302,
            keep_path=False,
            keep_query=False,
        ),
        UrlRedirect(
            id=3,
            domain="path.alice.example.com",
            unix_user_id=1,
            destination_url="https://alice.example.com/new",
            status_code=308,
            keep_query=False,
        ),
        UrlRedirect(
            id=4,
            domain="query.alice.example.com",
            unix_user_id=1,
            destination_url="http://alice.example.com/search",
            status_code=307,
            keep_path=False,
        ),
        BasicAuthRealm(
            id=1,
            virtual_host_id=1,
            path="/admin/",
            name="Alice (admin)",
            users=[{"username": ADMIN, "password_hash": bcrypt}],
        ),
        VirtualHost(
            id=10,
            domain="private.alice.example.com",
            unix_user_id=1,
            document_root="/home/alice/static",
        ),
        BasicAuthRealm(
            id=2,
            virtual_host_id=10,
            path="/",
            name="static",
            users=[{"username": VISITOR, "password_hash": sha512}],
        ),
    ]


#: a mailbox per scheme ccm accepts, each hashed by Dovecot's own ``doveadm pw``
SCHEMES = {"info": "SHA512-CRYPT", "blf": "BLF-CRYPT", "argon": "ARGON2ID"}


def objects(hashes: dict[str, str]) -> list[CcmObject]:
    return [
        UnixUser(id=1, username="alice"),
        UnixUser(id=2, username="bob"),
        FpmPool(id=1, name="alice-web", unix_user_id=1, php_version="8.2", max_children=2),
        FpmPool(id=2, name="bob-web", unix_user_id=2, php_version="8.2", max_children=2),
        VirtualHost(
            id=1,
            domain="alice.example.com",
            server_aliases=["www.alice.example.com"],
            unix_user_id=1,
            document_root="/home/alice/www",
            fpm_pool_id=1,
        ),
        VirtualHost(
            id=2,
            domain="static.alice.example.com",
            unix_user_id=1,
            document_root="/home/alice/static",
        ),
        VirtualHost(
            id=3,
            domain="plain.alice.example.com",
            unix_user_id=1,
            document_root="/home/alice/www",
            fpm_pool_id=1,
            front_controller=False,
        ),
        VirtualHost(
            id=4,
            domain="bob.example.net",
            unix_user_id=2,
            document_root="/home/bob/www",
            fpm_pool_id=2,
        ),
        # alice's document roots that are, or pass through, links she makes after the apply
        *(
            VirtualHost(
                id=vhost_id,
                domain=domain,
                unix_user_id=1,
                document_root=document_root,
                fpm_pool_id=1,
                front_controller=False,
            )
            for vhost_id, domain, document_root in [
                (5, "linked.alice.example.com", "/home/alice/linked"),  # -> /home/bob
                (6, "through.alice.example.com", "/home/alice/through/www"),  # through -> bob
                (7, "current.alice.example.com", "/home/alice/current"),  # -> her own www
            ]
        ),
        Cron(
            id=1,
            unix_user_id=1,
            name="backup",
            schedule="30 3 * * *",
            command="/home/alice/bin/backup --quiet",
            email_address="ops@example.com",
        ),
        MailDomain(id=1, domain="example.com", unix_user_id=1),
        *(
            MailAccount(id=i, local_part=local_part, mail_domain_id=1, password_hash=hashed)
            for i, (local_part, hashed) in enumerate(sorted(hashes.items()), 1)
        ),
        *web_objects(),
    ]


# What the tenants put in their homes (owned by them, as their uploads would be).
FRONT_CONTROLLER = (
    "<?php\n"
    '$user = posix_getpwuid(posix_geteuid())["name"];\n'
    "echo \"front controller of {$user}: {$_SERVER['REQUEST_URI']}"
    " query={$_SERVER['QUERY_STRING']}\";\n"
)
WHOAMI = '<?php echo posix_getpwuid(posix_geteuid())["name"];\n'
PEEK = (
    "<?php\n"
    "$content = @file_get_contents($_GET['path']);\n"
    'echo $content === false ? "DENIED" : $content;\n'
)
# alice's page for the shared OPcache: "someone requests bob's page" (this request fetches
# it, so bob's pool compiles it into the cache now: the cached copy is stamped with bob's
# request time, never earlier than this request's, so it is inside this request's
# revalidation window whatever the machine's load), then she includes bob's file.
STEAL = r"""<?php
$target = "/home/bob/www/secret.php";
$context = stream_context_create(["http" => ["header" => "Host: bob.example.net"]]);
$page = @file_get_contents("http://127.0.0.1/secret.php", false, $context);
echo "bob's page: ", $page === false ? "UNREACHABLE" : $page, "\n";
echo is_readable($target) ? "readable" : "unreadable", "\n";
ob_start();  // bob's page prints itself: keep only what alice gets from it
@include $target;
ob_end_clean();
echo isset($secret) ? $secret : "NO-SECRET", "\n";
"""
# alice asks the shared OPcache what it holds, and shows her pool's OPcache settings.
OPCACHE_STATUS = r"""<?php
$status = @opcache_get_status(true);
$scripts = is_array($status) ? array_keys($status["scripts"] ?? []) : [];
$names = ["enable", "validate_permission", "validate_root", "restrict_api"];
$settings = [];
foreach ($names as $name) { $settings[$name] = ini_get("opcache.$name"); }
echo json_encode([
    "loaded" => extension_loaded("Zend OPcache"),
    "settings" => $settings,
    "status" => $status !== false,
    "others" => array_values(
        array_filter($scripts, fn($p) => !str_starts_with($p, "/home/alice/"))
    ),
]);
"""
SITE_FILES: dict[str, tuple[int, str]] = {
    "alice/www/index.php": (ALICE_UID, FRONT_CONTROLLER),
    "alice/www/whoami.php": (ALICE_UID, WHOAMI),
    "alice/www/peek.php": (ALICE_UID, PEEK),
    "alice/www/steal.php": (ALICE_UID, STEAL),
    "alice/www/opcache-status.php": (ALICE_UID, OPCACHE_STATUS),
    "alice/www/hello.txt": (ALICE_UID, "hello from alice\n"),
    "alice/www/.env": (ALICE_UID, "DB_PASSWORD=alice-dotfile-secret\n"),
    "alice/www/.well-known/acme-challenge/token": (ALICE_UID, "acme-token\n"),
    "alice/www/.well-known/security.txt": (ALICE_UID, "alice-security\n"),
    "alice/www/admin/whoami.php": (ALICE_UID, WHOAMI),
    "alice/www/admin/notes.txt": (ALICE_UID, "alice's admin notes\n"),
    "alice/static/hello.txt": (ALICE_UID, "static hello\n"),
    "alice/static/info.php": (ALICE_UID, '<?php echo "EXECUTED"; // PHP-SOURCE-MARKER\n'),
    "bob/www/index.php": (BOB_UID, FRONT_CONTROLLER),
    "bob/www/whoami.php": (BOB_UID, WHOAMI),
    "bob/www/peek.php": (BOB_UID, PEEK),
    "bob/www/secret.txt": (BOB_UID, SECRET + "\n"),
    "bob/www/secret.php": (BOB_UID, f'<?php $secret = "{PHP_SECRET}"; echo "bob\'s page";\n'),
    "bob/private/db-backup.sql": (BOB_UID, DB_BACKUP),
}
#: files older than OPcache's file_update_protection (2 s): cached on their first request
AN_HOUR_AGO = 3600


def put_site_files(root: Path) -> None:
    home = root / "home"
    for relative, (uid, content) in SITE_FILES.items():
        path = home / relative
        for parent in reversed(path.relative_to(home).parents[:-1]):
            directory = home / parent
            if not directory.exists():
                directory.mkdir(mode=0o755)
                os.chown(directory, uid, uid)
        path.write_text(content)
        os.chown(path, uid, uid)
        path.chmod(0o644)
        then = path.stat().st_mtime - AN_HOUR_AGO
        os.utime(path, (then, then))
    # the links alice makes (targets as seen on the node): nginx can read every home, so
    # she must not get bob's files through them; links to her own files keep working
    for relative, target in [
        ("alice/www/bobs-secret.txt", "/home/bob/www/secret.txt"),
        ("alice/www/hello-link.txt", "/home/alice/www/hello.txt"),
        ("alice/linked", "/home/bob"),
        ("alice/through", "/home/bob"),
        ("alice/current", "/home/alice/www"),
    ]:
        link = home / relative
        link.symlink_to(target)
        os.lchown(link, ALICE_UID, ALICE_UID)


def dovecot_config(base: Path) -> Path:
    """A minimal Dovecot: no protocols, only auth, against the rendered passwd-file (the
    root's ``etc/dovecot`` is mounted on ``/etc/dovecot``: its auth process, running as
    ``dovecot``, reads it where a node has it)."""
    (base / "dovecot-state").mkdir()
    config = base / "dovecot.conf"
    config.write_text(
        f"""\
protocols =
base_dir = {base}/dovecot-run
state_dir = {base}/dovecot-state
log_path = /var/log/dovecot.log
ssl = no
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = /etc/dovecot/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
"""
    )
    return config


@dataclass
class Served:
    root: Path
    base: Path
    node: ServedNode
    engine: Engine
    snapshot: Snapshot


def password_hash(password: str, scheme: str = "SHA512-CRYPT") -> str:
    done = subprocess.run(
        ["doveadm", "pw", "-s", scheme, "-p", password],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"doveadm pw failed (is dovecot-core installed?): {done.stderr}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("served")
    root = seed_root(base / "root")
    settings = node_settings(root)
    assert settings.accounts.uid_base == UID_BASE
    engine = Engine(Registry(CONFIGURATIONS), settings)
    hashes = {local: password_hash(PASSWORD, scheme) for local, scheme in SCHEMES.items()}
    snapshot = Snapshot.of(1, objects(hashes))
    engine.apply(snapshot)
    put_site_files(root)
    node = ServedNode(root, dovecot_config=dovecot_config(base))
    try:
        node.start()
    except ServingError as error:
        pytest.fail(f"cannot serve the rendered root: {error}", pytrace=False)
    try:
        yield Served(root, base, node, engine, snapshot)
    finally:
        node.close()


# --- the web -------------------------------------------------------------------------


def test_static_file_is_served(served: Served) -> None:
    for host, path, content in [
        ("static.alice.example.com", "/hello.txt", "static hello\n"),
        ("alice.example.com", "/hello.txt", "hello from alice\n"),
        ("www.alice.example.com", "/hello.txt", "hello from alice\n"),
    ]:
        result = served.node.get(host, path)
        assert (result.status, result.body) == (200, content), (host, str(result))


def test_php_runs_as_the_pools_user(served: Served) -> None:
    for host, user in [("alice.example.com", "alice"), ("bob.example.net", "bob")]:
        result = served.node.get(host, "/whoami.php")
        assert (result.status, result.body) == (200, user), (host, str(result))


def test_dotfiles_are_refused_but_well_known_is_served(served: Served) -> None:
    result = served.node.get("alice.example.com", "/.env")
    assert result.status == 403, str(result)
    assert "alice-dotfile-secret" not in result.body
    result = served.node.get("alice.example.com", "/.well-known/security.txt")
    assert (result.status, result.body) == (200, "alice-security\n"), str(result)


#: ccm's real ACME responder, in the served namespace on the node's responder_listen,
#: answering one token from a fixed table (its etcd lookup: tests/test_acme*.py)
RESPONDER = """
import sys, time
from ccm.daemon.acme_responder import ChallengeResponder
responder = ChallengeResponder({"token": "token.thumbprint"}.get)
responder.serve(sys.argv[1])
print("ready", flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def responder(served: Served) -> Iterator[None]:
    listen = served.engine.settings.acme.responder_listen
    process = subprocess.Popen(
        ["nsenter", "-t", str(served.node.pid), "-m", "-n", "--", sys.executable, "-c",
         RESPONDER, listen],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.parametrize(
    "host",
    ["alice.example.com", "forced.alice.example.com", "old.alice.example.com", "nobody.example"],
)
def test_an_acme_challenge_is_answered_by_ccms_responder_on_every_server(
    served: Served, responder: None, host: str
) -> None:
    """Every port-80 server (a vhost, a force_https vhost, a redirect, the default server
    for a name nobody serves) passes the challenge path to the node's ccm responder: not
    to the file a tenant put at that path, not to PHP, not behind basic auth."""
    result = served.node.get(host, "/.well-known/acme-challenge/token")
    assert (result.status, result.body) == (200, "token.thumbprint"), str(result)
    unknown = served.node.get(host, "/.well-known/acme-challenge/none.php")
    assert unknown.status == 404, str(unknown)


def test_php_on_a_static_vhost_is_not_served(served: Served) -> None:
    result = served.node.get("static.alice.example.com", "/info.php")
    assert result.status == 403, str(result)
    assert "EXECUTED" not in result.body and "PHP-SOURCE-MARKER" not in result.body


@pytest.mark.parametrize("host", ["unknown.example.org", "127.0.0.1", "alice.example.com.evil"])
def test_an_unknown_host_reaches_no_tenant(served: Served, host: str) -> None:
    """Port 80: ccm's default server closes the connection (444): no HTTP response."""
    result = served.node.get(host, "/")
    assert result.status == 0, str(result)
    assert result.curl_exit == 52, str(result)  # curl: "Empty reply from server"
    result = served.node.get(host, "/whoami.php")
    assert result.status == 0 and "alice" not in result.body, str(result)


def test_https_to_an_unknown_host_is_refused_in_the_handshake(served: Served) -> None:
    """Port 443: ccm's default server rejects the TLS handshake (no certificate needed)."""
    result = served.node.get("unknown.example.org", "/", https=True)
    assert result.status == 0, str(result)
    assert result.curl_exit == 35, str(result)  # SSL connect error
    assert "unrecognized name" in result.error, str(result)


def test_a_pretty_url_reaches_the_front_controller(served: Served) -> None:
    result = served.node.get("alice.example.com", "/blog/hello-world?page=2&s=x")
    assert result.status == 200, str(result)
    assert result.body == "front controller of alice: /blog/hello-world?page=2&s=x query=page=2&s=x"
    result = served.node.get("bob.example.net", "/products/42")
    assert (result.status, result.body) == (200, "front controller of bob: /products/42 query=")


def test_front_controller_off_gives_plain_404s(served: Served) -> None:
    result = served.node.get("plain.alice.example.com", "/blog/hello-world")
    assert result.status == 404, str(result)
    assert "front controller" not in result.body
    result = served.node.get("plain.alice.example.com", "/whoami.php")
    assert (result.status, result.body) == (200, "alice"), str(result)


def test_a_tenants_php_cannot_read_another_tenants_files(served: Served) -> None:
    secret = "/home/bob/www/secret.txt"
    result = served.node.get("bob.example.net", f"/peek.php?path={secret}")
    assert (result.status, result.body) == (200, SECRET + "\n"), str(result)  # bob can
    result = served.node.get("alice.example.com", f"/peek.php?path={secret}")
    assert (result.status, result.body) == (200, "DENIED"), str(result)  # alice cannot
    result = served.node.get("bob.example.net", "/peek.php?path=/home/alice/www/.env")
    assert (result.status, result.body) == (200, "DENIED"), str(result)  # nor bob alice's


def test_a_tenants_symlink_to_another_tenants_file_is_not_served(served: Served) -> None:
    """nginx may read every home; ``disable_symlinks if_not_owner`` stops alice from
    publishing bob's file through a link in her document root."""
    result = served.node.get("plain.alice.example.com", "/bobs-secret.txt")
    assert result.status == 404, str(result)  # try_files: a refused link is no file
    assert SECRET not in result.body
    # with the front controller, index.php answers instead
    result = served.node.get("alice.example.com", "/bobs-secret.txt")
    assert (result.status, result.body) == (
        200,
        "front controller of alice: /bobs-secret.txt query=",
    ), str(result)


NGINX_404 = "<center><h1>404 Not Found</h1></center>"


def test_a_link_to_the_tenants_own_file_is_served(served: Served) -> None:
    result = served.node.get("plain.alice.example.com", "/hello-link.txt")
    assert (result.status, result.body) == (200, "hello from alice\n"), str(result)
    # a document root that is a link to her own directory (a deploy's "current")
    for path, content in [("/hello.txt", "hello from alice\n"), ("/whoami.php", "alice")]:
        result = served.node.get("current.alice.example.com", path)
        assert (result.status, result.body) == (200, content), str(result)


@pytest.mark.parametrize(
    ("host", "path", "content"),
    [
        # the document root IS a link to bob's home: even files outside bob's document root
        ("linked.alice.example.com", "/private/db-backup.sql", DB_BACKUP),
        ("linked.alice.example.com", "/www/secret.txt", SECRET),
        ("linked.alice.example.com", "/www/secret.php", PHP_SECRET),
        ("linked.alice.example.com", "/www/whoami.php", "bob"),
        # the document root passes through a link to bob's home
        ("through.alice.example.com", "/secret.txt", SECRET),
        ("through.alice.example.com", "/secret.php", PHP_SECRET),
        ("through.alice.example.com", "/whoami.php", "bob"),
    ],
)
def test_a_document_root_through_a_link_to_another_tenant_serves_nothing(
    served: Served, host: str, path: str, content: str
) -> None:
    """``disable_symlinks`` checks every component of the path, the document root's too:
    alice owns everything in her home, so a ``from=$document_root`` that skips them lets
    her link her document root to bob's home. nginx refuses the file itself (404), static
    or ``.php``: no request reaches alice's pool with a path into bob's home."""
    result = served.node.get(host, path)
    assert result.status == 404, str(result)
    assert content.strip() not in result.body
    assert NGINX_404 in result.body, str(result)  # nginx's answer, not php-fpm's


# --- the shared OPcache: one php-fpm master, one cache for every pool -----------------


def test_a_tenant_cannot_include_another_tenants_cached_script(served: Served) -> None:
    """bob's page is compiled into the OPcache all pools share; alice's ``include`` of
    it must not run the cached copy she could never read (``opcache.validate_permission``,
    set by ccm in every pool with ``php_admin_value``)."""
    result = served.node.get("bob.example.net", "/secret.php")
    assert (result.status, result.body) == (200, "bob's page"), str(result)
    result = served.node.get("alice.example.com", "/steal.php")
    assert result.status == 200, str(result)
    page, readable, secret = result.body.splitlines()
    assert page == "bob's page: bob's page"  # the sequence ran: bob's page was served
    assert readable == "unreadable"  # alice may not read the file ...
    assert secret == "NO-SECRET"  # ... nor run its cached copy
    assert PHP_SECRET not in result.body


def test_the_shared_opcache_is_on_and_closed_to_each_tenant(served: Served) -> None:
    """OPcache runs in the pools (so the test above means something), with ccm's
    settings; its API, which sees the whole shared cache, answers no tenant."""
    result = served.node.get("bob.example.net", "/secret.php")  # bob's script is cached
    assert result.status == 200, str(result)
    result = served.node.get("alice.example.com", "/opcache-status.php")
    assert result.status == 200, str(result)
    report = json.loads(result.body)
    assert report["loaded"] is True
    assert report["settings"] == {
        "enable": "1",  # Debian's php.ini
        "validate_permission": "On",  # ccm's pool file
        "validate_root": "On",
        "restrict_api": OPCACHE_API_NOWHERE,
    }
    assert report["status"] is False  # opcache_get_status() is refused ...
    assert report["others"] == []  # ... so bob's paths are not listed


# --- mail and cron -------------------------------------------------------------------


_client_ips = itertools.count(1)


def doveadm_auth(served: Served, user: str, password: str) -> subprocess.CompletedProcess[str]:
    """``doveadm auth test``, each from another client address: Dovecot delays a client
    more after each failure (its auth penalty), which is not what is tested here."""
    config = served.base / "dovecot.conf"
    client = f"rip=192.0.2.{next(_client_ips)}"
    argv = ["doveadm", "-c", str(config), "auth", "test", "-x", client, user, password]
    return served.node.run(argv)


def test_dovecot_accepts_the_right_password_and_refuses_a_wrong_one(served: Served) -> None:
    done = doveadm_auth(served, "info@example.com", PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "auth succeeded" in done.stdout
    done = doveadm_auth(served, "info@example.com", "wrong password")
    assert done.returncode == 77, done.stdout + done.stderr
    assert "auth failed" in done.stdout
    done = doveadm_auth(served, "nobody@example.com", PASSWORD)
    assert done.returncode == 77, done.stdout + done.stderr


@pytest.mark.parametrize("local_part", sorted(SCHEMES))
def test_dovecot_verifies_every_scheme_ccm_accepts(served: Served, local_part: str) -> None:
    done = doveadm_auth(served, f"{local_part}@example.com", PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    done = doveadm_auth(served, f"{local_part}@example.com", "wrong password")
    assert done.returncode == 77, done.stdout + done.stderr


def test_crontab_l_reads_ccms_crontab_back_with_its_header(served: Served) -> None:
    done = served.node.run(["crontab", "-l", "-u", "alice"])
    assert done.returncode == 0, done.stderr
    shown = done.stdout.splitlines()
    assert shown[0].startswith("# Managed by ccm - do not edit"), done.stdout
    assert "30 3 * * * /home/alice/bin/backup --quiet" in shown
    assert "MAILTO=ops@example.com" in shown
    done = served.node.run(["crontab", "-l", "-u", "bob"])
    assert done.returncode != 0 and "no crontab for bob" in done.stderr


# --- what the executor keeps: homes and the cron spool ----------------------------------


def test_cron_spool_has_debians_owner_and_mode(served: Served) -> None:
    spool = (served.root / "var/spool/cron/crontabs").stat()
    assert stat.S_IMODE(spool.st_mode) == 0o1730
    assert (spool.st_uid, spool.st_gid) == (0, grp.getgrnam("crontab").gr_gid)


def test_homes_are_the_web_servers_group_and_the_next_run_keeps_them_so(served: Served) -> None:
    www_data = grp.getgrnam("www-data").gr_gid
    homes = [(served.root / "home/alice", ALICE_UID), (served.root / "home/bob", BOB_UID)]
    for home, uid in homes:
        info = home.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, uid, www_data)
    # drift by hand: the user's own group back, world-readable
    alice = served.root / "home/alice"
    os.chown(alice, ALICE_UID, ALICE_UID)
    alice.chmod(0o755)
    try:
        assert served.engine.plan(served.snapshot).has_changes
        served.engine.apply(served.snapshot)
    finally:
        info = alice.stat()
        if (info.st_gid, stat.S_IMODE(info.st_mode)) != (www_data, 0o750):
            os.chown(alice, ALICE_UID, www_data)  # leave the served root as it was
            alice.chmod(0o750)
    info = alice.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o750, ALICE_UID, www_data)
    assert not served.engine.plan(served.snapshot).has_changes


# --- the health probes ccm runs after a reload, as shipped -------------------------------


def test_the_shipped_probes_pass_against_the_real_servers(served: Served) -> None:
    nginx = served.node.run(fill(NginxVhosts.probes["nginx_probe"], {}))
    assert nginx.returncode == 0, nginx.stdout + nginx.stderr
    for pool in ("alice-web", "bob-web"):
        argv = fill(PhpFpmPools.probes["php_fpm_probe"], {"socket": f"/run/php/{pool}.sock"})
        answered = served.node.run(argv)
        assert answered.returncode == 0, (pool, answered.stdout + answered.stderr)
    missing = fill(PhpFpmPools.probes["php_fpm_probe"], {"socket": "/run/php/none.sock"})
    assert served.node.run(missing).returncode != 0


# --- HTTPS, force_https, redirects, basic auth ---------------------------------------------


@pytest.fixture(scope="module")
def ca_file(served: Served) -> Path:
    path = served.base / "test-ca.pem"
    path.write_text(CA.root_pem)
    return path


def test_https_answers_with_the_certificate_the_client_verifies(
    served: Served, ca_file: Path
) -> None:
    for host in ("secure.alice.example.com", "forced.alice.example.com"):
        result = served.node.get(host, "/whoami.php", https=True, ca_file=ca_file)
        assert (result.status, result.body) == (200, "alice"), (host, str(result))
        assert result.http_version == "2", host  # HTTP/2 over TLS (ALPN)
    # without force_https, port 80 serves the site as before
    result = served.node.get("secure.alice.example.com", "/hello.txt")
    assert (result.status, result.body) == (200, "hello from alice\n"), str(result)


def test_a_name_the_certificate_does_not_cover_fails_verification(
    served: Served, ca_file: Path
) -> None:
    """The check is the client's, against the test CA: a vhost without a certificate has
    no TLS server block, so its name reaches the default server's rejection."""
    result = served.node.get("alice.example.com", "/", https=True, ca_file=ca_file)
    assert (result.status, result.curl_exit) == (0, 35), str(result)


def test_a_wildcard_certificate_covers_one_label(served: Served, ca_file: Path) -> None:
    """RFC 6125 as the client checks it: ``*.wild…`` covers ``x.wild…``, not ``a.b.wild…``
    (which nginx's ``*.wild…`` still routes to the vhost: the writer accepts the same
    wildcard on both sides, and the deeper names fail verification)."""
    for host in ("wild.alice.example.com", "x.wild.alice.example.com"):
        result = served.node.get(host, "/hello.txt", https=True, ca_file=ca_file)
        assert (result.status, result.body) == (200, "static hello\n"), (host, str(result))
    deeper = served.node.get("a.b.wild.alice.example.com", "/", https=True, ca_file=ca_file)
    assert (deeper.status, deeper.curl_exit) == (0, 60), str(deeper)  # peer name mismatch


@pytest.mark.parametrize(
    "options",
    [
        ["--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0"],
        ["--tlsv1", "--tls-max", "1.0", "--ciphers", "DEFAULT@SECLEVEL=0"],
        # TLS 1.2, but only a cipher Mozilla's intermediate list leaves out (no forward
        # secrecy, CBC): nginx's own default would take it
        ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-SHA"],
        ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "AES128-GCM-SHA256"],
    ],
    ids=["tls1.1", "tls1.0", "tls1.2-cbc", "tls1.2-no-forward-secrecy"],
)
def test_old_protocols_and_weak_ciphers_are_refused(
    served: Served, ca_file: Path, options: list[str]
) -> None:
    result = served.node.get(
        "secure.alice.example.com", "/hello.txt", https=True, ca_file=ca_file, options=options
    )
    assert (result.status, result.curl_exit) == (0, 35), str(result)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tls_1_2_and_1_3_are_served(served: Served, ca_file: Path, version: str) -> None:
    result = served.node.get(
        "secure.alice.example.com",
        "/hello.txt",
        https=True,
        ca_file=ca_file,
        options=[f"--tlsv{version}", "--tls-max", version],
    )
    assert (result.status, result.body) == (200, "hello from alice\n"), str(result)


def test_force_https_redirects_everything_but_acme_challenges(
    served: Served, responder: None
) -> None:
    result = served.node.get("forced.alice.example.com", "/whoami.php?a=1&b=%20")
    assert result.status == 301, str(result)
    assert result.location == "https://forced.alice.example.com/whoami.php?a=1&b=%20"
    assert "alice" not in result.body
    result = served.node.get("forced.alice.example.com", "/.well-known/acme-challenge/none")
    assert (result.status, result.location) == (404, ""), str(result)  # ccm's, no 301


@pytest.mark.parametrize(
    ("host", "path", "status", "location"),
    [
        # keep_path and keep_query (the defaults): the request as sent follows
        ("go.alice.example.com", "/a/b?c=d", 301, "https://alice.example.com/landing/a/b?c=d"),
        ("go.alice.example.com", "/", 301, "https://alice.example.com/landing/"),
        # an encoded line break stays encoded: no header of the attacker's
        (
            "go.alice.example.com",
            "/x%0d%0aSet-Cookie:%20a=b",
            301,
            "https://alice.example.com/landing/x%0d%0aSet-Cookie:%20a=b",
        ),
        ("old.alice.example.com", "/a/b?c=d", 302, "https://alice.example.com/"),
        ("path.alice.example.com", "/a/b?c=d", 308, "https://alice.example.com/new/a/b"),
        ("query.alice.example.com", "/a/b?c=d", 307, "http://alice.example.com/search?c=d"),
        ("query.alice.example.com", "/a/b", 307, "http://alice.example.com/search"),
    ],
)
def test_redirects_answer_with_their_status_and_location(
    served: Served, host: str, path: str, status: int, location: str
) -> None:
    result = served.node.get(host, path)
    assert (result.status, result.location) == (status, location), str(result)


def test_a_redirect_with_a_certificate_answers_over_https(served: Served, ca_file: Path) -> None:
    result = served.node.get("go.alice.example.com", "/x?y=z", https=True, ca_file=ca_file)
    assert (result.status, result.location) == (
        301,
        "https://alice.example.com/landing/x?y=z",
    ), str(result)
    without = served.node.get("old.alice.example.com", "/", https=True, ca_file=ca_file)
    assert (without.status, without.curl_exit) == (0, 35), str(without)


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("/admin/whoami.php", []),  # PHP under the protected path
        ("/admin/notes.txt", []),
        ("/admin/", []),
        ("/admin/../admin/whoami.php", ["--path-as-is"]),
        ("/%61dmin/whoami.php", ["--path-as-is"]),  # nginx decodes before it matches
        ("/admin//whoami.php", ["--path-as-is"]),
    ],
)
def test_basic_auth_protects_its_path_php_included(
    served: Served, path: str, options: list[str]
) -> None:
    result = served.node.get("alice.example.com", path, options=options)
    assert result.status == 401, str(result)
    assert "alice" not in result.body
    wrong = served.node.get("alice.example.com", path, options=[*options, "-u", "admin:wrong"])
    assert wrong.status == 401, str(wrong)


def test_basic_auth_lets_its_users_in(served: Served) -> None:
    credentials = ["-u", f"{ADMIN}:{ADMIN_PASSWORD}"]
    result = served.node.get("alice.example.com", "/admin/whoami.php", options=credentials)
    assert (result.status, result.body) == (200, "alice"), str(result)
    result = served.node.get("alice.example.com", "/admin/notes.txt", options=credentials)
    assert (result.status, result.body) == (200, "alice's admin notes\n"), str(result)
    # outside the realm: no credentials needed
    result = served.node.get("alice.example.com", "/whoami.php")
    assert (result.status, result.body) == (200, "alice"), str(result)


def test_a_realm_on_slash_protects_the_whole_site(served: Served) -> None:
    host = "private.alice.example.com"
    assert served.node.get(host, "/hello.txt").status == 401
    assert served.node.get(host, "/info.php").status == 403  # no PHP here: denied first
    admin = ["-u", f"{ADMIN}:{ADMIN_PASSWORD}"]  # a user of another realm
    assert served.node.get(host, "/hello.txt", options=admin).status == 401
    result = served.node.get(host, "/hello.txt", options=["-u", f"{VISITOR}:{VISITOR_PASSWORD}"])
    assert (result.status, result.body) == (200, "static hello\n"), str(result)
    # an ACME challenge is never behind basic auth
    acme = served.node.get(host, "/.well-known/acme-challenge/none")
    assert acme.status == 404, str(acme)


def test_the_htpasswd_and_key_files_are_not_for_tenants(served: Served) -> None:
    www_data = grp.getgrnam("www-data").gr_gid
    htpasswd = served.root / "etc/nginx/htpasswd/1"
    info = htpasswd.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, www_data)
    key = served.root / "etc/ssl/ccm/1/privkey.pem"
    info = key.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, 0, 0)
    # a tenant's PHP cannot read either
    for path in ("/etc/nginx/htpasswd/1", "/etc/ssl/ccm/1/privkey.pem"):
        result = served.node.get("alice.example.com", f"/peek.php?path={path}")
        assert (result.status, result.body) == (200, "DENIED"), (path, str(result))


# --- bridges across the namespace, and a restart of nginx ----------------------------------

#: a bare site inside: answers "inside", and passes /out/ to 127.0.0.1:{port} (a server
#: that is outside the namespace)
BRIDGED_SITE = """server {{
    listen 80 default_server;
    location /out/ {{ proxy_pass http://127.0.0.1:{port}; }}
    location / {{ return 200 "{answer}\\n"; }}
}}
"""


class _Outside(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        payload = f"outside {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def host_get(port: int, path: str = "/") -> str:
    """GET from the HOST's loopback (outside the namespace): the body, or the error."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return str(response.read().decode())
    except OSError as error:
        return f"error: {error}"


def processes_naming(text: str) -> list[str]:
    """Every process on the machine whose command line holds ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_bridges_cross_the_namespace_both_ways_and_close_stops_them(tmp_path: Path) -> None:
    """A server outside reaches nginx inside (``forward_into``) and nginx inside reaches a
    server outside (``forward_out``); ``restart_nginx`` serves changed files; ``close``
    leaves no process behind, the bridges' included. The root has no PHP pool: php-fpm,
    which refuses to start without one, is not started."""
    outside = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Outside)
    threading.Thread(target=outside.serve_forever, daemon=True).start()
    outside_port = outside.server_address[1]
    inside_port, host_port = free_port(), free_port()
    root = seed_root(tmp_path / "root")
    site = root / "etc/nginx/sites-enabled/bridged.conf"
    site.parent.mkdir(parents=True)
    site.write_text(BRIDGED_SITE.format(port=inside_port, answer="inside"))
    node = ServedNode(root)
    try:
        node.start()
        # separate network namespaces: neither side reaches the other
        assert host_get(host_port).startswith("error:")
        assert node.get("bridged.test", "/out/x").status == 502

        node.forward_into(host_port, 80)
        node.forward_out(inside_port, ("127.0.0.1", outside_port))

        assert host_get(host_port) == "inside\n"
        assert node.get("bridged.test", "/out/x").body == "outside /out/x\n"
        assert host_get(host_port, "/out/both-ways") == "outside /out/both-ways\n"
        site.write_text(BRIDGED_SITE.format(port=inside_port, answer="changed"))
        node.restart_nginx()
        assert host_get(host_port) == "changed\n"
        # a port that is taken: refused, named; the bridges that work go on working
        with pytest.raises(ServingError, match="bridge-3-on-host exited"):
            node.forward_into(outside_port, 80)
        assert host_get(host_port) == "changed\n"
        assert processes_naming(str(node.scratch)), "the bridges run with the scratch path"
    finally:
        node.close()
        outside.shutdown()
        outside.server_close()
    assert processes_naming(str(node.scratch)) == []
    assert host_get(host_port).startswith("error:")
