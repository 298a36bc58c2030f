"""The Ansible adapter (``ccm.plan.ansible``) and ``playbooks/php-versions.yml``, for real.

Real ansible-runner and ansible-playbook against ``localhost ansible_connection=local``,
with every path under pytest's ``tmp_path``: ``ccm_root`` is a temporary root and the
apt/service steps are off (``ccm_manage_packages: false``; the playbook refuses them
under any root but ``/`` anyway). One php-versions run costs seconds (Ansible starts
slowly and pays per task), so the playbook's life is one test: install, preview, change,
no change; the timings are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ccm.cluster.etcd import EtcdClient, Put
from ccm.errors import PlaybookFailed
from ccm.plan.ansible import (
    AnsiblePlaybooks,
    PlaybookPreview,
    TaskChange,
    default_playbooks_dir,
    diff_lines,
    failure_message,
    fingerprint,
)
from ccm.plan.changes import Playbook
from ccm.settings import AnsibleSettings, EtcdSettings, Settings

PLAYBOOKS = default_playbooks_dir()
PLACEHOLDER = "ccm.placeholder.conf"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def settings(root: Path, playbooks_dir: Path = PLAYBOOKS, **extra_vars: object) -> Settings:
    return Settings(
        node="test-node",
        root=root,
        ansible=AnsibleSettings(
            playbooks_dir=str(playbooks_dir),
            timeout=120,
            extra_vars={"ccm_manage_packages": False, **extra_vars},
        ),
    )


def php_versions(*versions: str) -> Playbook:
    return Playbook("php-versions.yml", {"php_versions": list(versions)})


def tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under ``root``: its mode, its mtime and, for files, its content."""
    found: dict[str, tuple[int, int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        status = path.stat()
        content = path.read_bytes() if path.is_file() else None
        found[str(path.relative_to(root))] = (status.st_mode, status.st_mtime_ns, content)
    return found


def pool_dir(root: Path, version: str) -> Path:
    return root / "etc/php" / version / "fpm/pool.d"


def state(root: Path) -> str:
    return (root / "var/lib/ccm/php-versions.json").read_text()


@pytest.fixture
def real_system_untouched() -> Iterator[None]:
    """The machine's own /etc/php and /var/lib/ccm look the same after the test."""
    watched = [Path("/etc/php"), Path("/var/lib/ccm")]
    before = {path: tree(path) if path.exists() else None for path in watched}
    yield
    assert {path: tree(path) if path.exists() else None for path in watched} == before


def php_fpm_accepts(root: Path, version_dir: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("php-fpm8.2", path=SEARCH_PATH)
    if binary is None:
        pytest.fail("php-fpm8.2 is not installed: the placeholder pool check needs it")
    config = root / "php-fpm.conf"
    config.write_text(
        f"[global]\npid = {root}/php-fpm.pid\nerror_log = {root}/php-fpm.log\n"
        f"include = {version_dir}/*.conf\n"
    )
    return subprocess.run(
        [binary, "-t", "-y", str(config)], capture_output=True, text=True, timeout=30, check=False
    )


# --- the php-versions playbook -------------------------------------------------------


def test_php_versions_playbook_under_a_temporary_root(
    tmp_path: Path, real_system_untouched: None
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # a PHP installed by hand, never listed: not ccm's, so never removed
    (pool_dir(root, "7.4") / "www.conf").parent.mkdir(parents=True)
    (pool_dir(root, "7.4") / "www.conf").write_text("[www]\n")
    playbooks = AnsiblePlaybooks(settings(root))
    timings: dict[str, float] = {}

    # 1. cold: 8.1 and 8.2 get their pool directory, placeholder pool and state entry
    started = time.monotonic()
    playbooks("php-versions", php_versions("8.1", "8.2"))
    timings["cold run, 2 versions"] = time.monotonic() - started
    for version in ("8.1", "8.2"):
        placeholder = pool_dir(root, version) / PLACEHOLDER
        assert placeholder.is_file()
        assert f"listen = /run/php/php{version}-fpm-ccm.placeholder.sock" in placeholder.read_text()
    assert state(root) == '{\n    "php_versions": [\n        "8.1",\n        "8.2"\n    ]\n}\n'
    fpm_test = php_fpm_accepts(tmp_path, pool_dir(root, "8.2"))
    assert fpm_test.returncode == 0, fpm_test.stdout + fpm_test.stderr
    # a pool file of ccm's next to the placeholder (written by php-fpm-pools)
    (pool_dir(root, "8.1") / "old-site.conf").write_text("[old-site]\n")

    # 2. preview of dropping 8.1 and adding 8.3: reported, nothing changed on disk
    before = tree(root)
    started = time.monotonic()
    preview = playbooks.check("php-versions", php_versions("8.2", "8.3"))
    timings["check mode"] = time.monotonic() - started
    assert tree(root) == before
    labels = [change.label for change in preview.changes]
    assert labels == [
        "Record the versions about to be installed",
        "Pool directory of each listed version (8.3)",
        "Placeholder pool of each listed version (8.3)",
        "Remove the pool directory of each version no longer listed (8.1)",
        "Record the installed versions",
    ]
    by_label = {change.label: change for change in preview.changes}
    placeholder_diff = by_label["Placeholder pool of each listed version (8.3)"].diff
    assert f"+++ {pool_dir(root, '8.3') / PLACEHOLDER} (after)" in placeholder_diff
    assert "+[ccm.placeholder]" in placeholder_diff
    removal_diff = by_label["Remove the pool directory of each version no longer listed (8.1)"]
    assert "-state: directory" in removal_diff.diff and "+state: absent" in removal_diff.diff
    assert '-        "8.1",' in by_label["Record the installed versions"].diff
    assert preview.would_change and preview.lines()[0] == "playbook php-versions.yml: 5 change(s)"

    # 3. for real: 8.1's pool directory goes (with the file in it), 8.3 comes, 7.4 stays
    started = time.monotonic()
    playbooks("php-versions", php_versions("8.2", "8.3"))
    timings["run with changes"] = time.monotonic() - started
    assert not pool_dir(root, "8.1").exists()
    assert (pool_dir(root, "8.3") / PLACEHOLDER).is_file()
    assert (pool_dir(root, "8.2") / PLACEHOLDER).is_file()
    assert (pool_dir(root, "7.4") / "www.conf").is_file()
    assert '"8.2",\n        "8.3"\n' in state(root) and "8.1" not in state(root)

    # 4. nothing to do: nothing changes, not even a timestamp of the state file
    before = tree(root)
    started = time.monotonic()
    unchanged = playbooks.run("php-versions", php_versions("8.3", "8.2"))
    timings["no-change run"] = time.monotonic() - started
    assert unchanged.ok and unchanged.changed == () and tree(root) == before

    print()
    for what, seconds in timings.items():
        print(f"php-versions.yml, {what}: {seconds:.1f} s")


def test_php_versions_playbook_refuses_packages_under_a_temporary_root(tmp_path: Path) -> None:
    playbooks = AnsiblePlaybooks(settings(tmp_path, ccm_manage_packages=True))
    with pytest.raises(PlaybookFailed) as caught:
        playbooks("php-versions", php_versions("8.2"))
    assert caught.value.task == "Check the inputs"
    assert 'can be managed only when ccm_root is "/"' in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # refused before any task touched anything


# --- failures ----------------------------------------------------------------------------


FAILING = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Harmless first step
      ansible.builtin.file:
        path: "{{ ccm_root }}/first"
        state: directory
    - name: Break on purpose
      ansible.builtin.command: sh -c 'echo "disk on fire" >&2; exit 3'
    - name: Never reached
      ansible.builtin.file:
        path: "{{ ccm_root }}/never"
        state: directory
"""


def test_a_failing_task_raises_playbook_failed_naming_it(tmp_path: Path) -> None:
    playbooks_dir = tmp_path / "playbooks"
    playbooks_dir.mkdir()
    (playbooks_dir / "broken.yml").write_text(FAILING)
    root = tmp_path / "root"
    root.mkdir()
    handlers = [signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)]
    with capture_logs() as logs:
        playbooks = AnsiblePlaybooks(settings(root, playbooks_dir))
        with pytest.raises(PlaybookFailed) as caught:
            playbooks("some-configuration", Playbook("broken.yml"))
    # ansible-runner did not replace the caller's signal handlers (the daemon's)
    assert [signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)] == handlers
    error = caught.value
    assert (error.configuration, error.playbook, error.task) == (
        "some-configuration",
        "broken.yml",
        "Break on purpose",
    )
    assert "task 'Break on purpose' failed" in str(error)
    assert "disk on fire" in str(error) and "rc 3" in str(error)
    assert (root / "first").is_dir() and not (root / "never").exists()
    tasks = [
        (entry["task"], entry["changed"], entry["failed"])
        for entry in logs
        if entry["event"] == "ansible task"
    ]
    assert tasks == [("Harmless first step", True, False), ("Break on purpose", False, True)]
    assert {entry["configuration"] for entry in logs} == {"some-configuration"}
    (end,) = [entry for entry in logs if entry["event"] == "playbook end"]
    assert end["status"] == "failed" and end["failed_task"] == "Break on purpose"


def running(argv: list[str]) -> list[int]:
    """Ids of the processes running exactly ``argv``."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_playbook_past_its_timeout_is_stopped_and_fails(tmp_path: Path) -> None:
    """The timeout is ansible-runner's, counted from ``ansible-playbook``'s start: on a
    loaded machine that start alone can take most of 3 s, so which task was running when
    it fired is not asserted here (the cancel test below names the task, deterministically:
    it cancels once the task's process runs; both read the task from the same events)."""
    sleep = ["sleep", f"{50 + random.random():.9f}"]  # no other test's sleep looks the same
    (tmp_path / "slow.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - name: Take too long\n      ansible.builtin.command: {' '.join(sleep)}\n"
    )
    slow = settings(tmp_path, tmp_path).model_copy(
        update={"ansible": AnsibleSettings(playbooks_dir=str(tmp_path), timeout=3)}
    )
    started = time.monotonic()
    with pytest.raises(PlaybookFailed, match="timed out after 3 s"):
        AnsiblePlaybooks(slow)("c", Playbook("slow.yml"))
    assert time.monotonic() - started < 50  # stopped, not waited out
    # the module's process, in a worker's session of its own, did not outlive the run
    assert running(sleep) == []


def test_a_cancelled_run_fails_naming_the_running_task(tmp_path: Path) -> None:
    sleep = ["sleep", f"{60 + random.random():.9f}"]  # no other test's sleep looks the same
    (tmp_path / "slow.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - name: Wait\n      ansible.builtin.command: {' '.join(sleep)}\n"
    )
    seen_running = []

    def cancel() -> bool:  # once the task's own process runs: no timing in the test
        seen_running.append(bool(running(sleep)))
        return seen_running[-1]

    playbooks = AnsiblePlaybooks(settings(tmp_path, tmp_path), cancel=cancel)
    with pytest.raises(PlaybookFailed, match="cancelled") as caught:
        playbooks("c", Playbook("slow.yml"))
    assert seen_running[-1] is True
    assert caught.value.task == "Wait"
    assert running(sleep) == []  # the task's process went with the run


def children(pid: int) -> list[int]:
    """Ids of the processes ``pid`` started (every thread's children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_an_ansible_process_that_dies_without_a_result_fails_the_run(tmp_path: Path) -> None:
    sleep = ["sleep", f"{60 + random.random():.9f}"]  # no other test's sleep looks the same
    (tmp_path / "slow.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - name: Wait\n      ansible.builtin.command: {' '.join(sleep)}\n"
    )
    killed = []

    def kill_the_ansible_process() -> bool:  # once its task runs; as gRPC's abort did
        if not killed and running(sleep):
            for pid in children(os.getpid()):
                with contextlib.suppress(OSError):
                    if b"ccm.plan.ansible_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
        return False

    playbooks = AnsiblePlaybooks(settings(tmp_path, tmp_path), cancel=kill_the_ansible_process)
    with pytest.raises(PlaybookFailed) as caught:
        playbooks("c", Playbook("slow.yml"))
    assert killed, "the run's Ansible process is a child of this one"
    assert caught.value.task == "(ansible-runner)"
    assert "the Ansible process ended (killed by SIGKILL) without a result" in str(caught.value)
    assert running(sleep) == [], "what it started did not outlive it"


@pytest.mark.parametrize("cancelled", [False, True])
def test_an_ansible_process_that_outlives_its_deadline_is_killed(
    tmp_path: Path, cancelled: bool
) -> None:
    """The backstop, should ansible-runner not end the run itself: the clock jumps past
    the timeout (or past the grace after a cancel) once the task runs."""
    sleep = ["sleep", f"{60 + random.random():.9f}"]
    (tmp_path / "slow.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - name: Wait\n      ansible.builtin.command: {' '.join(sleep)}\n"
    )
    asked = []

    def cancel() -> bool:
        asked.append(cancelled and bool(running(sleep)))
        return asked[-1]

    def clock() -> float:
        if cancelled:
            return 1e9 if any(asked) else 0.0
        return 1e9 if running(sleep) else 0.0

    playbooks = AnsiblePlaybooks(settings(tmp_path, tmp_path), cancel=cancel, clock=clock)
    why = "cancelled" if cancelled else "timed out after 120 s"
    with pytest.raises(PlaybookFailed, match=why) as caught:
        playbooks("c", Playbook("slow.yml"))
    assert caught.value.task == "Wait"
    assert running(sleep) == []


class ForkWatch:
    """Records every ``os.fork()``/``pty.fork()`` of this process while it watches.

    Hooks given to ``os.register_at_fork`` cannot be removed: one is registered, once,
    and records only inside ``watching()``.
    """

    seen: list[str] | None = None
    registered = False

    @classmethod
    @contextlib.contextmanager
    def watching(cls) -> Iterator[list[str]]:
        if not cls.registered:
            os.register_at_fork(before=cls._before)
            cls.registered = True
        cls.seen = seen = []
        try:
            yield seen
        finally:
            cls.seen = None

    @classmethod
    def _before(cls) -> None:
        if cls.seen is not None:
            cls.seen.append(threading.current_thread().name)


def test_a_run_never_forks_this_process_while_its_etcd_client_is_busy(
    tmp_path: Path, etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    """Issue 15, finding 7: a fork of a process whose etcd client has gRPC threads can
    abort in the child — gRPC's fork handlers restart its threads there, pexpect closes
    every descriptor before ``exec``, and a restarted poller's ``epoll_wait`` fails with
    EBADF. ansible-runner (pexpect) used to fork the ccm process itself; now it runs in a
    child started with vfork and exec, so this process is never forked (the soak,
    ``benchmarks/playbook_fork_soak.py``, shows the failure rate before and after)."""
    (tmp_path / "quick.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Write a file\n      ansible.builtin.copy:\n"
        '        dest: "{{ ccm_root }}/written"\n        content: "{{ run }}"\n'
    )
    root = tmp_path / "root"
    root.mkdir()
    events = f"{etcd_settings.prefix}/events/"
    stopping = threading.Event()
    counts = {"puts": 0, "seen": 0}

    def write() -> None:
        while not stopping.wait(0.01):
            etcd_client.txn([], [Put(f"{events}t", b"{}")])
            counts["puts"] += 1

    def watch() -> None:
        with etcd_client.watch_prefix(events) as watching:
            while not stopping.is_set():
                batch = watching.get(timeout=0.2)
                counts["seen"] += len(batch.events) if batch is not None else 0

    busy = [threading.Thread(target=work, daemon=True) for work in (write, watch, watch)]
    for thread in busy:
        thread.start()
    try:
        playbooks = AnsiblePlaybooks(settings(root, tmp_path))
        with ForkWatch.watching() as forks:
            for run in range(2):
                before = counts["puts"]
                result = playbooks.run("c", Playbook("quick.yml", {"run": run}))
                assert result.ok and (root / "written").read_text() == str(run)
                assert counts["puts"] > before, "the client was busy during the run"
    finally:
        stopping.set()
        for thread in busy:
            thread.join(timeout=10)
    assert forks == [], "this process was forked: its gRPC threads were live"
    assert counts["seen"] > 0


def test_a_missing_playbook_fails_without_running_ansible(tmp_path: Path) -> None:
    playbooks = AnsiblePlaybooks(settings(tmp_path, tmp_path))
    for name in ("nope.yml", "../escape.yml"):
        with pytest.raises(PlaybookFailed, match="no such playbook"):
            playbooks("c", Playbook(name))


# --- fingerprint -------------------------------------------------------------------------


def test_fingerprint_follows_extra_vars_and_playbook_files(tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, folder)
    base = fingerprint(php_versions("8.2", "8.3"), folder)
    assert len(base) == 64
    assert fingerprint(php_versions("8.2", "8.3"), folder) == base  # stable
    assert fingerprint(Playbook("php-versions.yml", {"php_versions": ["8.2", "8.3"]}), folder) == (
        base
    )
    assert fingerprint(php_versions("8.2"), folder) != base
    assert (
        fingerprint(Playbook("php-versions.yml", {"php_versions": ["8.2", "8.3"], "x": 1}), folder)
        != base
    )
    assert fingerprint(Playbook("other.yml", {"php_versions": ["8.2", "8.3"]}), folder) != base
    # key order is not an input
    two = {"a": 1, "b": [1, 2]}
    assert fingerprint(Playbook("p.yml", two), folder) == fingerprint(
        Playbook("p.yml", dict(reversed(two.items()))), folder
    )
    # any file under the folder is: the playbook, a template, a new file
    template = folder / "templates/php-fpm-placeholder.conf.j2"
    template.write_text(template.read_text() + "; edited\n")
    edited = fingerprint(php_versions("8.2", "8.3"), folder)
    assert edited != base
    (folder / "files").mkdir()
    (folder / "files/new.txt").write_text("new\n")
    added = fingerprint(php_versions("8.2", "8.3"), folder)
    assert added != edited
    (folder / "php-versions.yml").write_text((folder / "php-versions.yml").read_text() + "\n")
    assert fingerprint(php_versions("8.2", "8.3"), folder) != added
    # … but not Python's caches
    now = fingerprint(php_versions("8.2", "8.3"), folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__/x.pyc").write_bytes(b"\0")
    assert fingerprint(php_versions("8.2", "8.3"), folder) == now


def test_the_runners_fingerprint_covers_what_a_run_passes(tmp_path: Path) -> None:
    playbook = php_versions("8.2")
    one = AnsiblePlaybooks(settings(tmp_path / "a"))
    assert one.fingerprint(playbook) == one.fingerprint(php_versions("8.2"))
    assert one.fingerprint(playbook) != fingerprint(playbook, PLAYBOOKS)
    assert one.fingerprint(playbook) != AnsiblePlaybooks(settings(tmp_path / "b")).fingerprint(
        playbook
    )
    assert one.fingerprint(playbook) != AnsiblePlaybooks(
        settings(tmp_path / "a", ccm_manage_packages=True)
    ).fingerprint(playbook)
    assert one.extra_vars(playbook) == {
        "ansible_python_interpreter": sys.executable,
        "ccm_manage_packages": False,
        "php_versions": ["8.2"],
        "ccm_root": str(tmp_path / "a"),
    }


# --- pieces --------------------------------------------------------------------------------


def test_diff_lines_of_contents_states_and_prepared_text() -> None:
    content = {
        "dest": "/r/f",
        "diff": [{"before_header": "/r/f", "before": "a\nb\n", "after": "a\nc\n"}],
    }
    assert diff_lines(content) == [
        "--- /r/f (before)",
        "+++ /r/f (after)",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
    state_diff = {
        "path": "/r/d",
        "diff": {
            "before": {"path": "/r/d", "state": "absent"},
            "after": {"path": "/r/d", "state": "directory"},
        },
    }
    assert diff_lines(state_diff)[-2:] == ["-state: absent", "+state: directory"]
    assert diff_lines({"diff": {"prepared": "php8.3-fpm\nphp8.3-cli"}}) == [
        "php8.3-fpm",
        "php8.3-cli",
    ]
    assert diff_lines({"diff": {"before": {"path": "x"}, "after": {"path": "x"}}}) == []
    assert diff_lines({}) == []


def test_failure_message() -> None:
    assert failure_message({"msg": "nope"}) == "nope"
    assert failure_message({"msg": "non-zero return code", "rc": 2, "stderr": "bad\nworse"}) == (
        "non-zero return code (rc 2)\nbad\nworse"
    )
    assert failure_message({}) == "failed (no message)"


def test_preview_lines() -> None:
    preview = PlaybookPreview(
        "php-versions",
        "p.yml",
        (TaskChange("Install", "8.3", ("--- a", "+++ b")), TaskChange("Note")),
    )
    assert preview.lines() == [
        "playbook p.yml: 2 change(s)",
        "~ Install (8.3)",
        "    --- a",
        "    +++ b",
        "~ Note",
    ]


def test_importing_the_adapter_does_not_import_ansible() -> None:
    code = (
        "import sys, ccm.plan.ansible\n"
        "print(sorted({'ansible', 'ansible_runner'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
