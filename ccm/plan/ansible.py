"""Ansible playbooks through ansible-runner, which runs in a process of its own.

A ``Playbook`` change names a playbook in the playbooks folder (``settings.ansible.
playbooks_dir``, empty: the ``playbooks/`` folder of this checkout). ``AnsiblePlaybooks``
runs it against ``localhost ansible_connection=local``:

* in a fresh interpreter (``python -m ccm.plan.ansible_child``, started with vfork and
  exec), never in this process: ansible-runner's pexpect forks the process that calls it,
  and a forked ccm process — whose etcd client has gRPC threads — can abort before it
  execs ``ansible-playbook`` (``ansible_child`` tells why); its events come back over a
  pipe, as they happen;
* in a private temporary data dir per run, removed afterwards (ansible's own temporary
  files go there too);
* with the extra-vars of ``extra_vars()``: ``ansible_python_interpreter`` (this Python, so
  interpreter discovery never picks a broken shim), then ``settings.ansible.extra_vars``,
  then the plan's, then ``ccm_root`` (the settings root, so tasks can work under a
  temporary root; it cannot be overridden);
* with ``settings.ansible.timeout``, and ``cancel`` asked twice a second (a true answer
  stops the run), quietly (nothing on stdout): every task result goes to structlog
  instead (task, host, item, changed, failed);
* with the ``ansible-playbook`` next to this Python (the venv ccm runs from) first on PATH;
* leaving nothing behind: processes of a run that outlive ``ansible-playbook`` (after a
  timeout) are stopped, and the caller's signal handlers stay in place.

``__call__`` runs for real and raises ``PlaybookFailed`` (the failing task and its
message) — it is the executor's ``PlaybookExecutor``. ``check`` runs in check mode with
diff and returns a ``PlaybookPreview``: the tasks that would change and their diffs.

``fingerprint`` is a digest of everything a run depends on, so the engine can skip a
playbook whose inputs did not change since its last successful run.

Only ``ansible_child`` imports ``ansible_runner``: this module does not import it at all,
so a ``ccm`` command that runs no playbook never pays for importing Ansible.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccm.errors import PlaybookFailed
from ccm.log import get_logger
from ccm.plan.changes import Playbook
from ccm.plan.resources import resource_dir
from ccm.settings import Settings

#: Every playbook runs on the node itself.
INVENTORY = "localhost ansible_connection=local"
#: Bumped when what ``fingerprint`` covers changes, so old fingerprints never match.
FINGERPRINT_VERSION = b"ccm-playbook-fingerprint-1"
#: An environment variable every process of one run inherits (ansible-playbook, its
#: workers, their modules and what those start), so none of them outlives the run.
_MARKER = "CCM_ANSIBLE_RUN"
#: How often ansible-runner checks the timeout, and this process the ``cancel`` callback.
_POLL_SECONDS = 0.5
#: The module that runs ansible-runner, in a fresh interpreter.
_CHILD = "ccm.plan.ansible_child"
#: How long the child may outlive its timeout, or a cancel, before it is killed: ansible-
#: runner ends a run itself then, within ``_POLL_SECONDS`` and a few seconds to stop it.
_GRACE = 30.0
#: How much of a failing task's output goes into the error.
_MESSAGE_LINES = 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: ansible-runner events that carry a task result, and the outcome each means
_OUTCOMES = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
    "runner_on_async_ok": "ok",
    "runner_on_async_failed": "failed",
    "runner_item_on_ok": "ok",
    "runner_item_on_failed": "failed",
    "runner_item_on_skipped": "skipped",
}


def default_playbooks_dir() -> Path:
    """The playbooks shipped in the package, or the checkout's ``playbooks/`` folder."""
    return resource_dir("playbooks")


def playbooks_dir(settings: Settings) -> Path:
    configured = settings.ansible.playbooks_dir
    return Path(configured) if configured else default_playbooks_dir()


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskChange:
    """A task (one loop item of it, if it loops) that changed — or would, in check mode."""

    task: str
    item: str = ""
    #: text lines (no newlines): unified diffs, or ansible's prepared diff text
    diff: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.task} ({self.item})" if self.item else self.task


