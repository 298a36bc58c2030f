"""A real cluster for tests and benchmarks: N ``ccm daemon`` processes against one etcd.

Each node is a real ``ccm --config <toml> daemon`` process with its own name, its own
temporary root (``seed_root``: its own etc/passwd…), its own settings file and its own
systemd notify socket (an abstract ``AF_UNIX`` datagram socket a harness thread drains,
as systemd would), so "the node is READY" is the daemon's own word, not a guess. Every
external command points at a harmless real command under the node's root:

* ``reload_unit`` appends ``reload <unit> start <epoch>`` and ``reload <unit> end
  <epoch>`` to ``ROOT/actions.log``; it sleeps for as many seconds as ``ROOT/slow``
  holds first (no file: no sleep), so a test makes one node's apply slow on purpose
  with :meth:`NodeProcess.set_slow`;
* ``nginx_check`` fails (exit 1, an nginx-like message) when a file under
  ``ROOT/etc/nginx/sites-enabled`` contains :data:`BROKEN_MARK`, so a test breaks the
  check by writing a vhost whose alias holds that mark, and fixes it by writing the
  vhost again without it;
* the other commands are ``logging_command`` lines.

A daemon runs in its own session (process group): :meth:`NodeProcess.kill` SIGKILLs the
group, as a crashed machine would lose the daemon and the command it was running, and
:meth:`NodeProcess.stop` sends SIGTERM to the daemon alone, then SIGKILLs the group after
a deadline. Every daemon's stdout and stderr (JSON log lines) go to ``<base>/<node>.log``;
:meth:`Cluster.close` stops every daemon whatever happened and :meth:`Cluster.report`
returns the logs' tails for a failing test to print. Waits poll etcd (or the notify
socket) against a deadline: :func:`wait_until`.

What the tests read back:

* :meth:`Cluster.records` — every ``nodes/<node>`` record now;
* :meth:`Cluster.run_history` — every record ever written, from a watch of
  ``{prefix}/nodes/`` from revision 1: the ``last_run`` of each run of each node
  (records are written inside the cluster lock, so their intervals must not overlap);
* :meth:`Cluster.status` — ``ccm status --json`` through the real CLI;
* :meth:`NodeProcess.log_events` — the daemon's JSON log lines, parsed.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.lock import LockEntry, lock_queue
from ccm.cluster.nodes import LastRun, NodeRecord, NodeRecords
from ccm.cluster.store import ObjectStore
from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer, die_with_parent
from ccm.testing.noderoot import harmless_commands, logging_command, seed_root

T = TypeVar("T")
C = TypeVar("C", bound="Cluster")

#: A vhost file holding this text makes the harness's ``nginx_check`` fail.
BROKEN_MARK = "fail-nginx-check"
#: What the failing check prints (and so what the halt record's error must carry).
CHECK_ERROR = "nginx: [emerg] invalid server_name"

CCM = str(Path(sys.executable).with_name("ccm"))
POLL = 0.05
STOP_TIMEOUT = 8.0

_sockets = itertools.count(1)


class HarnessError(AssertionError):
    """A wait ran out or a daemon died: the message says what was expected."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = POLL,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` every ``interval`` until it returns something truthy.

    Raises ``HarnessError`` naming ``what`` (and ``on_timeout()``'s text) after
    ``timeout`` seconds. Errors the condition raises propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{on_timeout()}" if on_timeout else ""
            raise HarnessError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(settings: Mapping[str, Any]) -> str:
    """Settings as TOML: top-level keys, then one table per nested mapping."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in settings.items() if not isinstance(v, Mapping)]
    for table, values in settings.items():
        if isinstance(values, Mapping):
            lines.append(f"\n[{table}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def node_commands(root: Path) -> dict[str, list[str]]:
    """The harness's commands for a node (see the module docstring)."""
    log = f"{root}/actions.log"
    reload = (
        'd=$(cat "$2/slow" 2>/dev/null || echo 0); '
        'echo "reload $1 start $(date +%s.%N)" >> "$2/actions.log"; '
        'sleep "$d"; '
        'echo "reload $1 end $(date +%s.%N)" >> "$2/actions.log"'
    )
    check = (
        f'if grep -rlF -- "{BROKEN_MARK}" "$1/etc/nginx/sites-enabled"; then '
        f'echo "{CHECK_ERROR} in the file(s) above" >&2; exit 1; fi; '
        f'echo "check nginx" >> "{log}"'
    )
    return {
        # every other command (start, stop, enable, disable, daemon-reload…) only logs
        **harmless_commands(root),
        "reload_unit": ["sh", "-c", reload, "sh", "{unit}", str(root)],
        "restart_unit": logging_command(root, "restart {unit}"),
        "nginx_check": ["sh", "-c", check, "sh", "{root}"],
        "php_fpm_check": logging_command(root, "check php{version}"),
    }


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def tree(root: Path, *, skip: Iterable[str] = ()) -> dict[str, tuple[str, int, bytes | None]]:
    """Every path under ``root`` → (kind, mode, content): a byte-for-byte picture."""
    skipped = set(skip)
    found: dict[str, tuple[str, int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative in skipped:
            continue
        info = path.lstat()
        if path.is_symlink():
            found[relative] = ("link", info.st_mode, os.readlink(path).encode())
        elif path.is_dir():
            found[relative] = ("dir", info.st_mode, None)
        else:
            found[relative] = ("file", info.st_mode, path.read_bytes())
    return found


class Notifications:
    """The notify socket one daemon sends ``READY=1``, ``STOPPING=1``… to.

    A reader thread drains it at once, as systemd does (an unread ``AF_UNIX`` datagram
    socket holds only ``net.unix.max_dgram_qlen`` messages, 10 by default: a daemon that
    sent more would block); ``drain=False`` leaves it unread on purpose.
    """

    def __init__(self, *, drain: bool = True) -> None:
        self.name = f"ccm-harness-{os.getpid()}-{next(_sockets)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())
        self.fields: list[str] = []
        self._changed = threading.Condition()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if drain:
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    @property
    def address(self) -> str:
        return "@" + self.name

    def _drain(self) -> None:
        while not self._closed.is_set():
            try:
                readable, _, _ = select.select([self.sock], [], [], 0.1)
                if not readable:
                    continue
                data = self.sock.recv(65536)
            except (OSError, ValueError):  # closed under us
                return
            with self._changed:
                self.fields.extend(data.decode(errors="replace").splitlines())
                self._changed.notify_all()

    def mark(self) -> int:
        """The number of fields received so far: pass it to :meth:`wait_for`."""
        with self._changed:
            return len(self.fields)

    def wait_for(self, field: str, since: int, timeout: float) -> bool:
        """True once ``field`` arrived after the first ``since`` fields, False at timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while field not in self.fields[since:]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def count(self, field: str) -> int:
        with self._changed:
            return self.fields.count(field)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(1.0)
        self.sock.close()


class NodeProcess:
    """One ``ccm daemon`` of the cluster: its root, settings file, log and process."""

    def __init__(
        self, cluster: Cluster, name: str, settings: dict[str, Any], *, drain: bool = True
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.root = Path(settings["root"])
        self.config = cluster.base / f"{name}.toml"
        self.config.write_text(to_toml(settings))
        self.log_path = cluster.base / f"{name}.log"
        self.notifications = Notifications(drain=drain)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._since = 0  # notify fields sent before this process started

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.process is None:
            raise HarnessError(f"{self.name} is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, extra_env: Mapping[str, str] | None = None) -> NodeProcess:
        """Start the daemon; ``extra_env`` adds to its environment (``CCM_CRASH_AT``…)."""
        if self.running:
            raise HarnessError(f"{self.name} is already running")
        self._since = self.notifications.mark()  # what a previous process sent is not news
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CCM_", "NOTIFY_SOCKET", "WATCHDOG_"))
        }
        env["NOTIFY_SOCKET"] = self.notifications.address
        extra = dict(extra_env or {})
        env.update(extra)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- harness: start #{self.starts} of {self.name} {extra or ''}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                die_with_parent([CCM, "--config", str(self.config), "daemon"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: kill() takes its children
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> NodeProcess:
        """Wait for the daemon's ``READY=1`` (sent once its catch-up run is done)."""
        deadline = time.monotonic() + timeout
        while not self.notifications.wait_for("READY=1", self._since, 0.2):
            if not self.running:
                raise HarnessError(f"{self.name} exited before READY:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise HarnessError(f"{self.name} not READY after {timeout} s:\n{self.log_tail()}")
        return self

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the daemon process alone."""
        if self.running:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the daemon's whole process group (the daemon and its commands)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the daemon; SIGKILL its group if it has not exited after ``timeout``.

        Returns the exit code (None when it had to be killed or was not started).
        """
        process = self.process
        if process is None:
            return None
        code: int | None = process.poll()
        if code is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        try:  # whatever is left of the group (a command it was running)
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
        return code

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.notifications.close()

    # -- what it did -------------------------------------------------------------------

    def set_slow(self, seconds: float) -> None:
        """Make this node's ``reload_unit`` sleep ``seconds`` (0: not at all)."""
        marker = self.root / "slow"
        if seconds:
            marker.write_text(f"{seconds}\n")
        else:
            marker.unlink(missing_ok=True)

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon process (all its threads) used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def actions(self) -> list[str]:
        log = self.root / "actions.log"
        return log.read_text().splitlines() if log.exists() else []

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (other lines skipped)."""
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.log_events() if e.get("event") == event]

    def __repr__(self) -> str:
        return f"NodeProcess({self.name!r}, running={self.running})"


class Cluster:
    """N daemons against ``server`` under ``prefix``; ``close()`` always."""

    def __init__(
        self,
        server: EtcdServer,
        base: Path,
        *,
        prefix: str = "/ccm",
        quiet: float = 0.3,
        max_wait: float = 2.0,
        ttl: int = 3,
        etcd_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.base = base
        self.prefix = prefix
        self.quiet = quiet
        self.max_wait = max_wait
        self.ttl = ttl
        self.etcd_extra = dict(etcd_extra or {})
        self.nodes: dict[str, NodeProcess] = {}
        self._client: EtcdClient | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "cli-root").mkdir(exist_ok=True)  # a root must exist: ccm never creates it
        self.cli_config = base / "cli.toml"
        self.cli_config.write_text(
            to_toml({"node": "cli", "root": str(base / "cli-root"), "etcd": self.etcd_table()})
        )

    # -- settings ------------------------------------------------------------------------

    def etcd_table(self) -> dict[str, Any]:
        return {
            "endpoints": [self.server.endpoint],
            "prefix": self.prefix,
            "timeout": 5.0,
            **self.etcd_extra,
        }

    def etcd_settings(self) -> EtcdSettings:
        return EtcdSettings.model_validate(self.etcd_table())

    def node_settings(self, name: str, root: Path, **overrides: Any) -> dict[str, Any]:
        return {
            "node": name,
            "root": str(root),
            "reconcile_interval": 0,
            "log_format": "json",
            "etcd": self.etcd_table(),
            "debounce": {"quiet": self.quiet, "max_wait": self.max_wait},
            "lock": {"ttl": self.ttl},
            "commands": node_commands(root),
            "probes": {"nginx_probe": ["true"], "php_fpm_probe": ["true"]},
            **overrides,
        }

    # -- nodes ---------------------------------------------------------------------------

    def add(
        self, name: str, *, start: bool = True, drain: bool = True, **overrides: Any
    ) -> NodeProcess:
        """A node ``name`` with a fresh root (started unless ``start=False``).

        ``drain=False``: nobody reads its notify socket (see :class:`Notifications`).
        """
        if name in self.nodes:
            raise HarnessError(f"{name} is already in the cluster")
        # PHP 8.2 and 8.3 installed by hand: the scenarios' pools use both, no clusters
        root = seed_root(self.base / "roots" / name, php_versions=("8.2", "8.3"))
        node = NodeProcess(self, name, self.node_settings(name, root, **overrides), drain=drain)
        self.nodes[name] = node
        if start:
            node.start()
        return node

    def start_nodes(self, count: int, *, first: int = 1) -> list[NodeProcess]:
        """Start ``node<first>``… ``count`` daemons and wait until every one is READY."""
        started = [self.add(f"node{i}") for i in range(first, first + count)]
        for node in started:
            node.wait_ready()
        return started

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]

    def running(self) -> list[NodeProcess]:
        return [node for node in self.nodes.values() if node.running]

    # -- etcd ----------------------------------------------------------------------------

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = EtcdClient.from_settings(self.etcd_settings())
        return self._client

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(self.client, self.prefix, writer="harness")

    def put(self, type_name: str, *objects: dict[str, Any]) -> int:
        """Store objects directly (object + thin event, one txn); the revision."""
        return self.store.put(type_name, list(objects))

    def ccm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``ccm`` CLI with the harness's settings file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CCM_")}
        result = subprocess.run(
            [CCM, "--config", str(self.cli_config), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"ccm {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def put_cli(self, type_name: str, *objects: dict[str, Any]) -> int:
        """``ccm objects put TYPE -`` through the CLI; the revision it reports."""
        result = self.ccm("objects", "put", type_name, "-", input=json.dumps(list(objects)))
        return int(result.stdout.rsplit("revision", 1)[1].split()[0])

    def status(self) -> dict[str, Any]:
        """``ccm status --json`` through the CLI."""
        parsed: dict[str, Any] = json.loads(self.ccm("status", "--json").stdout)
        return parsed

    def records(self) -> dict[str, NodeRecord]:
        return NodeRecords(self.client, self.prefix).all()

    def alive(self) -> set[str]:
        return NodeRecords(self.client, self.prefix).alive()

    def lock_queue(self) -> list[LockEntry]:
        return lock_queue(self.client, self.prefix)

    def halt(self) -> dict[str, Any] | None:
        kv = self.client.get(f"{self.prefix}/halt")
        return None if kv is None else dict(json.loads(kv.value))

    def latest_event_revision(self) -> int:
        kvs, _ = self.client.get_prefix(f"{self.prefix}/events/")
        return max((kv.mod_revision for kv in kvs), default=0)

    def applied(self, names: Iterable[str]) -> dict[str, int]:
        records = self.records()
        return {name: records[name].applied_revision if name in records else 0 for name in names}

    def wait_applied(
        self,
        revision: int,
        names: Iterable[str] | None = None,
        timeout: float = 20.0,
        interval: float = POLL,
    ) -> dict[str, NodeRecord]:
        """Wait until every node named has recorded ``applied_revision >= revision``."""
        wanted = list(names) if names is not None else list(self.nodes)

        def done() -> dict[str, NodeRecord] | None:
            records = self.records()
            if all(
                name in records and records[name].applied_revision >= revision for name in wanted
            ):
                return records
            return None

        return wait_until(
            done,
            timeout,
            f"{wanted} to apply revision {revision}",
            interval=interval,
            on_timeout=lambda: f"applied: {self.applied(wanted)}\n{self.report()}",
        )

    def run_history(self, timeout: float = 10.0) -> dict[str, list[LastRun]]:
        """Every ``last_run`` every node ever recorded, oldest first, per node.

        Read from a watch of ``{prefix}/nodes/`` from revision 1 (etcd keeps the whole
        history: the test etcd never compacts), up to the newest record now.
        """
        directory = f"{self.prefix}/nodes/"
        kvs, _ = self.client.get_prefix(directory)
        latest = max((kv.mod_revision for kv in kvs), default=0)
        history: dict[str, list[LastRun]] = {}
        if not latest:
            return history
        deadline = time.monotonic() + timeout
        seen = 0
        with self.client.watch_prefix(directory, start_revision=1) as watch:
            while seen < latest:
                batch = watch.get(timeout=max(0.0, deadline - time.monotonic()))
                if batch is None:
                    raise HarnessError(f"the history of {directory} stopped at revision {seen}")
                for event in batch.events:
                    seen = max(seen, event.mod_revision)
                    if event.type != "put" or event.mod_revision > latest:
                        continue
                    record = NodeRecord.from_json(event.value)
                    if record.last_run is not None:
                        name = event.key[len(directory) :]
                        history.setdefault(name, []).append(record.last_run)
        return history

    # -- teardown and diagnosis ---------------------------------------------------------------

    def report(self, lines: int = 60) -> str:
        parts = []
        for node in self.nodes.values():
            code = node.process.poll() if node.process else "not started"
            parts.append(f"===== {node.name} (exit {code}) {node.log_path}\n{node.log_tail(lines)}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every daemon (SIGTERM, then SIGKILL of its group), then the client."""
        errors = []
        for node in self.nodes.values():
            try:
                node.close()
            except Exception as error:  # keep stopping the others
                errors.append(f"{node.name}: {error!r}")
        if self._client is not None:
            self._client.close()
            self._client = None
        if errors:
            raise HarnessError("stopping the daemons failed: " + "; ".join(errors))

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop every daemon, whatever happened; then print the daemons' log tails
        (pytest shows them with a failing test's captured output)."""
        try:
            self.close()
        finally:
            print(self.report())


def intervals_overlap(runs: Iterable[tuple[str, LastRun]]) -> list[str]:
    """Pairs of runs whose [started, finished] intervals overlap (none is the rule)."""
    ordered = sorted(runs, key=lambda item: parse_time(item[1].started))
    problems = []
    for (node_a, a), (node_b, b) in itertools.pairwise(ordered):
        if parse_time(b.started) < parse_time(a.finished):
            problems.append(f"{node_a} ran {a.started}..{a.finished}, {node_b} started {b.started}")
    return problems
