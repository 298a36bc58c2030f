"""The names nginx serves: one namespace for ``virtual-hosts`` and ``url-redirects``, and
whether a server block's certificate covers its names.

Both types become nginx server blocks on the same ports, so a ``Host`` must reach one of
them only, whatever type holds it. The rules are the vhosts' (``ccm.models.names``):

* a name is served by one vhost or one redirect, never two (nginx would pick one);
* between owners (``unix_user_id``), no name may overlap another's through a wildcard:
  neither the name below another owner's wildcard nor the wildcard above another owner's
  name (one owner would take names from the other). One owner may carve its own names
  out of its own wildcard.

A vhost's rule reads the vhosts; a redirect's reads the vhosts and the redirects
(``UrlRedirect.READS``), so writing a vhost runs every redirect's rule again (rules hold
both ways): a vhost cannot take a redirect's name, nor a redirect a vhost's, and the
refusal names both. (The vhosts do not read the redirects as well: each redirect write
would then re-run the rule of every vhost, and each conflict would be reported twice.)

With a ``certificate_id``, every served name must be covered by the certificate
(``configurations.certificates.covers``, RFC 6125); a replaced certificate re-runs this
rule for every server block that uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar, Protocol
from weakref import WeakKeyDictionary

from ccm.models.base import ObjectsView
from ccm.models.names import ServedNames, ServerName, canonical, overlap
from configurations.certificates import covers

#: the types that hold served names (their objects have ``served`` and ``unix_user_id``)
NAME_TYPES = ("virtual-hosts", "url-redirects")


class ServerBlock(Protocol):
    """What the rules read of a vhost or a redirect."""

    TYPE: ClassVar[str]

    @property
    def id(self) -> int: ...

    @property
    def domain(self) -> str: ...

    @property
    def server_aliases(self) -> list[str]: ...

    @property
    def unix_user_id(self) -> int: ...

    @property
    def certificate_id(self) -> int | None: ...

    @property
    def served(self) -> ServedNames: ...

    def describe(self) -> str: ...


def _blocks(view: ObjectsView, types: Iterable[str]) -> Iterable[ServerBlock]:
    for type_name in types:
        for obj in view.list_type(type_name):
            if hasattr(obj, "served"):
                yield obj  # type: ignore[misc]


class _Index:
    """The blocks of a view by the names they hold, so that a block's rule looks only at
    the blocks that share a ``Host`` with it (``ServedNames.overlaps``, spelled as
    lookups), not at every block: writing a vhost re-runs every redirect's rule."""

    def __init__(self, blocks: Iterable[ServerBlock], types: Sequence[str]) -> None:
        self.order = {name: position for position, name in enumerate(types)}
        self.exact: dict[str, list[ServerBlock]] = {}
        self.wild: dict[str, list[ServerBlock]] = {}
        self.above: dict[str, list[ServerBlock]] = {}
        for block in blocks:
            served = block.served
            for table, keys in (
                (self.exact, served.exact),
                (self.wild, served.wild),
                (self.above, served.above),
            ):
                for key in keys:
                    table.setdefault(key, []).append(block)

    def candidates(self, served: ServedNames) -> list[ServerBlock]:
        """Every block some name of which overlaps one of ``served`` (or equals it)."""
        found: dict[tuple[str, int], ServerBlock] = {}
        for table, keys in (
            (self.exact, served.exact),
            (self.wild, served.above | served.wild),  # their wildcard over mine
            (self.above, served.wild),  # my wildcard over theirs
        ):
            for key in keys:
                for block in table.get(key, ()):
                    found[(block.TYPE, block.id)] = block
        return sorted(found.values(), key=lambda b: (self.order.get(b.TYPE, 0), b.id))


#: the index of each view in use, by the object behind its ``list_type`` (the store's
#: view of one write attempt, whose objects do not change while it is in use)
_INDEXES: WeakKeyDictionary[object, dict[tuple[str, ...], _Index]] = WeakKeyDictionary()


