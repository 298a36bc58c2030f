"""``php-fpm-pools``: one PHP-FPM pool file per ``fpm-pools`` object, then check and reload.

Writes ``/etc/php/<version>/fpm/pool.d/<name>.conf`` (0644 root) from
``templates/fpm-pools/fpm-pool.conf.j2``: the pool runs as its unix user in the user's home and
listens on ``/run/php/<name>.sock``, owned by the user and group ``www-data`` with mode
0660, so exactly the user and nginx (``www-data``) can connect.

Process manager: ``pm = dynamic``, sized from ``max_children`` by ``spare_servers``.

All pools of a PHP version run under one php-fpm master and share its OPcache, so every
pool file sets ``OPCACHE_ISOLATION`` with ``php_admin_value`` (a script cannot change it),
before the tenant's ``php_settings``: php-fpm applies a pool's ``php_admin_value`` lines
last to first, so the first line of a name wins. The model refuses every ``opcache.*``
setting in ``php_settings`` anyway (``FORBIDDEN_PHP_SETTINGS`` below).

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

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ccm.errors import PlanError
from ccm.models.base import CcmObject, ObjectsView, objects_of
from ccm.models.fields import CONTROL, ObjectId, Ref, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, Check, File, Prerequisite, Probe, UnitAction
from ccm.plan.configuration import Configuration, Render, referenced
from configurations.clusters import Cluster, PhpVersion
from configurations.unix_users import UnixUser

#: Why a pool may not set a php.ini setting (the refusal says it). A pool's settings apply
#: in its workers after they became the tenant, so most give a tenant nothing its own PHP
#: (or its crons) could not do: paths such as ``error_log``, ``auto_prepend_file`` or
#: ``session.save_path`` are opened as the tenant, ``sendmail_path`` runs as the tenant,
#: ``open_basedir`` and ``disable_functions`` only narrow the tenant's own pool. What all
#: pools of a php-fpm share is its memory: the OPcache, mapped read-write into every
#: worker, holding every tenant's compiled scripts. These reach it:
_NATIVE_CODE = (
    "loads native code into the worker, which can read and rewrite the OPcache that every "
    "pool shares (other tenants' compiled scripts)"
)
FORBIDDEN_PHP_SETTINGS: dict[str, str] = {
    "extension": _NATIVE_CODE,
    "zend_extension": _NATIVE_CODE,
    "extension_dir": "chooses the directory extension= loads native code from",
}
#: The same for every setting under a prefix.
FORBIDDEN_PHP_SETTING_PREFIXES: dict[str, str] = {
    "opcache.": "every pool shares one OPcache: ccm sets how it guards each tenant "
    "(validate_permission, validate_root, restrict_api), its file cache would load "
    "compiled code into the shared memory, and its other settings are the node's",
    "ffi.": "FFI gives PHP code the worker's memory, which holds the OPcache every pool "
    "shares: other tenants' compiled scripts could be read or rewritten",
}


def forbidden_php_setting(name: str) -> str | None:
    """Why a pool may not set ``name``, or None when it may."""
    if name in FORBIDDEN_PHP_SETTINGS:
        return FORBIDDEN_PHP_SETTINGS[name]
    for prefix, reason in FORBIDDEN_PHP_SETTING_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


MAX_PHP_SETTINGS = 100
MAX_PHP_SETTING_BYTES = 1024
_PHP_SETTING_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")


class FpmPool(CcmObject):
    TYPE: ClassVar[str] = "fpm-pools"
    READS: ClassVar[tuple[str, ...]] = ("clusters",)
    name: Annotated[
        str,
        Field(strict=True, max_length=64),
        pattern(r"[a-z0-9_-]+", "a pool name of a-z, 0-9, _ and -"),
    ]
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    php_version: PhpVersion
    max_children: int = Field(default=5, ge=1, le=1000, strict=True)
    php_settings: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("php_settings")
    @classmethod
    def _php_settings(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        if len(value) > MAX_PHP_SETTINGS:
            raise ValueError(f"{len(value)} settings: at most {MAX_PHP_SETTINGS}")
        for name, setting in value.items():
            if len(name) > 128 or not _PHP_SETTING_NAME.fullmatch(name):
                raise ValueError(
                    f"setting name {name!r} must be a php.ini name like memory_limit "
                    "or session.gc_maxlifetime (at most 128 characters)"
                )
            reason = forbidden_php_setting(name)
            if reason is not None:
                raise ValueError(f"setting {name!r} may not be set by a pool: {reason}")
            if isinstance(setting, float) and not math.isfinite(setting):
                raise ValueError(f"setting {name!r}: {setting!r} is not a finite number")
            if isinstance(setting, int) and not isinstance(setting, bool):
                if abs(setting) >= 2**63:
                    raise ValueError(f"setting {name!r}: {setting} does not fit in 64 bits")
            if isinstance(setting, str):
                if CONTROL.search(setting) or '"' in setting:
                    raise ValueError(f"setting {name!r}: value must not hold '\"' or control chars")
                if len(setting.encode()) > MAX_PHP_SETTING_BYTES:
                    raise ValueError(
                        f"setting {name!r}: value longer than {MAX_PHP_SETTING_BYTES} bytes"
                    )
        return value

    @field_validator("name")
    @classmethod
    def _not_reserved_pool(cls, value: str) -> str:
        # "[global]" is php-fpm's global section; "www" is Debian's own default pool file
        if value in {"global", "www"}:
            raise ValueError(f"{value!r} is reserved by php-fpm / Debian")
        return value

    @property
    def socket(self) -> str:
        return f"/run/php/{self.name}.sock"

    def unique_keys(self) -> dict[str, Any]:
        return {"name": self.name}

    def problems(self, view: ObjectsView) -> list[str]:
        clusters = objects_of(view, Cluster)
        listed = {version for cluster in clusters for version in cluster.php_versions}
        if clusters and self.php_version not in listed:
            return [
                f"{self.describe()}: php_version: {self.php_version} is not installed on the "
                f"cluster (clusters list {', '.join(sorted(listed)) or 'none'})"
            ]
        return []


#: The group nginx's workers run as on Debian: it must be able to connect to the sockets.
WEB_SERVER_GROUP = "www-data"
#: Section names php-fpm gives a meaning of its own: a pool may not be called so.
RESERVED_POOL_NAMES = frozenset({"global"})
#: ``opcache.restrict_api`` in every pool: only scripts under this path may call OPcache's
#: API, and no script is there (no home is, and a tenant cannot create it)
OPCACHE_API_NOWHERE = "/nonexistent/"
#: Set in every pool with ``php_admin_value`` (a tenant's ``php_settings`` may not name
#: them: the model refuses every ``opcache.*``). All pools of a PHP version share one
#: php-fpm master and so one OPcache, and Debian ships these off/empty:
#: ``validate_permission`` — a cached script runs only if this pool may read its file
#: (else alice's ``include`` of bob's file runs bob's cached copy while bob's request has
#: it fresh); ``validate_root`` — the cache key holds the root (pools in a chroot);
#: ``restrict_api`` — ``opcache_get_status()`` lists every pool's scripts and
#: ``opcache_reset()`` empties the cache for all, so no tenant's script may call them.
OPCACHE_ISOLATION: tuple[tuple[str, str | bool], ...] = (
    ("opcache.validate_permission", True),
    ("opcache.validate_root", True),
    ("opcache.restrict_api", OPCACHE_API_NOWHERE),
)


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
    #: (setting name, quoted value): ccm's own, the same in every pool
    fixed_admin_values: tuple[tuple[str, str], ...]
    #: (setting name, quoted value): the tenant's ``php_settings``, sorted by name
    php_admin_values: tuple[tuple[str, str], ...]


class PhpFpmPools(Configuration):
    name = "php-fpm-pools"
    subscribes = (FpmPool.TYPE, UnixUser.TYPE)
    depends_on = ("unix-users", "php-versions")
    summary = "PHP-FPM pools per PHP version; check, then reload php<v>-fpm"
    groups = ("php",)
    needs_accounts = True
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
                fixed_admin_values=tuple(
                    (name, ini_quote(value)) for name, value in OPCACHE_ISOLATION
                ),
                php_admin_values=tuple(
                    (name, ini_quote(value)) for name, value in sorted(pool.php_settings.items())
                ),
            )
            changes.extend(installed_here(pool, listed))
            changes.append(
                File(
                    f"{pool_dir(pool.php_version)}{pool.name}.conf",
                    render("fpm-pools/fpm-pool.conf.j2", pool=view),
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
