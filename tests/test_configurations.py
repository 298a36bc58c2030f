"""The built-in configurations: golden files for everything they render, plus unit tests.

Golden cases live in ``tests/golden/<case>/``:

* ``objects.json`` — a list of objects, each ``{"type": <object type>, …fields}``;
* ``expected/<node path>`` — every file the configurations plan, byte for byte;
* ``plan.json`` — every change of every configuration, in plan order (files by path,
  mode, owner and group; their content is under ``expected/``).

``CCM_UPDATE_GOLDEN=1 pytest tests/test_configurations.py`` rewrites them from the
current templates; read the diff before committing it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import random
import re
import shutil
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import configurations
from ccm.errors import PlanError
from ccm.models import OBJECT_TYPES, CcmObject, Snapshot, cross_object_problems, parse_object
from ccm.plan.changes import (
    Account,
    AccountFiles,
    Change,
    Check,
    Directory,
    File,
    Playbook,
    Probe,
    UnitAction,
)
from ccm.plan.configuration import Configuration
from ccm.plan.templates import TemplateRenderer, package_templates
from configurations import CONFIGURATIONS
from configurations.clusters import Cluster, PhpVersions
from configurations.crons import Cron, Crontabs
from configurations.fpm_pools import FpmPool, PhpFpmPools, SpareServers, ini_quote, spare_servers
from configurations.mail_accounts import DovecotUsers, MailAccount, passwd_file_line
from configurations.mail_domains import MailDomain
from configurations.unix_users import UnixUser, UnixUsers
from configurations.virtual_hosts import NginxVhosts, VirtualHost

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "objects.json").is_file())
UPDATE = os.environ.get("CCM_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def render() -> TemplateRenderer:
    return TemplateRenderer(package_templates(UnixUsers))


# --- helpers -------------------------------------------------------------------------


def load_objects(case: str) -> list[CcmObject]:
    raw = json.loads((GOLDEN / case / "objects.json").read_text())
    objects = []
    for item in raw:
        fields = dict(item)
        objects.append(parse_object(fields.pop("type"), fields))
    return objects


def plan_all(snapshot: Snapshot, render: TemplateRenderer) -> dict[str, list[Change]]:
    """Every configuration's plan, by name, in the order of ``CONFIGURATIONS``."""
    return {cls.name: list(cls().plan(snapshot, render)) for cls in CONFIGURATIONS}


def planned_files(plans: dict[str, list[Change]]) -> dict[str, File]:
    files: dict[str, File] = {}
    for changes in plans.values():
        for change in changes:
            if isinstance(change, File):
                assert change.path not in files, f"{change.path} planned twice"
                files[change.path] = change
    return files


#: fields added after the golden files were written: listed only when not at their default
NEWER_FIELDS = ("secret",)


def describe(change: Change) -> dict[str, Any]:
    """A change as JSON for ``plan.json``: files without content, modes in octal."""
    data: dict[str, Any] = {"change": type(change).__name__}
    for item in dataclasses.fields(change):
        value = getattr(change, item.name)
        if item.name == "content" or (item.name in NEWER_FIELDS and value == item.default):
            continue
        if item.name == "mode":
            value = f"0o{value:o}"
        elif isinstance(value, tuple):
            # AccountFiles' accounts: by name (each is listed in full as its own change)
            value = [getattr(item, "username", item) for item in value]
        elif item.name == "variables" or item.name == "extra_vars":
            value = dict(value)
        data[item.name] = value
    return data


def snap(*objects: CcmObject) -> Snapshot:
    return Snapshot.of(1, list(objects))


def only(changes: Sequence[Change], kind: type[Any]) -> list[Any]:
    return [change for change in changes if isinstance(change, kind)]


ALICE = UnixUser(id=1, username="alice", email="alice@example.com")
BOB = UnixUser(id=2, username="bob")
HASH = "{SHA512-CRYPT}$6$saltsalt$" + ("abcdefghijklmnopqrstuvwxyz0123456789./ABCDEFGHIJ" * 2)[:86]


