"""The halt flag: ``{prefix}/halt``, the cluster-wide stop for a bad rollout.

A node whose run fails writes the record (in the same transaction that releases the
cluster lock, see ``ccm.daemon.node_run``); ``ccm halt`` writes it by hand;
``ccm resume`` deletes it. Every node checks it under the lock before applying, and a
halted node waits for the key's deletion by watching it — no polling.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from datetime import datetime

from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import EtcdClient, Put
from ccm.cluster.keys import Keys
from ccm.errors import ClusterError


@dataclass(frozen=True)
class HaltRecord:
    node: str
    configuration: str
    error: str
    revision: int
    at: str

    @classmethod
    def now(
        cls, node: str, configuration: str, error: str, revision: int, at: datetime
    ) -> HaltRecord:
        return cls(node, configuration, error, revision, timestamp(at))

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()


class HaltFlag:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.key = Keys(prefix).halt

    def get(self) -> HaltRecord | None:
        kv = self.client.get(self.key)
        if kv is None:
            return None
        try:
            data = json.loads(kv.value)
            return HaltRecord(
                node=str(data.get("node", "?")),
                configuration=str(data.get("configuration", "?")),
                error=str(data.get("error", "")),
                revision=int(data.get("revision", 0)),
                at=str(data.get("at", "")),
            )
        except (ValueError, AttributeError):  # a hand-written value still halts
            return HaltRecord("?", "?", kv.value.decode(errors="replace"), 0, "")

    def set_op(self, record: HaltRecord) -> Put:
        return Put(self.key, record.to_json())

    def set(self, record: HaltRecord) -> None:
        self.client.put(self.key, record.to_json())

    def clear(self) -> bool:
        """Remove the flag; True if it was set."""
        return self.client.delete(self.key) > 0

    def wait_cleared(
        self, stop: threading.Event, timeout: float = 5.0, recheck: float = 60.0
    ) -> bool:
        """Block until the flag is gone (True) or ``stop`` is set (False). Never raises.

        Watches the key from the revision at which it was seen set, so a resume between
        the read and the watch is not missed. ``timeout`` bounds each wait so ``stop``
        is noticed promptly; a broken watch is re-established after a back-off, and the
        key is re-read every ``recheck`` seconds in case a watch stalled silently.
        """
        delay = 0.5
        while not stop.is_set():
            try:
                kvs, revision = self.client.get_prefix(self.key)
                if not any(kv.key == self.key for kv in kvs):
                    return True
                waited = 0.0
                with self.client.watch_prefix(self.key, start_revision=revision + 1) as watch:
                    while not stop.is_set() and waited < recheck:
                        batch = watch.get(timeout=timeout)
                        waited += timeout
                        if batch is None:
                            if watch.done:
                                break
                            continue
                        if any(e.key == self.key and e.type == "delete" for e in batch.events):
                            return True
                delay = 0.5
            except ClusterError:
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, 10.0)
        return False
