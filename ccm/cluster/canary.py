"""Canary and soak: ``[rollout] canary = N``, ``soak = S`` (seconds).

A change set is identified by the newest events revision E. The first N nodes to take
the lock after E apply it (the canaries); the others then wait until S seconds after the
last canary finished, while each canary re-runs its health probes; a canary that fails,
or whose probes fail during the soak, sets the halt flag and the rest never apply E.
A newer write is a new change set: its own canaries, its own soak.

State, in etcd, written under the cluster lock (in the runs' fenced transactions)::

    {prefix}/soak = {"revision": E, "canaries": [node…], "until": ISO-8601 | null}

``until`` is null while canaries are still to come. Decisions are pure functions of
that record, the node, E and the wall time, so they are tested without etcd or sleeps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import EtcdClient, Put
from ccm.cluster.keys import Keys

Decision = Literal["apply", "canary", "wait"]


@dataclass(frozen=True)
class Soak:
    revision: int
    canaries: list[str] = field(default_factory=list)
    until: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Soak | None:
        try:
            data = json.loads(raw)
            return cls(int(data["revision"]), [str(n) for n in data["canaries"]], data["until"])
        except (ValueError, KeyError, TypeError):
            return None

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until the soak ends; None while canaries are still to come."""
        if self.until is None:
            return None
        return max(0.0, (datetime.fromisoformat(self.until) - now).total_seconds())


def decide(soak: Soak | None, node: str, revision: int, canaries: int, now: datetime) -> Decision:
    """What ``node`` does with the change set ``revision`` (the newest events revision)."""
    if canaries <= 0:
        return "apply"
    if soak is None or soak.revision < revision:
        return "canary"  # the first to take a new change set
    if node in soak.canaries:
        return "apply"
    if len(soak.canaries) < canaries:
        return "canary"
    left = soak.seconds_left(now)
    return "apply" if left is not None and left <= 0 else "wait"


def after_canary(
    soak: Soak | None, node: str, revision: int, canaries: int, soak_seconds: float, now: datetime
) -> Soak:
    """The record once ``node`` applied ``revision`` as a canary: the soak starts with the
    last canary."""
    listed = list(soak.canaries) if soak is not None and soak.revision == revision else []
    if node not in listed:
        listed.append(node)
    ends = now + timedelta(seconds=soak_seconds)
    until = timestamp(ends) if len(listed) >= canaries else None
    return Soak(revision, listed, until)


class SoakRecord:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.key = Keys(prefix).soak

    def get(self) -> Soak | None:
        kv = self.client.get(self.key)
        return None if kv is None else Soak.from_json(kv.value)

    def put_op(self, soak: Soak) -> Put:
        return Put(self.key, soak.to_json())