def _index(view: ObjectsView, types: Sequence[str]) -> _Index:
    owner = getattr(view.list_type, "__self__", None)
    key = tuple(types)
    if owner is None:
        return _Index(_blocks(view, key), key)
    try:
        indexes = _INDEXES.setdefault(owner, {})
    except TypeError:  # not weakly referable: no cache
        return _Index(_blocks(view, key), key)
    if key not in indexes:
        indexes[key] = _Index(_blocks(view, key), key)
    return indexes[key]


def _fields(block: ServerBlock) -> list[tuple[str, str]]:
    return [("domain", block.domain), *(("server_aliases", a) for a in block.server_aliases)]


def _carve_outs(mine: ServerBlock, other: ServerBlock, theirs: frozenset[str]) -> list[str]:
    """Names of ``mine`` that share a ``Host`` with a name of ``other``, another owner's
    block, through a wildcard: whichever nginx picks, one owner takes names from the
    other. Refused both ways: the name below another owner's wildcard, and the wildcard
    above another owner's name."""
    found = []
    for field, name in _fields(mine):
        for their in sorted(theirs):
            if overlap(name, their):
                inside = ServerName.parse(their).matches(ServerName.parse(name).base)
                how = "is covered by" if inside else "covers"
                found.append(
                    f"{mine.describe()}: {field}: {name} {how} {their}, served by "
                    f"{other.describe()} ({other.domain}) of another owner "
                    f"(unix-users/{other.unix_user_id}); nginx would give names of one "
                    "owner to the other"
                )
    return found


def name_problems(
    mine: ServerBlock, view: ObjectsView, types: Sequence[str] = NAME_TYPES
) -> list[str]:
    """The namespace rules for ``mine`` against every stored object of ``types`` (those
    its type ``READS``)."""
    where = mine.describe()
    problems: list[str] = []
    names = [canonical(name) for _, name in _fields(mine)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        problems.append(f"{where}: server_aliases: {', '.join(repeated)} given twice")
    served = mine.served
    for other in _index(view, types).candidates(served):
        if other.TYPE == mine.TYPE and other.id == mine.id:
            continue
        taken = served.names & other.served.names
        if taken:  # nginx would serve one of the two at random: a hijack
            problems.append(
                f"{where}: {', '.join(sorted(taken))} already served by "
                f"{other.describe()} ({other.domain})"
            )
        if other.unix_user_id != mine.unix_user_id and served.overlaps(other.served):
            problems += _carve_outs(mine, other, other.served.names - taken)
    return problems


def coverage_problems(mine: ServerBlock, view: ObjectsView) -> list[str]:
    """With a certificate: the served names it does not cover, each named."""
    if mine.certificate_id is None:
        return []
    certificate = view.lookup("certificates", mine.certificate_id)
    names: Sequence[str] | None = getattr(certificate, "common_names", None)
    if certificate is None or names is None:
        return []  # a dangling reference: the store refuses it on its own
    return [
        f"{mine.describe()}: certificate_id: {certificate.describe()} does not cover "
        f"{name} (served as {field}; the certificate covers {', '.join(names)})"
        for field, name in _fields(mine)
        if not covers(names, name)
    ]


def server_for(view: ObjectsView, host: str) -> ServerBlock | None:
    """The vhost or redirect nginx gives ``host`` to (an exact name first, then the
    longest wildcard), or None: the default server, which answers no tenant."""
    host = canonical(host)
    matching = [
        (ServerName.parse(name), block)
        for block in _index(view, NAME_TYPES).candidates(ServedNames([host]))
        for _, name in _fields(block)
        if ServerName.parse(name).matches(host)
    ]
    if not matching:
        return None
    exact = [block for name, block in matching if name.base == host and name.exact]
    if exact:
        return exact[0]
    return max(matching, key=lambda item: len(item[0].base))[1]