# --- golden files --------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, render: TemplateRenderer) -> None:
    plans = plan_all(Snapshot.of(1, load_objects(case)), render)
    files = planned_files(plans)
    plan_json = json.dumps(
        {name: [describe(change) for change in changes] for name, changes in plans.items()},
        indent=2,
        sort_keys=False,
    )
    expected_dir = GOLDEN / case / "expected"
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for path, file in files.items():
            target = expected_dir / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
        (GOLDEN / case / "plan.json").write_text(plan_json + "\n")

    on_disk = {
        "/" + str(path.relative_to(expected_dir))
        for path in expected_dir.rglob("*")
        if path.is_file()
    }
    assert set(files) == on_disk
    for path, file in files.items():
        assert file.content == (expected_dir / path.lstrip("/")).read_text(), path
    assert json.loads(plan_json) == json.loads((GOLDEN / case / "plan.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_golden_inputs_could_be_stored(case: str) -> None:
    """Each case is a state the object store accepts: references exist, rules hold."""
    snapshot = Snapshot.of(1, load_objects(case))

    def lookup(type_name: str, object_id: int) -> CcmObject | None:
        return snapshot.objects.get(type_name, {}).get(object_id)

    def list_type(type_name: str) -> list[CcmObject]:
        return list(snapshot.objects.get(type_name, {}).values())

    seen: set[tuple[str, str, Any]] = set()
    for obj in snapshot:
        for field, target, object_id in obj.references():
            assert lookup(target, object_id) is not None, (obj.describe(), field)
        assert cross_object_problems(obj, lookup, list_type) == []
        for key, value in obj.unique_keys().items():
            assert (obj.TYPE, key, value) not in seen, (obj.describe(), key)
            seen.add((obj.TYPE, key, value))


def test_golden_cases_exist() -> None:
    assert {"basic", "empty"} <= set(CASES)


def test_every_file_says_it_is_managed(render: TemplateRenderer) -> None:
    files = planned_files(plan_all(Snapshot.of(1, load_objects("basic")), render))
    assert len(files) == 14
    for path, file in files.items():
        first = file.content.splitlines()[0]
        assert re.match(r"^[#;] Managed by ccm - do not edit", first), path
        assert file.content.endswith("\n") and not file.content.endswith("\n\n"), path


# --- the registry --------------------------------------------------------------------


def test_configurations_metadata() -> None:
    names = [cls.name for cls in CONFIGURATIONS]
    assert names == [
        "unix-users",
        "crontabs",
        "php-versions",
        "php-fpm-pools",
        "nginx-vhosts",
        "dovecot-users",
        "postfix-maps",
        "redis-instances",
        "daemons",
        "mariadb-databases",
        "postgresql-databases",
        "proftpd-users",
    ]
    for index, cls in enumerate(CONFIGURATIONS):
        assert issubclass(cls, Configuration)
        assert cls.summary
        assert set(cls.subscribes) <= set(OBJECT_TYPES), cls.name
        # listed in a valid run order: dependencies come first
        assert set(cls.depends_on) <= set(names[:index]), cls.name
    by_name = {cls.name: cls for cls in CONFIGURATIONS}
    assert by_name["crontabs"].subscribes == ("crons", "unix-users")
    assert by_name["php-fpm-pools"].subscribes == ("fpm-pools", "unix-users")
    assert by_name["php-fpm-pools"].depends_on == ("unix-users", "php-versions")
    assert by_name["php-versions"].subscribes == ("clusters",)
    assert by_name["php-versions"].depends_on == ()
    assert by_name["nginx-vhosts"].subscribes == (
        "virtual-hosts",
        "fpm-pools",
        "unix-users",
        "certificates",
        "url-redirects",
        "basic-auth-realms",
    )
    assert by_name["nginx-vhosts"].depends_on == ("unix-users", "php-fpm-pools")
    assert by_name["dovecot-users"].depends_on == ()
    assert by_name["postfix-maps"].subscribes == ("mail-domains", "mail-accounts", "mail-aliases")
    assert by_name["proftpd-users"].subscribes == ("ftp-users", "unix-users")
    assert by_name["proftpd-users"].depends_on == ("unix-users",)


def test_entry_point_loads_the_configurations() -> None:
    (entry,) = [e for e in entry_points(group="ccm.configurations") if e.name == "builtin"]
    assert entry.load() is CONFIGURATIONS


def test_every_module_has_a_docstring() -> None:
    assert configurations.__doc__
    for module in pkgutil.iter_modules(configurations.__path__):
        loaded = importlib.import_module(f"configurations.{module.name}")
        assert loaded.__doc__ and loaded.__doc__.strip(), module.name


# --- unix-users ----------------------------------------------------------------------


def test_unix_users_accounts_and_homes(render: TemplateRenderer) -> None:
    changes = UnixUsers().plan(snap(BOB, ALICE), render)
    alice, bob = ("unix-users/1",), ("unix-users/2",)
    assert (ALICE.id, BOB.id) == (1, 2)
    accounts = (
        Account("alice", "/home/alice", ALICE.id, "/bin/bash", "alice@example.com", alice),
        Account("bob", "/home/bob", BOB.id, "/bin/bash", "", bob),
    )
    assert list(changes) == [
        *accounts,
        AccountFiles(accounts),
        Directory("/home/alice", 0o750, "alice", "www-data", owner_id=ALICE.id, origin=alice),
        Directory("/home/bob", 0o750, "bob", "www-data", owner_id=BOB.id, origin=bob),
    ]


# --- crontabs ------------------------------------------------------------------------


def _entries(content: str) -> list[tuple[str, str]]:
    """(MAILTO in effect, entry line) for every cron entry, the way cron reads the file."""
    mailto = None
    entries = []
    for line in content.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("MAILTO="):
            mailto = line.removeprefix("MAILTO=")
            continue
        assert mailto is not None, f"{line!r} has no MAILTO above it"
        entries.append((mailto, line))
    return entries


def test_crontab_each_entry_has_its_own_mailto(render: TemplateRenderer) -> None:
    crons = [
        Cron(
            id=1,
            unix_user_id=1,
            name="a",
            schedule="@hourly",
            command="a",
            email_address="x@example.com",
        ),
        Cron(id=2, unix_user_id=1, name="b", schedule="@hourly", command="b"),
        Cron(
            id=3,
            unix_user_id=1,
            name="c",
            schedule="@daily",
            command="c",
            email_address="y@example.com",
        ),
        Cron(id=4, unix_user_id=1, name="d", schedule="* * * * *", command="d"),
    ]
    spool, file = Crontabs().plan(snap(ALICE, *crons), render)
    assert isinstance(spool, Directory) and isinstance(file, File)
    assert _entries(file.content) == [
        ("x@example.com", "@hourly a"),
        ('""', "@hourly b"),  # not x@example.com: no inherited MAILTO
        ("y@example.com", "@daily c"),
        ('""', "* * * * * d"),
    ]
    assert '# b (crons/2)\nMAILTO=""\n@hourly b\n' in file.content


def test_crontab_file_per_user_ordered_by_id(render: TemplateRenderer) -> None:
    crons = [
        Cron(id=9, unix_user_id=2, name="late", schedule="@daily", command="late"),
        Cron(id=3, unix_user_id=1, name="second", schedule="@daily", command="second"),
        Cron(id=1, unix_user_id=1, name="first", schedule="@daily", command="first"),
    ]
    changes = Crontabs().plan(snap(BOB, ALICE, *crons), render)
    files: list[File] = only(changes, File)
    assert [(f.path, f.mode, f.owner, f.group) for f in files] == [
        ("/var/spool/cron/crontabs/alice", 0o600, "alice", "crontab"),
        ("/var/spool/cron/crontabs/bob", 0o600, "bob", "crontab"),
    ]
    assert [line for _, line in _entries(files[0].content)] == ["@daily first", "@daily second"]
    # no check, no reload: cron notices the spool directory
    assert only(changes, Directory) == changes[:1]
    assert len(changes) == 3


def test_crontab_spool_is_planned_as_debian_makes_it(render: TemplateRenderer) -> None:
    cron = Cron(id=1, unix_user_id=1, name="a", schedule="@daily", command="true")
    changes = Crontabs().plan(snap(ALICE, cron), render)
    # before its files: a missing spool is made 1730 root:crontab, not 0755 root:root
    assert changes[0] == Directory("/var/spool/cron/crontabs", 0o1730, "root", "crontab")


def debian_crontab_l(content: str) -> list[str]:
    """What Debian's ``crontab -l`` shows: it hides up to three leading comment lines
    (where crontab(1) writes its own "DO NOT EDIT" header); test_serving runs the real one."""
    lines = content.splitlines()
    hidden = 0
    while hidden < 3 and hidden < len(lines) and lines[hidden].startswith("#"):
        hidden += 1
    return lines[hidden:]


def test_crontab_header_is_shown_by_crontab_l(render: TemplateRenderer) -> None:
    cron = Cron(id=1, unix_user_id=1, name="a", schedule="@daily", command="true")
    (file,) = only(Crontabs().plan(snap(ALICE, cron), render), File)
    shown = debian_crontab_l(file.content)
    assert shown[0].startswith("# Managed by ccm - do not edit"), shown
    assert "crontab -e" in shown[0]


def test_users_without_crons_get_no_crontab(render: TemplateRenderer) -> None:
    cron = Cron(id=1, unix_user_id=2, name="only", schedule="@daily", command="true")
    changes = Crontabs().plan(snap(ALICE, BOB, cron), render)
    assert [f.path for f in only(changes, File)] == ["/var/spool/cron/crontabs/bob"]
    assert len(only(changes, Directory)) == 1
    # bob's last cron deleted: no file planned any more, so the executor removes it
    assert list(Crontabs().plan(snap(ALICE, BOB), render)) == []


# --- php-versions --------------------------------------------------------------------


def test_php_versions_plans_one_playbook_with_every_listed_version(
    render: TemplateRenderer,
) -> None:
    clusters = [Cluster(id=2, php_versions=["8.3", "7.4"]), Cluster(id=1, php_versions=["8.3"])]
    assert list(PhpVersions().plan(snap(*clusters), render)) == [
        Playbook("php-versions.yml", {"php_versions": ["7.4", "8.3"]})
    ]


def test_php_versions_without_clusters_plans_nothing(render: TemplateRenderer) -> None:
    # no clusters object: versions are not managed (the store does not tie pools to a
    # list then), which must not read as "remove every version"
    pool = FpmPool(id=1, name="a", unix_user_id=1, php_version="8.2")
    assert list(PhpVersions().plan(snap(ALICE, pool), render)) == []
    # a clusters object listing nothing does mean: no PHP
    assert list(PhpVersions().plan(snap(Cluster(id=1)), render)) == [
        Playbook("php-versions.yml", {"php_versions": []})
    ]


# --- php-fpm-pools -------------------------------------------------------------------


def test_spare_servers_formula() -> None:
    assert spare_servers(1) == SpareServers(
        start_servers=1, min_spare_servers=1, max_spare_servers=1
    )
    assert spare_servers(2) == SpareServers(1, 1, 2)
    assert spare_servers(5) == SpareServers(2, 1, 3)  # Debian's stock www pool
    assert spare_servers(10) == SpareServers(4, 2, 6)
    assert spare_servers(12) == SpareServers(5, 2, 8)
    assert spare_servers(100) == SpareServers(40, 20, 60)
    assert spare_servers(1000) == SpareServers(400, 200, 600)
    with pytest.raises(ValueError):
        spare_servers(0)


def test_spare_servers_satisfy_php_fpm_for_every_pool_size() -> None:
    for max_children in range(1, 1001):  # the model's whole range
        spare = spare_servers(max_children)
        assert 1 <= spare.min_spare_servers <= spare.start_servers, max_children
        assert spare.start_servers <= spare.max_spare_servers <= max_children, max_children


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        (True, '"On"'),
        (False, '"Off"'),
        (60, '"60"'),
        (0.5, '"0.5"'),
        ("256M", '"256M"'),
        ("a;b # c", '"a;b # c"'),
        ("${HOME}", '"\\${HOME}"'),
        ("C:\\tmp\\", '"C:\\\\tmp\\\\"'),
        ('say "hi"', '"say \\"hi\\""'),
    ],
)
def test_ini_quote(value: str | int | float | bool, quoted: str) -> None:
    assert ini_quote(value) == quoted


