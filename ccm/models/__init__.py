"""Layer 1: the object types as pydantic models (pure data, strict validation)."""

from ccm.models.objects import (
    CcmObject,
    Cluster,
    Cron,
    FpmPool,
    MailAccount,
    Node,
    UnixUser,
    VirtualHost,
)
from ccm.models.snapshot import Snapshot
from ccm.models.types import (
    OBJECT_TYPES,
    cross_object_problems,
    model_for,
    parse_object,
    parse_objects,
    referrers_of,
)

__all__ = [
    "OBJECT_TYPES",
    "CcmObject",
    "Cluster",
    "Cron",
    "FpmPool",
    "MailAccount",
    "Node",
    "Snapshot",
    "UnixUser",
    "VirtualHost",
    "cross_object_problems",
    "model_for",
    "parse_object",
    "parse_objects",
    "referrers_of",
]
