"""ccm against an etcd that requires TLS client certificates and a user with a password.

The test makes its own PKI with ``cryptography`` (a CA, a server certificate for
127.0.0.1, a client certificate whose CN is no etcd user, so only the password
authenticates), starts etcd with ``--client-cert-auth``, adds ``root`` and enables auth
with the real ``etcdctl``. Then the real CLI and a real ``ccm daemon`` must work with
``ca_file``/``cert_file``/``key_file``/``username``/``password`` — and the password must
never show: not in the daemon's log, not in ``ccm status``, not in the error a wrong
password gives (which names the user).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_harness import Cluster, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ccm.cluster.etcd import EtcdClient
from ccm.errors import ClusterError
from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer, EtcdServerError, EtcdTls

PASSWORD = "Tls-Auth-" + secrets.token_hex(12)
WRONG_PASSWORD = "Not-It-" + secrets.token_hex(12)
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("ccm test CA", ca_key, _name("ccm test CA"), ca_key, ca=True)
    pki = Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
        directory / "client.pem",
        directory / "client-key.pem",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, subject, usage, ip in (
        (pki.server_cert, pki.server_key, "etcd", ExtendedKeyUsageOID.SERVER_AUTH, "127.0.0.1"),
        (pki.client_cert, pki.client_key, "ccm-node", ExtendedKeyUsageOID.CLIENT_AUTH, None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, ca_cert.subject, ca_key, usage=usage, ip=ip)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    return pki


def etcdctl(server: EtcdServer, pki: Pki, *args: str) -> str:
    result = subprocess.run(
        [
            ETCDCTL,
            f"--endpoints={server.endpoint}",
            f"--cacert={pki.ca}",
            f"--cert={pki.client_cert}",
            f"--key={pki.client_key}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"etcdctl {args[:2]} failed: {result.stderr}", pytrace=False)
    return result.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_etcd(pki: Pki) -> Iterator[EtcdServer]:
    """etcd over https, client certificates required, auth enabled with root/PASSWORD."""
    tls = EtcdTls(pki.server_cert, pki.server_key, pki.ca, pki.client_cert, pki.client_key)
    try:
        server = EtcdServer(tls=tls)
        server.start()
    except EtcdServerError as error:
        pytest.fail(f"cannot run the etcd the tests need: {error}", pytrace=False)
    try:
        etcdctl(server, pki, "user", "add", "root", f"--new-user-password={PASSWORD}")
        assert "Authentication Enabled" in etcdctl(server, pki, "auth", "enable")
        yield server
    finally:
        server.close()


def tls_settings(pki: Pki, password: str = PASSWORD) -> dict[str, str]:
    return {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
        "username": "root",
        "password": password,
    }


@pytest.fixture
def cluster(secure_etcd: EtcdServer, pki: Pki, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        secure_etcd, tmp_path / "cluster", prefix="/ccm-tls", etcd_extra=tls_settings(pki)
    ) as harness:  # stopped, and its logs printed, whatever happens
        yield harness


def test_the_cli_and_a_daemon_work_over_tls_with_auth(cluster: Cluster, pki: Pki) -> None:
    # auth is really on: the same TLS client without the user is refused
    anonymous = EtcdSettings(
        endpoints=(cluster.server.endpoint,),
        ca_file=str(pki.ca),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
        timeout=5.0,
    )
    with EtcdClient.from_settings(anonymous) as client, pytest.raises(ClusterError):
        client.put("/ccm-tls/objects/unix-users/1", b"{}")

    node = cluster.add("node1").wait_ready()
    revision = cluster.put_cli("unix-users", {"id": 1, "username": "alice"})
    cluster.wait_applied(revision, [node.name])
    passwd = (node.root / "etc/passwd").read_text()
    assert any(line.startswith("alice:") for line in passwd.splitlines())
    assert (node.root / "home/alice").is_dir()

    status = cluster.status()
    assert status["nodes"][0]["node"] == "node1" and status["nodes"][0]["alive"] is True
    for args in (("status",), ("status", "--json"), ("-v", "status")):
        result = cluster.ccm(*args)
        assert PASSWORD not in result.stdout + result.stderr, args
    assert node.stop() == 0
    log = node.log_text()
    assert "run succeeded" in log
    assert PASSWORD not in log


def test_a_wrong_password_is_a_clear_error_naming_the_user_not_the_password(
    cluster: Cluster, pki: Pki
) -> None:
    cluster.cli_config.write_text(cluster.cli_config.read_text().replace(PASSWORD, WRONG_PASSWORD))
    assert WRONG_PASSWORD in cluster.cli_config.read_text()
    for args in (("status",), ("objects", "list", "unix-users")):
        result = cluster.ccm(*args, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert result.stderr.startswith("error: "), output
        assert "'root'" in result.stderr and "Traceback" not in output
        assert WRONG_PASSWORD not in output and PASSWORD not in output

    # a daemon with the wrong password says so (naming the user) and keeps trying
    node = cluster.add("node1", etcd={**cluster.etcd_table(), "password": WRONG_PASSWORD})
    wait_until(lambda: "'root'" in node.log_text(), 20, "the daemon to report the refusal")
    assert node.running
    assert node.stop() == 0
    log = node.log_text()
    assert WRONG_PASSWORD not in log and PASSWORD not in log