def test_pool_file(render: TemplateRenderer) -> None:
    pool = FpmPool(
        id=4,
        name="shop",
        unix_user_id=1,
        php_version="8.2",
        max_children=10,
        php_settings={"upload_max_filesize": "64M", "display_errors": True, "a.b": 1},
    )
    file = only(PhpFpmPools().plan(snap(ALICE, pool), render), File)[0]
    assert (file.path, file.mode, file.owner, file.group) == (
        "/etc/php/8.2/fpm/pool.d/shop.conf",
        0o644,
        "root",
        "root",
    )
    lines = file.content.splitlines()
    for expected in [
        "[shop]",
        "user = alice",
        "group = alice",
        "chdir = /home/alice",
        "listen = /run/php/shop.sock",
        "listen.owner = alice",
        "listen.group = www-data",
        "listen.mode = 0660",
        "pm = dynamic",
        "pm.max_children = 10",
        "pm.start_servers = 4",
        "pm.min_spare_servers = 2",
        "pm.max_spare_servers = 6",
    ]:
        assert expected in lines
    assert [line for line in lines if line.startswith("php_admin_value")] == [
        # ccm's own, in every pool: the OPcache all pools share is not a way between them
        'php_admin_value[opcache.validate_permission] = "On"',
        'php_admin_value[opcache.validate_root] = "On"',
        'php_admin_value[opcache.restrict_api] = "/nonexistent/"',
        'php_admin_value[a.b] = "1"',
        'php_admin_value[display_errors] = "On"',
        'php_admin_value[upload_max_filesize] = "64M"',
    ]


