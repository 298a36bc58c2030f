"""Which server names overlap the way nginx matches them, and public suffixes.

nginx chooses the server for a request's ``Host`` by the exact name first, then by the
longest wildcard that starts with ``*.``. A wildcard ``*.bob.example.net`` matches every
name below ``bob.example.net``, at any depth (``a.b.bob.example.net`` too), but not
``bob.example.net`` itself; nginx's form ``.bob.example.net`` matches both. So a name is
held not only by the vhost that lists it: another owner's exact ``x.bob.example.net``,
or longer wildcard ``*.x.bob.example.net``, beats bob's wildcard and carves a
subdomain out of it, and a wildcard ``*.example.net`` takes every name below it that
nobody lists. ``overlap`` says when one ``Host`` would be matched by two names, so the
writer can refuse that between owners (``VirtualHost.problems``).

Names are compared as nginx compares them: case and a trailing dot do not make a
name different (the models already refuse both; comparing canonical forms keeps the
rule right on its own).

A wildcard directly under a public suffix (``*.co.uk``, ``*.github.io``) claims the
domains of everyone who registered one under it. The Public Suffix List comes from
``publicsuffixlist``: the list ships inside that package (no network at run time), it
has no dependencies, and it is released whenever the list changes. Its private section
(``github.io``) counts too: those suffixes are handed out to different customers just
the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from publicsuffixlist import PublicSuffixList


def canonical(name: str) -> str:
    """The name as nginx compares it: lower case, no trailing dot."""
    return name.lower().rstrip(".")


@dataclass(frozen=True)
class ServerName:
    """One ``server_name`` entry: the names it matches are ``base`` itself (``exact``)
    and/or every name below ``base`` (``wildcard``)."""

    base: str
    exact: bool
    wildcard: bool

    @classmethod
    def parse(cls, name: str) -> ServerName:
        return cls(*_split(canonical(name)))

    def matches(self, host: str) -> bool:
        """Whether nginx would match ``host`` (canonical, no wildcard) against this name."""
        if host == self.base:
            return self.exact
        return self.wildcard and _below(host, self.base)


def overlap(one: str, other: str) -> bool:
    """Whether some ``Host`` is matched by both names: nginx then gives it to one of the
    two servers (the exact name, or the longer wildcard), taking it from the other."""
    a, b = ServerName.parse(one), ServerName.parse(other)
    if a.exact and b.matches(a.base) or b.exact and a.matches(b.base):
        return True
    # two wildcards share every name below the deeper of the two bases
    return (
        a.wildcard
        and b.wildcard
        and (a.base == b.base or _below(a.base, b.base) or _below(b.base, a.base))
    )


def _below(name: str, base: str) -> bool:
    return name.endswith("." + base)


class ServedNames:
    """The names one vhost serves, indexed so that whether two vhosts share a ``Host``
    costs a few set operations, not a comparison of every pair of names (a write is
    checked against every stored vhost)."""

    def __init__(self, names: Iterable[str]) -> None:
        parsed = [ServerName.parse(name) for name in names]
        self.names = frozenset(canonical(name) for name in names)
        self.exact = frozenset(name.base for name in parsed if name.exact)
        self.wild = frozenset(name.base for name in parsed if name.wildcard)
        #: every domain above one of the names: a wildcard on one of these covers it
        self.above = frozenset(parent for name in parsed for parent in _parents(name.base))

    def overlaps(self, other: ServedNames) -> bool:
        """``overlap(mine, theirs)`` for some pair of names (identical ones included)."""
        return bool(
            self.exact & other.exact
            or other.wild & (self.above | self.wild)  # their wildcard over one of mine
            or self.wild & other.above  # my wildcard over one of theirs
        )


def _split(name: str) -> tuple[str, bool, bool]:
    """(base, exact, wildcard) of a canonical name; see ``ServerName``."""
    if name.startswith("*."):
        return name[2:], False, True
    if name.startswith("."):
        return name[1:], True, True
    return name, True, False


def _parents(name: str) -> list[str]:
    """``b.c`` and ``c`` for ``a.b.c``."""
    labels = name.split(".")
    return [".".join(labels[index:]) for index in range(1, len(labels))]


@cache
def _suffixes() -> PublicSuffixList:
    # about 0.1 s to parse: only once, and only when a wildcard is validated
    return PublicSuffixList()


def is_public_suffix(name: str) -> bool:
    """Whether ``name`` is a public suffix (``co.uk``, ``github.io``, an unknown TLD)."""
    return _suffixes().is_public(canonical(name))
