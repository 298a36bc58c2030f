"""Helpers shared by the configurations: following references inside a snapshot.

The object store refuses dangling references at write time and a snapshot is read at one
revision, so a missing referenced object means a broken invariant. The planners then
raise ``PlanError`` naming both objects, rather than silently dropping the referrer
(which would make the executor delete what the referrer produced).
"""

from __future__ import annotations

from typing import TypeVar

from ccm.errors import PlanError
from ccm.models import CcmObject, Snapshot

T = TypeVar("T", bound=CcmObject)


def referenced(
    snapshot: Snapshot,
    model: type[T],
    object_id: int,
    *,
    referrer: CcmObject,
    field: str,
    configuration: str,
) -> T:
    """The object ``referrer.field`` points at; ``PlanError`` if the snapshot lacks it."""
    found = snapshot.get(model, object_id)
    if found is None:
        raise PlanError(
            configuration,
            f"{referrer.describe()}: {field} refers to {model.TYPE}/{object_id}, "
            f"which is not in the snapshot (revision {snapshot.revision})",
        )
    return found
