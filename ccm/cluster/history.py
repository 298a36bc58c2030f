"""Run history: ``{prefix}/history/<node>/<run>``, one record per run, the oldest pruned.

Every run a node finishes (success or failure) leaves a record: node, revision,
started, finished, result, error, what changed (paths and ``account:<name>``, never file
contents), the actions it ran and the objects it refused. Records are written in the
same fenced transaction as the node's own record, and the oldest beyond ``keep`` are
deleted in it too, so the history stays bounded without a separate cleaner. The run id
sorts in time: ``<started, UTC, to the microsecond>-<revision>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ccm.cluster.bounded import bounded, bounded_map
from ccm.cluster.etcd import Delete, EtcdClient, Op, Put
from ccm.cluster.keys import Keys


@dataclass(frozen=True)
class RunRecord:
    node: str
    revision: int
    started: str
    finished: str
    result: str  # "success" | "failed"
    changed: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    error: str = ""
    refused: dict[str, str] = field(default_factory=dict)
    #: entries left out of ``changed``, ``actions`` and ``refused`` (ccm.cluster.bounded)
    omitted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def bounded(
        cls,
        node: str,
        revision: int,
        started: str,
        finished: str,
        result: str,
        changed: Sequence[str] = (),
        actions: Sequence[str] = (),
        error: str = "",
        refused: Mapping[str, str] | None = None,
    ) -> RunRecord:
        """A record that fits in etcd however much the run did."""
        kept_changed, more_changed = bounded(changed)
        kept_actions, more_actions = bounded(actions)
        kept_refused, more_refused = bounded_map(refused or {})
        more = {"changed": more_changed, "actions": more_actions, "refused": more_refused}
        return cls(
            node,
            revision,
            started,
            finished,
            result,
            kept_changed,
            kept_actions,
            error,
            kept_refused,
            {name: count for name, count in more.items() if count},
        )

    def to_json(self) -> bytes:
        data = asdict(self)
        if not self.omitted:  # only when a list was cut
            del data["omitted"]
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RunRecord:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            node=str(data["node"]),
            revision=int(data["revision"]),
            started=str(data["started"]),
            finished=str(data["finished"]),
            result=str(data["result"]),
            changed=[str(item) for item in data.get("changed", [])],
            actions=[str(item) for item in data.get("actions", [])],
            error=str(data.get("error", "")),
            refused={str(k): str(v) for k, v in dict(data.get("refused", {})).items()},
            omitted={str(k): int(v) for k, v in dict(data.get("omitted", {})).items()},
        )


class RunHistory:
    def __init__(self, client: EtcdClient, prefix: str, keep: int = 100) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.history_prefix = self.keys.history
        self.keep = keep

    def run_id(self, started: datetime, revision: int) -> str:
        return f"{started.strftime('%Y%m%dT%H%M%S.%f')}-{revision:012d}"

    def record_ops(self, record: RunRecord, started: datetime) -> list[Op]:
        """Put ``record`` and delete the node's oldest records beyond ``keep``."""
        node_prefix = self.keys.history_of(record.node)
        kvs, _ = self.client.get_prefix(node_prefix)
        existing = sorted(kv.key for kv in kvs)
        surplus = len(existing) + 1 - self.keep
        ops: list[Op] = [Delete(key) for key in existing[: max(surplus, 0)]]
        ops.append(Put(node_prefix + self.run_id(started, record.revision), record.to_json()))
        return ops

    def read(self, node: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """The newest runs first (of one node, or of all), at most ``limit``."""
        prefix = self.keys.history_of(node) if node else self.history_prefix
        kvs, _ = self.client.get_prefix(prefix)
        records = []
        for kv in kvs:
            try:
                records.append((kv.key.rpartition("/")[2], RunRecord.from_json(kv.value)))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged record is skipped, never fatal
        records.sort(key=lambda item: item[0], reverse=True)
        found = [record for _, record in records]
        return found if limit is None else found[:limit]
