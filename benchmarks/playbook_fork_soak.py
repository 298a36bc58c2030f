"""Playbook fork soak: playbook runs made while the etcd client is busy (issue 15, finding 7).

The failure it hunts: a playbook run fails with ``E… ev_epoll1_linux.cc:373] (event_engine)
Epoll1Poller … epoll_wait error: Bad file descriptor`` although the playbook is fine. The
cause: ansible-runner starts ``ansible-playbook`` with pexpect, which ``fork()``s the
calling process and runs Python (it closes every descriptor above 2) before ``exec``. In a
process whose etcd client holds gRPC channels, gRPC's own fork handlers (compiled in and on
by default in the grpcio wheel) restart gRPC's threads in the child whenever gRPC is idle at
the fork; pexpect then closes the descriptors those threads poll, and a restarted poller
that calls ``epoll_wait`` before the ``exec`` gets EBADF: gRPC aborts the child (SIGABRT).
``ansible-playbook`` never starts, and the run "fails" with gRPC's last words as its output.

Here one process holds a real etcd client kept busy the way a daemon's is (threads that
put, watch, read and keep a lease alive), and runs playbooks through the adapter
(``AnsiblePlaybooks``) one after another. It prints how many runs failed and why.
``--in-process`` calls ``ansible_runner.run`` in this process instead, the way the adapter
did before the fix, to show the failure.

    .venv/bin/python benchmarks/playbook_fork_soak.py [--runs 200] [--in-process]
        [--playbook php-versions.yml]

The default playbook is a two-task one (a file under the temporary root, a command), so
200 runs take minutes, not an hour: what fails is the start of ``ansible-playbook``, not
anything a task does. ``--playbook php-versions.yml`` runs the shipped playbook instead
(packages off, under a temporary root). Exit status 1 when any run failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from ccm.cluster.etcd import EtcdClient, Put  # noqa: E402
from ccm.errors import ClusterError, PlaybookFailed  # noqa: E402
from ccm.log import configure_logging  # noqa: E402
from ccm.plan.ansible import INVENTORY, AnsiblePlaybooks, default_playbooks_dir  # noqa: E402
from ccm.plan.changes import Playbook  # noqa: E402
from ccm.settings import AnsibleSettings, EtcdSettings, Settings  # noqa: E402
from ccm.testing.etcd import EtcdServer  # noqa: E402

SMALL = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Write a file under the root
      ansible.builtin.copy:
        dest: "{{ ccm_root }}/soak.txt"
        content: "{{ run }}\\n"
    - name: Run a command
      ansible.builtin.command: "true"
      changed_when: false
"""
PREFIX = "/ccm-soak"
#: pause of each writer between two transactions: busy, without eating the machine
WRITE_PAUSE = 0.005


