"""Settings: one TOML file plus ``CCM_*`` environment overrides, validated by pydantic.

Every key is optional; an unknown key or a bad value raises ``SettingsError`` naming the
key (``etcd.endpoints``, ``debounce.quiet``…), one line, never a traceback. Numbers are
strict: ``ttl = "30"`` is refused, not read as 30. The root must be an existing directory:
ccm never creates it (a typo would otherwise become a fresh, empty node). Settings are
passed explicitly to whoever needs them; nothing here is global.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ccm.errors import SettingsError

DEFAULT_CONFIG_PATH = Path("/etc/ccm/ccm.toml")

_Strict = ConfigDict(extra="forbid", frozen=True)


class EtcdSettings(BaseModel):
    model_config = _Strict
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    prefix: str = "/ccm"
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = Field(default="", repr=False)
    timeout: float = Field(default=10.0, gt=0, strict=True)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one endpoint is needed")
        for endpoint in value:
            if not endpoint.startswith(("http://", "https://")) or ":" not in endpoint[8:]:
                raise ValueError(f"{endpoint!r} is not of the form http(s)://host:port")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError(f"{value!r} must start with '/' and not end with '/'")
        return value


class DebounceSettings(BaseModel):
    model_config = _Strict
    quiet: float = Field(default=10.0, ge=0, strict=True)
    max_wait: float = Field(default=60.0, ge=0, strict=True)


class LockSettings(BaseModel):
    model_config = _Strict
    ttl: int = Field(default=30, ge=2, strict=True)


class CommandSettings(BaseModel):
    """External commands as argv lists; ``{placeholders}`` are filled in per use."""

    model_config = _Strict
    reload_unit: tuple[str, ...] = ("systemctl", "reload", "{unit}")
    restart_unit: tuple[str, ...] = ("systemctl", "restart", "{unit}")
    useradd: tuple[str, ...] = (
        "useradd",
        "--prefix",
        "{root}",
        "--uid",
        "{uid}",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "{home}",
        "--shell",
        "{shell}",
        "--comment",
        "{comment}",
        "{username}",
    )
    usermod: tuple[str, ...] = (
        "usermod",
        "--prefix",
        "{root}",
        "--shell",
        "{shell}",
        "--comment",
        "{comment}",
        "{username}",
    )
    userdel: tuple[str, ...] = ("userdel", "--prefix", "{root}", "{username}")
    timeout: float = Field(default=300.0, gt=0, strict=True)

    @field_validator(
        "reload_unit",
        "restart_unit",
        "useradd",
        "usermod",
        "userdel",
    )
    @classmethod
    def _argv(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not value[0]:
            raise ValueError("must be a non-empty argv list")
        return value


#: an account's uid is uid_base + the unix-users object id (and its group's gid too)
DEFAULT_UID_BASE = 20000


class AccountSettings(BaseModel):
    model_config = _Strict
    uid_base: int = Field(default=DEFAULT_UID_BASE, ge=1000, le=2_000_000_000, strict=True)


class BackoffSettings(BaseModel):
    """The one retry policy (``ccm.cluster.backoff``): ``initial`` doubling up to ``max``."""

    model_config = _Strict
    initial: float = Field(default=0.5, gt=0, strict=True)
    max: float = Field(default=10.0, gt=0, strict=True)

    @model_validator(mode="after")
    def _ordered(self) -> BackoffSettings:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) must not exceed max ({self.max})")
        return self


class HistorySettings(BaseModel):
    model_config = _Strict
    #: runs kept per node under {prefix}/history/<node>/ (the oldest are pruned)
    keep: int = Field(default=100, ge=1, le=100_000, strict=True)


class MetricsSettings(BaseModel):
    model_config = _Strict
    #: "host:port" of the Prometheus endpoint (/metrics); empty: no endpoint
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value!r} is not host:port")
        return value


class RolloutSettings(BaseModel):
    model_config = _Strict
    #: the first N nodes to take a revision apply it; the others wait for the soak
    canary: int = Field(default=0, ge=0, strict=True)
    #: seconds the others wait after the canaries, while the canaries' probes must pass
    soak: float = Field(default=0.0, ge=0, strict=True)
    #: how long a failing probe is retried after the reloads before the run fails
    probe_timeout: float = Field(default=15.0, ge=0, strict=True)
    probe_interval: float = Field(default=0.5, gt=0, strict=True)


class AnsibleSettings(BaseModel):
    model_config = _Strict
    playbooks_dir: str = ""  # empty: the playbooks/ folder of this checkout
    timeout: int = Field(default=1800, ge=1, strict=True)
    extra_vars: dict[str, Any] = Field(default_factory=dict)


#: checks DESIGN.md spells under ``[commands]``: read as ``[checks]`` entries
_CHECKS_UNDER_COMMANDS = ("nginx_check", "php_fpm_check")


class Settings(BaseModel):
    model_config = _Strict
    node: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    root: Path = Path("/")
    reconcile_interval: float = Field(default=3600.0, ge=0, strict=True)
    state_dir: str = "/var/lib/ccm"  # under root: what ccm wrote, per configuration
    templates_dir: str = ""  # empty: the templates/ folder of this checkout
    log_format: str = Field(default="auto", pattern="^(auto|console|json)$")
    etcd: EtcdSettings = EtcdSettings()
    debounce: DebounceSettings = DebounceSettings()
    lock: LockSettings = LockSettings()
    commands: CommandSettings = CommandSettings()
    accounts: AccountSettings = AccountSettings()
    ansible: AnsibleSettings = AnsibleSettings()
    history: HistorySettings = HistorySettings()
    backoff: BackoffSettings = BackoffSettings()
    rollout: RolloutSettings = RolloutSettings()
    metrics: MetricsSettings = MetricsSettings()
    #: argv overrides of the checks the configurations declare, by name; an unknown
    #: name is refused when ccm starts (``ccm.engine.run.resolve_checks``)
    checks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: argv overrides of the health probes the configurations declare, by name
    probes: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _checks_under_commands(cls, data: Any) -> Any:
        """``[commands] nginx_check = [...]`` (DESIGN's spelling) is ``[checks] nginx_check``."""
        if not isinstance(data, dict) or not isinstance(data.get("commands"), dict):
            return data
        commands = dict(data["commands"])
        moved = {name: commands.pop(name) for name in _CHECKS_UNDER_COMMANDS if name in commands}
        if not moved:
            return data
        checks = data.get("checks")
        explicit: dict[str, Any] = checks if isinstance(checks, dict) else {}
        return {**data, "commands": commands, "checks": {**moved, **explicit}}

    @field_validator("checks", "probes")
    @classmethod
    def _check_argv(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, argv in value.items():
            if not argv or not argv[0]:
                raise ValueError(f"{name}: must be a non-empty argv list")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: Path) -> Path:
        if "\x00" in str(value):
            raise ValueError("must not contain a NUL character")
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} must be an absolute path")
        return value

    def under_root(self, path: str | Path) -> Path:
        """The real location of an absolute node path (``/etc/x``) under ``root``."""
        return self.root / str(path).lstrip("/")


_ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CCM_NODE": ("node",),
    "CCM_ROOT": ("root",),
    "CCM_ETCD_ENDPOINTS": ("etcd", "endpoints"),
    "CCM_ETCD_PREFIX": ("etcd", "prefix"),
}


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for variable, path in _ENV_OVERRIDES.items():
        if variable not in environ:
            continue
        value: Any = environ[variable]
        if path == ("etcd", "endpoints"):
            value = [part.strip() for part in value.split(",") if part.strip()]
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SettingsError(".".join(path[:-1]), "must be a table")
        target[path[-1]] = value


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``path`` (or ``CCM_CONFIG``, or the default) and the environment.

    A missing file is fine only when it is the default location; a file named explicitly
    must exist.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or "CCM_CONFIG" in environ
    config_path = path or Path(environ.get("CCM_CONFIG", str(DEFAULT_CONFIG_PATH)))
    data: dict[str, Any] = {}
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_bytes().decode())
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(str(config_path), f"not valid TOML: {error}") from None
        except UnicodeDecodeError as error:
            raise SettingsError(str(config_path), f"not UTF-8 text ({error.reason})") from None
        except OSError as error:
            raise SettingsError(str(config_path), f"cannot be read: {error.strerror}") from None
    elif explicit:
        raise SettingsError(str(config_path), "no such settings file")
    _apply_env(data, environ)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        reason = first["msg"] if first["type"] != "extra_forbidden" else "unknown key"
        raise SettingsError(key, reason) from None
    _check_root(settings.root)
    return settings


def _check_root(root: Path) -> None:
    """The root must exist and be a directory: it is never created."""
    try:
        if not root.is_dir():
            problem = "is not a directory" if root.exists() else "does not exist"
            raise SettingsError("root", f"{root} {problem} (ccm never creates the root)")
    except OSError as error:
        raise SettingsError("root", f"{root} cannot be used: {error.strerror}") from None
