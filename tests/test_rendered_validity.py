"""What the configurations render is accepted by the real programs: ``nginx -t``, ``php-fpm -t``.

Everything happens under pytest's ``tmp_path``: the rendered files are written there and
each program gets a minimal main configuration of our own that keeps its pid, logs and
temporary directories there too — nothing of the machine's ``/etc``, ``/var`` or ``/run``
is read for the site files or written. nginx and php-fpm 8.2 are required: a missing
binary fails the test (in CI and everywhere else), it is never skipped.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from ccm.models import CcmObject, Snapshot
from ccm.plan.changes import Change, File
from ccm.plan.templates import TemplateRenderer, package_templates
from configurations.fpm_pools import OPCACHE_ISOLATION, FpmPool, PhpFpmPools
from configurations.unix_users import UnixUser, UnixUsers
from configurations.virtual_hosts import NginxVhosts, VirtualHost

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def binary(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        ci = " (CI=true)" if os.environ.get("CI") == "true" else ""
        pytest.fail(f"{name} is not installed{ci}: the rendered-validity tests need it")
    return found


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def write_files(root: Path, changes: Sequence[Change]) -> list[Path]:
    written = []
    for change in changes:
        if isinstance(change, File):
            target = root / change.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(change.content)
            written.append(target)
    return written


@pytest.fixture(scope="module")
def render() -> TemplateRenderer:
    return TemplateRenderer(package_templates(UnixUsers))


# --- nginx ---------------------------------------------------------------------------


def nginx_main_config(root: Path) -> Path:
    """A main nginx.conf that keeps every path nginx -t touches under ``root``."""
    temp = root / "var/lib/nginx"
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / name).mkdir(parents=True, exist_ok=True)
    config = root / "etc/nginx/nginx.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"""\
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{}}
http {{
    access_log {root}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {root}/etc/nginx/sites-enabled/*.conf;
}}
"""
    )
    return config


def nginx_test(root: Path) -> subprocess.CompletedProcess[str]:
    config = nginx_main_config(root)
    return run(
        [binary("nginx"), "-t", "-p", f"{root}/", "-c", str(config), "-e", f"{root}/error.log"]
    )


def vhost_objects() -> list[CcmObject]:
    return [
        UnixUser(id=1, username="alice"),
        UnixUser(id=2, username="bob"),
        FpmPool(id=1, name="alice-web", unix_user_id=1, php_version="8.2"),
        FpmPool(id=2, name="bob-app", unix_user_id=2, php_version="8.3"),
        VirtualHost(
            id=1,
            domain="alice.example.com",
            server_aliases=["www.alice.example.com", "*.alice.example.org"],
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
            domain="bob.example.net",
            server_aliases=["bob.example.org"],
            unix_user_id=2,
            document_root="/home/bob/app/public",
            fpm_pool_id=2,
        ),
        VirtualHost(
            id=4,
            domain="legacy.bob.example.net",
            unix_user_id=2,
            document_root="/home/bob/legacy",
            fpm_pool_id=2,
            front_controller=False,
        ),
    ]


def test_nginx_accepts_rendered_vhosts(tmp_path: Path, render: TemplateRenderer) -> None:
    changes = NginxVhosts().plan(Snapshot.of(1, vhost_objects()), render)
    written = write_files(tmp_path, changes)
    assert [path.name for path in written] == [
        "ccm-default.conf",
        "alice.example.com.conf",
        "static.alice.example.com.conf",
        "bob.example.net.conf",
        "legacy.bob.example.net.conf",
    ]
    result = nginx_test(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_no_vhosts(tmp_path: Path, render: TemplateRenderer) -> None:
    written = write_files(tmp_path, NginxVhosts().plan(Snapshot.of(1, []), render))
    assert [path.name for path in written] == ["ccm-default.conf"]
    result = nginx_test(tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_refuses_debians_default_site_next_to_ccms(
    tmp_path: Path, render: TemplateRenderer
) -> None:
    """Debian's ``default`` site also claims ``default_server``: a node must not keep it
    enabled, and the check says which file is in the way (the run halts, nothing reloads)."""
    debian_default = Path("/etc/nginx/sites-available/default")
    if not debian_default.is_file():
        pytest.fail(f"{debian_default} is missing (Debian's nginx package ships it)")
    write_files(tmp_path, NginxVhosts().plan(Snapshot.of(1, []), render))
    enabled = tmp_path / "etc/nginx/sites-enabled/default.conf"
    enabled.write_text(debian_default.read_text())
    result = nginx_test(tmp_path)
    assert result.returncode != 0
    assert "duplicate default server" in result.stderr


def test_nginx_refuses_a_broken_vhost(tmp_path: Path, render: TemplateRenderer) -> None:
    changes = NginxVhosts().plan(Snapshot.of(1, vhost_objects()), render)
    first = write_files(tmp_path, changes)[0]
    first.write_text(first.read_text().rstrip().removesuffix("}"))  # drop the closing brace
    result = nginx_test(tmp_path)
    assert result.returncode != 0
    assert "unexpected end of file" in result.stderr


# --- php-fpm -------------------------------------------------------------------------


def host_account() -> str:
    """An account of this machine, with its own group.

    ``php-fpm -t`` resolves the pool's ``user``, ``group`` and ``listen.owner``, so the
    pool must name a real account; these are in Debian's base-passwd.
    """
    for name in ("games", "man", "mail", "backup", "list", "proxy"):
        try:
            pwd.getpwnam(name)
            grp.getgrnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("no usable host account (games, man, mail, …) for the php-fpm test")


def php_fpm_test(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    config = root / "php-fpm.conf"
    config.write_text(
        f"""\
[global]
pid = {root}/php-fpm.pid
error_log = {root}/php-fpm.log
include = {root}/etc/php/8.2/fpm/pool.d/*.conf
"""
    )
    return run([binary("php-fpm8.2"), *flags, "-y", str(config)])


def redirect_chdir(root: Path, files: list[Path]) -> None:
    """Point each pool's ``chdir`` (a home under /home, which php-fpm -t requires to exist)
    at a directory under ``root`` instead; the one line the test changes."""
    for path in files:
        text = path.read_text()
        (home,) = re.findall(r"^chdir = (/home/\S+)$", text, flags=re.MULTILINE)
        (root / home.lstrip("/")).mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace(f"chdir = {home}\n", f"chdir = {root}{home}\n"))


TRICKY_SETTINGS: dict[str, str | int | float | bool] = {
    "display_errors": False,
    "log_errors": True,
    "memory_limit": "256M",
    "max_execution_time": 60,
    "session.gc_probability": 0.5,
    "error_log": "/home/x/logs/php error.log",
    "auto_prepend_file": "${HOME}/prepend.php",
    "include_path": ".:C:\\php\\",
    "date.timezone": "Europe/Berlin ; not a comment # either",
}


def pools(username: str) -> list[CcmObject]:
    # a host account (the model reserves those names: a tenant may not take them)
    return [
        UnixUser.model_construct(id=1, username=username, email=None, shell="/bin/bash"),
        *(
            FpmPool(
                id=index,
                name=f"pool-{max_children}",
                unix_user_id=1,
                php_version="8.2",
                max_children=max_children,
                php_settings=TRICKY_SETTINGS if index == 1 else {},
            )
            for index, max_children in enumerate((5, 1, 2, 3, 12, 1000), start=1)
        ),
    ]


def test_php_fpm_accepts_rendered_pools(tmp_path: Path, render: TemplateRenderer) -> None:
    changes = PhpFpmPools().plan(Snapshot.of(1, pools(host_account())), render)
    written = write_files(tmp_path, changes)
    assert len(written) == 6
    redirect_chdir(tmp_path, written)
    result = php_fpm_test(tmp_path, "-t")
    output = result.stdout + result.stderr + (tmp_path / "php-fpm.log").read_text()
    assert result.returncode == 0, output
    assert "test is successful" in output


def test_php_fpm_reads_php_values_back_exactly(tmp_path: Path, render: TemplateRenderer) -> None:
    """-tt prints the parsed configuration: every value arrives literally (no ${HOME}
    expansion, backslashes kept, ';' and '#' inside the value)."""
    changes = PhpFpmPools().plan(Snapshot.of(1, pools(host_account())[:2]), render)
    redirect_chdir(tmp_path, write_files(tmp_path, changes))
    result = php_fpm_test(tmp_path, "-tt")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    parsed = dict(re.findall(r"php_admin_value\[([a-z_.]+)\] = (.*)$", output, flags=re.MULTILINE))
    expected = {
        name: ("On" if value else "Off") if isinstance(value, bool) else str(value)
        for name, value in [*OPCACHE_ISOLATION, *TRICKY_SETTINGS.items()]
    }
    assert parsed == expected


def test_php_fpm_refuses_a_broken_pool(tmp_path: Path, render: TemplateRenderer) -> None:
    changes = PhpFpmPools().plan(Snapshot.of(1, pools(host_account())[:2]), render)
    (path,) = write_files(tmp_path, changes)
    redirect_chdir(tmp_path, [path])
    path.write_text(
        path.read_text().replace("pm.max_spare_servers = 3", "pm.max_spare_servers = 9")
    )
    result = php_fpm_test(tmp_path, "-t")
    assert result.returncode != 0
    log = (tmp_path / "php-fpm.log").read_text()
    assert "[pool pool-5]" in log and "pm.max_spare_servers(9)" in log
