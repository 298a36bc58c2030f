"""certificate-managers against a REAL ACME server: Debian's pebble, with its mock DNS
answering every name with 127.0.0.1, validating HTTP-01 through a real nginx that passes
``/.well-known/acme-challenge/`` to ccm's responder, which answers from etcd.

The renewal runs on a manual clock started at the real time (pebble's certificates carry
real dates), so renewal dates and back-off are reached by moving the clock, not by
waiting. The certificate is stored through the real ``ObjectStore``: with the
``certificates`` type when it is installed, or else a stand-in with DESIGN's fields.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from acme_servers import ChallengeNginx, PebbleServer, free_port
from certs import TestCa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import generate_latest

from ccm.cluster.acme_account import account_key
from ccm.cluster.acme_challenges import ChallengeAnswers
from ccm.cluster.acme_client import AcmeClient, AcmeOrderFailed
from ccm.cluster.acme_records import ManagerStates
from ccm.cluster.acme_renewal import CertificateRenewal
from ccm.cluster.clock import ManualClock
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.halt import HaltFlag
from ccm.cluster.keys import Keys
from ccm.cluster.status import cluster_status, format_status
from ccm.cluster.store import ObjectStore
from ccm.daemon.acme_responder import ChallengeResponder
from ccm.daemon.acme_service import AcmeService
from ccm.daemon.metrics import Metrics
from ccm.models.base import CcmObject, object_types
from ccm.settings import AcmeSettings, EtcdSettings, Settings

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pebble() -> Iterator[PebbleServer]:
    server = PebbleServer(http_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def answers(etcd_client: EtcdClient, etcd_settings: EtcdSettings) -> ChallengeAnswers:
    return ChallengeAnswers(etcd_client, etcd_settings.prefix)


@pytest.fixture
def responder(answers: ChallengeAnswers) -> Iterator[tuple[str, int]]:
    """ccm's responder on a free loopback port, answering from etcd."""
    server = ChallengeResponder(answers.lookup)
    try:
        yield server.serve("127.0.0.1:0")
    finally:
        server.close()


@pytest.fixture
def start_nginx(pebble: PebbleServer) -> Iterator[Callable[..., ChallengeNginx]]:
    """Start a real nginx on the port pebble validates on (one at a time)."""
    running: list[ChallengeNginx] = []

    def start(upstream: str, **options: Any) -> ChallengeNginx:
        for old in running:
            old.close()
        nginx = ChallengeNginx(pebble.http_port, upstream, **options)
        running.append(nginx)
        nginx.start()
        return nginx

    try:
        yield start
    finally:
        for nginx in running:
            nginx.close()


@pytest.fixture
def certificates_type(registry: None) -> type[CcmObject]:
    """The real ``certificates`` type: every write goes through its write-time checks
    (registered for this test: an earlier test's ``registry`` may have dropped it)."""
    from configurations.certificates import Certificate

    object_types.setdefault(Certificate.TYPE, Certificate)
    return Certificate


def acme_settings(pebble: PebbleServer, **changes: Any) -> AcmeSettings:
    values: dict[str, Any] = {
        "directory_url": pebble.directory_url,
        "ca_file": str(pebble.ca_file),
        "email": "hostmaster@example.org",
        "responder_listen": "",
        "timeout": 30.0,
    }
    return AcmeSettings(**(values | changes))


def node_settings(
    etcd_settings: EtcdSettings, pebble: PebbleServer, tmp_path: Path, **acme: Any
) -> Settings:
    return Settings(
        node="web01",
        root=tmp_path,
        etcd=etcd_settings,
        acme=acme_settings(pebble, **acme),
    )


def put_manager(client: EtcdClient, prefix: str, manager_id: int, names: list[str]) -> None:
    """A ``certificate-managers`` object as the Cluster API stores it (wire contract)."""
    key = Keys(prefix).object("certificate-managers", manager_id)
    client.put(key, json.dumps({"id": manager_id, "common_names": names}).encode())


def leaf(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem.encode())[0]


