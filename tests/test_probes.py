"""Health probes, the gate before the lock is released (issue 10, part 4).

A real temporary root, real (harmless) commands; the retry window runs on an injected
clock. A probe that keeps failing fails the run: the files are restored, the services
reloaded again, and the halt record carries the probe's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ProbeFailed, SettingsError
from ccm.models import Snapshot
from ccm.plan.changes import Change, File, Probe, UnitAction
from ccm.plan.configuration import Configuration, Render
from ccm.plan.executor import Executor
from ccm.settings import EtcdSettings, Settings
from ccm.testing.noderoot import actions, logging_command, node_settings, seed_root

SITE = "/etc/web/site.conf"


class Web(Configuration):
    """A web server's site file, its reload and its probe (argv from settings)."""

    name = "web"
    subscribes = ("unix-users",)
    probes: ClassVar = {"web_probe": ("true",)}
    content: ClassVar[str] = "v1\n"

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [
            File(SITE, Web.content),
            UnitAction("web", "reload", triggers=("/etc/web/",)),
            Probe("web_probe", triggers=("/etc/web/",), variables={"port": "8080"}),
        ]


def settings_for(root: Path, probe: list[str], **overrides: object) -> Settings:
    return node_settings(
        root,
        logged_checks=(),
        passing_probes=(),
        commands={"reload_unit": logging_command(root, "reload {unit}")},
        probes={"web_probe": probe},
        **overrides,
    )


def engine(settings: Settings) -> Engine:
    return Engine(Registry([Web]), settings)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Web.content = "v1\n"
    return seed_root(tmp_path / "root")


def counting_probe(root: Path, passes_from: int) -> list[str]:
    """A probe that fails until its ``passes_from``-th attempt (a service warming up)."""
    script = (
        'n=$(cat "$0/attempts" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$0/attempts"; '
        f'[ $n -ge {passes_from} ] || {{ echo "connection refused on port $1"; exit 7; }}'
    )
    return ["sh", "-c", script, str(root), "{port}"]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_with_clock(settings: Settings, clock: FakeTime) -> None:
    planned = engine(settings).plan(Snapshot(1))
    Executor(
        settings,
        planned.manifest,
        planned.accounts,
        probes=engine(settings).probes,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    ).apply(planned.operations)


def test_a_probe_that_passes_after_a_warm_up_lets_the_run_succeed(root: Path) -> None:
    settings = settings_for(
        root, counting_probe(root, 3), rollout={"probe_timeout": 5, "probe_interval": 1}
    )
    clock = FakeTime()
    run_with_clock(settings, clock)
    assert (root / "attempts").read_text() == "3\n"
    assert clock.now == 2  # two waits of probe_interval between three attempts
    assert (root / SITE.lstrip("/")).read_text() == "v1\n"


def test_a_probe_that_keeps_failing_restores_reloads_again_and_names_its_output(
    root: Path,
) -> None:
    settings = settings_for(root, ["true"])
    engine(settings).apply(Snapshot(1))
    assert actions(root) == ["reload web"]

    Web.content = "v2 broken\n"
    failing = settings_for(
        root, counting_probe(root, 99), rollout={"probe_timeout": 3, "probe_interval": 1}
    )
    clock = FakeTime()
    with pytest.raises(ProbeFailed) as failed:
        run_with_clock(failing, clock)
    assert "connection refused on port 8080" in str(failed.value)
    assert failed.value.configuration == "web"
    assert clock.now == 3 and (root / "attempts").read_text() == "4\n"
    assert (root / SITE.lstrip("/")).read_text() == "v1\n"  # restored
    # reloaded with the new file, then again with the restored one
    assert actions(root) == ["reload web", "reload web", "reload web"]
    # the manifest is as before the run: the same change is planned again
    assert engine(settings).plan(Snapshot(2)).has_changes


def test_a_probe_runs_only_when_its_triggers_changed(root: Path) -> None:
    settings = settings_for(root, counting_probe(root, 1))
    engine(settings).apply(Snapshot(1))
    report = engine(settings).apply(Snapshot(2))
    assert (root / "attempts").read_text() == "1\n"
    assert report.actions == []


