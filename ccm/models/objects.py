"""Pydantic models of the object types a Cluster API writes (DESIGN.md's table).

Validation is strict because these values become paths, usernames, unit names and
config lines on every node: names are matched against safe patterns, free text may not
contain control characters (a newline in a cron command would add a crontab line), and
paths are absolute and normalised (no ``..``). Models are frozen: a snapshot is a value.
"""

from __future__ import annotations

import math
import posixpath
import re
from functools import cached_property
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from ccm.models.base import MAX_OBJECT_ID, CcmObject, ObjectsView, References
from ccm.models.names import ServedNames, ServerName, canonical, is_public_suffix, overlap
from ccm.models.reserved import reserved_name, uid_problem

#: Every pattern is applied with ``fullmatch``: ``$`` in ``re.match`` also matches before
#: a final newline, so ``"shop.example.com\n"`` passed as a name nginx then saw as new.
#: Control characters: C0, DEL, C1 (U+0085 NEL among them), and the Unicode line and
#: paragraph separators, which some parsers read as line ends.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)+{_TLD}")
#: a path component: what ccm puts on a command line or into a config file unquoted
_PATH_COMPONENT = r"[A-Za-z0-9._+@-]{1,255}"
_SAFE_PATH = re.compile(rf"(?:/{_PATH_COMPONENT})+/?|/")
#: an e-mail address as ccm writes it into a crontab MAILTO line and a GECOS field
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
#: PATH_MAX is 4096, but nginx cannot read a directive parameter near its 4 KiB buffer
MAX_PATH_LENGTH = 1024


def fullmatch(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks (newline, …)")
    return value


def _hostname(value: str) -> str:
    if len(value) > 253:
        raise ValueError(f"{len(value)} characters: a domain name has at most 253")
    return fullmatch(_HOSTNAME, value, "a lower-case fully qualified domain name")


def _alias(value: str) -> str:
    if not value.startswith("*."):
        return _hostname(value)
    base = _hostname(value[2:])
    if is_public_suffix(base):
        raise ValueError(
            f"{value!r} is a wildcard directly under the public suffix {base!r}: it would "
            "take the domains of everyone who registered one there"
        )
    return value


def _safe_absolute_path(value: str) -> str:
    if len(value) > MAX_PATH_LENGTH:
        raise ValueError(f"{len(value)} characters: a path has at most {MAX_PATH_LENGTH}")
    fullmatch(_SAFE_PATH, value, "an absolute path of letters, digits and ._/+@-")
    if posixpath.normpath(value) != (value.rstrip("/") or "/"):
        raise ValueError(f"{value!r} must be a normalised path (no '..', '.', '//')")
    # one spelling per path: a trailing slash is dropped, so equal paths compare equal
    return value.rstrip("/") or "/"


def _email(value: str) -> str:
    if len(value) > 254:
        raise ValueError(f"{len(value)} characters: an e-mail address has at most 254")
    return fullmatch(_EMAIL, value, "an e-mail address (local@domain, lower-case domain)")


def pattern(regex: str, what: str) -> AfterValidator:
    """A validator that ``fullmatch``es ``regex`` (compiled once)."""
    compiled = re.compile(regex)
    return AfterValidator(lambda value: fullmatch(compiled, value, what))


Text = Annotated[str, Field(strict=True), AfterValidator(_no_control)]
Hostname = Annotated[str, Field(strict=True), AfterValidator(_hostname)]
Alias = Annotated[str, Field(strict=True), AfterValidator(_alias)]
AbsolutePath = Annotated[str, Field(strict=True), AfterValidator(_safe_absolute_path)]
ObjectId = Annotated[int, Field(gt=0, le=MAX_OBJECT_ID, strict=True)]

#: ``unix_user_id: Annotated[ObjectId, Ref("unix-users")]``: an id that refers to an object
Ref = References
Email = Annotated[str, Field(strict=True), AfterValidator(_email)]
PhpVersion = Annotated[str, Field(strict=True), pattern(r"[5-9]\.[0-9]", "a PHP version like 8.3")]

_CRON_SPECIAL = {
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
}
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
#: (name, lowest, highest, names from the lowest value up) of the five fields, as
#: Debian's cron reads them
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, tuple(_MONTHS)),
    ("day of week", 0, 7, tuple(_DAYS)),
)
_CRON_ITEM = re.compile(
    r"(?P<range>\*|(?P<low>[0-9]{1,2}|[a-z]{3})(?:-(?P<high>[0-9]{1,2}|[a-z]{3}))?)(?:/(?P<step>[0-9]{1,2}))?"
)
#: Debian's cron reads at most 999 bytes of a command (MAX_COMMAND) and drops the rest
MAX_CRON_COMMAND_BYTES = 999