def test_php_checks_and_reloads_cover_pools_and_cluster_versions(render: TemplateRenderer) -> None:
    pools = [
        FpmPool(id=1, name="a", unix_user_id=1, php_version="8.3"),
        FpmPool(id=2, name="b", unix_user_id=1, php_version="8.2"),
        FpmPool(id=3, name="c", unix_user_id=1, php_version="8.3"),
    ]
    cluster = Cluster(id=1, php_versions=["8.4", "8.2", "8.3"])
    changes = PhpFpmPools().plan(snap(ALICE, cluster, *pools), render)
    assert only(changes, Check) == [
        Check("php_fpm_check", ("/etc/php/8.2/fpm/pool.d/",), {"version": "8.2"}),
        Check("php_fpm_check", ("/etc/php/8.3/fpm/pool.d/",), {"version": "8.3"}),
        Check("php_fpm_check", ("/etc/php/8.4/fpm/pool.d/",), {"version": "8.4"}),
    ]
    assert only(changes, UnitAction) == [
        UnitAction("php8.2-fpm", "reload", ("/etc/php/8.2/fpm/pool.d/",)),
        UnitAction("php8.3-fpm", "reload", ("/etc/php/8.3/fpm/pool.d/",)),
        UnitAction("php8.4-fpm", "reload", ("/etc/php/8.4/fpm/pool.d/",)),
    ]
    assert only(changes, Probe) == [
        Probe("php_fpm_probe", (f"/etc/php/{p.php_version}/fpm/pool.d/{p.name}.conf",),
              {"socket": f"/run/php/{p.name}.sock"})
        for p in pools
    ]  # fmt: skip
    # files first, then checks, then reloads, then the probes of the pools
    kinds = [type(change).__name__ for change in changes]
    assert kinds == ["File"] * 3 + ["Check"] * 3 + ["UnitAction"] * 3 + ["Probe"] * 3


