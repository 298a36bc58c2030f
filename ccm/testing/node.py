"""A node under a temporary root, driven through the real ``ccm`` command.

A plugin's test should exercise what an operator runs: the installed ``ccm`` entry
point, reading a settings file, loading the installed configurations through their
entry points, talking to a real etcd. ``CcmNode`` writes the settings file once and runs
``ccm objects put``, ``ccm apply``, ``ccm diff`` … as subprocesses, returning the exit
code and both outputs; the test then reads the files under the node's root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccm.settings import Settings
from ccm.testing.etcd import die_with_parent
from ccm.testing.noderoot import actions
from ccm.testing.settings_file import write_settings


class CcmCommandFailed(AssertionError):
    """A ``ccm`` command the test expected to succeed did not; the message carries the
    command, its exit code and its output."""


@dataclass(frozen=True)
class CliResult:
    """What one ``ccm`` command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"`{' '.join(self.argv)}` exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def ccm_executable() -> str:
    """The installed ``ccm`` command: the one beside this Python (a venv's ``bin``), else
    the one on ``PATH``."""
    beside = Path(sys.executable).parent / "ccm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ccm")
    if found is None:
        raise FileNotFoundError(
            f"no ccm command beside {sys.executable} or on PATH: install ccm in the "
            "environment that runs the tests"
        )
    return found


class CcmNode:
    """One node: ``settings`` (its root, its etcd prefix, harmless commands) written to
    ``config_path``, and the real ``ccm`` command run against them.

    ``env`` is added to the environment of every command (``PYTHONPATH`` of a plugin
    installed with ``pip --target``, say); ``CCM_*`` variables of the test process are
    dropped, so only the settings file counts.
    """

    def __init__(
        self,
        settings: Settings,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        executable: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = write_settings(settings, config_path)
        self.env = dict(env or {})
        self.timeout = timeout
        self.executable = executable or ccm_executable()

    @property
    def root(self) -> Path:
        """The node's root: every path the configurations write is under it."""
        return self.settings.root

    # -- the command line ----------------------------------------------------------------

    def ccm(self, *args: str, stdin: str | None = None, check: bool = False) -> CliResult:
        """Run ``ccm --config FILE ARGS…``; with ``check``, a non-zero exit raises
        ``CcmCommandFailed``."""
        argv = (self.executable, "--config", str(self.config_path), *args)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CCM_")}
        completed = subprocess.run(
            die_with_parent(list(argv)),  # a killed test leaves no ccm behind
            input=stdin or "",
            capture_output=True,
            text=True,
            env={**environ, **self.env},
            timeout=self.timeout,
            check=False,
        )
        result = CliResult(argv, completed.returncode, completed.stdout, completed.stderr)
        if check and result.returncode != 0:
            raise CcmCommandFailed(str(result))
        return result

    def put(self, type_name: str, objects: Any, *, check: bool = True) -> CliResult:
        """``ccm objects put TYPE -`` with ``objects`` (one object or a list; dicts or
        ``CcmObject``s) as JSON: the writer's validation and rules run, as for a Cluster
        API. ``check=False`` to look at a refusal (exit 1, the reason on stderr)."""
        items = objects if isinstance(objects, list | tuple) else [objects]
        payload = [_plain(item) for item in items]
        return self.ccm("objects", "put", type_name, "-", stdin=json.dumps(payload), check=check)

    def delete(self, type_name: str, object_id: int, *, check: bool = True) -> CliResult:
        """``ccm objects delete TYPE ID`` (refused while other objects refer to it)."""
        return self.ccm("objects", "delete", type_name, str(object_id), check=check)

    def objects(self, type_name: str, *, show_secrets: bool = False) -> list[dict[str, Any]]:
        """The stored objects of ``type_name`` (``ccm objects list``), as dicts; secret
        fields read ``"[secret]"`` unless ``show_secrets``."""
        args = ["objects", "list", type_name, *(["--show-secrets"] if show_secrets else [])]
        found: list[dict[str, Any]] = json.loads(self.ccm(*args, check=True).stdout)
        return found

    def apply(self, *args: str, check: bool = True) -> CliResult:
        """``ccm apply ARGS…`` (``"--all"`` for a full run): one run on this node, under
        the cluster lock. A failed run exits 1 and sets the halt flag."""
        return self.ccm("apply", *args, check=check)

    def diff(self, *args: str, check: bool = True) -> CliResult:
        """``ccm diff ARGS…``: exit 0 nothing to change, 2 changes shown on stdout;
        ``check`` raises only on an error (exit 1 or worse)."""
        result = self.ccm("diff", *args)
        if check and result.returncode not in (0, 2):
            raise CcmCommandFailed(str(result))
        return result

    # -- the node's files ----------------------------------------------------------------

    def path(self, node_path: str | Path) -> Path:
        """Where the node's absolute ``node_path`` (``/etc/motd.d/1``) is under the root."""
        return self.settings.under_root(node_path)

    def read(self, node_path: str | Path) -> str:
        """The text of the node's file ``node_path``."""
        return self.path(node_path).read_text()

    def actions(self) -> list[str]:
        """The reloads, unit actions and checks the runs logged so far, oldest first."""
        return actions(self.root)


def _plain(item: Any) -> Any:
    """A ``CcmObject`` as the JSON a Cluster API would send; anything else as it is."""
    dump = getattr(item, "model_dump", None)
    return dump(mode="json") if callable(dump) else item
