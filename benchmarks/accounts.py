"""Accounts benchmark: the cold apply with each ``[accounts] backend``, whole processes.

The objects of ``benchmarks/render.py`` (2,000 users, 2,000 pools, 2,000 vhosts, 4,000
crons: 10,000 objects) in a real local etcd; for each backend, a fresh temporary root and
separate ``ccm apply`` processes (import and start-up count):

* a cold apply into the empty root: ``useradd`` makes 2,000 accounts one call at a time;
  ``extrausers`` renders three files, and runs ``playbooks/extrausers.yml`` once (Ansible
  starts slowly: one run of it alone is timed too, its share of the cold apply);
* a no-op full run (``--all``), and a run after one user's shell changed;
* in one process, the accounts alone (the ``unix-users`` configuration: accounts and
  homes), the playbook's seconds taken out.

Prints wall time, changes and peak RSS. Targets (issue 19, 2 cores): cold
apply with extrausers ≤ 8 s at 10,000 objects; no regression of the no-op (≤ 1 s).

    .venv/bin/python benchmarks/accounts.py [--users 2000] [--backend extrausers]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from render import BATCH, objects, write_config  # noqa: E402

from ccm.cluster.etcd import EtcdClient  # noqa: E402
from ccm.cluster.store import ObjectStore  # noqa: E402
from ccm.settings import EtcdSettings  # noqa: E402
from ccm.testing.etcd import EtcdServer  # noqa: E402
from ccm.testing.noderoot import seed_root  # noqa: E402

BACKENDS = ("useradd", "extrausers")


def playbook_alone(scratch: Path) -> float:
    """Seconds one run of ``extrausers.yml`` takes by itself (part of a cold apply)."""
    from ccm.plan.ansible import AnsiblePlaybooks
    from ccm.plan.changes import Playbook
    from ccm.settings import Settings

    root = seed_root(scratch)
    shutil.copy("/etc/nsswitch.conf", root / "etc/nsswitch.conf")
    started = time.perf_counter()
    AnsiblePlaybooks(Settings(node="bench", root=root))("unix-users", Playbook("extrausers.yml"))
    return time.perf_counter() - started


def accounts_alone(base: Path, users: int, backend: str) -> tuple[float, float]:
    """(seconds of ccm's own work, seconds of the playbook) for a cold apply of the
    ``unix-users`` configuration alone, in this process."""
    from ccm.engine.registry import Registry
    from ccm.engine.run import Engine
    from ccm.log import configure_logging
    from ccm.models import Snapshot
    from ccm.plan.ansible import AnsiblePlaybooks
    from ccm.plan.changes import Playbook
    from ccm.settings import Settings
    from ccm.testing.noderoot import node_settings
    from configurations import UnixUsers
    from configurations.unix_users import UnixUser

    class TimedPlaybooks(AnsiblePlaybooks):
        seconds = 0.0

        def __call__(self, configuration: str, playbook: Playbook) -> None:
            started = time.perf_counter()
            super().__call__(configuration, playbook)
            TimedPlaybooks.seconds += time.perf_counter() - started

    configure_logging("json", 40)
    root = seed_root(base / "root")
    shutil.copy("/etc/nsswitch.conf", root / "etc/nsswitch.conf")
    settings: Settings = node_settings(
        root, logged_checks=(), passing_probes=(), accounts={"backend": backend}
    )
    snapshot = Snapshot.of(
        1, [UnixUser(id=i, username=f"u{i:05d}", email=f"u{i:05d}@example.com")
            for i in range(1, users + 1)],
    )  # fmt: skip
    engine = Engine(Registry([UnixUsers]), settings, playbooks=TimedPlaybooks(settings))
    started = time.perf_counter()
    engine.apply(snapshot)
    elapsed = time.perf_counter() - started
    return elapsed - TimedPlaybooks.seconds, TimedPlaybooks.seconds


def timed_apply(config: Path, label: str, *extra: str) -> None:
    started = time.perf_counter()
    process = subprocess.run(
        [str(Path(sys.executable).parent / "ccm"), "--config", str(config), "apply", *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if process.returncode != 0:
        raise SystemExit(f"{label}: ccm apply failed:\n{process.stderr[-3000:]}")
    changes = process.stdout.splitlines()[0].split(": ")[-1] if process.stdout else ""
    print(
        f"{label:<40} {elapsed:7.2f} s   {changes:<14} peak RSS so far {peak_kib / 1024:.0f} MB",
        flush=True,
    )


def put_all(settings: EtcdSettings, prefix: str, made: dict[str, list[dict[str, object]]]) -> None:
    with EtcdClient.from_settings(settings) as client:
        store = ObjectStore(client, prefix, writer="bench")
        for type_name in ("unix-users", "fpm-pools", "virtual-hosts", "crons"):
            items = made[type_name]
            for offset in range(0, len(items), BATCH):
                store.put(type_name, items[offset : offset + BATCH])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--backend", choices=BACKENDS, action="append")
    args = parser.parse_args()
    made = objects(args.users)
    total = sum(len(v) for v in made.values())
    print(f"{total} objects ({args.users} accounts), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="ccm-bench-") as tmp, EtcdServer() as server:
        for backend in args.backend or BACKENDS:
            base = Path(tmp) / backend
            root = seed_root(base / "root")
            # the node's nsswitch.conf, as the playbook finds it on a real node
            shutil.copy("/etc/nsswitch.conf", root / "etc/nsswitch.conf")
            config = base / "ccm.toml"
            write_config(config, root, server.endpoint)
            prefix = f"/bench-{backend}"
            text = config.read_text().replace('prefix = "/bench"', f'prefix = "{prefix}"')
            config.write_text(f'{text}[accounts]\nbackend = "{backend}"\n')
            settings = EtcdSettings(endpoints=(server.endpoint,), prefix=prefix)
            put_all(settings, prefix, made)
            timed_apply(config, f"{backend}: cold apply", "--all")
            for _ in range(3):
                timed_apply(config, f"{backend}: no-op full run", "--all")
            with EtcdClient.from_settings(settings) as client:
                user = made["unix-users"][0] | {"shell": "/bin/sh"}
                ObjectStore(client, prefix, writer="bench").put("unix-users", [user])
            timed_apply(config, f"{backend}: one shell changed", "--type", "unix-users")
            if backend == "extrausers":
                alone = playbook_alone(Path(tmp) / "playbook")
                print(f"{'extrausers.yml alone (in the cold apply)':<40} {alone:7.2f} s")
        for backend in args.backend or BACKENDS:
            own, playbook = accounts_alone(Path(tmp) / f"alone-{backend}", args.users, backend)
            print(
                f"{backend + ': accounts alone, in-process':<40} {own:7.2f} s"
                + (f"   (+ playbook {playbook:.2f} s)" if playbook else "")
            )


if __name__ == "__main__":
    main()
