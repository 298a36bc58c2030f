"""Start-up of the ``ccm`` command: whole-process wall time of ``ccm --help``,
``ccm diff --help`` and ``ccm graph`` (which loads every type), median of N runs.

    .venv/bin/python benchmarks/startup.py [--runs 20]

Target (issue "a new node ready in seconds"): ``ccm --help`` ≤ 0.15 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CCM = str(Path(sys.executable).with_name("ccm"))


def measure(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([CCM, *argv], capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "ccm.toml"
        config.write_text(f'node = "bench"\nroot = "{scratch}"\n')
        env = {**os.environ, "CCM_CONFIG": str(config)}
        print(f"{'command':<20} {'median':>8} {'best':>8}   ({runs} runs)")
        for argv in (["--help"], ["diff", "--help"], ["graph"]):
            median, best = measure(argv, runs, env)
            print(f"{'ccm ' + ' '.join(argv):<20} {median:>7.3f}s {best:>7.3f}s")


if __name__ == "__main__":
    main()
