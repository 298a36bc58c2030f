"""A temporary node root for tests: its own etc/passwd, group, shadow, gshadow.

``useradd --prefix ROOT`` edits these copies, never the machine's own files. Commands
that would touch the real system (``systemctl reload``, a check, a probe) point at
harmless real commands that append a line to ``ROOT/actions.log``, so tests can assert
which reloads ran, in which order (``actions(root)``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ccm.settings import CommandSettings, Settings

ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow", "login.defs")

#: groups a node has that a minimal container may lack: the crons and mail accounts
#: configurations chown files to them
EXTRA_GROUPS = ("crontab", "dovecot", "redis")


#: the PHP versions a seeded node has installed (this machine's php8.2-fpm): a pool of a
#: version no ``clusters`` object lists applies only where its ``pool.d/`` exists
INSTALLED_PHP = ("8.2",)


def seed_root(
    root: Path,
    *,
    extra_groups: tuple[str, ...] = EXTRA_GROUPS,
    php_versions: tuple[str, ...] = INSTALLED_PHP,
) -> Path:
    """Make ``root`` a node root: copies of this machine's account files under
    ``root/etc``, plus the ``extra_groups`` it lacks, and the ``pool.d/`` of each of the
    ``php_versions`` (what Debian's phpX.Y-fpm package ships). Returns ``root``."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for version in php_versions:
        (etc / f"php/{version}/fpm/pool.d").mkdir(parents=True, exist_ok=True)
    for name in ACCOUNT_FILES:
        source = Path("/etc") / name
        if source.exists():
            shutil.copy2(source, etc / name)
    group_text = (etc / "group").read_text()
    gshadow = etc / "gshadow"
    next_gid = 9000
    for group in extra_groups:
        if not any(line.startswith(f"{group}:") for line in group_text.splitlines()):
            group_text += f"{group}:x:{next_gid}:\n"
            if gshadow.exists():
                gshadow.write_text(gshadow.read_text() + f"{group}:!::\n")
            next_gid += 1
    (etc / "group").write_text(group_text)
    return root


#: where Debian's libnss-extrausers installs the NSS module
NSS_EXTRAUSERS = Path("/usr/lib/libnss_extrausers.so.2")


def prepare_extrausers_image(root: Path) -> Path:
    """Make ``root`` what a node image with libnss-extrausers installed and set up
    has: the NSS module (a copy of this machine's) and an nsswitch.conf that names
    ``extrausers`` after ``files``. ccm then skips its playbook on the first run."""
    if not NSS_EXTRAUSERS.is_file():
        raise FileNotFoundError(f"{NSS_EXTRAUSERS}: install libnss-extrausers")
    target = root / NSS_EXTRAUSERS.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NSS_EXTRAUSERS, target)
    (root / "etc/nsswitch.conf").write_text(
        "passwd:         files extrausers systemd\n"
        "group:          files extrausers systemd\n"
        "shadow:         files extrausers\n"
        "hosts:          files dns\n"
    )
    return root


def logging_command(root: Path, what: str) -> list[str]:
    """A real command that records ``what`` (with placeholders) in ROOT/actions.log."""
    return ["sh", "-c", f'echo "$1" >> "{root}/actions.log"', "sh", what]


#: the checks the built-in configurations declare, as logging commands
BUILTIN_CHECKS = ("nginx_check", "php_fpm_check")
#: the probes they declare, passing (``true``): no test node runs nginx on port 80
BUILTIN_PROBES = ("nginx_probe", "php_fpm_probe")
#: what a logged check writes to actions.log (another check writes ``check <name>``)
_CHECK_LOGS = {"nginx_check": "check nginx", "php_fpm_check": "check php{version}"}
#: checks an earlier spelling put under ``[commands]``
_CHECKS_UNDER_COMMANDS = ("nginx_check", "php_fpm_check")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def harmless_commands(root: Path) -> dict[str, list[str]]:
    """Every ``[commands]`` argv made harmless for a node at ``root``.

    A command whose default already works under ``{root}`` (``useradd --prefix``) keeps
    it: the account files it edits are the root's copies. Every other one (reload,
    restart, any unit action) logs ``<verb> <its placeholders>`` instead, for example
    ``reload {unit}``, ``restart {unit}``, ``daemon-reload``: a command added to the
    settings later is harmless here without a change.
    """
    commands: dict[str, list[str]] = {}
    for name, field in CommandSettings.model_fields.items():
        default = field.default
        if not isinstance(default, tuple) or "{root}" in default:
            continue
        verb = name.removesuffix("_unit").replace("_", "-")
        placeholders = _PLACEHOLDER.findall(" ".join(default))
        commands[name] = logging_command(root, " ".join([verb, *placeholders]))
    return commands


def node_settings(
    root: Path,
    *,
    logged_checks: Iterable[str] = BUILTIN_CHECKS,
    passing_probes: Iterable[str] = BUILTIN_PROBES,
    **overrides: Any,
) -> Settings:
    """Settings for a node rooted at ``root``: reloads, unit actions and the
    ``logged_checks`` (the names the registry in use declares; ccm refuses others) log
    to ROOT/actions.log, the ``passing_probes`` pass. ``overrides`` are settings keys;
    ``commands``, ``checks`` and ``probes`` are merged over these defaults."""
    commands: dict[str, Any] = {**harmless_commands(root), **overrides.pop("commands", {})}
    moved = {name: commands.pop(name) for name in _CHECKS_UNDER_COMMANDS if name in commands}
    checks = {
        name: logging_command(root, _CHECK_LOGS.get(name, f"check {name}"))
        for name in logged_checks
    }
    overrides["checks"] = {**checks, **moved, **overrides.get("checks", {})}
    passing = {name: ["true"] for name in passing_probes}
    overrides["probes"] = {**passing, **overrides.get("probes", {})}
    return Settings.model_validate(
        {"node": "test", "root": str(root), "commands": commands, **overrides}
    )


def actions(root: Path) -> list[str]:
    """The lines the logging commands wrote, oldest first (none yet: ``[]``)."""
    log = root / "actions.log"
    return log.read_text().splitlines() if log.exists() else []
