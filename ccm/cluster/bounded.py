"""What a run's records in etcd keep of its long lists (changed paths, actions,
refusals): the first of them, up to a count and a size, and how many were left out.

A new node's first run at 100,000 objects changes 60,000 paths; listed in full, its
node record and history entry made a 5.7 MB transaction, which etcd refuses (1.5 MiB
per request by default): the run had applied everything and could not say so. The
node's own log still names every change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ccm.cluster.etcd import Delete, Put

#: at most this many entries of one list in one record
RECORDED_ITEMS = 1000
#: and at most this many bytes of them (a path may be 4 KiB, a reason longer)
RECORDED_BYTES = 128 * 1024


def _kept(sizes: Iterable[int]) -> int:
    """How many of the first entries fit both limits."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if count >= RECORDED_ITEMS or total > RECORDED_BYTES:
            return count
    return -1


def bounded(items: Sequence[str]) -> tuple[list[str], int]:
    """The entries recorded, and how many were left out."""
    kept = _kept(len(item.encode()) for item in items)
    if kept < 0:
        return list(items), 0
    return list(items[:kept]), len(items) - kept


def bounded_map(items: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """The pairs recorded (in their order), and how many were left out."""
    pairs = list(items.items())
    kept = _kept(len(key.encode()) + len(value.encode()) for key, value in pairs)
    if kept < 0:
        return dict(pairs), 0
    return dict(pairs[:kept]), len(pairs) - kept


#: bytes of one kind of per-object records (puts, or deletes) one run may write
WRITES_BUDGET = 256 * 1024


def within_budget(ops: Sequence[Put | Delete], budget: int) -> list[Put | Delete]:
    """The first of ``ops`` whose keys and values fit in ``budget`` bytes, at most
    ``RECORDED_ITEMS`` of them (etcd nests at most about 4,000 operations under one
    compare), and at least one: a run always makes progress."""
    kept: list[Put | Delete] = []
    total = 0
    for op in ops:
        total += op.size
        if kept and (total > budget or len(kept) >= RECORDED_ITEMS):
            break
        kept.append(op)
    return kept