def https_peer(
    fullchain: str, key: str, root: bytes, name: str, tmp_path: Path, start_nginx: Any
) -> x509.Certificate:
    """Serve the certificate from a real nginx and connect to it as a client that trusts
    only pebble's root, checking the host name: the certificate the client saw."""
    (tmp_path / "fullchain.pem").write_text(fullchain)
    (tmp_path / "privkey.pem").write_text(key)
    (tmp_path / "root.pem").write_bytes(root)
    https_port = free_port()
    start_nginx(
        "127.0.0.1:9", tls=(tmp_path / "fullchain.pem", tmp_path / "privkey.pem", https_port)
    )
    context = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))
    with (
        socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# --------------------------------------------------------------------------- the order


def test_an_order_end_to_end_through_nginx_responder_and_etcd(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    answers: ChallengeAnswers,
    responder: tuple[str, int],
    start_nginx: Callable[..., ChallengeNginx],
    tmp_path: Path,
) -> None:
    nginx = start_nginx(f"127.0.0.1:{responder[1]}")
    names = ["shop.example.test", "www.shop.example.test"]
    client = AcmeClient(
        pebble.directory_url,
        account_key(etcd_client, etcd_settings.prefix),
        email="hostmaster@example.org",
        ca_file=str(pebble.ca_file),
        timeout=30,
    )

    issued = client.order(names, answers)

    # pebble fetched each name's challenge THROUGH nginx, and got the answer from etcd
    log = nginx.access_log()
    assert log.count("LetsEncrypt-Pebble-VA") >= len(names)
    assert all(line.split('"')[2].split()[0] == "200" for line in log.splitlines())
    # the answers are withdrawn once the order is over
    keys, _ = etcd_client.get_prefix(f"{etcd_settings.prefix}/acme/challenges/")
    assert keys == []
    # the certificate covers exactly the names, with its new key
    certificate = leaf(issued.certificate)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sorted(san.value.get_values_for_type(x509.DNSName)) == sorted(names)
    key = serialization.load_pem_private_key(issued.private_key.encode(), None)
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]
    assert issued.not_after == certificate.not_valid_after_utc
    assert "PRIVATE KEY" not in repr(issued)
    # and a real TLS client that trusts only pebble's root accepts the chain for the name
    seen = https_peer(
        issued.fullchain, issued.private_key, pebble.root_pem(), names[1], tmp_path, start_nginx
    )
    assert seen.serial_number == certificate.serial_number


def test_whichever_web_node_the_validation_reaches_answers_with_no_rollout(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    answers: ChallengeAnswers,
    start_nginx: Callable[..., ChallengeNginx],
) -> None:
    """Two web nodes, each its own responder and etcd connection; each name's requests
    reach a different one. The orderer (a third connection) only writes etcd."""
    with (
        EtcdClient.from_settings(etcd_settings) as web01,
        EtcdClient.from_settings(etcd_settings) as web02,
        ChallengeResponder(ChallengeAnswers(web01, etcd_settings.prefix).lookup) as first,
        ChallengeResponder(ChallengeAnswers(web02, etcd_settings.prefix).lookup) as second,
    ):
        _, first_port = first.serve("127.0.0.1:0")
        _, second_port = second.serve("127.0.0.1:0")
        nginx = start_nginx(
            f"127.0.0.1:{first_port}",
            routes={"www.two.example.test": f"127.0.0.1:{second_port}"},
        )
        client = AcmeClient(
            pebble.directory_url,
            account_key(etcd_client, etcd_settings.prefix),
            ca_file=str(pebble.ca_file),
            timeout=30,
        )
        issued = client.order(["two.example.test", "www.two.example.test"], answers)
    assert issued.certificate
    # both responders were asked (nginx logs the upstream of each request)
    upstreams = set(re.findall(r"upstream=(\S+)", nginx.access_log()))
    assert upstreams == {f"127.0.0.1:{first_port}", f"127.0.0.1:{second_port}"}


