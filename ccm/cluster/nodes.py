"""Node state in etcd: ``{prefix}/nodes/<node>`` records and ``{prefix}/alive/<node>``.

The record says which revision the node last applied and how its last run went; it is
what a restarted node derives its missed work from (every events key with a higher mod
revision). The alive key is bound to a lease kept alive by a running daemon, so it
vanishes by itself when the daemon dies.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ccm.cluster.bounded import bounded, bounded_map
from ccm.cluster.etcd import EtcdClient, LeaseNotFound, Put
from ccm.cluster.keys import Keys
from ccm.errors import ClusterError
from ccm.log import get_logger


@dataclass(frozen=True)
class LastRun:
    started: str
    finished: str
    result: str  # "success" | "failed"
    changed: list[str] = field(default_factory=list)
    error: str = ""
    #: objects this node refused (``unix-users/3`` → why) and left as they were
    refused: dict[str, str] = field(default_factory=dict)
    #: entries left out of ``changed`` and ``refused`` (ccm.cluster.bounded)
    omitted: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Its JSON form: ``omitted`` only when a list was cut (the usual record keeps the
        shape DESIGN gives it)."""
        data = asdict(self)
        if not self.omitted:
            del data["omitted"]
        return data

    @classmethod
    def bounded(
        cls,
        started: str,
        finished: str,
        result: str,
        changed: Sequence[str] = (),
        error: str = "",
        refused: Mapping[str, str] | None = None,
    ) -> LastRun:
        """A record that fits in etcd however much the run did."""
        kept_changed, more_changed = bounded(changed)
        kept_refused, more_refused = bounded_map(refused or {})
        more = {"changed": more_changed, "refused": more_refused}
        return cls(
            started,
            finished,
            result,
            kept_changed,
            error,
            kept_refused,
            {name: count for name, count in more.items() if count},
        )


@dataclass(frozen=True)
class NodeRecord:
    applied_revision: int
    last_run: LastRun | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "applied_revision": self.applied_revision,
            "last_run": self.last_run.as_dict() if self.last_run else None,
        }
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NodeRecord:
        data = json.loads(raw)
        last = data.get("last_run")
        return cls(
            int(data.get("applied_revision", 0)),
            LastRun(**{k: last[k] for k in LastRun.__dataclass_fields__ if k in last})
            if isinstance(last, dict)
            else None,
        )


def _parse(key: str, raw: bytes) -> NodeRecord | None:
    """A record that cannot be read counts as no record (the node then runs everything)."""
    try:
        return NodeRecord.from_json(raw)
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        get_logger().warning("unreadable node record ignored", key=key, error=str(error))
        return None


class NodeRecords:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.nodes_prefix = self.keys.nodes
        self.alive_prefix = self.keys.alive

    def key(self, node: str) -> str:
        return self.keys.node(node)

    def read(self, node: str) -> NodeRecord | None:
        kv = self.client.get(self.key(node))
        return _parse(kv.key, kv.value) if kv else None

    def put_op(self, node: str, record: NodeRecord) -> Put:
        return Put(self.key(node), record.to_json())

    def all(self) -> dict[str, NodeRecord]:
        kvs, _ = self.client.get_prefix(self.nodes_prefix)
        found = {kv.key[len(self.nodes_prefix) :]: _parse(kv.key, kv.value) for kv in kvs}
        return {node: record for node, record in found.items() if record is not None}

    def alive(self) -> set[str]:
        kvs, _ = self.client.get_prefix(self.alive_prefix)
        return {kv.key[len(self.alive_prefix) :] for kv in kvs}


class Presence:
    """Holds ``alive/<node>`` under a lease, refreshed by a background thread.

    If etcd is unreachable long enough for the lease to expire, the thread grants a new
    one and puts the key again once etcd answers.
    """

    def __init__(self, client: EtcdClient, prefix: str, node: str, ttl: int = 10) -> None:
        self.client = client
        self.key = Keys(prefix).alive_of(node)
        self.node = node
        self.ttl = ttl
        self.lease = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = get_logger(node=node)

    def _announce(self) -> None:
        lease = self.client.grant_lease(self.ttl)
        try:
            self.client.put(self.key, json.dumps({"node": self.node}).encode(), lease=lease)
        except ClusterError:
            with contextlib.suppress(ClusterError):
                self.client.revoke_lease(lease)
            raise
        self.lease = lease

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if self.lease:
                    self.client.refresh_lease(self.lease)
                else:
                    self._announce()
            except ClusterError as error:
                self.log.warning("presence lease not refreshed", error=str(error))
                if isinstance(error, LeaseNotFound):
                    self.lease = 0  # expired while etcd was away: announce again

    def start(self) -> None:
        try:
            self._announce()
        except ClusterError as error:
            self.log.warning("presence not announced yet", error=str(error))
        self._thread = threading.Thread(target=self._keep, name="ccm-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.lease:
            try:
                self.client.revoke_lease(self.lease)
            except ClusterError:
                pass  # it expires by itself