def test_php_versions_without_cluster_object(render: TemplateRenderer) -> None:
    pool = FpmPool(id=1, name="a", unix_user_id=1, php_version="8.1")
    changes = PhpFpmPools().plan(snap(ALICE, pool), render)
    assert [c.variables["version"] for c in only(changes, Check)] == ["8.1"]
    assert list(PhpFpmPools().plan(snap(ALICE), render)) == []


def test_pool_named_global_is_refused(render: TemplateRenderer) -> None:
    with pytest.raises(ValueError, match="reserved"):
        FpmPool(id=1, name="global", unix_user_id=1, php_version="8.2")
    # a value stored before the model refused it is still refused by the planner
    pool = FpmPool.model_construct(
        id=1, name="global", unix_user_id=1, php_version="8.2", max_children=5, php_settings={}
    )
    with pytest.raises(PlanError, match=r"fpm-pools/1: .*'global'"):
        PhpFpmPools().plan(snap(ALICE, pool), render)


# --- nginx-vhosts --------------------------------------------------------------------


def test_nginx_vhosts(render: TemplateRenderer) -> None:
    pool = FpmPool(id=7, name="alice-web", unix_user_id=1, php_version="8.2")
    with_pool = VirtualHost(
        id=1,
        domain="alice.example.com",
        server_aliases=["www.alice.example.com", "*.alice.example.org"],
        unix_user_id=1,
        document_root="/home/alice/www",
        fpm_pool_id=7,
    )
    static = VirtualHost(
        id=2, domain="static.example.com", unix_user_id=1, document_root="/home/alice/static"
    )
    changes = NginxVhosts().plan(snap(ALICE, pool, static, with_pool), render)
    default, php, plain = only(changes, File)
    assert default.path == "/etc/nginx/sites-enabled/ccm-default.conf"
    assert (php.path, php.mode, php.owner, php.group) == (
        "/etc/nginx/sites-enabled/alice.example.com.conf",
        0o644,
        "root",
        "root",
    )
    assert plain.path == "/etc/nginx/sites-enabled/static.example.com.conf"
    assert (
        "    server_name alice.example.com www.alice.example.com *.alice.example.org;\n"
        in php.content
    )
    assert "    server_name static.example.com;\n" in plain.content
    assert "fastcgi_pass unix:/run/php/alice-web.sock;" in php.content
    assert "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;" in php.content
    assert "fastcgi" not in plain.content
    assert "    try_files $uri $uri/ /index.php$is_args$args;\n" in php.content
    assert "    try_files $uri $uri/ =404;\n" in plain.content
    for content in (default.content, php.content, plain.content):
        assert "include" not in content  # nothing the check would have to find on disk
        assert "_log" not in content  # no per-vhost logs
    for content in (php.content, plain.content):
        # every component is checked, the document root's too (no from=)
        assert "    disable_symlinks if_not_owner;\n" in content
    triggers = ("/etc/nginx/sites-enabled/", "/etc/ssl/ccm/")
    assert only(changes, Check) == [Check("nginx_check", triggers)]
    assert only(changes, UnitAction) == [
        UnitAction("nginx", "reload", ("/etc/nginx/sites-enabled/", "/etc/ssl/ccm/"))
    ]


