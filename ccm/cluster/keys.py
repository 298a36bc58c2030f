"""Every etcd key of the wire contract (DESIGN.md), built in one place: ``Keys(prefix)``.

{prefix}/objects/<type>/<id>        an object (JSON)
{prefix}/events/<type>              its type's thin event; the mod revision is the signal
{prefix}/tombstones/<type>/<id>     the identity a deleted object held
{prefix}/lock/<lease>               the cluster lock's queue
{prefix}/halt                       the halt flag
{prefix}/soak                       the canaries and soak of the newest change set
{prefix}/nodes/<node>               a node's applied revision and last run
{prefix}/alive/<node>               a running daemon's presence (lease-bound)
{prefix}/history/<node>/<run>       one record per run
{prefix}/failures/<type>/<id>/<node>  an object a node refused
{prefix}/acme/account               the ACME account key (a secret) and its registrations
{prefix}/acme/challenges/<token>    an HTTP-01 key authorization (lease-bound)
{prefix}/acme/managers/<id>         a certificate manager's order state
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.prefix.rstrip("/"))

    def _under(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # objects and their events
    @property
    def objects(self) -> str:
        return self._under("objects", "")

    def objects_of(self, type_name: str) -> str:
        return self._under("objects", type_name, "")

    def object(self, type_name: str, object_id: int) -> str:
        return self._under("objects", type_name, str(object_id))

    @property
    def events(self) -> str:
        return self._under("events", "")

    def event(self, type_name: str) -> str:
        return self._under("events", type_name)

    def tombstones(self, type_name: str) -> str:
        return self._under("tombstones", type_name, "")

    # coordination
    @property
    def lock(self) -> str:
        return self._under("lock", "")

    @property
    def halt(self) -> str:
        return self._under("halt")

    @property
    def soak(self) -> str:
        return self._under("soak")

    # nodes
    @property
    def nodes(self) -> str:
        return self._under("nodes", "")

    def node(self, node: str) -> str:
        return self._under("nodes", node)

    @property
    def alive(self) -> str:
        return self._under("alive", "")

    def alive_of(self, node: str) -> str:
        return self._under("alive", node)

    @property
    def history(self) -> str:
        return self._under("history", "")

    def history_of(self, node: str) -> str:
        return self._under("history", node, "")

    @property
    def failures(self) -> str:
        return self._under("failures", "")

    def failure(self, object_name: str, node: str) -> str:
        return self._under("failures", object_name, node)

    # ACME (certificate-managers)
    @property
    def acme_account(self) -> str:
        return self._under("acme", "account")

    def acme_challenge(self, token: str) -> str:
        return self._under("acme", "challenges", token)

    @property
    def acme_managers(self) -> str:
        return self._under("acme", "managers", "")

    def acme_manager(self, manager_id: int) -> str:
        return self._under("acme", "managers", str(manager_id))
