"""Where mail to an address of the cluster goes: the write-time rules of the mail types.

Postfix resolves a recipient ``user@domain`` of a local mail domain through
``virtual_alias_maps`` first (``user@domain``, then the catch-all ``@domain``), again
for every address an alias gives, until an address is a mailbox
(``virtual_mailbox_maps``) or leaves the cluster. ``Routing`` is that resolution over
the stored objects, as a graph whose nodes are alias addresses and catch-alls
(``@domain``): a cycle there is a forwarding loop inside the cluster, which Postfix
would only stop after ``virtual_alias_recursion_limit`` expansions and then bounce, so
the writer refuses the alias or the catch-all that closes it.

Addresses are compared as Postfix looks them up in a hash map: in lower case. Only
local domains (``is_local``) route through the maps: mail to another domain leaves
for its MX, whatever objects it has here.

The rules of three types read this (``mail-aliases``, ``mail-domains``,
``mail-accounts``), and a write re-checks every stored object of a reading type (a new
alias re-runs the rules of every account and domain). So the graph is built once per
view (``Routing.of``, ``per_view``): a view is the fixed state a write would leave, and
its ``list_type`` identifies it; each rule then only follows the addresses its own
object reaches. Building it per rule made one alias write at 1,000 domains, 2,000
accounts and 5,000 aliases take tens of seconds.

The types are read by name and by the fields they share (``MailDomainFields``, …): the
three modules import this one, never the reverse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from ccm.models.base import CcmObject, ObjectsView

MAIL_DOMAINS = "mail-domains"
MAIL_ACCOUNTS = "mail-accounts"
MAIL_ALIASES = "mail-aliases"


class MailDomainFields(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def domain(self) -> str: ...
    @property
    def is_local(self) -> bool: ...
    @property
    def catch_all_forward_addresses(self) -> list[str]: ...


class AddressFields(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def local_part(self) -> str: ...
    @property
    def mail_domain_id(self) -> int: ...

    def describe(self) -> str: ...


class AliasFields(AddressFields, Protocol):
    @property
    def forward_addresses(self) -> list[str]: ...


@dataclass
class Routing:
    """The cluster's addresses and where each forwards (lower case)."""

    domains: dict[int, MailDomainFields]
    by_name: dict[str, MailDomainFields]
    #: address → the account objects that hold it
    accounts: dict[str, list[AddressFields]]
    #: address → the alias objects that hold it
    aliases: dict[str, list[AliasFields]]
    #: node → the nodes it forwards to (an alias address, or ``@domain`` for a catch-all)
    hops: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, view: ObjectsView) -> Routing:
        """The routing of the objects ``view`` holds (once per view: see the module)."""
        return per_view(view, "routing", _routing)

    def address(self, obj: AddressFields) -> str | None:
        domain = self.domains.get(obj.mail_domain_id)
        return None if domain is None else f"{obj.local_part}@{domain.domain}".lower()

    def _target(self, address: str) -> str | None:
        """The graph node an address given as a forward target leads to (None: it ends:
        a mailbox, an address outside the cluster, or one that bounces)."""
        address = address.lower()
        domain = self.by_name.get(address.rpartition("@")[2])
        if domain is None or not domain.is_local:
            return None
        if address in self.aliases:
            return address
        if address in self.accounts:
            return None
        return "@" + domain.domain if domain.catch_all_forward_addresses else None

    def loop_through(self, start: str) -> list[str] | None:
        """A cycle of forwards from ``start`` back to itself (the nodes in order), or None."""
        path = [start]
        seen = {start}
        stack = [iter(self.hops.get(start, ()))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                path.pop()
                continue
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                stack.append(iter(self.hops.get(nxt, ())))
        return None


def _build(
    domains: Sequence[MailDomainFields],
    accounts: Sequence[AddressFields],
    aliases: Sequence[AliasFields],
) -> Routing:
    routing = Routing(
        domains={d.id: d for d in domains},
        by_name={d.domain.lower(): d for d in domains},
        accounts={},
        aliases={},
    )
    for account in accounts:
        address = routing.address(account)
        if address is not None:
            routing.accounts.setdefault(address, []).append(account)
    local_aliases: list[tuple[str, AliasFields]] = []
    for alias in aliases:
        address = routing.address(alias)
        if address is not None:
            routing.aliases.setdefault(address, []).append(alias)
            if routing.domains[alias.mail_domain_id].is_local:
                local_aliases.append((address, alias))
    for address, alias in local_aliases:
        routing.hops[address] = _nodes(routing, alias.forward_addresses)
    for domain in domains:
        if domain.is_local and domain.catch_all_forward_addresses:
            hops = _nodes(routing, domain.catch_all_forward_addresses)
            routing.hops["@" + domain.domain.lower()] = hops
    return routing


def _nodes(routing: Routing, targets: Iterable[str]) -> tuple[str, ...]:
    found = (routing._target(target) for target in targets)
    return tuple(dict.fromkeys(node for node in found if node is not None))


def _routing(view: ObjectsView) -> Routing:
    domains = cast(list[MailDomainFields], view.list_type(MAIL_DOMAINS))
    accounts = cast(list[AddressFields], view.list_type(MAIL_ACCOUNTS))
    aliases = cast(list[AliasFields], view.list_type(MAIL_ALIASES))
    return _build(domains, accounts, aliases)


T = TypeVar("T")
#: (view's ``list_type``, what) → the value derived from that view, for the last few
#: views; the key holds the view's method, so no view is freed and its id reused while
#: its entry is here
_CACHE: OrderedDict[tuple[object, str], object] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def per_view(view: ObjectsView, what: str, derive: Callable[[ObjectsView], T]) -> T:
    """``derive(view)``, computed once per view (and ``what``); thread-safe (the store
    serves concurrent writers)."""
    key = (view.list_type, what)
    try:
        hash(key)
    except TypeError:  # a view that cannot be a key: derive it each time
        return derive(view)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return cast(T, hit)
    value = derive(view)  # outside the lock: two threads may both derive, both right
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def clash_problems(obj: CcmObject, routing: Routing, kind: str) -> list[str]:
    """``obj`` (an account or an alias) shares its address with an object of ``kind``
    (the other of the two): Postfix would take the alias and never fill the mailbox."""
    address = routing.address(cast(AddressFields, obj))
    if address is None:
        return []
    others = (routing.accounts if kind == MAIL_ACCOUNTS else routing.aliases).get(address, [])
    return [
        f"{obj.describe()}: local_part: {address} is already the address of {other.describe()}"
        for other in others
    ]


def loop_problem(where: str, what: str, routing: Routing, start: str) -> list[str]:
    """The refusal of a forwarding loop through ``start``, if there is one."""
    cycle = routing.loop_through(start)
    if cycle is None:
        return []
    shown = " -> ".join(node if not node.startswith("@") else f"catch-all {node}" for node in cycle)
    return [f"{where}: {what}: forwarding loop inside the cluster: {shown}"]