class BusyClient:
    """Threads that keep one etcd client's gRPC channels busy, as a daemon's are."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self.stopping = threading.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        self.threads = [
            threading.Thread(target=self._loop, args=(work,), daemon=True)
            for work in (
                lambda: self._write("a"),
                lambda: self._write("b"),
                self._watch,
                self._watch,
                self._read,
                self._lease,
            )
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def _loop(self, work: Callable[[], None]) -> None:
        while not self.stopping.is_set():
            try:
                work()
            except ClusterError:
                self.counts["etcd errors"] += 1

    def _write(self, name: str) -> None:
        self.client.txn([], [Put(f"{PREFIX}/events/{name}", b'{"by": "soak"}')])
        self.counts["puts"] += 1
        self.stopping.wait(WRITE_PAUSE)

    def _watch(self) -> None:
        with self.client.watch_prefix(f"{PREFIX}/events/") as watch:
            self.counts["watches opened"] += 1
            for _ in range(200):  # then a new stream: opening watches is traffic too
                batch = watch.get(timeout=0.5)
                if self.stopping.is_set():
                    return
                if batch is not None:
                    self.counts["watch events"] += len(batch.events)

    def _read(self) -> None:
        self.client.get_prefix(f"{PREFIX}/events/")
        self.counts["reads"] += 1
        self.stopping.wait(0.02)

    def _lease(self) -> None:
        lease = self.client.grant_lease(10)
        try:
            for _ in range(20):
                self.client.refresh_lease(lease)
                self.counts["lease keep-alives"] += 1
                if self.stopping.wait(0.2):
                    return
        finally:
            self.client.revoke_lease(lease)


def settings_for(root: Path, playbooks_dir: Path) -> Settings:
    return Settings(
        node="soak",
        root=root,
        ansible=AnsibleSettings(
            playbooks_dir=str(playbooks_dir),
            timeout=300,
            extra_vars={"ccm_manage_packages": False},
        ),
    )


def run_adapter(settings: Settings, playbook: Playbook) -> None:
    """One run through ``AnsiblePlaybooks``; raises ``PlaybookFailed``."""
    AnsiblePlaybooks(settings)("soak", playbook)


def run_in_process(settings: Settings, playbook: Playbook) -> None:
    """One ``ansible_runner.run`` in this process (pexpect forks it), as before the fix."""
    import ansible_runner

    adapter = AnsiblePlaybooks(settings)
    with tempfile.TemporaryDirectory(prefix="ccm-soak-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(adapter.playbooks_dir),
            playbook=playbook.playbook,
            inventory=INVENTORY,
            extravars=adapter.extra_vars(playbook),
            envvars={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
            quiet=True,
            cancel_callback=lambda: False,
        )
        if runner.status == "successful" and runner.rc == 0:
            return
        try:
            with runner.stdout as output:
                text = output.read()
        except Exception:
            text = ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        message = "\n".join(lines[-3:]) or f"{runner.status} (rc {runner.rc})"
        raise PlaybookFailed("soak", playbook.playbook, "(playbook)", message)


def kind(error: PlaybookFailed) -> str:
    """The failure without its timestamps, thread ids and addresses, to count alike ones."""
    text = str(error).splitlines()[0] if str(error) else repr(error)
    text = re.sub(r"[EWI]\d{4} [\d:.]+\s+\d+ ", "", text)
    return re.sub(r"0x[0-9a-f]+", "0x…", text)[:160]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--in-process", action="store_true", help="the way before the fix")
    parser.add_argument("--playbook", default="", help="a shipped playbook (default: a small one)")
    options = parser.parse_args()
    configure_logging("console", level=logging.CRITICAL)  # the figures, not each task

    run = run_in_process if options.in_process else run_adapter
    failures: collections.Counter[str] = collections.Counter()
    durations: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ccm-soak-") as scratch:
        if options.playbook:
            playbooks_dir = default_playbooks_dir()
            name = options.playbook
        else:
            playbooks_dir = Path(scratch) / "playbooks"
            playbooks_dir.mkdir()
            (playbooks_dir / "soak.yml").write_text(SMALL)
            name = "soak.yml"
        server = EtcdServer()
        server.start()
        busy: BusyClient | None = None
        try:
            client = EtcdClient(EtcdSettings(endpoints=(server.endpoint,), prefix=PREFIX))
            busy = BusyClient(client)
            busy.start()
            time.sleep(1)  # let every thread get going before the first run
            started = time.monotonic()
            for number in range(options.runs):
                root = Path(scratch) / f"root-{number}"
                root.mkdir()
                extra = {"php_versions": ["8.2"]} if name == "php-versions.yml" else {}
                playbook = Playbook(name, {"run": number, **extra})
                began = time.monotonic()
                try:
                    run(settings_for(root, playbooks_dir), playbook)
                    outcome = "ok"
                except PlaybookFailed as error:
                    failures[kind(error)] += 1
                    outcome = f"FAILED: {kind(error)}"
                durations.append(time.monotonic() - began)
                print(f"run {number + 1}/{options.runs}: {outcome}", flush=True)
            elapsed = time.monotonic() - started
        finally:
            if busy is not None:
                busy.stop()
            server.close()  # and its data dir

    failed = sum(failures.values())
    mode = "in-process ansible_runner.run" if options.in_process else "AnsiblePlaybooks"
    print()
    print(f"mode: {mode}; playbook: {name}")
    print(f"runs: {options.runs}, failed: {failed} ({100 * failed / options.runs:.1f} %)")
    for text, count in failures.most_common():
        print(f"  {count} x {text}")
    print(
        f"seconds per run: median {statistics.median(durations):.2f}, "
        f"max {max(durations):.2f}; total {elapsed:.0f} s"
    )
    print("etcd traffic meanwhile:", json.dumps(dict(sorted(busy.counts.items()))))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
