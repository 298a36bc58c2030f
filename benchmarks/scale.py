"""The scale curve: 1,000 to 100,000 objects, in ``render.py``'s proportions (per
account: a pool, a vhost, two crons), against a real local etcd and a temporary root.

Per size it prints:

* **snapshot**: the etcd snapshot read (every object, validated), best of 3;
* **cold <backend>**: a cold ``ccm apply`` into an empty root, as a whole process, with
  each accounts backend (``useradd``, ``extrausers``), and that process's peak RSS;
  ``extrausers-image`` is extrausers on a node whose image already has libnss-extrausers
  installed and nsswitch.conf set (``prepare_extrausers_image``): no playbook, the
  seconds of Ansible a bare Debian node pays once;
* **no-op** and **one change** on the daemon path (one long-lived process running
  ``NodeRun`` as ``ccm daemon`` does: a full no-op run; one cron changed), best of 3,
  and that process's peak RSS;
* at 10,000 objects (``--ready-at``): the seconds from starting ``ccm daemon`` on a new,
  empty node until it tells systemd READY=1 (its catch-up run done), with each backend.

Then a log-log slope per figure between consecutive sizes: 1.0 is linear; above 1.1 is
flagged. Targets (issue "a new node ready in seconds"): at 10k cold extrausers ≤ 8 s,
READY ≤ 10 s, one change and no-op ≤ 1 s; at 100k one change ≤ 2 s, no-op ≤ 5 s, peak
RSS ≤ 600 MB, cold extrausers ≤ 90 s.

    .venv/bin/python benchmarks/scale.py [--sizes 1000 10000 100000]
        [--backends useradd extrausers] [--ready-at 10000]

A cold ``useradd`` apply of 100,000 objects makes 20,000 accounts one ``useradd`` at a
time (about 30 ms each): expect ten minutes for that figure alone.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # render.py's certs

from render import objects  # noqa: E402  (the same objects, the same proportions)

from ccm.cluster.etcd import EtcdClient  # noqa: E402
from ccm.cluster.store import ObjectStore  # noqa: E402
from ccm.settings import EtcdSettings  # noqa: E402
from ccm.testing.etcd import EtcdServer  # noqa: E402
from ccm.testing.noderoot import prepare_extrausers_image, seed_root  # noqa: E402

#: objects per put: the store packs them into nested transactions
BATCH = 1000
CCM = str(Path(sys.executable).with_name("ccm"))
Figures = dict[str, dict[int, float]]


def config_text(root: Path, endpoint: str, prefix: str, backend: str) -> str:
    log = root.parent / f"actions-{root.name}.log"
    record = f'["sh", "-c", "echo \\"$1\\" >> {log}", "sh"'
    return (
        # a node of its own per root: a node's record says what it applied already
        f'node = "{root.name}"\nroot = "{root}"\nlog_format = "json"\nreconcile_interval = 0\n'
        f'[etcd]\nendpoints = ["{endpoint}"]\nprefix = "{prefix}"\n'
        # useradd is the default: its settings need no [accounts] table
        + (f'[accounts]\nbackend = "{backend.split("-")[0]}"\n' if backend != "useradd" else "")
        + "[commands]\n"
        + "".join(
            f'{name} = {record}, "{name} {{unit}}"]\n'
            for name in ("reload_unit", "restart_unit", "start_unit", "stop_unit")
            + ("enable_unit", "disable_unit")
        )
        + f'daemon_reload = {record}, "daemon-reload"]\n'
        + '[checks]\nnginx_check = ["true"]\nphp_fpm_check = ["true"]\n'
        + '[probes]\nnginx_probe = ["true"]\nphp_fpm_probe = ["true"]\n'
    )


def new_root(path: Path, backend: str) -> Path:
    root = seed_root(path)
    return prepare_extrausers_image(root) if backend.endswith("-image") else root


def write_objects(settings: EtcdSettings, users: int) -> float:
    made = objects(users, 0, tls=False)
    started = time.perf_counter()
    with EtcdClient.from_settings(settings) as client:
        store = ObjectStore(client, settings.prefix, writer="scale")
        for type_name in ("unix-users", "fpm-pools", "virtual-hosts", "crons"):
            items = made[type_name]
            for offset in range(0, len(items), BATCH):
                store.put(type_name, items[offset : offset + BATCH])
    return time.perf_counter() - started


def snapshot_read(settings: EtcdSettings) -> float:
    times = []
    with EtcdClient.from_settings(settings) as client:
        store = ObjectStore(client, settings.prefix, writer="scale")
        for _ in range(3):
            started = time.perf_counter()
            store.snapshot()
            times.append(time.perf_counter() - started)
    return min(times)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one whole process (GNU time's %M)."""
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        process = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", report.name, *argv],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{process.stderr[-3000:]}")
        return elapsed, int(report.read().split()[-1]) / 1024