def test_the_chain_does_not_verify_against_another_root(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    answers: ChallengeAnswers,
    responder: tuple[str, int],
    start_nginx: Callable[..., ChallengeNginx],
    tmp_path: Path,
) -> None:
    """The verification above is real: the same chain against the test CA that signed
    pebble's own HTTPS certificate (not its issuing root) is refused."""
    start_nginx(f"127.0.0.1:{responder[1]}")
    client = AcmeClient(
        pebble.directory_url,
        account_key(etcd_client, etcd_settings.prefix),
        ca_file=str(pebble.ca_file),
        timeout=30,
    )
    issued = client.order(["other.example.test"], answers)
    with pytest.raises(ssl.SSLCertVerificationError):
        https_peer(
            issued.fullchain,
            issued.private_key,
            pebble.ca_file.read_bytes(),
            "other.example.test",
            tmp_path,
            start_nginx,
        )


def test_the_acme_server_is_verified_with_ca_file(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    answers: ChallengeAnswers,
) -> None:
    """Without ``ca_file`` the system CAs do not know pebble's: the order fails, named."""
    client = AcmeClient(
        pebble.directory_url, account_key(etcd_client, etcd_settings.prefix), timeout=10
    )
    with pytest.raises(AcmeOrderFailed, match="(?i)certificate verify failed"):
        client.order(["unverified.example.test"], answers)


# --------------------------------------------------------------------------- renewal


def test_renewal_issues_then_renews_30_days_before_expiry(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    responder: tuple[str, int],
    start_nginx: Callable[..., ChallengeNginx],
    certificates_type: type[CcmObject],
    tmp_path: Path,
) -> None:
    start_nginx(f"127.0.0.1:{responder[1]}")
    prefix = etcd_settings.prefix
    settings = node_settings(etcd_settings, pebble, tmp_path)
    clock = ManualClock(wall=datetime.now(UTC).replace(microsecond=0))
    renewal = CertificateRenewal(etcd_client, settings, clock=clock)
    store = ObjectStore(etcd_client, prefix)
    store_before = store.event_revisions().get("certificates", 0)
    put_manager(etcd_client, prefix, 7, ["blog.example.test"])

    first = renewal.tick()

    assert first.ordering and first.attempted == {7: "issued"}
    state = ManagerStates(etcd_client, prefix).all()[7]
    stored = store.get("certificates", state.certificate_id or 0)
    issued = leaf(stored.certificate)  # type: ignore[attr-defined]
    assert state.not_after == issued.not_valid_after_utc
    assert stored.common_names == ["blog.example.test"]  # type: ignore[attr-defined]
    assert store.event_revisions()["certificates"] > store_before  # a rollout signal
    # nothing is due until 30 days before expiry: the next look is then
    assert renewal.tick().attempted == {}
    assert first.next_check == issued.not_valid_after_utc - timedelta(days=30)

    clock.set(wall=issued.not_valid_after_utc - timedelta(days=30))
    renewed = renewal.tick()

    assert renewed.attempted == {7: "issued"}
    again = store.get("certificates", state.certificate_id or 0)  # the same id, replaced
    renewed_leaf = leaf(again.certificate)  # type: ignore[attr-defined]
    assert renewed_leaf.serial_number != issued.serial_number
    assert again.private_key != stored.private_key  # type: ignore[attr-defined]
    assert ManagerStates(etcd_client, prefix).all()[7].failures == 0


def test_a_change_of_names_orders_again_under_the_same_id(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    responder: tuple[str, int],
    start_nginx: Callable[..., ChallengeNginx],
    certificates_type: type[CcmObject],
    tmp_path: Path,
) -> None:
    start_nginx(f"127.0.0.1:{responder[1]}")
    prefix = etcd_settings.prefix
    renewal = CertificateRenewal(
        etcd_client,
        node_settings(etcd_settings, pebble, tmp_path),
        clock=ManualClock(wall=datetime.now(UTC).replace(microsecond=0)),
    )
    store = ObjectStore(etcd_client, prefix)
    # a certificate uploaded by hand holds id 1: the manager's gets another
    taken = TestCa().issue(["x.example.test"]).raw(1)
    store.put("certificates", [taken])
    taken = store.get("certificates", 1).model_dump(mode="json")
    put_manager(etcd_client, prefix, 3, ["cafe.example.test"])
    assert renewal.tick().attempted == {3: "issued"}
    certificate_id = ManagerStates(etcd_client, prefix).all()[3].certificate_id
    assert certificate_id == 2

    put_manager(etcd_client, prefix, 3, ["cafe.example.test", "www.cafe.example.test"])
    assert renewal.tick().attempted == {3: "issued"}

    stored = store.get("certificates", 2)
    san = leaf(stored.certificate).extensions.get_extension_for_class(  # type: ignore[attr-defined]
        x509.SubjectAlternativeName
    )
    assert sorted(san.value.get_values_for_type(x509.DNSName)) == [
        "cafe.example.test",
        "www.cafe.example.test",
    ]
    assert store.get("certificates", 1).model_dump(mode="json") == taken