def test_an_unknown_probe_name_is_refused_at_start(root: Path) -> None:
    settings = node_settings(
        root, logged_checks=(), passing_probes=(), probes={"wbe_probe": ["true"]}
    )
    with pytest.raises(SettingsError, match="probes.wbe_probe: unknown probe .known: web_probe"):
        engine(settings)


def test_a_failed_probe_halts_the_rollout_with_its_output(
    root: Path, etcd_client: EtcdClient, etcd_settings: EtcdSettings, store: ObjectStore
) -> None:
    settings = settings_for(
        root,
        ["sh", "-c", "echo 'php-fpm: no pong'; exit 1"],
        rollout={"probe_timeout": 0},
        etcd=etcd_settings.model_dump(),
    )
    store.put("unix-users", [{"id": 1, "username": "alice"}])
    outcome = NodeRun(settings, etcd_client, engine(settings)).run(full=True)
    assert outcome.result == "failed"
    halt = NodeRun(settings, etcd_client, engine(settings)).halt.get()
    assert halt is not None and halt.configuration == "web"
    assert "php-fpm: no pong" in halt.error and "restored" in halt.error
    assert not (root / SITE.lstrip("/")).exists()


class Pools(Configuration):
    """Three pools' files, each with a probe of its socket; two share one socket."""

    name = "pools"
    subscribes = ("unix-users",)
    probes: ClassVar = {"pool_probe": ("true",)}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        changes: list[Change] = []
        for name, socket in (("a", "a.sock"), ("b", "b.sock"), ("c", "b.sock")):
            changes.append(File(f"/etc/pools/{name}.conf", f"{name}\n"))
            changes.append(
                Probe("pool_probe", triggers=(f"/etc/pools/{name}.",), variables={"socket": socket})
            )
        return changes


def run_pools(root: Path, probe: list[str]) -> Exception | None:
    settings = node_settings(
        root,
        logged_checks=(),
        passing_probes=(),
        probes={"pool_probe": probe},
        rollout={"probe_timeout": 0},
    )
    pools = Engine(Registry([Pools]), settings)
    planned = pools.plan(Snapshot(1))
    executor = Executor(settings, planned.manifest, planned.accounts, probes=pools.probes)
    try:
        executor.apply(planned.operations)
    except ProbeFailed as failed:
        return failed
    return None


def test_the_same_probe_command_runs_once_per_run(root: Path) -> None:
    count = 'echo "$1" >> "$0/probed"'
    assert run_pools(root, ["sh", "-c", count, str(root), "{socket}"]) is None
    assert sorted((root / "probed").read_text().split()) == ["a.sock", "b.sock"]


def test_probes_run_side_by_side(root: Path) -> None:
    """Each probe passes only once the other has started too: run one after the other,
    the first gives up after its ten seconds and the run fails."""
    meet = (
        'touch "$0/arrived-$1"; for i in $(seq 100); do '
        '[ "$(ls "$0" | grep -c arrived-)" -ge 2 ] && exit 0; sleep 0.1; done; '
        'echo "alone at $1"; exit 9'
    )
    assert run_pools(root, ["sh", "-c", meet, str(root), "{socket}"]) is None
    assert {p.name for p in root.glob("arrived-*")} == {"arrived-a.sock", "arrived-b.sock"}


def test_the_first_failing_probe_in_order_is_reported_after_all_ran(root: Path) -> None:
    fail_b = 'echo "$1" >> "$0/probed"; [ "$1" = a.sock ] || { echo "down: $1"; exit 3; }'
    failed = run_pools(root, ["sh", "-c", fail_b, str(root), "{socket}"])
    assert isinstance(failed, ProbeFailed) and "down: b.sock" in str(failed)
    assert failed.configuration == "pools"
    assert sorted((root / "probed").read_text().split()) == ["a.sock", "b.sock"]
    assert not (root / "etc/pools/a.conf").exists()  # the run was restored
