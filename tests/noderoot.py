"""A temporary node root for tests: its own etc/passwd, group, shadow, gshadow.

``useradd --prefix ROOT`` edits these copies, never the machine's own files. Commands
that would touch the real system point at harmless real commands that append a line to
``ROOT/actions.log``, so tests can assert which reloads ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ccm.settings import Settings

ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow", "login.defs")


def seed_root(root: Path, *, extra_groups: tuple[str, ...] = ("crontab", "dovecot")) -> Path:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
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


def logging_command(root: Path, what: str) -> list[str]:
    """A real command that records ``what`` (with placeholders) in ROOT/actions.log."""
    return ["sh", "-c", f'echo "$1" >> "{root}/actions.log"', "sh", what]


#: the checks the built-in configurations declare, as logging commands
BUILTIN_CHECKS = ("nginx_check", "php_fpm_check")
#: the probes they declare, passing (``true``): no test node runs nginx on port 80
BUILTIN_PROBES = ("nginx_probe", "php_fpm_probe")


#: the unit lifecycle's commands, logged as ``<verb> <unit>``
UNIT_COMMANDS = {
    "start": "start_unit",
    "stop": "stop_unit",
    "enable": "enable_unit",
    "disable": "disable_unit",
}


def node_settings(
    root: Path,
    *,
    logged_checks: tuple[str, ...] = BUILTIN_CHECKS,
    passing_probes: tuple[str, ...] = BUILTIN_PROBES,
    **overrides: Any,
) -> Settings:
    """Settings for a node rooted at ``root``: reloads and the ``logged_checks`` (the names the
    registry in use declares; ccm refuses others) log to ROOT/actions.log, the
    ``passing_probes`` pass."""
    logged = {
        "nginx_check": logging_command(root, "check nginx"),
        "php_fpm_check": logging_command(root, "check php{version}"),
    }
    commands: dict[str, Any] = {
        "reload_unit": logging_command(root, "reload {unit}"),
        "restart_unit": logging_command(root, "restart {unit}"),
        **{
            setting: logging_command(root, f"{verb} {{unit}}")
            for verb, setting in UNIT_COMMANDS.items()
        },
        "daemon_reload": logging_command(root, "daemon-reload"),
        **{name: logged[name] for name in logged_checks},
    }
    commands |= overrides.pop("commands", {})
    passing = {name: ["true"] for name in passing_probes}
    overrides["probes"] = {**passing, **overrides.get("probes", {})}
    return Settings.model_validate(
        {"node": "test", "root": str(root), "commands": commands, **overrides}
    )


def actions(root: Path) -> list[str]:
    log = root / "actions.log"
    return log.read_text().splitlines() if log.exists() else []
