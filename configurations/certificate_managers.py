"""``certificate-managers``: a certificate for these names, obtained and renewed over ACME.

The object only asks; the ordering node (``primary_for`` nginx) does the rest outside the
cluster lock (``ccm/cluster/acme_renewal.py``): it orders over HTTP-01, stores the result
as a ``certificates`` object through the validated writer, and renews it 30 days before
it expires. Nothing is rendered from this type on a node, so it has no configuration.

Names (write time, both ways): each name must be one a vhost or a redirect serves (the
server block nginx picks for it, an exact name before a wildcard), because HTTP-01 asks
for ``http://<name>/.well-known/acme-challenge/…`` and only a served name reaches a
node's responder. Every name's server block belongs to one owner, the manager's
``unix_user_id`` when it has one: a tenant never orders a certificate for another
tenant's name. The rule ``READS`` vhosts and redirects, so a vhost or redirect write that
would leave a manager's name unserved, or served by another owner, is refused, naming
the manager. Wildcard names are refused: HTTP-01 cannot prove them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import Hostname, ObjectId, Ref
from ccm.models.names import canonical
from configurations.server_names import NAME_TYPES, server_for

#: Let's Encrypt's limit of names per certificate
MAX_NAMES = 100


class CertificateManager(CcmObject):
    """Obtain and renew a certificate for ``common_names`` over ACME (HTTP-01)."""

    TYPE: ClassVar[str] = "certificate-managers"
    READS: ClassVar[tuple[str, ...]] = NAME_TYPES

    common_names: list[Hostname] = Field(min_length=1, max_length=MAX_NAMES)
    unix_user_id: Annotated[ObjectId, Ref("unix-users")] | None = None

    @field_validator("common_names")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        seen = [canonical(name) for name in names]
        repeated = sorted({name for name in seen if seen.count(name) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} given twice")
        return names

    def problems(self, view: ObjectsView) -> list[str]:
        where = f"{self.describe()}: common_names"
        problems: list[str] = []
        owners: dict[int, list[str]] = {}
        for name in self.common_names:
            block = server_for(view, name)
            if block is None:
                problems.append(
                    f"{where}: {name} is served by no virtual host or redirect (HTTP-01 "
                    "reaches a node's responder only through a name a server block serves)"
                )
                continue
            if self.unix_user_id is not None and block.unix_user_id != self.unix_user_id:
                problems.append(
                    f"{where}: {name} is served by {block.describe()} of unix-users/"
                    f"{block.unix_user_id}, not of this manager's owner unix-users/"
                    f"{self.unix_user_id}"
                )
            owners.setdefault(block.unix_user_id, []).append(name)
        if self.unix_user_id is None and len(owners) > 1:
            parts = "; ".join(
                f"unix-users/{owner}: {', '.join(names)}" for owner, names in sorted(owners.items())
            )
            problems.append(f"{where}: the names belong to more than one owner ({parts})")
        return problems
