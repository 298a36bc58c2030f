"""Property soak: tests/test_accepted_applies.py's property with many more examples.

Draws ``--examples`` batches (``tests/strategies.batches``), runs the whole property on
each (real etcd writes, real engine on a fresh node root, real useradd / nginx -t /
php-fpm -t, rendered files read back) WITHOUT stopping at the first failure: every
failure is classified by a signature (its exception type and first line, with numbers,
paths and quoted values blanked), and the smallest batch seen per signature is printed.
Then the figures: examples run, objects drawn, accepted, applied, refused, failures.

    .venv/bin/python benchmarks/property_soak.py [--examples 3000] [--seed N] [--show 3]

Exit 0 when no example failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from hypothesis import HealthCheck, Phase, find, given, seed, settings  # noqa: E402
from hypothesis.errors import NoSuchExample  # noqa: E402
from strategies import Batch, batches  # noqa: E402
from test_accepted_applies import Outcome, run_property  # noqa: E402

from ccm.cluster.etcd import EtcdClient  # noqa: E402
from ccm.log import configure_logging  # noqa: E402
from ccm.settings import EtcdSettings  # noqa: E402
from ccm.testing.etcd import EtcdServer  # noqa: E402
from ccm.testing.noderoot import seed_root  # noqa: E402


def signature(error: BaseException) -> str:
    """What kind of failure: type and first line, variable parts blanked."""
    lines = str(error).strip().splitlines() or [""]
    text = lines[0]
    # the most telling line of a command's output
    for pattern in (r"emerg|ERROR|PHP:|useradd:|invalid", r"error|warn"):
        telling = [line for line in lines[1:] if re.search(pattern, line)]
        if telling:
            text += " | " + telling[0].strip()
            break
    text = re.sub(r"/tmp/\S*?/ex\d+", "ROOT", text)
    text = re.sub(r"refuses \S+:|group \S+ exists|invalid shell .*", "<…>", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return f"{type(error).__name__}: {text[:300]}"


def failure_of(
    client: EtcdClient, prefix: str, template: Path, workdir: Path, batch: Batch
) -> str | None:
    try:
        run_property(client, prefix, template, workdir, batch)
    except Exception as error:  # noqa: BLE001 - every failure is a finding
        return signature(error)
    return None


def shrink(
    client: EtcdClient, prefix: str, template: Path, workdir: Path, name: str, examples: int
) -> Batch | None:
    """The smallest batch hypothesis finds that fails with signature ``name``."""
    try:
        return find(
            batches(),
            lambda batch: failure_of(client, prefix, template, workdir, batch) == name,
            settings=settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    except NoSuchExample:
        return None


@dataclass
class Totals:
    examples: int = 0
    objects: int = 0
    accepted: int = 0
    applied: int = 0
    refused: int = 0
    failed: int = 0
    failures: dict[str, list[tuple[int, Batch, str]]] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.objects += outcome.objects
        self.accepted += outcome.accepted
        self.applied += outcome.applied
        self.refused += outcome.refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--show", type=int, default=1, help="smallest examples per failure")
    parser.add_argument(
        "--shrink",
        type=int,
        default=0,
        metavar="N",
        help="then let hypothesis find and shrink each failure kind (N examples each)",
    )
    args = parser.parse_args()
    configure_logging("console", level=logging.CRITICAL)
    totals = Totals()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ccm-soak-") as tmp, EtcdServer() as server:
        base = Path(tmp)
        template = seed_root(base / "template")
        workdir = base / "roots"
        workdir.mkdir()
        etcd = EtcdSettings(endpoints=(server.endpoint,), prefix="/soak", timeout=10.0)
        with EtcdClient.from_settings(etcd) as client:

            @settings(
                max_examples=args.examples,
                deadline=None,
                phases=[Phase.generate],
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(batch=batches())
            def soak(batch: Batch) -> None:
                totals.examples += 1
                outcome = Outcome()
                try:
                    outcome = run_property(client, etcd.prefix, template, workdir, batch)
                except Exception as error:  # noqa: BLE001 - every failure is a finding
                    totals.failed += 1
                    found = totals.failures.setdefault(signature(error), [])
                    found.append((len(repr(batch)), batch, str(error)[:2000]))
                    found.sort(key=lambda item: item[0])
                    del found[args.show :]
                totals.add(outcome)
                if totals.examples % 100 == 0:
                    print(
                        f"... {totals.examples} examples, {totals.failed} failed, "
                        f"{time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                    )

            if args.seed is not None:
                soak = seed(args.seed)(soak)
            soak()
            if args.shrink:
                for name in sorted(totals.failures):
                    shrunk = shrink(client, etcd.prefix, template, workdir, name, args.shrink)
                    if shrunk is not None:
                        totals.failures[name].insert(0, (0, shrunk, "(shrunk by hypothesis)"))
    elapsed = time.monotonic() - started
    for name, found in sorted(totals.failures.items()):
        print(f"\n=== {name}")
        for _, batch, message in found:
            print(repr(batch))
            print("  -> " + message.replace("\n", "\n     ")[:1500])
    print(
        f"\nexamples run: {totals.examples} in {elapsed:.0f} s "
        f"({elapsed / max(totals.examples, 1) * 1000:.0f} ms each)\n"
        f"objects drawn: {totals.objects}, accepted: {totals.accepted}, "
        f"applied: {totals.applied}, refused: {totals.refused}\n"
        f"failures: {totals.failed} examples, {len(totals.failures)} distinct signatures"
    )
    return 1 if totals.failed else 0


if __name__ == "__main__":
    sys.exit(main())
