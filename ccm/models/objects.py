"""Pydantic models of the object types a Cluster API writes (DESIGN.md's table).

Validation is strict because these values become paths, usernames, unit names and
config lines on every node: names are matched against safe patterns, free text may not
contain control characters (a newline in a cron command would add a crontab line), and
paths are absolute and normalised (no ``..``). Models are frozen: a snapshot is a value.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@-]*$")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (newline, tab, …)")
    return value


def _hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a lower-case fully qualified domain name")
    return value


def _alias(value: str) -> str:
    _hostname(value[2:] if value.startswith("*.") else value)
    return value


def _safe_absolute_path(value: str) -> str:
    if not _SAFE_PATH.match(value):
        raise ValueError(f"{value!r} must be an absolute path of letters, digits and ._/+@-")
    if posixpath.normpath(value) != value.rstrip("/") or "/../" in value + "/":
        raise ValueError(f"{value!r} must be a normalised path (no '..', '.', '//')")
    return value.rstrip("/") or "/"


Text = Annotated[str, AfterValidator(_no_control)]
Hostname = Annotated[str, AfterValidator(_hostname)]
Alias = Annotated[str, AfterValidator(_alias)]
AbsolutePath = Annotated[str, AfterValidator(_safe_absolute_path)]
ObjectId = Annotated[int, Field(gt=0, strict=True)]
Email = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,63}$", max_length=254)
]
PhpVersion = Annotated[str, Field(pattern=r"^[5-9]\.[0-9]$")]

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
_CRON_FIELD = re.compile(r"^[A-Za-z0-9*/,-]+$")


class CcmObject(BaseModel):
    """Base of every object type: frozen, no unknown fields, a positive integer id.

    ``TYPE`` is the plural kebab-case type name used in etcd keys and on the CLI;
    ``REFERENCES`` maps a field holding an id to the type it refers to.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
    TYPE: ClassVar[str]
    REFERENCES: ClassVar[dict[str, str]] = {}
    #: fields a stored object may not change (its identity on the nodes)
    IMMUTABLE: ClassVar[tuple[str, ...]] = ()

    id: ObjectId

    def unique_keys(self) -> dict[str, Any]:
        """Values that must be unique among objects of this type (name → value)."""
        return {}

    def describe(self) -> str:
        return f"{self.TYPE}/{self.id}"


#: Debian's base accounts and the service accounts a hosting node's packages create:
#: a tenant holding one of these names would own that service once it is installed.
RESERVED_USERNAMES = frozenset(
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc "
    "gnats nobody messagebus sshd ntp chrony dovecot dovenull postfix exim mysql mariadb "
    "postgres redis memcache memcached nginx apache php php-fpm ftp ftpuser opendkim "
    "clamav amavis spamd bind named unbound dnsmasq rspamd vmail ccm admin".split()
)
RESERVED_USERNAME_PREFIXES = ("_", "systemd-", "debian-")


class UnixUser(CcmObject):
    TYPE: ClassVar[str] = "unix-users"
    # The account, its uid (derived from the id) and its home are the user's identity on
    # every node: a rename would orphan the home. Delete and create a new user instead.
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("username",)
    username: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    email: Email | None = None
    shell: AbsolutePath = "/bin/bash"

    @field_validator("username")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_USERNAMES or value.startswith(RESERVED_USERNAME_PREFIXES):
            raise ValueError(f"{value!r} is reserved for a system account")
        return value

    @property
    def home(self) -> str:
        return f"/home/{self.username}"

    def unique_keys(self) -> dict[str, Any]:
        return {"username": self.username}


class Cron(CcmObject):
    TYPE: ClassVar[str] = "crons"
    REFERENCES: ClassVar[dict[str, str]] = {"unix_user_id": "unix-users"}
    unix_user_id: ObjectId
    name: str = Field(pattern=r"^[a-z0-9-]+$", max_length=64)
    schedule: str
    command: Text = Field(min_length=1, max_length=4096)
    email_address: Email | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value in _CRON_SPECIAL:
            return value
        fields = value.split(" ")
        if len(fields) != 5 or not all(_CRON_FIELD.match(field) for field in fields):
            raise ValueError(
                f"{value!r} is not 5 cron fields separated by single spaces or one of "
                + ", ".join(sorted(_CRON_SPECIAL))
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if "%" in value:
            # cron turns an unescaped % into a newline: refuse rather than guess.
            raise ValueError("must not contain '%' (cron treats it as a newline)")
        return value

    def unique_keys(self) -> dict[str, Any]:
        return {"unix_user_id+name": (self.unix_user_id, self.name)}


class FpmPool(CcmObject):
    TYPE: ClassVar[str] = "fpm-pools"
    REFERENCES: ClassVar[dict[str, str]] = {"unix_user_id": "unix-users"}
    name: str = Field(pattern=r"^[a-z0-9_-]+$", max_length=64)
    unix_user_id: ObjectId
    php_version: PhpVersion
    max_children: int = Field(default=5, ge=1, le=1000, strict=True)
    php_settings: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("php_settings")
    @classmethod
    def _php_settings(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for name, setting in value.items():
            if not re.match(r"^[a-z][a-z0-9_.]*$", name):
                raise ValueError(f"setting name {name!r} must match ^[a-z][a-z0-9_.]*$")
            if isinstance(setting, str) and (_CONTROL.search(setting) or '"' in setting):
                raise ValueError(f"setting {name!r}: value must not hold '\"' or control chars")
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


class VirtualHost(CcmObject):
    TYPE: ClassVar[str] = "virtual-hosts"
    REFERENCES: ClassVar[dict[str, str]] = {
        "unix_user_id": "unix-users",
        "fpm_pool_id": "fpm-pools",
    }
    domain: Hostname
    server_aliases: list[Alias] = Field(default_factory=list)
    unix_user_id: ObjectId
    document_root: AbsolutePath
    fpm_pool_id: ObjectId | None = None
    #: with a pool, unknown paths go to /index.php (WordPress, Laravel); False: plain 404s
    front_controller: bool = Field(default=True, strict=True)

    def unique_keys(self) -> dict[str, Any]:
        return {"domain": self.domain}


class MailAccount(CcmObject):
    TYPE: ClassVar[str] = "mail-accounts"
    local_part: str = Field(pattern=r"^[a-z0-9]([a-z0-9._+-]{0,62}[a-z0-9])?$")
    domain: Hostname
    password_hash: str = Field(
        pattern=r"^(\{[A-Z0-9.-]+\})?\$[0-9a-z]+(\$[A-Za-z0-9=,]+)?\$[./A-Za-z0-9$]+$",
        max_length=512,
    )
    quota_mib: int | None = Field(default=None, ge=1, strict=True)

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"

    def unique_keys(self) -> dict[str, Any]:
        return {"address": self.address}


class Cluster(CcmObject):
    TYPE: ClassVar[str] = "clusters"
    php_versions: list[PhpVersion] = Field(default_factory=list)

    @field_validator("php_versions")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("PHP versions must be distinct")
        return value
