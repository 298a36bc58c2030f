"""A daemon's Prometheus metrics: the names the alert rules and dashboards rely on, what
each run reports, and the ``/metrics`` endpoint (a real HTTP GET)."""

from __future__ import annotations

import re
import urllib.request

import pytest
from prometheus_client import REGISTRY, generate_latest

from ccm.daemon.metrics import Metrics

#: name → (type, help): the published contract (contrib/prometheus-alerts.yml uses some)
METRICS = {
    "ccm_runs": ("counter", "Runs by result."),
    "ccm_run_duration_seconds": ("histogram", "One run under the lock."),
    "ccm_lock_wait_seconds": ("histogram", "Waiting for the cluster lock."),
    "ccm_debounce_delay_seconds": (
        "histogram",
        "From the first pending event to the run that takes it.",
    ),
    "ccm_files_changed": ("counter", "Files and accounts changed."),
    "ccm_actions": ("counter", "Actions run, by kind (check, reload, run…)."),
    "ccm_applied_revision": ("gauge", "The revision this node applied last."),
    "ccm_revisions_behind": ("gauge", "Newest event revision seen minus applied."),
    "ccm_halted": ("gauge", "1 while the cluster's halt flag stops this node."),
    "ccm_last_success_timestamp_seconds": ("gauge", "When the last run succeeded."),
    "ccm_pending_types": ("gauge", "Object types waiting for the next run."),
    "ccm_acme_orderer": ("gauge", "1 on the node that orders ACME certificates."),
    "ccm_certificate_manager_failures": (
        "gauge",
        "Failed ACME attempts in a row, per certificate manager (0: the last one worked).",
    ),
    "ccm_certificate_manager_expiry_timestamp_seconds": (
        "gauge",
        "When the certificate a manager obtained last expires.",
    ),
}
BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900]


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_metric_has_its_published_name_type_and_help() -> None:
    metrics = Metrics()
    published = {
        family.name: (family.type, family.documentation) for family in metrics.registry.collect()
    }
    assert published == METRICS


def test_the_labels_are_result_and_kind() -> None:
    metrics = Metrics()
    metrics.run_finished("failed", 1.0, 0, 0, ["reload nginx"], 0.0)
    assert value(metrics, "ccm_runs_total", result="failed") == 1
    assert value(metrics, "ccm_actions_total", kind="reload") == 1


def test_the_histograms_count_seconds_in_the_same_buckets() -> None:
    text = generate_latest(Metrics().registry).decode()
    for name, (kind, _) in METRICS.items():
        if kind != "histogram":
            continue
        bounds = re.findall(rf'^{name}_bucket{{le="([^"]+)"}}', text, re.MULTILINE)
        assert [float(b) for b in bounds] == [*BUCKETS, float("inf")], name


def test_each_daemon_has_its_own_registry_and_none_in_the_global_one() -> None:
    first, second = Metrics(), Metrics()
    first.run_finished("success", 0.5, 7, 2, [], 100.0)
    assert value(first, "ccm_runs_total", result="success") == 1
    assert value(second, "ccm_runs_total", result="success") is None
    assert REGISTRY.get_sample_value("ccm_applied_revision") is None


def test_a_successful_run_reports_what_it_did_and_where_it_got() -> None:
    metrics = Metrics()
    metrics.halted.set(1)
    metrics.run_finished(
        "success", 2.5, 42, 3, ["check nginx -t", "reload nginx", "reload php8.2-fpm"], 1.7e9
    )
    assert value(metrics, "ccm_runs_total", result="success") == 1
    assert value(metrics, "ccm_run_duration_seconds_sum") == 2.5
    assert value(metrics, "ccm_run_duration_seconds_count") == 1
    assert value(metrics, "ccm_files_changed_total") == 3
    assert value(metrics, "ccm_actions_total", kind="check") == 1
    assert value(metrics, "ccm_actions_total", kind="reload") == 2
    assert value(metrics, "ccm_applied_revision") == 42
    assert value(metrics, "ccm_last_success_timestamp_seconds") == 1.7e9
    assert value(metrics, "ccm_halted") == 0
    assert value(metrics, "ccm_revisions_behind") == 0