@dataclass(frozen=True)
class PlaybookResult:
    """What one ansible-runner run of a playbook came to."""

    playbook: str
    #: ansible-runner's status: successful, failed, timeout or canceled
    status: str
    rc: int
    changed: tuple[TaskChange, ...] = ()
    failed_task: str | None = None
    message: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0 and self.failed_task is None


@dataclass(frozen=True)
class PlaybookPreview:
    """What a playbook would change (``check``): nothing was changed to find out."""

    configuration: str
    playbook: str
    changes: tuple[TaskChange, ...] = field(default_factory=tuple)

    @property
    def would_change(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        """Text lines for ``ccm diff``: one per changing task (and item), then its diff."""
        if not self.changes:
            return [f"playbook {self.playbook}: no change"]
        out = [f"playbook {self.playbook}: {len(self.changes)} change(s)"]
        for change in self.changes:
            out.append(f"~ {change.label}")
            out.extend(f"    {line}" for line in change.diff)
        return out


# --- fingerprint -----------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace; values JSON lacks (dates) become strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(playbook: Playbook, playbooks_dir: Path) -> str:
    """A sha256 (hex) of everything a run of ``playbook`` depends on.

    Covered: the playbook's name, the canonical JSON of ``playbook.extra_vars``, and the
    relative path and bytes of every file under ``playbooks_dir`` (the playbook itself,
    its templates, files, roles, an ``ansible.cfg``…) — all of them rather than only what
    the playbook references, which cannot be known without running Ansible. ``__pycache__``
    folders are left out. A change to any playbook file thus re-runs every playbook,
    which is cheap: there are few. Pure: reads only those files.

    ``AnsiblePlaybooks.fingerprint`` fingerprints the full extra-vars a run passes
    (settings' extra-vars, ``ccm_root``, the interpreter); use that one when a run is
    to be skipped.
    """
    digest = hashlib.sha256(FINGERPRINT_VERSION + b"\0")
    digest.update(playbook.playbook.encode() + b"\0")
    digest.update(canonical_json(dict(playbook.extra_vars)).encode() + b"\0")
    files = sorted(
        path
        for path in playbooks_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.relative_to(playbooks_dir).parts
    )
    for path in files:
        data = path.read_bytes()
        name = path.relative_to(playbooks_dir).as_posix().encode()
        digest.update(b"%s\0%d\0" % (name, len(data)))
        digest.update(data)
    return digest.hexdigest()


# --- the runner ------------------------------------------------------------------------


class AnsiblePlaybooks:
    """Runs the playbooks of ``Playbook`` changes through ansible-runner."""

    def __init__(
        self,
        settings: Settings,
        *,
        cancel: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``cancel``, asked while a playbook runs: true stops it (``PlaybookFailed``).
        ``clock`` times the backstop: a child that outlives the timeout, or a cancel, by
        ``_GRACE`` seconds is killed.

        Without one, a run is never cancelled. This process's signal handlers are never
        touched: ansible-runner runs in a child, and installs its SIGTERM handler there
        (it would, called in this process's main thread, keep it after the run, silently
        replacing the daemon's).
        """
        self.settings = settings
        self.playbooks_dir = playbooks_dir(settings)
        self.timeout = settings.ansible.timeout
        self.cancel: Callable[[], bool] = cancel or (lambda: False)
        self.clock = clock
        self.log = get_logger(node=settings.node)

    def extra_vars(self, playbook: Playbook) -> dict[str, Any]:
        """The extra-vars a run of ``playbook`` gets, as the JSON values Ansible sees."""
        merged: dict[str, Any] = {
            "ansible_python_interpreter": sys.executable,
            **self.settings.ansible.extra_vars,
            **playbook.extra_vars,
            "ccm_root": str(self.settings.root),
        }
        loaded: dict[str, Any] = json.loads(canonical_json(merged))
        return loaded

    def fingerprint(self, playbook: Playbook) -> str:
        """``fingerprint`` of the playbook with the full extra-vars of a run."""
        return fingerprint(
            Playbook(playbook.playbook, self.extra_vars(playbook)), self.playbooks_dir
        )

    def __call__(self, configuration: str, playbook: Playbook) -> None:
        """Run the playbook for real; ``PlaybookFailed`` if it does not succeed."""
        self.run(configuration, playbook)

    def check(self, configuration: str, playbook: Playbook) -> PlaybookPreview:
        """Run in check mode with diff: what would change. ``PlaybookFailed`` if it fails."""
        result = self.run(configuration, playbook, check=True)
        return PlaybookPreview(configuration, playbook.playbook, result.changed)

    def run(self, configuration: str, playbook: Playbook, *, check: bool = False) -> PlaybookResult:
        """One ansible-runner run; raises ``PlaybookFailed`` unless it succeeded."""
        log = self.log.bind(configuration=configuration, playbook=playbook.playbook, check=check)
        path = self.playbooks_dir / playbook.playbook
        inside = path.resolve().is_relative_to(self.playbooks_dir.resolve())
        if not inside or not path.is_file():
            raise PlaybookFailed(
                configuration,
                playbook.playbook,
                "(start)",
                f"no such playbook in {self.playbooks_dir}",
            )
        started = time.monotonic()
        events = _Events(log)
        log.info("playbook start")
        marker = f"{_MARKER}={uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="ccm-ansible-") as private:
            try:
                status, rc, stdout = self._run_in_child(
                    Path(private), playbook, events, check, marker
                )
            except Exception as error:  # ansible-runner could not even start the run
                raise PlaybookFailed(
                    configuration, playbook.playbook, "(ansible-runner)", str(error)
                ) from error
            finally:
                stopped = stop_leftovers(marker)
                if stopped:
                    log.warning("stopped processes the run left behind", pids=stopped)
        result = events.result(playbook.playbook, status, rc, stdout, time.monotonic() - started)
        if status in ("timeout", "canceled"):
            why = f"timed out after {self.timeout} s" if status == "timeout" else "cancelled"
            result = PlaybookResult(
                result.playbook,
                status,
                rc,
                result.changed,
                events.current_task or f"({status})",
                why,
                result.duration,
            )
        log.info(
            "playbook end",
            status=result.status,
            rc=result.rc,
            changed=len(result.changed),
            failed_task=result.failed_task,
            seconds=round(result.duration, 2),
        )
        if not result.ok:
            raise PlaybookFailed(
                configuration,
                playbook.playbook,
                result.failed_task or "(playbook)",
                result.message or f"ansible-playbook ended with {result.status} (rc {result.rc})",
            )
        return result

    def _run_in_child(
        self, private: Path, playbook: Playbook, events: _Events, check: bool, marker: str
    ) -> tuple[str, int, str]:
        """Run ansible-runner in a fresh interpreter (``ccm.plan.ansible_child``).

        Never in this process: pexpect would fork it, and a fork of a process with gRPC
        threads (the etcd client's) can abort in the child (see ``ansible_child``).
        ``subprocess.Popen`` without ``preexec_fn`` or user/group changes uses vfork and
        exec, which runs no fork handler here and no Python in the child. Its own session
        keeps a terminal's Ctrl-C away from it: the daemon's handler decides (``cancel``).
        """
        temp = private / "tmp"
        temp.mkdir()
        # how often ansible-runner looks at the timeout and its cancel flag (default:
        # 5 s); read only from this file (a ``settings`` argument is dropped without it)
        (private / "env").mkdir()
        (private / "env/settings").write_text(json.dumps({"pexpect_timeout": _POLL_SECONDS}))
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join([venv_bin, os.environ.get("PATH", os.defpath)])
        request: dict[str, Any] = {
            "private_data_dir": str(private),
            "project_dir": str(self.playbooks_dir),
            "playbook": playbook.playbook,
            "inventory": INVENTORY,
            "extravars": self.extra_vars(playbook),
            "envvars": {
                "PATH": path,
                "ANSIBLE_LOCAL_TEMP": str(temp),
                "ANSIBLE_REMOTE_TEMP": str(temp),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                # the module goes to the interpreter on stdin: no temp directory made,
                # chmodded and removed through three shells per task
                "ANSIBLE_PIPELINING": "1",
            },
            "timeout": self.timeout,
        }
        if check:
            request["cmdline"] = "--check --diff"
        (private / "request.json").write_text(json.dumps(request))
        name, _, value = marker.partition("=")
        with (
            open(private / "child.log", "w+b") as errors,
            subprocess.Popen(
                [sys.executable, "-m", _CHILD, str(private / "request.json")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=private,
                env={**os.environ, "PATH": path, name: value},
                close_fds=True,
                start_new_session=True,
            ) as child,
        ):
            try:
                last, ended = self._follow(child, events)
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait()
            if ended:
                return ended, -1, ""
            if last is not None and "result" in last:
                result = last["result"]
                return str(result["status"]), int(result["rc"]), str(result["stdout"])
            if last is not None and "error" in last:
                raise RuntimeError(str(last["error"]))
            errors.seek(0)
            said = _tail(errors.read().decode(errors="replace"))
            raise RuntimeError(
                f"the Ansible process ended ({_exit(child.returncode)}) without a result"
                + (f": {said}" if said else "")
            )

    def _follow(
        self, child: subprocess.Popen[bytes], events: _Events
    ) -> tuple[dict[str, Any] | None, str]:
        """Hand the child's events to ``events`` until its output ends.

        Returns its last message that is not an event, and ``"timeout"`` or
        ``"canceled"`` if it had to be killed (it outlived the timeout, or a cancel, by
        ``_GRACE`` seconds), else ``""``. ``cancel`` is asked every ``_POLL_SECONDS``; a
        true answer sends the child SIGTERM, which cancels the run in ansible-runner.
        """
        assert child.stdout is not None
        stream = child.stdout.fileno()
        deadline = self.clock() + self.timeout + _GRACE
        cancelled = False
        last: dict[str, Any] | None = None
        pending = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while True:
                if not cancelled and self.cancel():
                    cancelled = True
                    child.send_signal(signal.SIGTERM)
                    deadline = min(deadline, self.clock() + _GRACE)
                if self.clock() > deadline:
                    child.kill()
                    return last, "canceled" if cancelled else "timeout"
                if not selector.select(_POLL_SECONDS):
                    continue
                chunk = os.read(stream, 1 << 16)
                if not chunk:
                    return last, ""
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    message: dict[str, Any] = json.loads(line)
                    if "event" in message:
                        events.handle(message["event"])
                    else:
                        last = message


def _exit(returncode: int) -> str:
    """An exit status in words: ``exit 3``, ``killed by SIGABRT``."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


# --- leftovers ---------------------------------------------------------------------------


def _processes_with(marker: str) -> list[int]:
    """Ids of this user's processes whose environment holds ``marker`` (``NAME=value``)."""
    wanted = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone already, or another user's
            continue
        if wanted in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop_leftovers(marker: str, grace: float = 2.0) -> list[int]:
    """Stop what a run left running: SIGTERM, then SIGKILL after ``grace`` seconds.

    When ansible-runner stops ``ansible-playbook`` (a timeout), Ansible's workers — each
    in a session of its own — and the modules they run (an ``apt-get``, a ``sleep``) go
    on. They all carry the run's marker in their environment; services started through
    systemd do not. Returns the ids it signalled.
    """
    if not Path("/proc/self/environ").exists():  # not Linux: nothing to look at
        return []
    pids = _processes_with(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _processes_with(marker):
            time.sleep(0.05)
        if not _processes_with(marker):
            break
    return pids


# --- events ------------------------------------------------------------------------------


class _Events:
    """Collects ansible-runner events into a ``PlaybookResult`` and logs each task result."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.current_task: str | None = None
        self.changed: list[TaskChange] = []
        self.failed_task: str | None = None
        self.message = ""
        #: the message of a failed loop item, for the loop's generic "items failed" result
        self._item_failure: dict[str, str] = {}

    def handle(self, event: Mapping[str, Any]) -> bool:
        kind = str(event.get("event", ""))
        data: Mapping[str, Any] = event.get("event_data") or {}
        task = str(data.get("task") or "")
        if kind == "playbook_on_task_start":
            self.current_task = task
            return True
        outcome = _OUTCOMES.get(kind)
        if outcome is None:  # starts, file diffs (the ok event carries them too), stats…
            return True
        res: Mapping[str, Any] = data.get("res") or {}
        item = _label(res) if kind.startswith("runner_item_on_") else ""
        is_loop = not item and "results" in res  # the summary of a loop: items came first
        ignored = bool(data.get("ignore_errors"))
        failed = outcome in ("failed", "unreachable") and not ignored
        changed = bool(res.get("changed")) and outcome == "ok"
        getattr(self.log, "debug" if outcome == "skipped" else "info")(
            "ansible task",
            task=task,
            host=data.get("host"),
            item=item or None,
            changed=changed,
            failed=failed,
            **({"ignored": True} if ignored and outcome != "ok" else {}),
        )
        if changed and not is_loop:
            self.changed.append(TaskChange(task, item, tuple(diff_lines(res))))
        if failed:
            message = failure_message(res)
            if item:
                self._item_failure.setdefault(task, f"{item}: {message}")
            else:  # the last failure is the one that ended the play (earlier ones were rescued)
                self.failed_task = task
                self.message = self._item_failure.get(task, message) if is_loop else message
        return True

    def result(
        self, playbook: str, status: str, rc: int, stdout: str, duration: float
    ) -> PlaybookResult:
        succeeded = status == "successful" and rc == 0
        if succeeded:  # a failure a rescue block handled is no failure of the playbook
            return PlaybookResult(playbook, status, rc, tuple(self.changed), duration=duration)
        message = self.message
        if self.failed_task is None:  # a syntax error, an undefined variable in the play…
            message = _tail(_ANSI.sub("", stdout))
        return PlaybookResult(
            playbook, status, rc, tuple(self.changed), self.failed_task, message, duration
        )


def _label(res: Mapping[str, Any]) -> str:
    label = res.get("_ansible_item_label", res.get("item", ""))
    return label if isinstance(label, str) else canonical_json(label)


def _tail(text: str, lines: int = _MESSAGE_LINES) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def failure_message(res: Mapping[str, Any]) -> str:
    """A failed task's message: ansible's ``msg``, plus the tail of stderr (or stdout) and
    the exit code of a command."""
    parts = [str(res.get("msg") or "").strip()]
    output = str(res.get("stderr") or res.get("stdout") or "").strip()
    if output and output not in parts[0]:
        parts.append(_tail(output))
    if isinstance(res.get("rc"), int) and res.get("rc") != 0:
        parts[0] = f"{parts[0]} (rc {res['rc']})".strip()
    return "\n".join(part for part in parts if part) or "failed (no message)"


def diff_lines(res: Mapping[str, Any]) -> list[str]:
    """The diffs of one task result as text lines.

    Ansible's ``diff`` is a dict or a list of dicts: ``before``/``after`` as text (file
    contents) or as dicts (a path's state, shown as ``key: value`` lines), with optional
    headers, or a ``prepared`` text (apt's package list).
    """
    raw = res.get("diff") or []
    diffs = [raw] if isinstance(raw, Mapping) else list(raw)
    target = _target(res)
    lines: list[str] = []
    for diff in diffs:
        if not isinstance(diff, Mapping):
            continue
        if diff.get("prepared"):
            lines.extend(str(diff["prepared"]).splitlines())
            continue
        before, after = _diff_text(diff.get("before")), _diff_text(diff.get("after"))
        if before == after:
            continue
        before_name = str(diff.get("before_header") or target or "before")
        after_name = target or str(diff.get("after_header") or "after")
        lines.extend(
            difflib.unified_diff(
                before.splitlines(),
                after.splitlines(),
                fromfile=f"{before_name} (before)",
                tofile=f"{after_name} (after)",
                lineterm="",
            )
        )
    return lines


def _target(res: Mapping[str, Any]) -> str:
    """The path a file task is about (``dest``/``path``; a template that would create a
    file in check mode has them only among its arguments)."""
    invocation = res.get("invocation") or {}
    arguments = invocation.get("module_args") or {} if isinstance(invocation, Mapping) else {}
    for source in (res, arguments, invocation):
        if isinstance(source, Mapping):
            for key in ("dest", "path"):
                if source.get(key):
                    return str(source[key])
    return ""


def _diff_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return "".join(
            f"{key}: {item if isinstance(item, str) else canonical_json(item)}\n"
            for key, item in sorted(value.items())
        )
    return str(value)