# --------------------------------------------------------------------------- failure


def test_a_failed_challenge_is_recorded_and_retried_with_backoff_without_a_halt(
    pebble: PebbleServer,
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    answers: ChallengeAnswers,
    start_nginx: Callable[..., ChallengeNginx],
    certificates_type: type[CcmObject],
    tmp_path: Path,
) -> None:
    """The responder does not answer: the order fails, its error and next attempt are
    recorded, the attempt waits 300 s then 600 s, another manager is issued meanwhile,
    nothing halts; once the responder answers, the next attempt succeeds."""
    prefix = etcd_settings.prefix
    responder_port = free_port()  # nothing listens there yet: nginx answers 502
    start_nginx(f"127.0.0.1:{responder_port}")
    settings = node_settings(etcd_settings, pebble, tmp_path, retry_initial=300.0)
    clock = ManualClock(wall=datetime.now(UTC).replace(microsecond=0))
    metrics = Metrics()
    service = AcmeService(etcd_client, settings, metrics, clock)
    put_manager(etcd_client, prefix, 4, ["broken.example.test"])
    started = clock.wall()

    first = service.tick()

    assert "broken.example.test" in first.attempted[4]
    state = ManagerStates(etcd_client, prefix).all()[4]
    assert state.failures == 1 and "502" in state.last_error
    assert state.next_attempt == started + timedelta(seconds=300)
    assert first.next_check == state.next_attempt
    assert HaltFlag(etcd_client, prefix).get() is None
    # ccm status and the metrics show it
    status = cluster_status(etcd_client, prefix)
    [entry] = status["certificate_managers"]
    assert entry["manager"] == 4 and entry["failures"] == 1 and "502" in entry["last_error"]
    assert "4 broken.example.test: FAILING (1 in a row" in format_status(status)
    exported = generate_latest(metrics.registry).decode()
    assert 'ccm_certificate_manager_failures{manager="4"} 1.0' in exported
    assert "ccm_acme_orderer 1.0" in exported

    clock.advance(299)
    assert service.tick().attempted == {}  # backing off
    # another manager is not held up by the failing one
    with ChallengeResponder(answers.lookup) as responder:
        responder.serve(f"127.0.0.1:{responder_port}")
        put_manager(etcd_client, prefix, 5, ["fine.example.test"])
        start_nginx(f"127.0.0.1:{responder_port}", unanswered=("broken.example.test",))
        clock.advance(1)
        second = service.tick()
        assert second.attempted[5] == "issued"
        assert "broken.example.test" in second.attempted[4]
        state = ManagerStates(etcd_client, prefix).all()[4]
        assert state.failures == 2
        assert state.next_attempt == clock.wall() + timedelta(seconds=600)  # doubled
        assert "404" in state.last_error  # the broken vhost answered, not the responder

        # the vhost is fixed: the next attempt, after the back-off, succeeds
        start_nginx(f"127.0.0.1:{responder_port}")
        clock.advance(599)
        assert service.tick().attempted == {}
        clock.advance(1)
        assert service.tick().attempted == {4: "issued"}

    state = ManagerStates(etcd_client, prefix).all()[4]
    assert state.failures == 0 and state.last_error == "" and state.next_attempt is None
    assert (
        'ccm_certificate_manager_failures{manager="4"} 0.0'
        in generate_latest(metrics.registry).decode()
    )
    assert HaltFlag(etcd_client, prefix).get() is None


