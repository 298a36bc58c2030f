"""Prometheus metrics of one daemon (``prometheus-client``), served on ``[metrics] listen``.

Names follow Prometheus conventions: prefix ``ccm_``, base units (seconds), ``_total``
for counters. Each daemon has its own registry (no global state), filled by the daemon
loop and the node run through the small methods below.

counters:   ccm_runs_total{result}, ccm_files_changed_total, ccm_actions_total{kind}
histograms: ccm_run_duration_seconds, ccm_lock_wait_seconds, ccm_debounce_delay_seconds
gauges:     ccm_applied_revision, ccm_revisions_behind, ccm_halted,
            ccm_last_success_timestamp_seconds, ccm_pending_types
            ccm_acme_orderer (1 on the node that orders certificates), and there, per
            certificate manager: ccm_certificate_manager_failures{manager} (failed
            attempts in a row), ccm_certificate_manager_expiry_timestamp_seconds{manager}

``contrib/prometheus-alerts.yml`` holds example alert rules over these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ccm.cluster.acme_schedule import ManagerState
from ccm.daemon.served import Served

_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("ccm_runs", "Runs by result.", ["result"], registry=r)
        self.run_duration = Histogram(
            "ccm_run_duration_seconds", "One run under the lock.", buckets=_SECONDS, registry=r
        )
        self.lock_wait = Histogram(
            "ccm_lock_wait_seconds", "Waiting for the cluster lock.", buckets=_SECONDS, registry=r
        )
        self.debounce_delay = Histogram(
            "ccm_debounce_delay_seconds",
            "From the first pending event to the run that takes it.",
            buckets=_SECONDS,
            registry=r,
        )
        self.files = Counter("ccm_files_changed", "Files and accounts changed.", registry=r)
        self.actions = Counter(
            "ccm_actions", "Actions run, by kind (check, reload, run…).", ["kind"], registry=r
        )
        self.applied_revision = Gauge(
            "ccm_applied_revision", "The revision this node applied last.", registry=r
        )
        self.behind = Gauge(
            "ccm_revisions_behind", "Newest event revision seen minus applied.", registry=r
        )
        self.halted = Gauge(
            "ccm_halted", "1 while the cluster's halt flag stops this node.", registry=r
        )
        self.last_success = Gauge(
            "ccm_last_success_timestamp_seconds", "When the last run succeeded.", registry=r
        )
        self.pending_types = Gauge(
            "ccm_pending_types", "Object types waiting for the next run.", registry=r
        )
        self.acme_orderer = Gauge(
            "ccm_acme_orderer", "1 on the node that orders ACME certificates.", registry=r
        )
        self.manager_failures = Gauge(
            "ccm_certificate_manager_failures",
            "Failed ACME attempts in a row, per certificate manager (0: the last one worked).",
            ["manager"],
            registry=r,
        )
        self.manager_expiry = Gauge(
            "ccm_certificate_manager_expiry_timestamp_seconds",
            "When the certificate a manager obtained last expires.",
            ["manager"],
            registry=r,
        )
        self._served: Served | None = None
        self._seen_revision = 0

    # -- what the daemon reports ----------------------------------------------------

    def run_finished(
        self,
        result: str,
        duration: float,
        revision: int,
        changed: int,
        actions: Sequence[str],
        finished_at: float,
    ) -> None:
        self.runs.labels(result).inc()
        self.run_duration.observe(duration)
        self.files.inc(changed)
        for action in actions:
            self.actions.labels(action.split(" ", 1)[0]).inc()
        if result == "success":
            self.applied_revision.set(revision)
            self.last_success.set(finished_at)
            self.seen(revision)
        self.halted.set(1 if result in ("failed", "halted") else 0)

    def seen(self, revision: int) -> None:
        """An event revision the watcher delivered (or a run applied)."""
        self._seen_revision = max(self._seen_revision, revision)
        applied = self.applied_revision._value.get()  # noqa: SLF001 - our own gauge
        self.behind.set(max(0.0, self._seen_revision - applied))

    def certificate_managers(self, ordering: bool, states: Mapping[int, ManagerState]) -> None:
        """The outcome of a look at the certificate managers (only the orderer has any)."""
        self.acme_orderer.set(1 if ordering else 0)
        self.manager_failures.clear()
        self.manager_expiry.clear()
        for manager_id, state in states.items():
            self.manager_failures.labels(str(manager_id)).set(state.failures)
            if state.not_after is not None:
                self.manager_expiry.labels(str(manager_id)).set(state.not_after.timestamp())

    # -- the endpoint ---------------------------------------------------------------

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` (port 0: any); the address bound."""
        host, _, port = listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._served = Served(server, thread)
        return self._served.address

    def close(self) -> None:
        if self._served is not None:
            self._served.close()
            self._served = None