@pytest.mark.parametrize("result", ["failed", "halted"])
def test_a_failed_or_halted_run_reports_halted_and_keeps_the_applied_revision(
    result: str,
) -> None:
    metrics = Metrics()
    metrics.run_finished("success", 1.0, 10, 1, [], 1.6e9)
    metrics.run_finished(result, 1.0, 20, 0, [], 1.7e9)
    assert value(metrics, "ccm_runs_total", result=result) == 1
    assert value(metrics, "ccm_halted") == 1
    assert value(metrics, "ccm_applied_revision") == 10
    assert value(metrics, "ccm_last_success_timestamp_seconds") == 1.6e9


def test_a_node_soaking_behind_the_canaries_is_not_halted() -> None:
    metrics = Metrics()
    metrics.halted.set(1)
    metrics.run_finished("soaking", 0.0, 5, 0, [], 1.7e9)
    assert value(metrics, "ccm_halted") == 0
    assert value(metrics, "ccm_applied_revision") == 0


def test_behind_is_the_newest_revision_seen_minus_the_applied_one_never_negative() -> None:
    metrics = Metrics()
    metrics.seen(30)
    metrics.seen(25)  # an older batch changes nothing
    assert value(metrics, "ccm_revisions_behind") == 30
    metrics.run_finished("success", 1.0, 28, 0, [], 1.7e9)
    assert value(metrics, "ccm_revisions_behind") == 2
    metrics.run_finished("success", 1.0, 40, 0, [], 1.7e9)  # a run read a later snapshot
    assert value(metrics, "ccm_revisions_behind") == 0
    metrics.seen(41)
    assert value(metrics, "ccm_revisions_behind") == 1


def scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_the_endpoint_serves_this_daemons_metrics_until_closed() -> None:
    metrics = Metrics()
    metrics.run_finished("success", 1.0, 42, 0, [], 1.7e9)
    host, port = metrics.serve("127.0.0.1:0")
    try:
        assert host == "127.0.0.1" and port > 0
        assert "ccm_applied_revision 42.0" in scrape(host, port).splitlines()
    finally:
        metrics.close()
    with pytest.raises(OSError):
        scrape(host, port)
    metrics.close()  # twice is fine


def test_the_endpoint_listens_on_an_ipv6_address_too() -> None:
    metrics = Metrics()
    host, port = metrics.serve("::1:0")  # the port follows the last colon
    try:
        assert host == "::1" and port > 0
        assert "# TYPE ccm_halted gauge" in scrape("[::1]", port)
    finally:
        metrics.close()


def test_the_endpoint_listens_where_it_is_told() -> None:
    metrics = Metrics()
    probe = Metrics()
    host, port = probe.serve("127.0.0.1:0")  # find a free port, then give it up
    probe.close()
    try:
        assert metrics.serve(f"127.0.0.1:{port}") == ("127.0.0.1", port)
        assert "# TYPE ccm_halted gauge" in scrape(host, port)
    finally:
        metrics.close()


def test_the_certificate_managers_gauges_follow_each_look() -> None:
    from datetime import UTC, datetime

    from ccm.cluster.acme_schedule import ManagerState

    metrics = Metrics()
    expiry = datetime(2027, 3, 1, tzinfo=UTC)
    metrics.certificate_managers(
        True, {4: ManagerState(failures=0, not_after=expiry), 7: ManagerState(failures=3)}
    )
    assert value(metrics, "ccm_acme_orderer") == 1
    assert value(metrics, "ccm_certificate_manager_failures", manager="4") == 0
    assert value(metrics, "ccm_certificate_manager_failures", manager="7") == 3
    assert (
        value(metrics, "ccm_certificate_manager_expiry_timestamp_seconds", manager="4")
        == expiry.timestamp()
    )
    # no certificate yet: no expiry sample (not a zero that alerts as expired)
    assert value(metrics, "ccm_certificate_manager_expiry_timestamp_seconds", manager="7") is None
    # the node stops ordering (another became primary): its per-manager samples go
    metrics.certificate_managers(False, {})
    assert value(metrics, "ccm_acme_orderer") == 0
    assert value(metrics, "ccm_certificate_manager_failures", manager="7") is None
    assert value(metrics, "ccm_certificate_manager_expiry_timestamp_seconds", manager="4") is None
