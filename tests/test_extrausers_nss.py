"""NSS resolves the accounts ccm renders: a real ``getent`` and a real ``php-fpm8.2 -t``.

A node with ``[accounts] backend = "extrausers"`` is applied under a temporary root (its
``etc/nsswitch.conf`` a copy of this machine's, edited by the real playbook). Then glibc
itself, through Debian's libnss-extrausers, must find the tenant: ``getent passwd``,
``group`` and ``shadow``, and php-fpm's own check of the rendered pool, whose ``user =``
exists only in the rendered files (the run's ``php_fpm_check`` is that real check).

Why a mount namespace and not a chroot: NSS is configured by two fixed paths,
``/etc/nsswitch.conf`` and ``/var/lib/extrausers/``. In a private mount namespace
(``unshare --mount --propagation private``) the root's copies are bind-mounted over exactly
those two paths (and the root's ``home`` over ``/home``, for the pool's ``chdir``), while
glibc, the NSS modules, ``getent`` and php-fpm with its extensions stay the host's: the
very binaries a node runs. The mounts exist only for the processes inside and vanish with
them; nothing of the host changes (asserted). A chroot would need a copy of that whole
userland inside the root and would test the copy. The controls run the same commands
without the nsswitch mount: the host's ``files systemd`` does not know the tenant, so it
is the rendered files, and nothing else, that make the account resolve.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models import Snapshot
from ccm.plan.commands import fill
from ccm.settings import CommandSettings
from ccm.testing.noderoot import node_settings, seed_root
from configurations import Crontabs, NginxVhosts, PhpFpmPools, PhpVersions, UnixUsers
from configurations.fpm_pools import FpmPool
from configurations.unix_users import UnixUser

ALICE = UnixUser(id=1, username="alice", email="alice@example.com")
POOL = FpmPool(id=1, name="alice-web", unix_user_id=1, php_version="8.2")
HOST_PATHS = (Path("/etc/nsswitch.conf"), Path("/var/lib/extrausers"))

#: ``$1`` the root, ``$2`` "nss" (mount the root's nsswitch.conf) or "host" (do not);
#: then the command. The root's extrausers files and homes are mounted either way.
_NAMESPACE = r"""
set -e
root=$1 which=$2
shift 2
if [ "$which" = nss ]; then
  mount --bind "$root/etc/nsswitch.conf" /etc/nsswitch.conf
fi
mount --bind "$root/var/lib/extrausers" /var/lib/extrausers
mkdir -p "$root/home"
mount --bind "$root/home" /home
exec "$@"
"""
_UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE, "sh"]

#: the run's php_fpm_check: php-fpm8.2 -t of the root's pools, NSS as the node has it
_PHP_FPM = r"""
conf="$1/php-fpm-check.conf"
printf '[global]\npid = %s/php-fpm.pid\nerror_log = %s/php-fpm.log\ninclude = %s\n' \
  "$1" "$1" "$1/etc/php/$2/fpm/pool.d/*.conf" > "$conf"
