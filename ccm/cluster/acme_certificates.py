"""An issued certificate stored as a ``certificates`` object, through the validated writer.

The one place where the ACME side meets the ``certificates`` type: the object has
DESIGN's fields (``common_names``, ``certificate``, ``ca_chain``, ``private_key``) and is
written with ``ObjectStore.put``, so it passes the same checks as a certificate a tenant
uploads (key matches, chain links, names covered) and reaches every web node by the
normal rollout. A refusal is the order's failure, recorded like any other.

The id: a manager's certificate keeps one id for life (renewals replace it in place, so
vhosts that use it need no change). It is reserved in the manager's state before the
first order, as one more than any certificate id stored, deleted (tombstones) or
reserved by another manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ccm.cluster.acme_client import Issued
from ccm.cluster.acme_records import CERTIFICATES
from ccm.cluster.store import ObjectStore


def certificate_object(certificate_id: int, names: Sequence[str], issued: Issued) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": certificate_id,
        "common_names": list(names),
        "certificate": issued.certificate,
        "private_key": issued.private_key,
    }
    if issued.chain:
        obj["ca_chain"] = issued.chain
    return obj


def save_certificate(
    store: ObjectStore, certificate_id: int, names: Sequence[str], issued: Issued
) -> int:
    """Store (or replace) the certificate; the revision of the write."""
    return store.put(CERTIFICATES, [certificate_object(certificate_id, names, issued)])


def new_certificate_id(taken: Iterable[int]) -> int:
    return max(taken, default=0) + 1
