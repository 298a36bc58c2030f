"""One look at the certificate managers: order what is due, record how each attempt went.

``tick()`` reads the managers, their state and their certificates, asks
``ccm.cluster.acme_schedule`` what is due (on the ordering node only), and orders those
one after another: publish the challenge answers in etcd, let the ACME server validate
through any web node, store the result as a ``certificates`` object through the
validated writer (``ccm.cluster.acme_certificates``), write the manager's state. A
failure of one manager is recorded in its state (error, next attempt, backed off) and
the others go on; nothing here takes the cluster lock or touches the halt flag, so a
failing ACME server never stops a rollout.

Time comes from the injected clock (wall time: expiry dates and the next attempt are
compared across nodes, and a new primary continues the old one's back-off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ccm.cluster import acme_schedule as schedule
from ccm.cluster.acme_account import account_key
from ccm.cluster.acme_certificates import new_certificate_id, save_certificate
from ccm.cluster.acme_challenges import ChallengeAnswers
from ccm.cluster.acme_client import AcmeClient, AcmeOrderFailed, Issued
from ccm.cluster.acme_records import (
    ManagerStates,
    certificate_ids,
    read_held,
    read_managers,
)
from ccm.cluster.clock import Clock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.errors import CcmError, ClusterError
from ccm.log import get_logger
from ccm.models import Node
from ccm.settings import BackoffSettings, Settings

#: orders ``names``, answering through the given answers board
Order = Callable[[Sequence[str], ChallengeAnswers], Issued]
#: stores an issued certificate under an id; the write's revision
Save = Callable[[ObjectStore, int, Sequence[str], Issued], int]


@dataclass(frozen=True)
class TickReport:
    """What one look found and did."""

    ordering: bool  # this node is the orderer
    attempted: dict[int, str]  # manager id → "issued" or the error
    states: dict[int, schedule.ManagerState]
    next_check: datetime | None


class CertificateRenewal:
    def __init__(
        self,
        client: EtcdClient,
        settings: Settings,
        *,
        clock: Clock,
        order: Order | None = None,
        save: Save = save_certificate,
    ) -> None:
        self.client = client
        self.settings = settings
        self.prefix = settings.etcd.prefix
        self.clock = clock
        self._order = order
        self._save = save
        self.states = ManagerStates(client, self.prefix)
        self.answers = ChallengeAnswers(client, self.prefix)
        self.store = ObjectStore(client, self.prefix, writer=f"ccm-acme@{settings.node}")
        acme = settings.acme
        self.renew_before = timedelta(days=acme.renew_before_days)
        self.retry = BackoffSettings(initial=acme.retry_initial, max=acme.retry_max)
        self.log = get_logger(node=settings.node)

    def _default_order(self, names: Sequence[str], answers: ChallengeAnswers) -> Issued:
        acme = self.settings.acme
        client = AcmeClient(
            acme.directory_url,
            account_key(self.client, self.prefix),
            email=acme.email,
            ca_file=acme.ca_file,
            timeout=acme.timeout,
            challenge_ttl=acme.challenge_ttl,
        )
        try:
            return client.order(names, answers)
        finally:
            client.close()

    def tick(self) -> TickReport:
        """Order what is due now (on the ordering node); etcd errors pass through."""
        nodes = [n for n in self.store.list(Node.TYPE) if isinstance(n, Node)]
        if not schedule.orders_here(self.settings.node, nodes):
            return TickReport(False, {}, {}, None)
        managers = read_managers(self.client, self.prefix)
        states = self.states.all()
        for gone in set(states) - {m.id for m in managers}:
            self.states.delete(gone)  # its certificate stays: vhosts may still use it
            del states[gone]
        held = read_held(self.client, self.prefix, states)
        attempted: dict[int, str] = {}
        for item in schedule.due(managers, states, held, self.clock.wall(), self.renew_before):
            manager = item.manager
            self.log.info("ordering a certificate", manager=manager.id, reason=item.reason)
            states[manager.id] = self._attempt(manager, states)
            attempted[manager.id] = states[manager.id].last_error or "issued"
        held = read_held(self.client, self.prefix, states)
        upcoming = schedule.next_check(managers, states, held, self.clock.wall(), self.renew_before)
        return TickReport(True, attempted, states, upcoming)

    def _reserve(self, manager: schedule.Manager, states: dict[int, schedule.ManagerState]) -> int:
        state = states.get(manager.id, schedule.ManagerState())
        if state.certificate_id is not None:
            return state.certificate_id
        reserved = {s.certificate_id for s in states.values() if s.certificate_id is not None}
        certificate_id = new_certificate_id(certificate_ids(self.client, self.prefix) | reserved)
        states[manager.id] = replace(state, certificate_id=certificate_id)
        self.states.put(manager.id, states[manager.id])
        return certificate_id

    def _attempt(
        self, manager: schedule.Manager, states: dict[int, schedule.ManagerState]
    ) -> schedule.ManagerState:
        names = manager.common_names
        node = self.settings.node
        try:
            refused = schedule.name_problems(names)
            if refused:
                raise AcmeOrderFailed(f"certificate-managers/{manager.id}: common_names: {refused}")
            certificate_id = self._reserve(manager, states)
            issued = (self._order or self._default_order)(names, self.answers)
            self._save(self.store, certificate_id, names, issued)
        except ClusterError:
            raise  # etcd away: nothing to record; the daemon retries the whole look
        except CcmError as error:  # the ACME server, the network, or the writer refused
            reason = str(error)
            state = schedule.failed(
                states.get(manager.id, schedule.ManagerState()),
                names,
                reason,
                self.clock.wall(),
                self.retry,
                node,
            )
            self.states.put(manager.id, state)
            self.log.warning(
                "certificate order failed; will retry",
                manager=manager.id,
                error=reason,
                failures=state.failures,
                next_attempt=state.next_attempt.isoformat() if state.next_attempt else None,
            )
            return state
        state = schedule.succeeded(
            states[manager.id], names, certificate_id, issued.not_after, self.clock.wall(), node
        )
        self.states.put(manager.id, state)
        self.log.info(
            "certificate issued",
            manager=manager.id,
            certificate_id=certificate_id,
            not_after=issued.not_after.isoformat(),
        )
        return state


__all__ = ["AcmeOrderFailed", "CertificateRenewal", "TickReport"]
