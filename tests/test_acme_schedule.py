"""The renewal policy as pure planning (``ccm.cluster.acme_schedule``), on fixed times;
and, against a real etcd, that only the node primary for nginx orders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccm.cluster.acme_records import ManagerStates
from ccm.cluster.acme_renewal import CertificateRenewal
from ccm.cluster.acme_schedule import (
    Held,
    Manager,
    ManagerState,
    due,
    failed,
    name_problems,
    next_check,
    orders_here,
    succeeded,
)
from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.keys import Keys
from ccm.cluster.store import ObjectStore
from ccm.models import Node
from ccm.settings import AcmeSettings, BackoffSettings, EtcdSettings, Settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MONTH = timedelta(days=30)
RETRY = BackoffSettings(initial=300.0, max=3600.0)
SHOP = Manager(1, ("shop.example", "www.shop.example"))


def held(*names: str, expires: datetime) -> Held:
    return Held(frozenset(names), expires)


def reasons(*args: object) -> dict[int, str]:
    return {item.manager.id: item.reason for item in due(*args)}  # type: ignore[arg-type]


def test_a_manager_without_a_certificate_is_due() -> None:
    assert reasons([SHOP], {}, {}, NOW, MONTH) == {1: "no certificate yet"}


def test_a_certificate_is_renewed_30_days_before_it_expires_not_earlier() -> None:
    expires = NOW + MONTH + timedelta(seconds=1)
    current = {1: held(*SHOP.common_names, expires=expires)}
    assert reasons([SHOP], {}, current, NOW, MONTH) == {}
    assert next_check([SHOP], {}, current, NOW, MONTH) == expires - MONTH
    later = NOW + timedelta(seconds=1)
    assert reasons([SHOP], {}, current, later, MONTH) == {1: f"expires {expires.isoformat()}"}


def test_changed_names_are_due_and_say_which() -> None:
    current = {1: held("shop.example", "old.shop.example", expires=NOW + 3 * MONTH)}
    assert reasons([SHOP], {}, current, NOW, MONTH) == {
        1: "names changed (+www.shop.example, -old.shop.example)"
    }


def test_a_failure_backs_off_doubling_up_to_the_maximum() -> None:
    state = ManagerState()
    waits = []
    moment = NOW
    for _ in range(6):
        state = failed(state, SHOP.common_names, "boom", moment, RETRY, "web01")
        assert state.next_attempt is not None
        waits.append((state.next_attempt - moment).total_seconds())
        # not due while backing off, due again the moment the back-off ends
        assert (
            reasons([SHOP], {1: state}, {}, state.next_attempt - timedelta(seconds=1), MONTH) == {}
        )
        assert next_check([SHOP], {1: state}, {}, moment, MONTH) == state.next_attempt
        moment = state.next_attempt
        assert reasons([SHOP], {1: state}, {}, moment, MONTH) == {1: "no certificate yet"}
    assert waits == [300, 600, 1200, 2400, 3600, 3600]
    assert state.failures == 6 and state.last_error == "boom" and state.node == "web01"


def test_new_names_are_tried_at_once_even_while_backing_off() -> None:
    state = failed(ManagerState(), ("shop.example",), "no such host", NOW, RETRY, "web01")
    assert reasons([SHOP], {1: state}, {}, NOW, MONTH) == {1: "no certificate yet"}
    # and their failures count from one again
    assert failed(state, SHOP.common_names, "x", NOW, RETRY, "web01").failures == 1


def test_success_clears_the_failures() -> None:
    state = failed(ManagerState(), SHOP.common_names, "boom", NOW, RETRY, "web01")
    expires = NOW + 3 * MONTH
    done = succeeded(state, SHOP.common_names, 9, expires, NOW, "web02")
    assert (done.failures, done.last_error, done.next_attempt) == (0, "", None)
    assert (done.certificate_id, done.not_after, done.last_success) == (9, expires, NOW)
    current = {1: held(*SHOP.common_names, expires=expires)}
    assert reasons([SHOP], {1: done}, current, NOW, MONTH) == {}


def test_one_failing_manager_does_not_hold_up_another() -> None:
    other = Manager(2, ("blog.example",))
    state = failed(ManagerState(), SHOP.common_names, "boom", NOW, RETRY, "web01")
    assert reasons([SHOP, other], {1: state}, {}, NOW, MONTH) == {2: "no certificate yet"}


def node(hostname: str, groups: list[str], primary_for: list[str], id: int = 1) -> Node:
    return Node(id=id, hostname=hostname, groups=groups, primary_for=primary_for)


@pytest.mark.parametrize(
    ("nodes", "orders"),
    [
        ([], True),  # one server, no nodes objects: it orders
        ([node("web01", ["nginx"], ["nginx"])], True),
        ([node("web01", ["nginx"], [])], False),
        ([node("web02", ["nginx"], ["nginx"], 2), node("web01", ["nginx"], [])], False),
        ([node("web02", ["nginx"], ["nginx"], 2)], False),  # web01 unregistered
        ([node("web01", ["nginx", "mariadb"], ["mariadb"])], False),
    ],
)
def test_only_the_primary_for_nginx_orders(nodes: list[Node], orders: bool) -> None:
    assert orders_here("web01", nodes) is orders


def test_a_node_that_is_not_primary_orders_nothing_and_records_nothing(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, tmp_path: Path
) -> None:
    """Against a real etcd: web01 is registered but web02 is primary for nginx. web01's
    look reads the managers and leaves them alone (its directory is unreachable: had
    it tried, the attempt would be recorded as failed)."""
    prefix = etcd_settings.prefix
    store = ObjectStore(etcd_client, prefix)
    store.put(
        "nodes",
        [
            {"id": 1, "hostname": "web01", "groups": ["nginx"], "primary_for": []},
            {"id": 2, "hostname": "web02", "groups": ["nginx"], "primary_for": ["nginx"]},
        ],
    )
    manager = {"id": 1, "common_names": ["shop.example"]}
    etcd_client.put(Keys(prefix).object("certificate-managers", 1), json.dumps(manager).encode())
    acme = AcmeSettings(directory_url="https://127.0.0.1:9/dir", responder_listen="")

    def renewal(name: str) -> CertificateRenewal:
        settings = Settings(node=name, root=tmp_path, etcd=etcd_settings, acme=acme)
        return CertificateRenewal(etcd_client, settings, clock=ManualClock(wall=NOW))

    report = renewal("web01").tick()
    assert (report.ordering, report.attempted) == (False, {})
    assert ManagerStates(etcd_client, prefix).all() == {}

    primary = renewal("web02").tick()  # the primary tries (and fails: nothing there)
    assert primary.ordering and "127.0.0.1:9/dir: " in primary.attempted[1]
    assert "Connection refused" in primary.attempted[1]
    state = ManagerStates(etcd_client, prefix).all()[1]
    assert state.failures == 1 and state.node == "web02"
    assert state.next_attempt == NOW + timedelta(seconds=acme.retry_initial)


def test_the_state_of_a_deleted_manager_is_forgotten(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, tmp_path: Path
) -> None:
    prefix = etcd_settings.prefix
    states = ManagerStates(etcd_client, prefix)
    states.put(8, failed(ManagerState(), ("gone.example",), "boom", NOW, RETRY, "web01"))
    acme = AcmeSettings(directory_url="https://127.0.0.1:9/dir", responder_listen="")
    settings = Settings(node="web01", root=tmp_path, etcd=etcd_settings, acme=acme)
    report = CertificateRenewal(etcd_client, settings, clock=ManualClock(wall=NOW)).tick()
    assert report.attempted == {} and states.all() == {}


def test_a_state_record_round_trips_through_etcd(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    states = ManagerStates(etcd_client, etcd_settings.prefix)
    state = succeeded(ManagerState(), SHOP.common_names, 3, NOW + MONTH, NOW, "web01")
    states.put(1, state)
    assert states.all() == {1: state}


def test_the_alert_rules_use_only_published_metrics() -> None:
    import re

    import yaml

    from ccm.daemon.metrics import Metrics

    rules = yaml.safe_load(
        (Path(__file__).parent.parent / "contrib/prometheus-alerts.yml").read_text()
    )
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\bccm_[a-z_]+", expr)}
    published = {family.name for family in Metrics().registry.collect()}
    published |= {f"{name}_total" for name in published}
    assert {
        "ccm_certificate_manager_failures",
        "ccm_certificate_manager_expiry_timestamp_seconds",
    } <= used
    assert used <= published


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["shop.example", "www.shop.example"], ""),
        ([], "no names to order"),
        (["*.shop.example"], "'*.shop.example' is not a host name HTTP-01 can validate"),
        (["shop.example", "shop.example"], "a name is listed twice"),
        (["shop.example\nx.example"], "is not a host name"),
        (["SHOP.example"], "is not a host name"),
        ([f"n{i}.example" for i in range(101)], "101 names; a certificate holds at most 100"),
    ],
)
def test_only_host_names_http_01_can_validate_are_ordered(names: list[str], problem: str) -> None:
    found = name_problems(names)
    assert (problem in found) if problem else found == ""


def test_a_wildcard_manager_is_recorded_as_failed_without_asking_the_server(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, tmp_path: Path
) -> None:
    prefix = etcd_settings.prefix
    manager = {"id": 6, "common_names": ["*.shop.example"]}
    etcd_client.put(Keys(prefix).object("certificate-managers", 6), json.dumps(manager).encode())
    acme = AcmeSettings(directory_url="https://127.0.0.1:9/dir", responder_listen="")
    settings = Settings(node="web01", root=tmp_path, etcd=etcd_settings, acme=acme)
    report = CertificateRenewal(etcd_client, settings, clock=ManualClock(wall=NOW)).tick()
    error = report.attempted[6]
    assert error.startswith("certificate-managers/6: common_names: '*.shop.example'")
    assert "127.0.0.1:9" not in error  # refused before any request
    state = ManagerStates(etcd_client, prefix).all()[6]
    assert state.failures == 1 and state.certificate_id is None