def test_nginx_front_controller_only_with_a_pool_and_when_wanted(
    render: TemplateRenderer,
) -> None:
    pool = FpmPool(id=7, name="alice-web", unix_user_id=1, php_version="8.2")
    common = {"unix_user_id": 1, "document_root": "/home/alice/www"}
    vhosts = [
        VirtualHost(id=1, domain="a.example.com", fpm_pool_id=7, **common),
        VirtualHost(id=2, domain="b.example.com", fpm_pool_id=7, front_controller=False, **common),
        VirtualHost(id=3, domain="c.example.com", **common),  # no pool: nothing to pass to
    ]
    files = only(NginxVhosts().plan(snap(ALICE, pool, *vhosts), render), File)[1:]
    fallbacks = [
        line.strip()
        for file in files
        for line in file.content.splitlines()
        if "try_files $uri $uri/" in line
    ]
    assert fallbacks == [
        "try_files $uri $uri/ /index.php$is_args$args;",
        "try_files $uri $uri/ =404;",
        "try_files $uri $uri/ =404;",
    ]


def test_nginx_default_server(render: TemplateRenderer) -> None:
    """Unknown names reach no tenant: 444 on port 80, TLS handshake rejected on 443."""
    default = only(NginxVhosts().plan(snap(ALICE), render), File)[0]
    assert (default.path, default.mode, default.owner, default.group) == (
        "/etc/nginx/sites-enabled/ccm-default.conf",
        0o644,
        "root",
        "root",
    )
    lines = [line.strip() for line in default.content.splitlines()]
    for expected in [
        "listen 80 default_server;",
        "listen [::]:80 default_server;",
        "return 444;",
        "listen 443 ssl http2 default_server;",
        "listen [::]:443 ssl http2 default_server;",
        "ssl_reject_handshake on;",
    ]:
        assert expected in lines
    assert "root" not in default.content and "fastcgi" not in default.content


