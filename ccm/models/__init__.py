"""Layer 1: the object types as pydantic models (pure data, strict validation)."""

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.objects import (
    AbsolutePath,
    Alias,
    Cluster,
    Cron,
    FpmPool,
    Hostname,
    MailAccount,
    Node,
    ObjectId,
    Ref,
    Text,
    UnixUser,
    VirtualHost,
    pattern,
)
from ccm.models.snapshot import Snapshot
from ccm.models.types import (
    OBJECT_TYPES,
    cross_object_problems,
    model_for,
    parse_object,
    parse_objects,
    readers_of,
    reads_of,
    referrers_of,
)

__all__ = [
    "AbsolutePath",
    "Alias",
    "Hostname",
    "ObjectId",
    "ObjectsView",
    "Ref",
    "Text",
    "pattern",
    "readers_of",
    "reads_of",
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
