"""``ccm rollout``: how far the fleet is with a revision, and waiting until it is done.

Each node is, for revision R:

* ``applied``  — its record says it applied R or later;
* ``halted``   — the halt record names it (the rollout stopped there);
* ``applying`` — it holds the cluster lock;
* ``waiting``  — it is queued for the lock;
* ``behind``   — alive, not queued yet (debouncing, or stopped by the halt flag);
* ``dead``     — not applied and no presence key: it catches up when it comes back.

The rollout is done when every live node applied R; it failed when the halt flag is
set. ``wait_for`` polls with an injected clock and reports each change of the picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ccm.cluster.canary import Soak, SoakRecord
from ccm.cluster.clock import Clock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltFlag, HaltRecord
from ccm.cluster.lock import lock_queue
from ccm.cluster.nodes import NodeRecords
from ccm.cluster.store import ObjectStore
from ccm.models import Node

State = Literal["applied", "halted", "applying", "waiting", "behind", "dead"]
Outcome = Literal["done", "halted", "timeout"]


@dataclass(frozen=True)
class NodeProgress:
    node: str
    state: State
    applied_revision: int | None
    alive: bool


@dataclass(frozen=True)
class Rollout:
    revision: int
    nodes: list[NodeProgress]
    halt: HaltRecord | None = None
    #: live nodes that have not applied the revision
    remaining: list[str] = field(default_factory=list)
    #: the canaries of the newest change set and the seconds of soak left (None:
    #: canaries still to come); no soak record: None
    soak: Soak | None = None
    soak_left: float | None = None

    @property
    def done(self) -> bool:
        return self.halt is None and not self.remaining

    def as_json(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "done": self.done,
            "halt": None if self.halt is None else self.halt.__dict__,
            "nodes": [progress.__dict__ for progress in self.nodes],
            "soak": None
            if self.soak is None
            else {**self.soak.__dict__, "seconds_left": self.soak_left},
        }

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for progress in self.nodes:
            counts[progress.state] = counts.get(progress.state, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"revision {self.revision}: {parts or 'no nodes'}"

    def lines(self) -> list[str]:
        lines = [self.summary()]
        for progress in self.nodes:
            applied = "-" if progress.applied_revision is None else str(progress.applied_revision)
            lines.append(f"  {progress.node:<20} {progress.state:<9} applied {applied}")
        if self.soak is not None and self.soak.revision >= self.revision:
            left = (
                "canaries still applying"
                if self.soak_left is None
                else f"{self.soak_left:.0f} s left"
            )
            lines.append(f"soak: canaries {', '.join(self.soak.canaries)}; {left}")
        if self.halt is not None:
            lines.append(
                f"HALTED by {self.halt.node} ({self.halt.configuration}): {self.halt.error}"
            )
        return lines


def latest_revision(client: EtcdClient, prefix: str) -> int:
    return max(ObjectStore(client, prefix).event_revisions().values(), default=0)


def rollout(client: EtcdClient, prefix: str, revision: int) -> Rollout:
    records = NodeRecords(client, prefix)
    known = records.all()
    alive = records.alive()
    registered = {
        n.hostname for n in ObjectStore(client, prefix).list(Node.TYPE) if isinstance(n, Node)
    }
    queue = [entry.node for entry in lock_queue(client, prefix)]
    halt = HaltFlag(client, prefix).get()
    nodes = []
    for name in sorted(set(known) | alive | registered):
        record = known.get(name)
        applied = record.applied_revision if record else None
        state: State
        if applied is not None and applied >= revision:
            state = "applied"
        elif halt is not None and halt.node == name:
            state = "halted"
        elif name not in alive:
            state = "dead"
        elif queue and queue[0] == name:
            state = "applying"
        elif name in queue:
            state = "waiting"
        else:
            state = "behind"
        nodes.append(NodeProgress(name, state, applied, name in alive))
    remaining = [p.node for p in nodes if p.alive and p.state != "applied"]
    soak = SoakRecord(client, prefix).get()
    left = soak.seconds_left(datetime.now(UTC)) if soak is not None else None
    return Rollout(revision, nodes, halt, remaining, soak, left)


def wait_for(
    client: EtcdClient,
    prefix: str,
    revision: int,
    *,
    timeout: float,
    clock: Clock,
    sleep: Callable[[float], None],
    report: Callable[[Rollout], None],
    interval: float = 0.2,
) -> tuple[Outcome, Rollout]:
    """Poll until every live node applied ``revision`` (done), the halt flag is set
    (halted) or ``timeout`` seconds passed; ``report`` sees every changed picture.
    ``sleep`` waits between polls (``ManualClock.advance`` in tests)."""
    deadline = clock.monotonic() + timeout
    shown: list[NodeProgress] | None = None
    while True:
        current = rollout(client, prefix, revision)
        if current.nodes != shown:
            report(current)
            shown = current.nodes
        if current.halt is not None:
            return "halted", current
        if current.done:
            return "done", current
        if clock.monotonic() >= deadline:
            return "timeout", current
        sleep(min(interval, max(0.0, deadline - clock.monotonic())))
