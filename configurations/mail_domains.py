"""``mail-domains``: a domain the cluster takes mail for, and who owns it.

A mail domain belongs to a tenant (``unix_user_id``); the domain's accounts and aliases
are that tenant's (they refer to the domain, and the Cluster API grants them to the
domain's owner only). A domain that is also a name served on the web (a vhost's or a
redirect's domain or alias; ``NAME_HOLDERS``) must have that name's owner: otherwise one
tenant could take the mail of another tenant's web site.

``is_local``: the cluster delivers the domain's mail itself (Postfix's virtual mailbox
domains). A domain that is not local keeps its accounts (they log in to Dovecot and
send), but mail to it leaves for its MX: no mailbox, alias or catch-all of it is in
Postfix's maps.

``catch_all_forward_addresses``: where mail to an address of the domain that is no
account and no alias goes (Postfix's ``@domain`` entry in the alias map). The domain's
accounts then map to themselves in the alias map, so the catch-all never takes their
mail (``mail-aliases``, ``PostfixMaps``).

What Postfix renders from these is planned in ``configurations/mail_aliases.py``
(``postfix-maps``), which reads all three mail types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, cast

from pydantic import Field

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import Email, Hostname, ObjectId, Ref
from ccm.models.names import ServerName
from configurations.mail_routing import (
    MAIL_ACCOUNTS,
    MAIL_ALIASES,
    MAIL_DOMAINS,
    Routing,
    loop_problem,
    per_view,
)
from configurations.server_names import NAME_TYPES

#: types whose objects serve host names (``domain``, ``server_aliases``) for an owner
#: (``unix_user_id``): a mail domain among those names must be that owner's: the vhosts
#: and the redirects (``configurations.server_names``)
NAME_HOLDERS: tuple[str, ...] = NAME_TYPES

#: forward targets per alias or catch-all (Postfix takes more; a tenant needs fewer)
MAX_FORWARDS = 50

ForwardAddresses = Annotated[list[Email], Field(min_length=1, max_length=MAX_FORWARDS)]


class MailDomain(CcmObject):
    """A domain the cluster takes mail for; its owner owns its accounts and aliases."""

    TYPE: ClassVar[str] = MAIL_DOMAINS
    #: the addresses and mailbox paths of its accounts derive from the domain
    IMMUTABLE: ClassVar[tuple[str, ...]] = ("domain",)
    READS: ClassVar[tuple[str, ...]] = (*NAME_HOLDERS, MAIL_DOMAINS, MAIL_ALIASES, MAIL_ACCOUNTS)

    domain: Hostname
    unix_user_id: Annotated[ObjectId, Ref("unix-users")]
    catch_all_forward_addresses: list[Email] = Field(default_factory=list, max_length=MAX_FORWARDS)
    is_local: bool = Field(default=True, strict=True)

    def unique_keys(self) -> dict[str, Any]:
        return {"domain": self.domain}

    def problems(self, view: ObjectsView) -> list[str]:
        problems = self._name_owner_problems(view)
        if self.is_local and self.catch_all_forward_addresses:
            routing = Routing.of(view)
            problems += loop_problem(
                self.describe(),
                "catch_all_forward_addresses",
                routing,
                "@" + self.domain.lower(),
            )
        return problems

    def _name_owner_problems(self, view: ObjectsView) -> list[str]:
        served = per_view(view, "served names", _served_names)
        holders = [*served.exact.get(self.domain, ())]
        labels = self.domain.split(".")
        for index in range(1, len(labels)):  # a wildcard on a domain above it
            holders += served.wildcard.get(".".join(labels[index:]), ())
        return [
            f"{self.describe()}: domain: {self.domain} is served as {name} by "
            f"{holder} of another owner (unix-users/{owner}); a mail domain has the owner "
            "of its web name"
            for name, holder, owner in holders
            if owner != self.unix_user_id
        ]


class NameHolder(Protocol):
    """What a ``NAME_HOLDERS`` type has: the names it serves, for an owner."""

    @property
    def unix_user_id(self) -> int: ...
    @property
    def domain(self) -> str: ...
    @property
    def server_aliases(self) -> list[str]: ...

    def describe(self) -> str: ...


@dataclass
class ServedNames:
    """Every name the ``NAME_HOLDERS`` serve: base → (name, holder, owner)."""

    exact: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    wildcard: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)


def _served_names(view: ObjectsView) -> ServedNames:
    served = ServedNames()
    for type_name in NAME_HOLDERS:
        for obj in view.list_type(type_name):
            holder = cast(NameHolder, obj)
            owner = holder.unix_user_id
            for name in (holder.domain, *holder.server_aliases):
                parsed = ServerName.parse(name)
                entry = (name, holder.describe(), owner)
                if parsed.exact:
                    served.exact.setdefault(parsed.base, []).append(entry)
                if parsed.wildcard:
                    served.wildcard.setdefault(parsed.base, []).append(entry)
    return served
