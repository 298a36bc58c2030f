"""Accepted means it applies: the adversarial property test of issue 7.

Hypothesis draws batches of raw objects of every type (``strategies.batches``): plausible
values, an attacker's edits (trailing newline, U+0085, U+2028, NUL, ``;{}#"'\\$``,
homoglyphs, several KB) and boundary ids. Then, for each batch:

1. every object is written through the real writer (``ObjectStore.put``, real etcd),
   type by type in dependency order. A refusal is a ``CcmError`` whose message names
   the type, the id and a field, and it stores nothing (every key under the prefix is
   the same, byte for byte and revision for revision);
2. the snapshot holds exactly what was accepted, and the real engine applies all of it
   on a fresh node root: real ``useradd --prefix``, real ``nginx -t`` and real
   ``php-fpm -t`` (see ``NGINX_CHECK`` / ``PHP_FPM_CHECK``), reloads logged. A second
   plan has nothing to do. The node has PHP 8.2 installed (``INSTALLED_PHP``) and the
   versions a ``clusters`` object lists (the playbook's); the check of any other
   version fails as ``php-fpm9.9 -t`` does (exit 127), which would halt the fleet. So
   an accepted pool of a version the node lacks (possible only without a ``clusters``
   object) must be refused on this node alone, with the vhosts on it, and nothing else
   (issue 15, finding 3);
3. the rendered files mean exactly what was accepted: accounts (uid, shell, home), each
   crontab parses back (as cron reads it: lines end at ``\\n`` only) to the entries
   written with their ``MAILTO``, the Dovecot passwd-file has one line of exactly 8
   fields per account, every ``server_name`` token in ``sites-enabled`` is a name of that
   vhost and no name (after normalisation: case, trailing dot, surrounding blanks, NFKC)
   is served twice, no host is matched by the names (wildcards included, as nginx
   matches them) of two owners (issue 15, finding 4), each pool file holds exactly its
   own section and settings, ProFTPD's users file has one line of exactly 7 fields per
   FTP user, with its owner's uid and a home inside the owner's home, and passed the
   real ``proftpd -t`` (``PROFTPD_CHECK``: ``SyntaxCheck`` parses it).

Playbooks: ``clusters`` plans the ``php-versions`` playbook. ``PlaceholderPlaybooks`` is
a real executor doing, under the temporary root, exactly what the playbook does there
(``ccm_root`` is not ``/``, so it manages no packages): each listed version's
``pool.d/`` and its ``ccm.placeholder.conf`` rendered from the playbook's own template.
Ansible itself takes seconds per run (MACHINE-NOTES), too slow for hundreds of examples;
``tests/test_playbook_runs.py`` covers the real Ansible path.

php-fpm resolves the pool's ``user``, ``group`` and ``listen.owner`` through NSS and
requires ``chdir`` to exist: the node's accounts are those in the root's ``etc/passwd``,
so the check runs in a private mount namespace where the root's ``etc/passwd``,
``etc/group`` and ``home`` are bind-mounted over the host's (nothing of the host changes).

The same property runs on a node with ``[accounts] backend = "extrausers"`` (issue 19,
a quarter of the examples): the accounts are the rendered ``/var/lib/extrausers`` files,
which the php-fpm check's namespace also mounts, with the nsswitch.conf the playbook's
template makes.

Run more examples with ``benchmarks/property_soak.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, event, given, settings
from proftpd_server import PROFTPD_CHECK
from strategies import STRATEGIES, Batch, batches, write_order

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CcmError
from ccm.models import OBJECT_TYPES, CcmObject, Node, Snapshot, parse_object
from ccm.plan.ansible import PlaybookPreview, default_playbooks_dir, fingerprint
from ccm.plan.changes import File, Playbook
from ccm.plan.node import Accounts
from ccm.plan.paths import file_name
from ccm.plan.templates import TemplateRenderer, package_templates
from ccm.settings import EtcdSettings, Settings
from ccm.testing.noderoot import INSTALLED_PHP, node_settings, seed_root
from configurations.basic_auth import BasicAuthRealm
from configurations.certificates import Certificate, fullchain
from configurations.clusters import Cluster
from configurations.crons import Cron
from configurations.daemons import Daemon, Daemons, systemd_quote
from configurations.fpm_pools import OPCACHE_ISOLATION, FpmPool
from configurations.ftp_users import CONFIG_FILE, SHELL, USERS_FILE, FtpUser
from configurations.mail_accounts import MailAccount
from configurations.mail_aliases import MailAlias, map_entries
from configurations.mail_domains import MailDomain
from configurations.mail_routing import Routing
from configurations.unix_users import UnixUser
from configurations.url_redirects import UrlRedirect
from configurations.virtual_hosts import VirtualHost

UID_BASE = 20000
EXAMPLES = int(os.environ.get("CCM_PROPERTY_EXAMPLES", "200"))
#: one property test runs all its examples, each with the real checks (nginx -t, php-fpm
#: -t, postconf, three postmap builds): 0.5-2.5 s an example on 2 cores, far beyond the
#: suite's 120 s per test (`--durations` shows the time; benchmarks/property_soak.py more)
PROPERTY_TIMEOUT = 1800

#: real nginx -t, everything under the root (main config from ``nginx_main_config``). The
#: certificates' paths are absolute node paths, which nginx -t opens: it runs in a private
#: mount namespace where the root's ``etc/ssl`` is bind-mounted over ``/etc/ssl``.
_NGINX_SCRIPT = r"""
set -e
mkdir -p "$1/etc/ssl"
mount --bind "$1/etc/ssl" /etc/ssl
exec nginx -t -q -p "$1/" -c "$1/etc/nginx/nginx.conf" -e "$1/var/log/nginx-error.log"
"""
NGINX_CHECK = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    _NGINX_SCRIPT,
    "sh",
    "{root}",
]

_PHP_FPM_SCRIPT = r"""
set -e
root=$1 version=$2
# the node's php-fpm of that version: the machine's own (8.2), or, for a version the
# php-versions playbook installed (PlaceholderPlaybooks records it as the playbook
# does), the machine's as its stand-in. Any other is missing, as on a real node.
binary="php-fpm$version"
if ! command -v "$binary" >/dev/null && grep -qs "\"$version\"" "$root/$STATE_FILE"; then
  binary=php-fpm8.2
