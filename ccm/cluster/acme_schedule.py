"""Which certificate managers need an ACME order now, and what an attempt leaves behind.

Pure planning, no I/O: every function takes what was read (the managers, their state
records, the certificates they produced) and the time as an argument, so the renewal
policy is tested on an injected clock. ``ccm.cluster.acme_renewal`` does the reading,
ordering and writing around it.

A manager needs an order when it has no certificate yet, when its certificate expires
within ``renew_before`` (30 days by default: Let's Encrypt's certificates live 90 days,
and a month leaves room for a long outage of the ACME server), or when its names are
not the names of its certificate. A failed attempt waits ``retry_initial`` seconds,
doubling per failure up to ``retry_max`` (``ccm.cluster.backoff``), before the same names
are tried again: a failure never halts anything, it is recorded and retried. A change of
names is a new request and is tried at once.

Only one node orders: the node whose ``nodes`` object is ``primary_for`` nginx; in a
cluster with no ``nodes`` objects at all (one server), the node itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ccm.cluster.backoff import delay
from ccm.models import Node
from ccm.models.fields import HOSTNAME
from ccm.settings import BackoffSettings

#: the group whose primary orders and renews
ORDERING_GROUP = "nginx"
#: Let's Encrypt's limit of names per certificate
MAX_NAMES = 100


@dataclass(frozen=True)
class Manager:
    """What a ``certificate-managers`` object asks for."""

    id: int
    common_names: tuple[str, ...]


@dataclass(frozen=True)
class Held:
    """The certificate a manager produced, as stored: its names and expiry."""

    names: frozenset[str]
    not_after: datetime


@dataclass(frozen=True)
class ManagerState:
    """``{prefix}/acme/managers/<id>``: what the orderer knows about one manager."""

    #: the ``certificates`` id its certificate is stored under (reserved before the
    #: first order, so a retry or a new primary writes the same object)
    certificate_id: int | None = None
    #: the names of the last attempt, and how it ended
    names: tuple[str, ...] = ()
    failures: int = 0
    last_error: str = ""
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    #: a failed attempt's names are not tried again before this
    next_attempt: datetime | None = None
    not_after: datetime | None = None
    node: str = ""


@dataclass(frozen=True)
class Due:
    manager: Manager
    reason: str


def orders_here(node: str, nodes: Iterable[Node]) -> bool:
    """Whether ``node`` is the one that orders: primary for nginx, or alone unregistered."""
    registered = list(nodes)
    if not registered:
        return True
    return any(n.hostname == node and ORDERING_GROUP in n.primary_for for n in registered)


def name_problems(names: Sequence[str]) -> str:
    """Why these names cannot be ordered over HTTP-01 ("" when they can): each a host
    name (no wildcard: HTTP-01 cannot validate one), at most 100, none twice."""
    if not names:
        return "no names to order"
    if len(names) > MAX_NAMES:
        return f"{len(names)} names; a certificate holds at most {MAX_NAMES}"
    if len(set(names)) != len(names):
        return "a name is listed twice"
    for name in names:
        if len(name) > 253 or HOSTNAME.fullmatch(name) is None:
            shown = name[:64].encode("ascii", "backslashreplace").decode()
            return f"{shown!r} is not a host name HTTP-01 can validate (no wildcards)"
    return ""


def renewal_time(held: Held, renew_before: timedelta) -> datetime:
    return held.not_after - renew_before


def _reason(manager: Manager, held: Held | None, now: datetime, renew_before: timedelta) -> str:
    if held is None:
        return "no certificate yet"
    if held.names != frozenset(manager.common_names):
        missing = sorted(set(manager.common_names) - held.names)
        extra = sorted(held.names - set(manager.common_names))
        change = [f"+{name}" for name in missing] + [f"-{name}" for name in extra]
        return f"names changed ({', '.join(change)})"
    if now >= renewal_time(held, renew_before):
        return f"expires {held.not_after.isoformat()}"
    return ""


def due(
    managers: Sequence[Manager],
    states: Mapping[int, ManagerState],
    held: Mapping[int, Held],
    now: datetime,
    renew_before: timedelta,
) -> list[Due]:
    """The managers to order for now, by id, each with why."""
    found = []
    for manager in sorted(managers, key=lambda m: m.id):
        state = states.get(manager.id, ManagerState())
        reason = _reason(manager, held.get(manager.id), now, renew_before)
        if not reason:
            continue
        backing_off = state.next_attempt is not None and now < state.next_attempt
        if backing_off and state.names == manager.common_names:
            continue
        found.append(Due(manager, reason))
    return found


def next_check(
    managers: Sequence[Manager],
    states: Mapping[int, ManagerState],
    held: Mapping[int, Held],
    now: datetime,
    renew_before: timedelta,
) -> datetime | None:
    """The earliest moment a manager that is not due now becomes due (None: never, until
    the managers change)."""
    moments = []
    for manager in managers:
        state = states.get(manager.id, ManagerState())
        current = held.get(manager.id)
        if _reason(manager, current, now, renew_before):
            if state.next_attempt is not None and state.names == manager.common_names:
                moments.append(state.next_attempt)  # backing off
        elif current is not None:
            moments.append(renewal_time(current, renew_before))
    later = [moment for moment in moments if moment > now]
    return min(later, default=None)


def failed(
    state: ManagerState,
    names: tuple[str, ...],
    error: str,
    now: datetime,
    retry: BackoffSettings,
    node: str,
) -> ManagerState:
    """The state after a failed attempt: one more failure, the next try backed off."""
    failures = state.failures + 1 if state.names == names else 1
    return replace(
        state,
        names=names,
        failures=failures,
        last_error=error,
        last_attempt=now,
        next_attempt=now + timedelta(seconds=delay(retry, failures)),
        node=node,
    )


def succeeded(
    state: ManagerState,
    names: tuple[str, ...],
    certificate_id: int,
    not_after: datetime,
    now: datetime,
    node: str,
) -> ManagerState:
    return replace(
        state,
        certificate_id=certificate_id,
        names=names,
        failures=0,
        last_error="",
        last_attempt=now,
        last_success=now,
        next_attempt=None,
        not_after=not_after,
        node=node,
    )