def test_nginx_check_and_reload_without_vhosts(render: TemplateRenderer) -> None:
    # the last vhost was deleted: the executor removes its file and must reload nginx;
    # the default server stays
    assert list(NginxVhosts().plan(snap(ALICE), render))[1:] == [
        Check("nginx_check", ("/etc/nginx/sites-enabled/", "/etc/ssl/ccm/")),
        UnitAction("nginx", "reload", ("/etc/nginx/sites-enabled/", "/etc/ssl/ccm/")),
        Probe("nginx_probe", ("/etc/nginx/sites-enabled/", "/etc/ssl/ccm/")),
    ]


def test_dangling_reference_is_a_plan_error(render: TemplateRenderer) -> None:
    vhost = VirtualHost(
        id=3, domain="x.example.com", unix_user_id=1, document_root="/home/alice/x", fpm_pool_id=9
    )
    with pytest.raises(PlanError, match=r"virtual-hosts/3: fpm_pool_id refers to fpm-pools/9"):
        NginxVhosts().plan(snap(ALICE, vhost), render)
    cron = Cron(id=1, unix_user_id=5, name="x", schedule="@daily", command="true")
    with pytest.raises(PlanError, match=r"crons/1: unix_user_id refers to unix-users/5"):
        Crontabs().plan(snap(ALICE, cron), render)


# --- dovecot-users -------------------------------------------------------------------


def test_dovecot_users(render: TemplateRenderer) -> None:
    accounts = [
        MailDomain(id=1, domain="example.com", unix_user_id=1),
        MailDomain(id=2, domain="example.org", unix_user_id=1, is_local=False),
        MailAccount(id=1, local_part="zed", mail_domain_id=1, password_hash=HASH),
        MailAccount(id=2, local_part="amy", mail_domain_id=2, password_hash=HASH, quota_mib=512),
        MailAccount(id=3, local_part="amy", mail_domain_id=1, password_hash=HASH),
    ]
    file, reload = DovecotUsers().plan(snap(*accounts), render)
    assert isinstance(file, File)
    assert (file.path, file.mode, file.owner, file.group, file.secret) == (
        "/etc/dovecot/users",
        0o640,
        "root",
        "dovecot",
        True,
    )
    assert [line for line in file.content.splitlines() if not line.startswith("#")] == [
        f"amy@example.com:{HASH}::::::",
        f"amy@example.org:{HASH}::::::userdb_quota_rule=*:storage=512M",
        f"zed@example.com:{HASH}::::::",
    ]
    assert reload == UnitAction("dovecot", "reload", ("/etc/dovecot/users",))


def test_passwd_file_line_has_eight_fields() -> None:
    account = MailAccount(id=1, local_part="a", mail_domain_id=1, password_hash=HASH, quota_mib=5)
    domain = MailDomain(id=1, domain="example.com", unix_user_id=1)
    line = passwd_file_line(account, domain)
    user, password, uid, gid, gecos, home, shell, extra = line.split(":", 7)
    assert (user, password, uid, gid, gecos, home, shell) == (
        "a@example.com",
        HASH,
        "",
        "",
        "",
        "",
        "",
    )
    assert extra == "userdb_quota_rule=*:storage=5M"


def test_dovecot_users_without_accounts_is_header_only(render: TemplateRenderer) -> None:
    file, reload = DovecotUsers().plan(snap(), render)
    assert isinstance(file, File) and isinstance(reload, UnitAction)
    assert file.content and all(line.startswith("#") for line in file.content.splitlines())


# --- determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_plans_do_not_depend_on_object_order(seed: int, render: TemplateRenderer) -> None:
    objects = load_objects("basic")
    expected = plan_all(Snapshot.of(1, objects), render)
    shuffled = list(objects)
    random.Random(seed).shuffle(shuffled)
    assert plan_all(Snapshot.of(1, shuffled), render) == expected
    assert plan_all(Snapshot.of(1, objects), render) == expected  # and again: no state