# --------------------------------------------------------------------------- the responder


def test_the_responder_answers_from_etcd_and_refuses_everything_else(
    etcd_client: EtcdClient,
    etcd_settings: EtcdSettings,
    answers: ChallengeAnswers,
    responder: tuple[str, int],
) -> None:
    token = "A" * 43
    lease = answers.publish(token, f"{token}.{'b' * 43}", ttl=60)
    assert 0 < etcd_client.lease_ttl(lease) <= 60  # bound to a lease: it expires

    def get(path: str, method: str = "GET") -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{responder[1]}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    assert get(f"/.well-known/acme-challenge/{token}") == (200, f"{token}.{'b' * 43}".encode())
    assert get(f"/.well-known/acme-challenge/{token}", "HEAD") == (200, b"")
    assert get("/.well-known/acme-challenge/" + "B" * 43)[0] == 404  # unknown
    assert get("/.well-known/acme-challenge/../../objects")[0] == 404  # not a token
    assert get("/.well-known/acme-challenge/" + "A" * 5000)[0] == 404  # too long
    assert get("/etc/passwd")[0] == 404
    answers.withdraw(lease)
    assert get(f"/.well-known/acme-challenge/{token}")[0] == 404


def test_the_responder_says_503_while_etcd_is_away(
    private_etcd_server: Any, tmp_path: Path
) -> None:
    settings = EtcdSettings(endpoints=(private_etcd_server.endpoint,), prefix="/r", timeout=1.0)
    with EtcdClient.from_settings(settings) as client:
        server = ChallengeResponder(ChallengeAnswers(client, "/r").lookup)
        _, port = server.serve("127.0.0.1:0")
        try:
            private_etcd_server.kill()
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/.well-known/acme-challenge/{'C' * 43}", timeout=10
                )
            assert refused.value.code == 503
            refused.value.close()
        finally:
            server.close()


def test_publish_refuses_what_is_not_a_token(answers: ChallengeAnswers) -> None:
    with pytest.raises(ValueError, match="base64url"):
        answers.publish("../x" + "a" * 20, "a" * 20 + "." + "b" * 20, ttl=60)
    with pytest.raises(ValueError, match="thumbprint"):
        answers.publish("a" * 43, "a" * 43 + "\n.evil", ttl=60)


# --------------------------------------------------------------------------- the account


def test_one_account_key_for_the_cluster_survives_a_new_orderer(
    etcd_settings: EtcdSettings,
) -> None:
    """Two nodes (two clients) get the same key: the first one stored it."""
    with (
        EtcdClient.from_settings(etcd_settings) as first,
        EtcdClient.from_settings(etcd_settings) as second,
    ):
        key = account_key(first, etcd_settings.prefix)
        assert account_key(second, etcd_settings.prefix).thumbprint() == key.thumbprint()
        stored = first.get(Keys(etcd_settings.prefix).acme_account)
        assert stored is not None and "key" in json.loads(stored.value)


def test_a_new_email_updates_the_accounts_contact(
    pebble: PebbleServer, etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    key = account_key(etcd_client, etcd_settings.prefix)

    def client(email: str) -> AcmeClient:
        return AcmeClient(pebble.directory_url, key, email=email, ca_file=str(pebble.ca_file))

    first = client("old@example.org")
    url = first.register()
    assert first.contact() == ("mailto:old@example.org",)
    second = client("new@example.org")
    assert second.register() == url  # the same key is the same account
    assert client("new@example.org").contact() == ("mailto:new@example.org",)


def test_an_unreadable_account_key_is_an_error_that_does_not_show_it(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings
) -> None:
    from ccm.errors import ClusterError

    secret = "d" * 40
    etcd_client.put(Keys(etcd_settings.prefix).acme_account, json.dumps({"key": secret}).encode())
    with pytest.raises(ClusterError) as error:
        account_key(etcd_client, etcd_settings.prefix)
    assert secret not in str(error.value)