def _cron_value(text: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text) + low
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number or a name")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}")
    return value


def check_cron_field(text: str, index: int) -> None:
    """One of the 5 fields: a list of ``*``, ``N`` or ``N-M``, each with an optional ``/S``."""
    name, low, high, names = _CRON_FIELDS[index]
    for item in text.split(","):
        match = _CRON_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{name}: {item!r} is not *, N, N-M or one of those with /step")
        if match["low"] is not None:
            first = _cron_value(match["low"], low, high, names)
            if match["high"] is not None and _cron_value(match["high"], low, high, names) < first:
                raise ValueError(f"{name}: {item!r} is a range that runs backwards")
        if match["step"] is not None and not 1 <= int(match["step"]) <= high:
            raise ValueError(f"{name}: step {match['step']} is outside 1-{high}")


#: a node group (``nginx``, ``php``, ``cron`` …): which configurations run on a node
GroupName = Annotated[
    str, Field(strict=True), pattern(r"[a-z][a-z0-9-]{0,31}", "a group name of a-z, 0-9, -")
]


class Node(CcmObject):
    """A node of the cluster: which groups of configurations run on it.

    ``hostname`` equals that daemon's ``node`` setting. ``groups`` select the
    configurations that run there (each declares the groups it needs); ``primary_for``
    names groups for which this node runs the cluster-wide singleton work (SQL
    statements): at most one node per group. The group names a write may use are those
    the registered configurations declare; the writer passes them in the validation
    context (``groups``) and a misspelt one is refused.
    """

    TYPE: ClassVar[str] = "nodes"
    hostname: Annotated[
        str,
        Field(strict=True, max_length=253),
        pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a host name like web01"),
    ]
    groups: list[GroupName] = Field(default_factory=list, max_length=64)
    primary_for: list[GroupName] = Field(default_factory=list, max_length=64)

    @field_validator("groups", "primary_for")
    @classmethod
    def _known_groups(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each group may be named once")
        context = info.context if isinstance(info.context, dict) else {}
        known = context.get("groups")
        if known is not None:
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(
                    f"unknown group(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
                )
        return value

    @field_validator("primary_for")
    @classmethod
    def _primary_of_own_groups(cls, value: list[str], info: ValidationInfo) -> list[str]:
        groups = info.data.get("groups", [])
        outside = sorted(set(value) - set(groups))
        if outside:
            raise ValueError(f"{', '.join(outside)}: a node is primary only for its own groups")
        return value

    def unique_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"hostname": self.hostname}
        keys |= {f"primary_for {group}": group for group in self.primary_for}
        return keys


