"""Objects a node refused: ``{prefix}/failures/<type>/<id>/<node>``, one record per node.

When a node cannot apply one tenant's object for a reason that tenant caused (the name
is taken on that node by an account made by hand, the user wrote their own crontab),
the node leaves that object as it is, applies the rest, and says so here. A Cluster API
reads ``{prefix}/failures/<type>/<id>/`` to show the object's deployment status
("failed on web02: …"); ``ccm status`` lists them. The record is removed by the
node's next run that applies the object (or that finds it deleted).

Records are written with the node's success record, in the same transaction fenced on
the cluster lock, at most ``WRITES_BUDGET`` bytes of them per run (the next runs write
the rest). Each record::

    {"node", "configuration", "error", "revision", "at"}
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, astuple, dataclass
from datetime import datetime
from typing import Any

from ccm.cluster.bounded import WRITES_BUDGET, within_budget
from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import Delete, EtcdClient, Put
from ccm.cluster.keys import Keys
from ccm.plan.operations import Refusal


@dataclass(frozen=True)
class ObjectFailure:
    object: str
    node: str
    configuration: str
    error: str
    revision: int
    at: str

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["object"]
        return json.dumps(data).encode()


class ObjectFailures:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.failures_prefix = self.keys.failures

    def key(self, name: str, node: str) -> str:
        """``{prefix}/failures/<type>/<id>/<node>`` for the object ``<type>/<id>``."""
        return self.keys.failure(name, node)

    def all(self) -> list[ObjectFailure]:
        """Every record, ordered by object then node; unreadable ones are skipped."""
        kvs, _ = self.client.get_prefix(self.failures_prefix)
        found = []
        for kv in kvs:
            name, _, node = kv.key[len(self.failures_prefix) :].rpartition("/")
            try:
                data: dict[str, Any] = json.loads(kv.value)
                found.append(
                    ObjectFailure(
                        name,
                        node,
                        str(data["configuration"]),
                        str(data["error"]),
                        int(data["revision"]),
                        str(data["at"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda failure: (failure.object, failure.node))

    def sync_ops(
        self,
        node: str,
        refused: Mapping[str, Refusal],
        ran: Collection[str],
        revision: int,
        at: datetime,
    ) -> list[Put | Delete]:
        """The writes that make this node's records match a run that planned the
        configurations ``ran`` and refused ``refused``: new records put, and the records
        of those configurations whose objects it now applied removed."""
        mine = {f.object: f for f in self.all() if f.node == node}
        puts: list[Put | Delete] = []
        for name, refusal in sorted(refused.items()):
            known = mine.get(name)
            if known and (known.configuration, known.error) == astuple(refusal):
                continue  # the same refusal: keep the record of when it began
            failure = ObjectFailure(
                name, node, refusal.configuration, refusal.reason, revision, timestamp(at)
            )
            puts.append(Put(self.key(name, node), failure.to_json()))
        deletes: list[Put | Delete] = [
            Delete(self.key(failure.object, node))
            for failure in mine.values()
            if failure.object not in refused and failure.configuration in ran
        ]
        # one run writes a bounded share; the next runs write the rest (they find these
        # recorded): 20,000 pools refused at once must not make a transaction etcd refuses
        return within_budget(puts, WRITES_BUDGET) + within_budget(deletes, WRITES_BUDGET)
