"""``php-fpm-pools``: one PHP-FPM pool file per ``fpm-pools`` object, then check and reload.

Writes ``/etc/php/<version>/fpm/pool.d/<name>.conf`` (0644 root) from
``templates/fpm-pool.conf.j2``: the pool runs as its unix user in the user's home and
listens on ``/run/php/<name>.sock``, owned by the user and group ``www-data`` with mode
0660, so exactly the user and nginx (``www-data``) can connect.

Process manager: ``pm = dynamic``, sized from ``max_children`` by ``spare_servers``.

Checks and reloads: for every PHP version this node may have pool files of — versions
of current pools plus the ``clusters`` objects' ``php_versions`` — a ``php_fpm_check``
and a reload of ``php<version>-fpm``, both triggered by that version's ``pool.d/``. A
version whose last pool was deleted still needs its reload (the executor removes the
file), although no pool mentions the version any more; the executor runs a check or a
reload only when a path under its trigger changed, so listing extra versions is free.

Runs after ``php-versions`` (and is selected with it): the packages and ``pool.d/`` of a
new version are in place before its pools are written and checked. Each listed
version's ``pool.d/`` also holds ``ccm.placeholder.conf``, written by that playbook; a
pool name cannot contain a dot, so no pool file planned here can be that file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ccm.errors import PlanError
from ccm.models import Cluster, FpmPool, Snapshot, UnixUser
from ccm.plan.changes import Change, Check, File, Prerequisite, Probe, UnitAction
from ccm.plan.configuration import Configuration, Render
from configurations._common import referenced

#: The group nginx's workers run as on Debian: it must be able to connect to the sockets.
WEB_SERVER_GROUP = "www-data"
#: Section names php-fpm gives a meaning of its own: a pool may not be called so.
RESERVED_POOL_NAMES = frozenset({"global"})


def pool_dir(php_version: str) -> str:
    return f"/etc/php/{php_version}/fpm/pool.d/"


@dataclass(frozen=True)
class SpareServers:
    """``pm = dynamic`` sizing: php-fpm requires 1 <= min <= start <= max <= max_children."""

    start_servers: int
    min_spare_servers: int
    max_spare_servers: int


def spare_servers(max_children: int) -> SpareServers:
    """Size ``pm = dynamic`` from ``max_children``.

    * ``min_spare_servers`` = 20 % of ``max_children`` (rounded down), at least 1;
    * ``max_spare_servers`` = 60 % of ``max_children`` (rounded up), at least the minimum;
    * ``start_servers`` = halfway between them (rounded down), php-fpm's own default.

    For ``max_children = 5`` (the model's default) this is Debian's stock ``www`` pool
    (2 / 1 / 3); 1 child gives 1 / 1 / 1, 10 give 4 / 2 / 6, 100 give 40 / 20 / 60. The
    invariants php-fpm checks hold for every ``max_children`` >= 1: 20 % rounded down
    never exceeds 60 % rounded up, and 60 % rounded up never exceeds the whole.
    """
    if max_children < 1:
        raise ValueError(f"max_children must be at least 1, not {max_children}")
    min_spare = max(1, max_children // 5)
    max_spare = max(min_spare, -(-max_children * 3 // 5))  # ceil(3n/5)
    start = min_spare + (max_spare - min_spare) // 2
    return SpareServers(start, min_spare, max_spare)


def ini_quote(value: str | int | float | bool) -> str:
    """A php-fpm (PHP INI) double-quoted value that reads back as exactly ``value``.

    Booleans become ``"On"``/``"Off"``. Inside double quotes php-fpm's INI parser expands
    ``${VAR}`` from the environment and treats ``\\`` as an escape, so ``\\``, ``$`` and
    ``"`` are escaped with a backslash (the model already refuses ``"`` and control
    characters; escaping it too keeps this function safe on its own).
    """
    if isinstance(value, bool):
        text = "On" if value else "Off"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    escaped = text.replace("\\", "\\\\").replace("$", "\\$").replace('"', '\\"')
    return f'"{escaped}"'


@dataclass(frozen=True)
class PoolView:
    """What ``fpm-pool.conf.j2`` renders for one pool."""

    id: int
    name: str
    username: str
    home: str
    socket: str
    listen_group: str
    max_children: int
    spare: SpareServers
    #: (setting name, quoted value), sorted by name
    php_admin_values: tuple[tuple[str, str], ...]


class PhpFpmPools(Configuration):
    name = "php-fpm-pools"
    subscribes = (FpmPool.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users", "php-versions")
    summary = "PHP-FPM pools per PHP version; check, then reload php<v>-fpm"
    groups = ("php",)
    checks = {"php_fpm_check": ("php-fpm{version}", "-t")}
    #: the pool answers FastCGI on its socket: its ping path replies "pong" (cgi-fcgi is
    #: Debian's libfcgi-bin)
    probes = {
        "php_fpm_probe": (
            "sh",
            "-c",
            "SCRIPT_NAME=/ccm-ping SCRIPT_FILENAME=/ccm-ping REQUEST_METHOD=GET "
            'cgi-fcgi -bind -connect "$1" | grep -q pong',
            "sh",
            "{socket}",
        )
    }

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        changes: list[Change] = []
        probes: list[Change] = []  # after the reloads: each pool answers on its socket
        versions: set[str] = set()
        listed = {version for cluster in snapshot.all(Cluster) for version in cluster.php_versions}
        for pool in snapshot.all(FpmPool):
            if pool.name in RESERVED_POOL_NAMES:
                raise PlanError(
                    self.name,
                    f"{pool.describe()}: a pool may not be named {pool.name!r} "
                    "(php-fpm reads [global] as its global section)",
                )
            user = referenced(
                snapshot,
                UnixUser,
                pool.unix_user_id,
                referrer=pool,
                field="unix_user_id",
                configuration=self.name,
            )
            view = PoolView(
                id=pool.id,
                name=pool.name,
                username=user.username,
                home=user.home,
                socket=pool.socket,
                listen_group=WEB_SERVER_GROUP,
                max_children=pool.max_children,
                spare=spare_servers(pool.max_children),
                php_admin_values=tuple(
                    (name, ini_quote(value)) for name, value in sorted(pool.php_settings.items())
                ),
            )
            changes.extend(installed_here(pool, listed))
            changes.append(
                File(
                    f"{pool_dir(pool.php_version)}{pool.name}.conf",
                    render("fpm-pool.conf.j2", pool=view),
                    origin=(pool.describe(),),
                )
            )
            probes.append(
                Probe(
                    "php_fpm_probe",
                    triggers=(f"{pool_dir(pool.php_version)}{pool.name}.conf",),
                    variables={"socket": pool.socket},
                )
            )
            versions.add(pool.php_version)
        for cluster in snapshot.all(Cluster):
            versions.update(cluster.php_versions)
        ordered = sorted(versions, key=_version_key)
        for version in ordered:
            changes.append(
                Check(
                    "php_fpm_check", triggers=(pool_dir(version),), variables={"version": version}
                )
            )
        for version in ordered:
            changes.append(UnitAction(f"php{version}-fpm", "reload", triggers=(pool_dir(version),)))
        changes.extend(probes)
        return changes


def installed_here(pool: FpmPool, listed: set[str]) -> list[Change]:
    """Who provides the pool's PHP version on this node (issue 15, finding 3).

    A version a ``clusters`` object lists is installed by the ``php-versions`` playbook,
    which runs first in the same run (the writer refuses a pool of an unlisted version
    while a ``clusters`` object exists). Without one, versions are not managed: the
    node has those someone installed, whose ``pool.d/`` exists. A pool of any other
    version is refused on this node alone (``/ccm/failures``): its check would run a
    ``php-fpm<v>`` that is not there, and halt the fleet.
    """
    if pool.php_version in listed:
        return []
    reason = f"PHP {pool.php_version} is not installed on this node and no clusters object lists it"
    return [Prerequisite(pool_dir(pool.php_version), reason, origin=(pool.describe(),))]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