fi
command -v "$binary" >/dev/null || { echo "$binary: not found"; exit 127; }
conf="$root/php-fpm-$version.conf"
printf '[global]\npid = %s\nerror_log = %s\ninclude = %s\n' \
  "$root/php-fpm-$version.pid" "$root/php-fpm-$version.log" \
  "$root/etc/php/$version/fpm/pool.d/*.conf" > "$conf"
mkdir -p "$root/home"
mount --bind "$root/etc/passwd" /etc/passwd
mount --bind "$root/etc/group" /etc/group
if [ -d "$root/var/lib/extrausers" ]; then  # [accounts] backend = "extrausers"
  mount --bind "$root/etc/nsswitch.conf" /etc/nsswitch.conf
  mount --bind "$root/var/lib/extrausers" /var/lib/extrausers
fi
mount --bind "$root/home" /home
if ! "$binary" -t -y "$conf" 2>&1; then
  cat "$root/php-fpm-$version.log" 2>/dev/null
  exit 1
fi
"""
#: where the php-versions playbook records the versions it installed (under the root)
STATE_FILE = "var/lib/ccm/php-versions.json"
#: real php-fpm -t with the root's accounts and homes (a private mount namespace); a
#: version the node lacks fails it (exit 127), as ``php-fpm9.9 -t`` does on a node
PHP_FPM_CHECK = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    _PHP_FPM_SCRIPT.replace("$STATE_FILE", STATE_FILE),
    "sh",
    "{root}",
    "{version}",
]


#: real ``postconf -c``: Postfix parses the rendered main.cf (postmap always runs for real)
POSTFIX_CHECK = ["postconf", "-c", "{root}/etc/postfix/ccm", "-n"]


def nginx_main_config(root: Path) -> None:
    """Debian's nginx.conf as far as ``nginx -t`` goes (defaults kept, e.g. the server
    names hash bucket size), with every path under ``root``; includes ``conf.d/*.conf``
    and ``sites-enabled/*`` as Debian's does."""
    temp = root / "var/lib/nginx"
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / name).mkdir(parents=True, exist_ok=True)
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    config = root / "etc/nginx/nginx.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"""\
pid {root}/nginx.pid;
error_log {root}/var/log/nginx-error.log;
events {{}}
http {{
    access_log {root}/var/log/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {root}/etc/nginx/conf.d/*.conf;
    include {root}/etc/nginx/sites-enabled/*;
}}
"""
    )


class PlaceholderPlaybooks:
    """The ``php-versions`` and ``extrausers`` playbooks' effect under a temporary root,
    without Ansible (each from the playbook's own template)."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.root
        self.playbooks_dir = default_playbooks_dir()
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(self.playbooks_dir / "templates"))
        self.template = env.get_template("php-fpm-placeholder.conf.j2")
        self.nsswitch = env.get_template("nsswitch.conf.j2")
        self.runs = 0

    def __call__(self, configuration: str, playbook: Playbook) -> None:
        if playbook.playbook == "extrausers.yml":  # under a temporary root: no package
            (self.root / "var/lib/extrausers").mkdir(parents=True, exist_ok=True)
            nsswitch = self.root / "etc/nsswitch.conf"
            text = nsswitch.read_text() if nsswitch.exists() else ""
            databases = ["passwd", "group", "shadow"]
            nsswitch.write_text(self.nsswitch.render(ccm_eu_text=text, ccm_eu_databases=databases))
            return
        assert playbook.playbook == "php-versions.yml", playbook
        self.runs += 1
        versions = playbook.extra_vars["php_versions"]
        for version in versions:
            pool_d = self.root / f"etc/php/{version}/fpm/pool.d"
            pool_d.mkdir(parents=True, exist_ok=True)
            (pool_d / "ccm.placeholder.conf").write_text(self.template.render(item=version))
        state = self.root / STATE_FILE
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"php_versions": versions}))

    def check(self, configuration: str, playbook: Playbook) -> PlaybookPreview:
        return PlaybookPreview(configuration, playbook.playbook)

    def fingerprint(self, playbook: Playbook) -> str:
        extra = {**playbook.extra_vars, "ccm_root": str(self.root)}
        return fingerprint(Playbook(playbook.playbook, extra), self.playbooks_dir)


# --- writing -----------------------------------------------------------------------------


def _state(client: EtcdClient, prefix: str) -> list[tuple[str, bytes, int]]:
    kvs, _ = client.get_prefix(prefix + "/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


def assert_names_the_object(error: CcmError, type_name: str, raws: list[Any]) -> None:
    """A refusal's message names the type, one of the objects (type/id) and a field."""
    text = str(error)
    ids = [str(raw["id"]) if isinstance(raw, dict) and "id" in raw else "?" for raw in raws]
    assert any(f"{type_name}/{i}" in text for i in ids), f"no {type_name}/<id> in: {text}"
    fields = [*OBJECT_TYPES[type_name].model_fields, "(object)"]
    assert any(name in text for name in fields), f"no field of {type_name} in: {text}"


@dataclass
class Outcome:
    """What one batch did: counts for the soak script."""

    objects: int = 0
    accepted: int = 0
    refused: int = 0
    applied: int = 0
    #: accepted, and refused on the node alone (a PHP version it lacks): never a halt
    refused_on_node: int = 0
    refusals: list[str] = field(default_factory=list)
    #: daemon units that passed systemd-analyze verify
    daemon_units: int = 0
    #: type → objects accepted
    accepted_of: dict[str, int] = field(default_factory=dict)


def write_batch(
    client: EtcdClient, store: ObjectStore, batch: Batch, outcome: Outcome
) -> dict[str, dict[int, CcmObject]]:
    """Put every object of the batch; what the store must now hold (type → id → object)."""
    expected: dict[str, dict[int, CcmObject]] = {name: {} for name in OBJECT_TYPES}
    for type_name, raws in batch.objects:
        outcome.objects += len(raws)
        groups = [raws] if batch.together else [[raw] for raw in raws]
        for group in groups:
            if not group:
                continue
            before = _state(client, store.prefix)
            try:
                store.put(type_name, group)
            except CcmError as error:
                outcome.refused += len(group)
                outcome.refusals.append(str(error))
                assert _state(client, store.prefix) == before, f"a refused put stored: {error}"
                assert_names_the_object(error, type_name, group)
                continue
            outcome.accepted += len(group)
            outcome.accepted_of[type_name] = outcome.accepted_of.get(type_name, 0) + len(group)
            for raw in group:
                obj = parse_object(type_name, raw)
                expected[type_name][obj.id] = obj
    return expected


# --- applying and reading back --------------------------------------------------------------


def refused_here(snapshot: Snapshot) -> set[str]:
    """What this node must refuse of an accepted snapshot: the pools of a PHP version
    it lacks (no ``clusters`` object lists it, and it is not installed here), and the
    vhosts on those pools. Nothing else: the strategies never draw a person's login on
    this machine, which a write cannot know (test_node_refusals)."""
    listed = {version for cluster in snapshot.all(Cluster) for version in cluster.php_versions}
    provided = listed | set(INSTALLED_PHP)
    pools = {p.describe() for p in snapshot.all(FpmPool) if p.php_version not in provided}
    vhosts = {
        v.describe()
        for v in snapshot.all(VirtualHost)
        if v.fpm_pool_id is not None and f"fpm-pools/{v.fpm_pool_id}" in pools
    }
    realms = {
        r.describe()
        for r in snapshot.all(BasicAuthRealm)
        if f"virtual-hosts/{r.virtual_host_id}" in vhosts
    }
    return pools | vhosts | realms


def apply_on_node(
    root: Path, snapshot: Snapshot, backend: str = "useradd"
) -> tuple[Engine, set[str]]:
    """Apply as a node would (real checks), with that ``[accounts] backend``; what it
    refused, which must be exactly ``refused_here``. A failed check raises: the fleet
    would halt."""
    settings = node_settings(
        root,
        commands={"nginx_check": NGINX_CHECK, "php_fpm_check": PHP_FPM_CHECK},
        accounts={"backend": backend},
        checks={"postfix_check": POSTFIX_CHECK, "proftpd_check": PROFTPD_CHECK},
    )
    engine = Engine(
        Registry.from_entry_points(), settings, playbooks=PlaceholderPlaybooks(settings)
    )
    report = engine.apply(snapshot)
    # accepted means it applies, or is refused on this node alone, never halts the fleet
    refused = refused_here(snapshot)
    assert set(report.refused) == refused, f"the node refused {report.refused}"
    for name in refused:
        if name.startswith("fpm-pools/"):
            assert "is not installed on this node" in report.refused[name].reason
    return engine, refused


def cron_lines(text: str) -> list[str]:
    """Lines as cron reads them: ended by ``\\n`` only; blank and ``#`` lines skipped."""
    return [line for line in text.split("\n") if line.strip(" \t") and not line.startswith("#")]


_ENV_LINE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*[ \t]*=")


def parse_crontab(text: str) -> list[tuple[str, str, str]]:
    """(MAILTO in effect, schedule, command) per job line, in order."""
    mailto = ""
    jobs = []
    for line in cron_lines(text):
        if _ENV_LINE.match(line):
            name, _, value = line.partition("=")
            value = value.strip(" \t")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            if name.strip() == "MAILTO":
                mailto = value
            continue
        tokens = re.split(r"[ \t]+", line, maxsplit=1 if line.startswith("@") else 5)
        fields = 1 if line.startswith("@") else 5
        schedule = " ".join(tokens[:fields])
        command = tokens[fields] if len(tokens) > fields else ""
        jobs.append((mailto, schedule, command))
    return jobs


def server_name_tokens(text: str) -> list[list[str]]:
    """The arguments of every ``server_name`` directive, tokenised as nginx does."""
    tokens = re.split(r"[ \t\r\n]+", text)
    found: list[list[str]] = []
    for index, token in enumerate(tokens):
        if token == "server_name":
            names: list[str] = []
            for arg in tokens[index + 1 :]:
                names.append(arg.removesuffix(";"))
                if arg.endswith(";"):
                    break
            found.append([name for name in names if name])
    return found


def normalised(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().rstrip(".").lower()


def ini_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "On" if value else "Off"
    if isinstance(value, float):
        return repr(value)
    return str(value)


POOL_KEYS = {
    "user",
    "group",
    "chdir",
    "listen",
    "listen.owner",
    "listen.group",
    "ping.path",
    "ping.response",
    "listen.mode",
    "pm",
    "pm.max_children",
    "pm.start_servers",
    "pm.min_spare_servers",
    "pm.max_spare_servers",
}


def ini_lines(text: str) -> list[str]:
    """Lines as PHP's INI scanner reads them (``\\r``, ``\\n``, ``\\r\\n`` end a line)."""
    lines = re.split(r"\r\n|\r|\n", text)
    return [line for line in lines if line.strip() and not line.lstrip().startswith(";")]


_CRONTAB_SCRIPT = r"""
set -e
mkdir -p "$1/crontab-check"
mount --bind "$1/crontab-check" /var/spool/cron/crontabs
exec crontab -u root - < "$2"
"""


def cron_accepts(root: Path, crontab: Path) -> None:
    """Debian's own ``crontab`` parses the file as cron will (it installs nothing: its
    spool directory is a scratch directory bind-mounted in a private mount namespace)."""
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _CRONTAB_SCRIPT]
    result = subprocess.run(
        [*argv, "sh", str(root), str(crontab)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"cron refuses {crontab.name}: {result.stderr.strip()}"


POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"


def postfix_lookup(root: Path, table: str, keys: list[str]) -> list[str | None]:
    """What Postfix finds for each key in the ``.db`` the node's postmap built."""
    directory = root / "etc/postfix/ccm"
    result = subprocess.run(
        [POSTMAP, "-c", str(directory), "-q", "-", f"hash:{directory}/{table}"],
        input="".join(f"{key}\n" for key in keys), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    found = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    return [found.get(key) for key in keys]


def check_postfix_maps(root: Path, snapshot: Snapshot) -> None:
    """Postfix's built maps hold exactly the accepted mail objects: every key resolves to
    its value, no key is there twice, and no alias chain inside the cluster loops (the
    write-time rule, checked again on what the node serves)."""
    entries = map_entries(
        snapshot.all(MailDomain), snapshot.all(MailAccount), snapshot.all(MailAlias)
    )
    for table, pairs in entries.items():
        keys = [key for key, _ in pairs]
        assert len(set(keys)) == len(keys), f"{table}: a key twice: {keys!r}"
        text = (root / "etc/postfix/ccm" / table).read_text()
        lines = [line for line in text.split("\n") if line and not line.startswith("#")]
        assert lines == [f"{key} {value}" for key, value in pairs], f"{table}: {lines!r}"
        if keys:
            assert postfix_lookup(root, table, keys) == [v for _, v in pairs], table
    routing = Routing.of(_SnapshotView(snapshot))
    for node in routing.hops:
        assert routing.loop_through(node) is None, f"a forwarding loop through {node}"


def check_ftp_users(root: Path, snapshot: Snapshot, users: dict[int, UnixUser]) -> None:
    """ProFTPD's users file: one line of 7 fields per FTP user, sorted by login, as the
    owner's uid and gid, homed inside the owner's home; root's only (0600). Absent while
    there is none (this node is not registered: it needs no ProFTPD until then)."""
    ftp_users = sorted(snapshot.all(FtpUser), key=lambda u: u.username)
    path, config = root / USERS_FILE.lstrip("/"), root / CONFIG_FILE.lstrip("/")
    if not ftp_users:
        assert not path.exists() and not config.exists()
        return
    assert (path.stat().st_mode & 0o777, path.stat().st_uid) == (0o600, 0)
    lines = [line for line in path.read_text().split("\n") if line and line[0] != "#"]
    wanted = []
    for ftp in ftp_users:
        uid, home = str(UID_BASE + ftp.unix_user_id), users[ftp.unix_user_id].home
        assert ftp.directory_path == home or ftp.directory_path.startswith(home + "/")
        wanted.append([ftp.username, ftp.password_hash, uid, uid, "", ftp.directory_path, SHELL])
    assert [line.split(":") for line in lines] == wanted, f"users file {lines!r}"


class _SnapshotView:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def lookup(self, type_name: str, object_id: int) -> CcmObject | None:
        return self.snapshot.objects.get(type_name, {}).get(object_id)

    def list_type(self, type_name: str) -> list[CcmObject]:
        return list(self.snapshot.objects.get(type_name, {}).values())


def check_node(root: Path, snapshot: Snapshot, refused: set[str]) -> None:
    """The rendered files mean exactly what the snapshot holds (what the node refused
    is not there)."""
    users = {u.id: u for u in snapshot.all(UnixUser)}
    accounts = Accounts(root)
    for user in users.values():
        entry = accounts.users.get(user.username)
        assert entry is not None, f"no account {user.username!r}"
        assert (entry.uid, entry.home, entry.shell) == (UID_BASE + user.id, user.home, user.shell)
        home = root / user.home.lstrip("/")
        assert home.is_dir() and home.stat().st_uid == UID_BASE + user.id, user.home

    # crontabs
    crontabs = root / "var/spool/cron/crontabs"
    by_user: dict[int, list[Cron]] = {}
    for cron in snapshot.all(Cron):
        by_user.setdefault(cron.unix_user_id, []).append(cron)
    present = sorted(p.name for p in crontabs.iterdir()) if crontabs.is_dir() else []
    assert present == sorted(users[i].username for i in by_user), f"crontabs {present!r}"
    for user_id, crons in by_user.items():
        text = (crontabs / users[user_id].username).read_text()
        cron_accepts(root, crontabs / users[user_id].username)
        wanted = [(c.email_address or "", c.schedule, c.command) for c in crons]
        assert parse_crontab(text) == wanted, f"crontab of {users[user_id].username!r}"

    # dovecot passwd-file: one line of 8 fields per account, its domain's address
    domains = {d.id: d for d in snapshot.all(MailDomain)}

    def address(obj: MailAccount | MailAlias) -> str:
        return f"{obj.local_part}@{domains[obj.mail_domain_id].domain}"

    accounts_by_address = sorted(snapshot.all(MailAccount), key=address)
    users_file = root / "etc/dovecot/users"
    lines = [
        line
        for line in users_file.read_text().split("\n")
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == len(accounts_by_address), f"passwd-file lines: {lines!r}"
    for line, account in zip(lines, accounts_by_address, strict=True):
        extra = f"userdb_quota_rule=*:storage={account.quota_mib}M" if account.quota_mib else ""
        wanted_fields = [address(account), account.password_hash, "", "", "", "", "", extra]
        assert line.split(":", 7) == wanted_fields, f"passwd-file line {line!r}"
    check_postfix_maps(root, snapshot)
    check_ftp_users(root, snapshot, users)

    # nginx
    sites = root / "etc/nginx/sites-enabled"
    vhosts = [v for v in snapshot.all(VirtualHost) if v.describe() not in refused]
    redirects = snapshot.all(UrlRedirect)
    present = sorted(p.name for p in sites.iterdir()) if sites.is_dir() else []
    expected = [
        "ccm-default.conf",
        *(file_name(v.domain, ".conf") for v in vhosts),
        *(file_name("redirect_" + r.domain, ".conf") for r in redirects),
    ]
    assert present == sorted(expected), f"sites {present!r}"
    served: dict[str, str] = {}
    blocks: list[VirtualHost | UrlRedirect] = [*vhosts, *redirects]
    for block in blocks:
        stem = block.domain if isinstance(block, VirtualHost) else "redirect_" + block.domain
        text = (sites / file_name(stem, ".conf")).read_text()
        directives = server_name_tokens(text)
        # force_https: a port 80 block of its own, with the same names
        blocks_of_it = 2 if isinstance(block, VirtualHost) and block.force_https else 1
        names = [block.domain, *block.server_aliases]
        assert directives == [names] * blocks_of_it, f"{block.describe()} serves {directives!r}"
        for name in names:
            key = normalised(name)
            assert key not in served, f"{name!r} of {block.describe()} is also {served[key]}"
            served[key] = f"{block.describe()} ({name!r})"
        certificate_id = block.certificate_id
        tls = re.findall(r"^    ssl_certificate (.*);$", text, flags=re.MULTILINE)
        wanted_tls = (
            [] if certificate_id is None else [f"/etc/ssl/ccm/{certificate_id}/fullchain.pem"]
        )
        assert tls == wanted_tls, f"{block.describe()} certificates {tls!r}"
        if isinstance(block, VirtualHost):
            roots = re.findall(r"^    root (.*);$", text, flags=re.MULTILINE)
            wanted = [block.document_root] * blocks_of_it
            assert roots == wanted, f"{block.describe()} root lines {roots!r}"
        else:
            returns = re.findall(r"^        return (.*);$", text, flags=re.MULTILINE)
            assert returns == [f'{block.status_code} "{block.target}"'], returns

    assert_no_carve_outs(blocks)

    # certificates: every one on every nginx node, the key root's only
    for cert in snapshot.all(Certificate):
        directory = root / f"etc/ssl/ccm/{cert.id}"
        assert (directory / "fullchain.pem").read_text() == fullchain(cert)
        key = directory / "privkey.pem"
        assert key.read_text() == cert.private_key.strip() + "\n"
        assert (key.stat().st_mode & 0o777, key.stat().st_uid) == (0o600, 0)

    # basic auth: the user file of each realm, and its location in the vhost
    for realm in snapshot.all(BasicAuthRealm):
        htpasswd = root / f"etc/nginx/htpasswd/{realm.id}"
        if realm.describe() in refused:
            assert not htpasswd.exists()
            continue
        lines = [line for line in htpasswd.read_text().split("\n") if line and line[0] != "#"]
        assert lines == [f"{u.username}:{u.password_hash}" for u in realm.users]
        vhost = snapshot.get(VirtualHost, realm.virtual_host_id)
        assert vhost is not None
        text = (sites / file_name(vhost.domain, ".conf")).read_text()
        assert f"auth_basic_user_file {realm.htpasswd_path};" in text

    # php-fpm pools
    for pool in snapshot.all(FpmPool):
        if pool.describe() in refused:
            assert not (root / f"etc/php/{pool.php_version}/fpm/pool.d/{pool.name}.conf").exists()
    pools = [p for p in snapshot.all(FpmPool) if p.describe() not in refused]
    for pool in pools:
        user = users[pool.unix_user_id]
        path = root / f"etc/php/{pool.php_version}/fpm/pool.d/{pool.name}.conf"
        lines = ini_lines(path.read_text())
        sections = [line for line in lines if line.lstrip().startswith("[")]
        assert sections == [f"[{pool.name}]"], f"{pool.describe()} sections {sections!r}"
        settings_read: dict[str, str] = {}
        keys = set()
        for line in lines[1:]:
            key, sep, value = line.partition(" = ")
            assert sep, f"{pool.describe()}: not a directive: {line!r}"
            found = re.fullmatch(r"php_admin_value\[([^\]]*)\]", key)
            if found:
                assert value.startswith('"') and value.endswith('"'), line
                settings_read[found.group(1)] = re.sub(r"\\(.)", r"\1", value[1:-1])
            else:
                keys.add(key)
        assert keys == POOL_KEYS, f"{pool.describe()} directives {sorted(keys)}"
        fixed_and_tenants = [*OPCACHE_ISOLATION, *pool.php_settings.items()]
        assert settings_read == {k: ini_value(v) for k, v in fixed_and_tenants}
        assert f"user = {user.username}" in lines and f"chdir = {user.home}" in lines


def _nginx_serves(name: str, host: str) -> bool:
    """nginx's match of a ``server_name`` entry (exact, ``*.`` or ``.``) and a host."""
    name, host = normalised(name), normalised(host)
    if name.startswith("*."):
        return host.endswith(name[1:])
    if name.startswith("."):
        return host == name[1:] or host.endswith(name)
    return host == name


def assert_no_carve_outs(vhosts: list[VirtualHost | UrlRedirect]) -> None:
    """No host is matched by names of two owners: probed with each name of the two vhosts
    and a name one label below it (enough to meet nginx's wildcards)."""
    for one, other in itertools.combinations(vhosts, 2):
        if one.unix_user_id == other.unix_user_id:
            continue
        mine, theirs = [one.domain, *one.server_aliases], [other.domain, *other.server_aliases]
        bases = {normalised(n).removeprefix("*.").removeprefix(".") for n in mine + theirs}
        for host in sorted(bases | {"probe." + base for base in bases}):
            a = [n for n in mine if _nginx_serves(n, host)]
            b = [n for n in theirs if _nginx_serves(n, host)]
            assert not (a and b), (
                f"{host} is served by {one.describe()} ({', '.join(a)}) and by "
                f"{other.describe()} ({', '.join(b)}) of another owner"
            )


_examples = itertools.count(1)


def run_property(
    client: EtcdClient,
    prefix: str,
    template: Path,
    workdir: Path,
    batch: Batch,
    backend: str = "useradd",
) -> Outcome:
    """The whole property for one batch; raises AssertionError / CcmError on a failure."""
    n = next(_examples)
    store = ObjectStore(client, f"{prefix}/ex{n}", writer="property")
    outcome = Outcome()
    expected = write_batch(client, store, batch, outcome)
    snapshot = store.snapshot()
    for type_name in OBJECT_TYPES:
        stored = dict(snapshot.of_type(type_name))
        assert stored == expected[type_name], f"stored {type_name} differ from those accepted"
    root = workdir / f"ex{n}"
    shutil.copytree(template, root, symlinks=True)
    try:
        nginx_main_config(root)
        engine, refused = apply_on_node(root, snapshot, backend)
        outcome.refused_on_node = len(refused)
        outcome.applied = outcome.accepted - len(refused)
        check_node(root, snapshot, refused)
        assert not engine.plan(snapshot).has_changes, "a second run would change something"
        outcome.daemon_units = verify_daemon_units(snapshot, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return outcome


def verify_daemon_units(snapshot: Snapshot, scratch: Path) -> int:
    """Every accepted daemon's unit, as the first node of its ``node_ids`` renders it,
    passes a real ``systemd-analyze verify`` without a word. verify also requires the
    program to exist: a tenant's program in its home (not on this machine) is checked as
    ``/bin/true``, every argument as written."""
    daemons = snapshot.all(Daemon)
    render = TemplateRenderer(package_templates(Daemons), configuration="daemons")
    for daemon in daemons:
        node = snapshot.get(Node, daemon.node_ids[0])
        assert node is not None
        view = snapshot.viewed_from(node.hostname)
        (unit,) = [c for c in Daemons().plan(view, render) if isinstance(c, File) and
                   c.path.endswith(daemon.unit)]  # fmt: skip
        content = unit.content
        if daemon.command[0].startswith("/home/"):
            quoted = systemd_quote(daemon.command[0])
            content = content.replace(f"ExecStart={quoted}", 'ExecStart="/bin/true"', 1)
        path = scratch / daemon.unit
        path.write_text(content)
        verified = subprocess.run(
            ["systemd-analyze", "verify", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (verified.returncode, verified.stderr) == (0, ""), (daemon, verified.stderr)
    return len(daemons)


@pytest.fixture
def node_template(tmp_path: Path) -> Path:
    return seed_root(tmp_path / "template")


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "roots"
    path.mkdir()
    yield path


def test_every_object_type_has_a_strategy() -> None:
    missing = sorted(set(OBJECT_TYPES) - set(STRATEGIES))
    assert not missing, f"add a strategy to tests/strategies.py for: {', '.join(missing)}"
    assert sorted(write_order()) == sorted(OBJECT_TYPES)


@pytest.mark.timeout(PROPERTY_TIMEOUT)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    derandomize=os.environ.get("CI") == "true",
)
@given(batch=batches())
def test_every_accepted_batch_applies_and_means_what_was_accepted(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    node_template: Path,
    workdir: Path,
    batch: Batch,
) -> None:
    outcome = run_property(etcd_client, etcd_settings.prefix, node_template, workdir, batch)
    # what the run covered (pytest --hypothesis-show-statistics)
    clusters = next((raws for name, raws in batch.objects if name == "clusters"), [])
    event("clusters object: " + ("none" if not clusters else "drawn"))
    event(f"refused on the node (a PHP version it lacks): {outcome.refused_on_node > 0}")
    event(f"daemon units verified by systemd-analyze: {outcome.daemon_units > 0}")
    for type_name in ("certificates", "url-redirects", "basic-auth-realms"):
        event(f"{type_name} accepted: {outcome.accepted_of.get(type_name, 0) > 0}")
    tls = [r for t, raws in batch.objects if t == "virtual-hosts" for r in raws]
    event(f"a vhost with a certificate drawn: {any('certificate_id' in r for r in tls)}")
    for mail in ("mail-domains", "mail-accounts", "mail-aliases"):
        event(f"{mail} accepted and resolved by postmap: {mail in outcome.accepted_of}")
    event(f"ftp-users accepted and checked by proftpd -t: {'ftp-users' in outcome.accepted_of}")


@pytest.mark.timeout(PROPERTY_TIMEOUT)
@settings(
    max_examples=max(EXAMPLES // 4, 10),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    derandomize=os.environ.get("CI") == "true",
)
@given(batch=batches())
def test_every_accepted_batch_applies_with_the_extrausers_backend(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    node_template: Path,
    workdir: Path,
    batch: Batch,
) -> None:
    """The same property on a node whose accounts are the rendered extrausers files
    (issue 19): php-fpm's check resolves each pool's user through them (NSS as the
    playbook leaves it, in the check's mount namespace), homes and tenant files are owned
    by the rendered uids, and a second plan has nothing to do."""
    run_property(etcd_client, etcd_settings.prefix, node_template, workdir, batch, "extrausers")


# --- the distinct failures the property found (issue 7), each as its smallest batch --------
#
# Each case FAILS on the code of 4c732e0 (the writer accepts it and then the node fails or
# renders something else): they stay failing until main is fixed. Once the writer refuses
# a case, the case passes (a refusal stores nothing and names the object).

HASH = "{SHA512-CRYPT}$6$saltsalt$" + "h" * 86


def _batch(*objects: tuple[str, dict[str, Any]], together: bool = False) -> Batch:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for type_name, raw in objects:
        grouped.setdefault(type_name, []).append(raw)
    return Batch([(t, grouped[t]) for t in write_order() if t in grouped], together)


def _user(i: int, name: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("unix-users", {"id": i, "username": name, **extra})


def _vhost(i: int, domain: str, user: int, root: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return (
        "virtual-hosts",
        {"id": i, "domain": domain, "unix_user_id": user, "document_root": root, **extra},
    )


def _cron(i: int, user: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    raw = {"id": i, "unix_user_id": user, "name": "job", "schedule": "* * * * *"}
    return ("crons", {**raw, "command": "echo hi", **extra})


def _pool(i: int, user: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    raw = {"id": i, "name": "web", "unix_user_id": user, "php_version": "8.2"}
    return ("fpm-pools", {**raw, **extra})


def _mail_domain(i: int, domain: str, user: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("mail-domains", {"id": i, "domain": domain, "unix_user_id": user, **extra})


def _account(i: int, local_part: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    raw = {"id": i, "local_part": local_part, "mail_domain_id": 1, "password_hash": HASH}
    return ("mail-accounts", {**raw, **extra})


def _alias(i: int, local_part: str, targets: list[str]) -> tuple[str, dict[str, Any]]:
    raw = {"id": i, "local_part": local_part, "mail_domain_id": 1, "forward_addresses": targets}
    return ("mail-aliases", raw)


ALICE = _user(1, "ualice")
MALLORY = _user(2, "umallory")
KNOWN_FAILURES: dict[str, Batch] = {
    "domain-trailing-newline-takes-over-another-tenants-domain": _batch(
        ALICE,
        MALLORY,
        _vhost(1, "shop.example.com", 1, "/home/ualice/www"),
        _vhost(2, "shop.example.com\n", 2, "/home/umallory/www"),
    ),
    "alias-trailing-newline-takes-over-another-tenants-domain": _batch(
        ALICE,
        MALLORY,
        _vhost(1, "shop.example.com", 1, "/home/ualice/www"),
        _vhost(
            2, "evil.example.net", 2, "/home/umallory/www", server_aliases=["shop.example.com\n"]
        ),
    ),
    "mail-domain-trailing-newline-splits-the-passwd-file-line": _batch(
        ALICE, _mail_domain(1, "example.com\n", 1)
    ),
    "mail-account-with-a-plain-text-password": _batch(
        ALICE, _mail_domain(1, "example.com", 1), _account(1, "info", password_hash="{PLAIN}x")
    ),
    "mail-account-in-a-domain-of-another-tenants-vhost": _batch(
        ALICE,
        MALLORY,
        _vhost(1, "shop.example.com", 1, "/home/ualice/www"),
        _mail_domain(1, "shop.example.com", 2),
        _account(1, "info"),
    ),
    "mail-alias-on-an-accounts-address": _batch(
        ALICE,
        _mail_domain(1, "example.com", 1),
        _account(1, "info"),
        _alias(1, "info", ["x@example.org"]),
    ),
    "mail-aliases-forwarding-to-each-other": _batch(
        ALICE,
        _mail_domain(1, "example.com", 1),
        _alias(1, "a", ["b@example.com"]),
        _alias(2, "b", ["a@example.com"]),
    ),
    "mail-catch-all-forwarding-into-itself": _batch(
        ALICE, _mail_domain(1, "example.com", 1, catch_all_forward_addresses=["x@example.com"])
    ),
    "cron-schedule-trailing-newline-adds-a-crontab-line": _batch(
        ALICE, _cron(1, 1, schedule="* * * * *\n")
    ),
    "cron-command-over-1000-bytes-cron-refuses": _batch(ALICE, _cron(1, 1, command="x" * 1001)),
    "cron-command-starting-with-star-cron-refuses": _batch(ALICE, _cron(1, 1, command="*foo")),
    "document-root-trailing-newline": _batch(
        ALICE, _vhost(1, "a.example.com", 1, "/home/ualice/w\n")
    ),
    "shell-trailing-newline": _batch(_user(1, "ualice", shell="/bin/bash\n")),
    "php-setting-name-trailing-newline-php-fpm-refuses": _batch(
        ALICE, _pool(1, 1, php_settings={"memory_limit\n": "256M"})
    ),
    "id-2**32-uid-out-of-range": _batch(_user(2**32, "ualice")),
    "id-45534-uid-65534-is-nobody": _batch(_user(45534, "ualice")),
    "username-is-a-group-of-the-node": _batch(_user(1, "staff")),
    "username-is-an-account-of-the-node": _batch(_user(1, "etcd")),
    "document-root-over-4k-nginx-refuses": _batch(
        ALICE, _vhost(1, "a.example.com", 1, "/home/ualice/" + "r" * 4100)
    ),
    "domain-of-50-characters-overflows-nginx-server-names-hash": _batch(
        ALICE,
        _vhost(1, "a" * 50 + ".com", 1, "/home/ualice/www"),
        _vhost(2, "b.example.com", 1, "/home/ualice/www"),
    ),
    "domain-of-253-bytes-file-name-too-long": _batch(
        ALICE,
        _vhost(1, ".".join(["d" * 63, "e" * 63, "f" * 63, "g" * 57, "com"]), 1, "/home/ualice/w"),
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN_FAILURES))
def test_known_failure(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    node_template: Path,
    workdir: Path,
    name: str,
) -> None:
    run_property(etcd_client, etcd_settings.prefix, node_template, workdir, KNOWN_FAILURES[name])
