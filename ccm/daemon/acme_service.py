"""The daemon's ACME side: the challenge responder and the renewal thread.

Every daemon answers HTTP-01 challenges (``ccm.daemon.acme_responder``) on ``[acme]
responder_listen``. A port already taken is logged as an error and the daemon goes on:
the orders that need this node then fail visibly in ``ccm status`` and the metrics,
which is better than a web node that stops applying configuration.

The renewal runs in its own thread, beside the main loop and never under the cluster
lock: an order waits on a remote server for seconds to minutes, and must neither delay
nor be delayed by a rollout. It looks at the managers every ``[acme] check_interval``
seconds, at the moment the schedule says (a renewal date, the end of a back-off), and at
once when ``wake()`` is called (a ``certificate-managers`` or ``nodes`` event). Its
outcome per manager goes to the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ccm.cluster.acme_challenges import ChallengeAnswers
from ccm.cluster.acme_renewal import CertificateRenewal, TickReport
from ccm.cluster.clock import Clock
from ccm.cluster.etcd import EtcdClient
from ccm.daemon.acme_responder import ChallengeResponder
from ccm.daemon.metrics import Metrics
from ccm.log import get_logger
from ccm.settings import Settings

#: event types that may change who orders or what is due
WAKING_TYPES = frozenset({"certificate-managers", "certificates", "nodes"})


class AcmeService:
    def __init__(
        self,
        client: EtcdClient,
        settings: Settings,
        metrics: Metrics,
        clock: Clock,
        *,
        renewal: CertificateRenewal | None = None,
        on_tick: Callable[[TickReport], None] = lambda report: None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.renewal = renewal or CertificateRenewal(client, settings, clock=clock)
        self.on_tick = on_tick
        self.responder: ChallengeResponder | None = None
        self.responder_address: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = get_logger(node=settings.node)

    def start(self) -> None:
        listen = self.settings.acme.responder_listen
        if listen:
            answers = ChallengeAnswers(self.client, self.settings.etcd.prefix)
            responder = ChallengeResponder(answers.lookup)
            try:
                self.responder_address = responder.serve(listen)
                self.responder = responder
                self.log.info("acme challenges answered", listen=listen)
            except OSError as error:
                self.log.error(
                    "acme challenge responder not started", listen=listen, error=str(error)
                )
        self._thread = threading.Thread(target=self._loop, name="ccm-acme", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def tick(self) -> TickReport:
        """One look now (the thread's body; tests call it on a manual clock)."""
        report = self.renewal.tick()
        self.metrics.certificate_managers(report.ordering, report.states)
        self.on_tick(report)
        return report

    def _seconds_to_wait(self, report: TickReport | None) -> float:
        wait = self.settings.acme.check_interval
        if report is None:  # the look failed (etcd away): try again soon
            return min(wait, self.settings.backoff.max)
        if report.next_check is not None:
            until = (report.next_check - self.clock.wall()).total_seconds()
            wait = min(wait, max(until, 1.0))
        return wait

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            report: TickReport | None = None
            try:
                report = self.tick()
            except Exception as error:  # etcd away or a bug: never end the thread
                self.log.warning("certificate managers not looked at; retrying", error=str(error))
            self._wake.wait(self._seconds_to_wait(report))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.responder is not None:
            self.responder.close()
            self.responder = None