def daemon_path(config: Path) -> tuple[float, float, float]:
    """No-op full run and one changed cron in one long-lived process (``ccm daemon``'s
    path), best of 3 each, and the process's peak RSS: run in a child process so the
    RSS is that path's alone."""
    code = f"""
import resource, time
from pathlib import Path
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.cli.main import tune_garbage_collection
from ccm.log import configure_logging
from ccm.settings import load_settings
configure_logging("json", 40)
tune_garbage_collection()  # as the ccm command does for the daemon
settings = load_settings(Path({str(config)!r}))
engine = Engine(Registry.from_entry_points(), settings)
with EtcdClient.from_settings(settings.etcd) as client:
    store = ObjectStore(client, settings.etcd.prefix, writer="scale")
    run = NodeRun(settings, client, engine, reuse_parsed=True)  # as ccm daemon does
    run.run((), full=True)  # warm: the first run after the cold apply's process
    noop, change = [], []
    for n in range(3):
        started = time.perf_counter()
        run.run((), full=True)
        noop.append(time.perf_counter() - started)
    cron = store.get("crons", 1).model_dump()
    for n in range(3):
        store.put("crons", [cron | {{"schedule": f"{{n + 10}} * * * *"}}])
        started = time.perf_counter()
        run.run(("crons",))
        change.append(time.perf_counter() - started)
print(min(noop), min(change), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if process.returncode != 0:
        raise SystemExit(f"daemon path failed:\n{process.stderr[-3000:]}")
    noop, change, rss = (float(x) for x in process.stdout.split())
    return noop, change, rss


def ready_time(config: Path) -> float:
    """Seconds from ``ccm daemon`` starting on an empty node until READY=1."""
    with tempfile.TemporaryDirectory() as scratch:
        address = os.path.join(scratch, "notify")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(address)
        listener.settimeout(600)
        env = {**os.environ, "NOTIFY_SOCKET": address}
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [CCM, "--config", str(config), "daemon"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                message = listener.recv(4096).decode()
                if "READY=1" in message.split("\n"):
                    return time.perf_counter() - started
        finally:
            daemon.terminate()
            daemon.wait(60)
            listener.close()


def slope(figure: dict[int, float]) -> str:
    sizes = sorted(figure)
    parts = []
    for small, large in zip(sizes, sizes[1:], strict=False):
        if figure[small] <= 0 or figure[large] <= 0:
            continue
        value = math.log(figure[large] / figure[small]) / math.log(large / small)
        parts.append(f"{value:.2f}{' (!)' if value > 1.1 else ''}")
    return " ".join(parts) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument(
        "--backends", nargs="+", default=["useradd", "extrausers", "extrausers-image"]
    )
    parser.add_argument("--ready-at", type=int, default=10000)
    args = parser.parse_args()
    figures: Figures = {}

    def record(name: str, size: int, value: float) -> None:
        figures.setdefault(name, {})[size] = value
        print(f"  {name:<26} {value:9.3f}", flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="ccm-scale-") as tmp,
        EtcdServer(extra_args=("--quota-backend-bytes", str(8 * 1024**3))) as server,
    ):
        base = Path(tmp)
        for size in args.sizes:
            users = size // 5
            prefix = f"/scale{size}"
            settings = EtcdSettings(endpoints=(server.endpoint,), prefix=prefix, timeout=120.0)
            print(f"{size} objects ({users} accounts), {os.cpu_count()} cores", flush=True)
            print(f"  (written in {write_objects(settings, users):.1f} s)", flush=True)
            record("snapshot read s", size, snapshot_read(settings))
            for backend in args.backends:
                root = new_root(base / f"root-{size}-{backend}", backend)
                config = base / f"ccm-{size}-{backend}.toml"
                config.write_text(config_text(root, server.endpoint, prefix, backend))
                elapsed, rss = timed([CCM, "--config", str(config), "apply"])
                record(f"cold {backend} s", size, elapsed)
                record(f"cold {backend} RSS MB", size, rss)
                if backend == args.backends[-1]:
                    noop, change, rss = daemon_path(config)
                    record("daemon no-op s", size, noop)
                    record("daemon one change s", size, change)
                    record("daemon peak RSS MB", size, rss)
                if size == args.ready_at:
                    fresh = new_root(base / f"ready-{size}-{backend}", backend)
                    ready_config = base / f"ready-{size}-{backend}.toml"
                    ready_config.write_text(config_text(fresh, server.endpoint, prefix, backend))
                    record(f"new node READY {backend} s", size, ready_time(ready_config))
    print()
    sizes = sorted(args.sizes)
    print(f"{'figure':<28}" + "".join(f"{s:>10}" for s in sizes) + "   log-log slope")
    for name, by_size in figures.items():
        cells = "".join(f"{by_size[s]:>10.3f}" if s in by_size else f"{'':>10}" for s in sizes)
        print(f"{name:<28}{cells}   {slope(by_size)}")


if __name__ == "__main__":
    main()
