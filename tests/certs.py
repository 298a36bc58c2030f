"""A test CA and the certificates the tests need, made with ``cryptography``.

``TestCa()`` is a root with one intermediate; ``issue(names, …)`` signs a leaf with the
intermediate and returns its PEM, its key's PEM and the chain's PEM. EC P-256 keys: fast
to make, and what nginx and curl take. Times are explicit (``valid_from``, ``days``), so
a test of the write-time rules passes the store the clock it means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

#: the time the write-time tests check at (their injected clock)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_certificate(
    subject: str,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    valid_from: datetime,
    days: int,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_from + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
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
    )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Issued:
    """A leaf as a ``certificates`` object holds it."""

    certificate: str
    private_key: str
    ca_chain: str

    def raw(self, object_id: int = 1, names: list[str] | None = None) -> dict[str, object]:
        from configurations.certificates import leaf_names

        return {
            "id": object_id,
            "common_names": names if names is not None else leaf_names(self.certificate),
            "certificate": self.certificate,
            "ca_chain": self.ca_chain,
            "private_key": self.private_key,
        }


class TestCa:
    """A root and an intermediate, valid for years around ``valid_from``."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "ccm test", valid_from: datetime | None = None) -> None:
        start = valid_from or datetime.now(UTC) - timedelta(days=365)
        self.root_key = new_key()
        self.root = _ca_certificate(f"{name} root", self.root_key, None, self.root_key, start, 3650)
        self.intermediate_key = new_key()
        self.intermediate = _ca_certificate(
            f"{name} intermediate", self.intermediate_key, self.root, self.root_key, start, 3650
        )

    @property
    def root_pem(self) -> str:
        return pem(self.root)

    @property
    def chain_pem(self) -> str:
        return pem(self.intermediate)

    def issue(
        self,
        names: list[str],
        *,
        valid_from: datetime | None = None,
        days: int = 90,
        key: PrivateKey | None = None,
        common_name: str | None = None,
        san: bool = True,
        extra_san: list[x509.GeneralName] | None = None,
    ) -> Issued:
        key = key or new_key()
        start = valid_from or datetime.now(UTC) - timedelta(days=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or names[0]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        )
        if san:
            general = [x509.DNSName(name) for name in names] + list(extra_san or [])
            builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
        leaf = builder.sign(self.intermediate_key, hashes.SHA256())
        return Issued(pem(leaf), key_pem(key), self.chain_pem)
