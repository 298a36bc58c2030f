"""``nodes``: the framework's own type: which groups of configurations run on a node.

Every other type belongs to a configuration module; this one is read by the framework
itself (placement in the engine, ``ccm status``, ``ccm rollout``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import GroupName, pattern


class Node(CcmObject):
    """A node of the cluster: which groups of configurations run on it.

    ``hostname`` equals that daemon's ``node`` setting. ``groups`` select the
    configurations that run there (each declares the groups it needs); ``primary_for``
    names groups for which this node runs the cluster-wide singleton work (SQL
    statements): at most one node per group. The group names a write may use are those
    the registered configurations declare; the writer passes them in the validation
    context (``groups``) and a misspelt one is refused.
    """

    TYPE: ClassVar[str] = "nodes"
    hostname: Annotated[
        str,
        Field(strict=True, max_length=253),
        pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a host name like web01"),
    ]
    groups: list[GroupName] = Field(default_factory=list, max_length=64)
    primary_for: list[GroupName] = Field(default_factory=list, max_length=64)

    @field_validator("groups", "primary_for")
    @classmethod
    def _known_groups(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each group may be named once")
        context = info.context if isinstance(info.context, dict) else {}
        known = context.get("groups")
        if known is not None:
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(
                    f"unknown group(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
                )
        return value

    @field_validator("primary_for")
    @classmethod
    def _primary_of_own_groups(cls, value: list[str], info: ValidationInfo) -> list[str]:
        groups = info.data.get("groups", [])
        outside = sorted(set(value) - set(groups))
        if outside:
            raise ValueError(f"{', '.join(outside)}: a node is primary only for its own groups")
        return value

    def unique_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"hostname": self.hostname}
        keys |= {f"primary_for {group}": group for group in self.primary_for}
        return keys