php-fpm$2 -t -y "$conf" 2>&1 || { cat "$1/php-fpm.log"; exit 1; }
"""


def in_namespace(root: Path, which: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_UNSHARE, str(root), which, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def php_fpm_check(root: Path, which: str, version: str = "8.2") -> list[str]:
    return [*_UNSHARE, str(root), which, "sh", "-c", _PHP_FPM, "sh", str(root), version]


def host_state() -> dict[Path, object]:
    """The host's nsswitch.conf, its extrausers folder, and any tenant in its passwd or
    group (not their bytes: a package installed meanwhile may add a system account)."""
    return {
        HOST_PATHS[0]: HOST_PATHS[0].read_bytes(),
        HOST_PATHS[1]: sorted(p.name for p in HOST_PATHS[1].iterdir()),
        **{
            path: [line for line in path.read_text().splitlines() if line.startswith("alice:")]
            for path in (Path("/etc/passwd"), Path("/etc/group"))
        },
    }


@pytest.fixture
def host_untouched() -> Iterator[None]:
    for tool in ("unshare", "getent", "php-fpm8.2"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.fail(f"{tool} is missing: run scripts/install-system-packages")
    if not Path("/usr/lib/libnss_extrausers.so.2").exists() or not HOST_PATHS[1].is_dir():
        pytest.fail("libnss-extrausers is missing: run scripts/install-system-packages")
    before = host_state()
    yield
    assert host_state() == before, "the host's nsswitch.conf, extrausers or accounts changed"


@pytest.fixture
def node(tmp_path: Path, host_untouched: None) -> Path:
    """A root applied with the extrausers backend, its php-fpm check the real one."""
    root = seed_root(tmp_path / "root")
    shutil.copy(HOST_PATHS[0], root / "etc/nsswitch.conf")
    settings = node_settings(
        root,
        accounts={"backend": "extrausers"},
        checks={"php_fpm_check": php_fpm_check(root, "nss")},
    )
    engine = Engine(
        Registry([UnixUsers, Crontabs, PhpVersions, PhpFpmPools, NginxVhosts]), settings
    )
    report = engine.apply(Snapshot.of(1, [ALICE, POOL]))
    assert not report.refused
    assert "check php8.2" not in " ".join(report.actions), "the real check ran, not a log"
    assert any(action.startswith("check unshare") for action in report.actions)
    assert "alice" not in (root / "etc/passwd").read_text()
    return root


def test_getent_resolves_the_rendered_account(node: Path) -> None:
    line = "alice:x:20001:20001:alice@example.com:/home/alice:/bin/bash"
    for key in ("alice", "20001"):
        found = in_namespace(node, "nss", "getent", "passwd", key)
        assert (found.returncode, found.stdout) == (0, line + "\n"), found.stderr
    assert in_namespace(node, "nss", "getent", "group", "alice").stdout == "alice:x:20001:\n"
    assert in_namespace(node, "nss", "getent", "shadow", "alice").stdout == "alice:!:::::::\n"
    # /etc/passwd still wins: root is the host's root, not a rendered one
    assert in_namespace(node, "nss", "getent", "passwd", "root").stdout.startswith("root:x:0:0:")

    control = in_namespace(node, "host", "getent", "passwd", "alice")
    assert (control.returncode, control.stdout) == (2, ""), "the host alone must not know alice"


def test_php_fpm_accepts_a_pool_whose_user_exists_only_in_the_rendered_files(node: Path) -> None:
    pool = (node / "etc/php/8.2/fpm/pool.d/alice-web.conf").read_text()
    assert "user = alice" in pool
    checked = subprocess.run(
        php_fpm_check(node, "nss"), capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "test is successful" in checked.stdout + checked.stderr

    control = subprocess.run(
        php_fpm_check(node, "host"), capture_output=True, text=True, timeout=60, check=False
    )
    assert control.returncode != 0
    assert "cannot get uid for user 'alice'" in control.stdout + control.stderr


#: ``$1`` a copy of /etc, mounted over /etc; an account made there runs a process while
#: ``$2`` (the plain userdel argv) and then ``$3`` (userdel_moved's) remove it
_BUSY = r"""
set -e
mount --bind "$1" /etc
useradd --uid 20001 --user-group --no-create-home --home-dir /home/alice alice
setpriv --reuid 20001 --regid 20001 --clear-groups sleep 120 &
worker=$!
trap 'kill "$worker"' EXIT
while [ "$(ps -o user= -p "$worker")" != alice ]; do sleep 0.05; done
if sh -c "$2"; then echo "plain: removed"; else echo "plain: refused $?"; fi
sh -c "$3" && echo "moved: removed"
grep -c '^alice:' /etc/passwd /etc/group || true
"""


def test_the_move_out_of_etc_passwd_works_while_the_account_runs_a_process(
    tmp_path: Path, host_untouched: None
) -> None:
    """On a live node the moved account's pool workers still run: plain ``userdel``
    refuses a busy account (with root ``/``, ``--prefix`` checks no processes), so
    ``userdel_moved`` forces. Real ``useradd``/``userdel`` on a copy of /etc mounted over
    /etc, in private mount and PID namespaces (everything in them dies with them)."""
    etc = tmp_path / "etc"
    shutil.copytree("/etc", etc, symlinks=True)
    commands = CommandSettings()
    variables = {"root": "/", "username": "alice"}
    plain = " ".join(fill(list(commands.userdel), variables))
    moved = " ".join(fill(list(commands.userdel_moved), variables))
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
         "--mount-proc", "sh", "-c", _BUSY, "sh", str(etc), plain, moved],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["plain: refused 8", "moved: removed"], result.stdout + result.stderr
    assert lines[2:] == ["/etc/passwd:0", "/etc/group:0"]
