"""Layer 1: the models' framework: the base of every object type, the field toolkit,
the ``nodes`` type, snapshots and the type registry (pure data, strict validation).

The object types themselves live with their configurations (``configurations/<type>.py``
and third-party packages); they register by being defined.
"""

from ccm.models.base import CcmObject, ObjectsView, objects_of
from ccm.models.fields import (
    AbsolutePath,
    Alias,
    Email,
    GroupName,
    Hostname,
    ObjectId,
    Ref,
    SafeFileName,
    Secret,
    Text,
    fullmatch,
    path_inside,
    pattern,
)
from ccm.models.node import Node
from ccm.models.snapshot import Snapshot
from ccm.models.types import (
    OBJECT_TYPES,
    cross_object_problems,
    load_types,
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
    "CcmObject",
    "Email",
    "GroupName",
    "Hostname",
    "Node",
    "OBJECT_TYPES",
    "ObjectId",
    "ObjectsView",
    "Ref",
    "SafeFileName",
    "Secret",
    "Snapshot",
    "Text",
    "cross_object_problems",
    "fullmatch",
    "load_types",
    "model_for",
    "objects_of",
    "parse_object",
    "parse_objects",
    "path_inside",
    "pattern",
    "readers_of",
    "reads_of",
    "referrers_of",
]