class UnixUser(CcmObject):
    TYPE: ClassVar[str] = "unix-users"
    # The account, its uid (derived from the id) and its home are the user's identity on
    # every node: a rename would orphan the home. Delete and create a new user instead.
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("username",)
    username: Annotated[
        str,
        Field(strict=True),
        pattern(r"[a-z_][a-z0-9_-]{0,31}", "a user name of a-z, 0-9, _ and - (at most 32)"),
    ]
    email: Email | None = None
    shell: AbsolutePath = "/bin/bash"

    @field_validator("username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if reserved_name(value):
            raise ValueError(f"{value!r} is reserved for a system account or group")
        return value

    @field_validator("shell")
    @classmethod
    def _shell(cls, value: str) -> str:
        if value == "/" or len(value) > 255:
            raise ValueError(f"{value!r} is not a shell (an absolute path of at most 255)")
        return value

    @field_validator("id")
    @classmethod
    def _uid(cls, value: int, info: ValidationInfo) -> int:
        """The account's uid is ``uid_base + id``: it must be a usable, unreserved uid.

        Checked at write time, with the writer's ``uid_base`` in the validation context;
        a stored object is read without it, and each node checks the uid it would give
        with its own ``uid_base`` (refusing that one account, not halting).
        """
        context = info.context if isinstance(info.context, dict) else {}
        if "uid_base" not in context:
            return value
        uid_base = int(context["uid_base"])
        problem = uid_problem(uid_base + value)
        if problem:
            raise ValueError(f"the account would get {problem} (uid_base {uid_base} + id)")
        return value

    @property
    def home(self) -> str:
        return f"/home/{self.username}"

    def unique_keys(self) -> dict[str, Any]:
        return {"username": self.username}


class Cron(CcmObject):
    """A cron job. Unpinned it runs on every node with the ``cron`` group; with a
    ``node_id`` on that node only, so a job runs once per schedule, not once per node."""

    TYPE: ClassVar[str] = "crons"
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    name: Annotated[
        str, Field(strict=True, max_length=64), pattern(r"[a-z0-9-]+", "a name of a-z, 0-9, -")
    ]
    schedule: Annotated[str, Field(strict=True)]
    command: Text = Field(min_length=1)
    email_address: Email | None = None
    node_id: Annotated[ObjectId, Ref("nodes")] | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value in _CRON_SPECIAL:
            return value
        fields = value.split(" ")
        if len(fields) != 5:
            raise ValueError(
                f"{value!r} is not 5 cron fields separated by single spaces or one of "
                + ", ".join(sorted(_CRON_SPECIAL))
            )
        for index, field in enumerate(fields):
            check_cron_field(field, index)
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if "%" in value:
            # cron turns an unescaped % into a newline: refuse rather than guess.
            raise ValueError("must not contain '%' (cron treats it as a newline)")
        if value[0] in "*-":
            # Debian's cron reads a leading * as a sixth time field ("bad command") and a
            # leading - as "do not log": either changes what the entry means
            raise ValueError(f"must not start with {value[0]!r}")
        size = len(value.encode())
        if size > MAX_CRON_COMMAND_BYTES:
            raise ValueError(
                f"{size} bytes: cron reads at most {MAX_CRON_COMMAND_BYTES} of a command"
            )
        return value

    def unique_keys(self) -> dict[str, Any]:
        return {"unix_user_id+name": (self.unix_user_id, self.name)}


#: php.ini settings a pool may not set: they load native code into the pool
FORBIDDEN_PHP_SETTINGS = frozenset({"extension", "zend_extension", "extension_dir"})
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
            if name in FORBIDDEN_PHP_SETTINGS:
                raise ValueError(f"setting {name!r} may not be set by a pool")
            if isinstance(setting, float) and not math.isfinite(setting):
                raise ValueError(f"setting {name!r}: {setting!r} is not a finite number")
            if isinstance(setting, int) and not isinstance(setting, bool):
                if abs(setting) >= 2**63:
                    raise ValueError(f"setting {name!r}: {setting} does not fit in 64 bits")
            if isinstance(setting, str):
                if _CONTROL.search(setting) or '"' in setting:
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
        clusters = [c for c in view.list_type(Cluster.TYPE) if isinstance(c, Cluster)]
        listed = {version for cluster in clusters for version in cluster.php_versions}
        if clusters and self.php_version not in listed:
            return [
                f"{self.describe()}: php_version: {self.php_version} is not installed on the "
                f"cluster (clusters list {', '.join(sorted(listed)) or 'none'})"
            ]
        return []


MAX_SERVER_ALIASES = 100


class VirtualHost(CcmObject):
    TYPE: ClassVar[str] = "virtual-hosts"
    #: every vhost: no two may serve the same name
    READS: ClassVar[tuple[str, ...]] = ("virtual-hosts",)
    domain: Hostname
    server_aliases: list[Alias] = Field(default_factory=list, max_length=MAX_SERVER_ALIASES)
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    document_root: AbsolutePath
    fpm_pool_id: Annotated[ObjectId, Ref("fpm-pools")] | None = None
    #: with a pool, unknown paths go to /index.php (WordPress, Laravel); False: plain 404s
    front_controller: bool = Field(default=True, strict=True)

    def unique_keys(self) -> dict[str, Any]:
        return {"domain": self.domain}

    @cached_property
    def served(self) -> ServedNames:
        """Every name this vhost serves, as nginx compares them (kept: a write compares
        each written vhost with every stored one)."""
        return ServedNames((self.domain, *self.server_aliases))

    def _carve_outs(self, other: VirtualHost, theirs: frozenset[str]) -> list[str]:
        """Names of ``self`` that share a ``Host`` with a name of ``other``, another
        owner's vhost, through a wildcard (``ccm.models.names``): whichever nginx picks,
        one owner takes names from the other. Refused both ways: the name below another
        owner's wildcard, and the wildcard above another owner's name."""
        found = []
        mine = [("domain", self.domain), *(("server_aliases", a) for a in self.server_aliases)]
        for field, name in mine:
            for their in sorted(theirs):
                if overlap(name, their):
                    inside = ServerName.parse(their).matches(ServerName.parse(name).base)
                    how = "is covered by" if inside else "covers"
                    found.append(
                        f"{self.describe()}: {field}: {name} {how} {their}, served by "
                        f"{other.describe()} ({other.domain}) of another owner "
                        f"(unix-users/{other.unix_user_id}); nginx would give names of one "
                        "owner to the other"
                    )
        return found

    def problems(self, view: ObjectsView) -> list[str]:
        where = self.describe()
        problems: list[str] = []
        names = [canonical(name) for name in (self.domain, *self.server_aliases)]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append(f"{where}: server_aliases: {', '.join(repeated)} given twice")
        mine = self.served
        for other in view.list_type(VirtualHost.TYPE):
            if isinstance(other, VirtualHost) and other.id != self.id:
                taken = mine.names & other.served.names
                if taken:  # nginx would serve one of the two at random: a hijack
                    problems.append(
                        f"{where}: {', '.join(sorted(taken))} already served by "
                        f"{other.describe()} ({other.domain})"
                    )
                if other.unix_user_id != self.unix_user_id and mine.overlaps(other.served):
                    problems += self._carve_outs(other, other.served.names - taken)
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


class MailAccount(CcmObject):
    TYPE: ClassVar[str] = "mail-accounts"
    local_part: Annotated[
        str,
        Field(strict=True),
        pattern(r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?", "a lower-case mailbox name"),
    ]
    domain: Hostname
    password_hash: Annotated[
        str,
        Field(strict=True, max_length=512),
        pattern(
            r"(?:\{[A-Z0-9.-]+\})?\$[0-9a-z]+(?:\$[A-Za-z0-9=,]+)?\$[./A-Za-z0-9$]+",
            "a crypt(3) hash like $6$salt$hash, optionally with a {SCHEME} prefix",
        ),
    ]
    quota_mib: int | None = Field(default=None, ge=1, le=2**40, strict=True)

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"

    def unique_keys(self) -> dict[str, Any]:
        return {"address": self.address}


class Cluster(CcmObject):
    TYPE: ClassVar[str] = "clusters"
    READS: ClassVar[tuple[str, ...]] = ("fpm-pools",)
    php_versions: list[PhpVersion] = Field(default_factory=list, max_length=20)

    @field_validator("php_versions")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("PHP versions must be distinct")
        return value

    def problems(self, view: ObjectsView) -> list[str]:
        return [
            f"{self.describe()}: php_versions: {pool.php_version} is still used by "
            f"{pool.describe()} ({pool.name})"
            for pool in view.list_type(FpmPool.TYPE)
            if isinstance(pool, FpmPool) and pool.php_version not in self.php_versions
        ]
