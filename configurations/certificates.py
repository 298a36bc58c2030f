"""``certificates``: a TLS certificate with its chain and private key, for nginx to serve.

An object holds PEM text: ``certificate`` (the leaf), ``ca_chain`` (the intermediates,
optional) and ``private_key`` (a secret), plus ``common_names``, the names it covers. A
vhost or a redirect uses it by ``certificate_id``; whether it covers their names is their
rule (``configurations.server_names``), run again whenever a certificate is replaced, so a
renewal that drops a name is refused, naming the vhost that still serves it.

**At write time** the PEM is parsed with ``cryptography`` (the validators of ``Certificate``):

* the leaf, every certificate of the chain and the key parse; an encrypted key, a DSA
  key or an RSA key under 2048 bits is refused (nginx cannot load an encrypted key
  without asking for a passphrase);
* the key is the key of the leaf (their public keys are equal);
* the chain links up: the leaf is signed by the chain's first certificate, each by the
  next;
* every name of the leaf is a host name (``ccm.models.fields.alias``: a wildcard only as
  ``*.`` and never directly under a public suffix) and ``common_names`` lists exactly
  those names (the subject alternative names; the subject's CN only when there are none);
* neither the leaf nor the chain has expired, or is not yet valid, at the time the write
  context's ``clock`` gives (``system_clock`` by default; a test passes its own).

Those checks need the write context: a node that reads a stored certificate back only
checks the PEM's shape (``PEM_CERTIFICATES``, ``PEM_PRIVATE_KEY``), so a certificate that
expires after it was written still installs (nginx serves it; its renewal is the fix), and
reading 2,000 certificates costs no RSA key checks.

**On the node** (``certificate_files``, planned by ``nginx-vhosts``, the configuration that
writes every file nginx reads, so one ``nginx -t`` sees a certificate and the server
blocks that use it change together, in either order): ``/etc/ssl/ccm/<id>/fullchain.pem``
(0644 root, the leaf then the chain) and ``/etc/ssl/ccm/<id>/privkey.pem`` (0600 root, a
secret file: ``ccm diff`` shows fingerprints only).

The Cluster API and ccm's own ACME client store a certificate the same way: ``store.put(
"certificates", [certificate_object(id, leaf, chain, key)])`` runs every check above.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from ccm.models.base import CcmObject
from ccm.models.fields import Alias, Secret, alias, pattern
from ccm.models.names import canonical
from ccm.plan.changes import File

#: where a node keeps certificate ``<id>``: ``fullchain.pem`` and ``privkey.pem``
CERTIFICATE_DIR = "/etc/ssl/ccm/"
MAX_NAMES = 100
#: a leaf, or a chain of a few certificates: enough for any CA, bounded for a write
MAX_PEM = 64 * 1024
MAX_CHAIN = 8
MIN_RSA_BITS = 2048

_B64_LINE = r"[A-Za-z0-9+/=]{1,128}\n"


def _block(label: str) -> str:
    return rf"-----BEGIN {label}-----\n(?:{_B64_LINE})+-----END {label}-----"


#: one or more PEM certificates, a line break after each line and between the blocks
PEM_CERTIFICATES = rf"{_block('CERTIFICATE')}(?:\n\n?{_block('CERTIFICATE')})*\n?"
#: one unencrypted PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key
PEM_PRIVATE_KEY = "|".join(
    rf"{_block(label)}\n?" for label in ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
)
_PEM_CERTIFICATE_BLOCK = re.compile(_block("CERTIFICATE"))

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The time a write is checked at, unless its context brings a ``clock``."""
    return datetime.now(UTC)


PemCertificates = Annotated[
    str,
    Field(strict=True, max_length=MAX_PEM),
    pattern(PEM_CERTIFICATES, "PEM text of certificates (-----BEGIN CERTIFICATE-----…)"),
]


def _key_shape(value: str) -> str:
    """One unencrypted PEM private key (PKCS#8, RSA or EC); a refusal never quotes it."""
    # never quotes the value (``fullmatch`` would): it is a secret
    if not re.fullmatch(PEM_PRIVATE_KEY, value):
        raise ValueError(
            "is not one unencrypted PEM private key (-----BEGIN PRIVATE KEY-----, "
            "RSA PRIVATE KEY or EC PRIVATE KEY)"
        )
    return value


def _write_time(info: ValidationInfo) -> datetime | None:
    """The time a write is checked at (its context's ``clock``), or None when no write
    context is given: a node reading back a stored object checks the shape only."""
    if not isinstance(info.context, dict):
        return None
    clock: Clock = info.context.get("clock", system_clock)
    return clock()


def _load_certificates(pem: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as error:
        raise ValueError(f"does not parse as X.509 certificates ({error})") from None


def _check_validity(what: str, certificate: x509.Certificate, now: datetime) -> None:
    if now > certificate.not_valid_after_utc:
        raise ValueError(
            f"{what} expired on {certificate.not_valid_after_utc.isoformat()} "
            f"(checked at {now.isoformat(timespec='seconds')})"
        )
    if now < certificate.not_valid_before_utc:
        raise ValueError(
            f"{what} is not valid before {certificate.not_valid_before_utc.isoformat()} "
            f"(checked at {now.isoformat(timespec='seconds')})"
        )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def leaf_names(leaf: x509.Certificate | str) -> list[str]:
    """The names a client checks, sorted, each a host name or a ``*.`` wildcard: the DNS
    subject alternative names (RFC 6125: the subject's CN only when there are none).
    ``ValueError`` for a name that is not a host name, or an IP address among them."""
    if isinstance(leaf, str):
        leaf = _load_certificates(leaf)[0]
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raw = [str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    else:
        others = [n for n in extension.value if not isinstance(n, x509.DNSName)]
        if others:
            raise ValueError(f"the certificate names {others[0].value!s}, which is not a host name")
        raw = extension.value.get_values_for_type(x509.DNSName)
    if not raw:
        raise ValueError("the certificate names no host")
    names = set()
    for name in raw:
        try:
            names.add(alias(canonical(name)))
        except ValueError as error:
            raise ValueError(
                f"the certificate's name {name!r} is not a host name: {error}"
            ) from None
    return sorted(names)


class Certificate(CcmObject):
    """A TLS certificate, its chain and its private key; nginx serves it for the vhosts
    and redirects whose ``certificate_id`` names it, on the nodes with the ``nginx``
    group."""

    TYPE: ClassVar[str] = "certificates"
    common_names: list[Alias] = Field(min_length=1, max_length=MAX_NAMES)
    certificate: PemCertificates
    ca_chain: PemCertificates | None = None
    private_key: Annotated[
        str, Field(strict=True, max_length=MAX_PEM), AfterValidator(_key_shape), Secret
    ]

    @field_validator("certificate")
    @classmethod
    def _one_sound_leaf(cls, value: str, info: ValidationInfo) -> str:
        """Exactly one certificate; when written: valid now, its names host names and
        exactly ``common_names``."""
        if len(_PEM_CERTIFICATE_BLOCK.findall(value)) != 1:
            raise ValueError("exactly one certificate, the leaf (the chain goes in ca_chain)")
        now = _write_time(info)
        if now is not None:
            leaf = _load_certificates(value)[0]
            _check_validity("the certificate", leaf, now)
            names = leaf_names(leaf)
            listed = info.data.get("common_names")
            if listed is not None and sorted(set(map(canonical, listed))) != names:
                raise ValueError(
                    f"the certificate's names are {', '.join(names)}, but common_names lists "
                    f"{', '.join(sorted(set(listed)))}: they must be the same"
                )
        return value

    @field_validator("ca_chain")
    @classmethod
    def _chain_links_up(cls, value: str | None, info: ValidationInfo) -> str | None:
        """When written: the leaf signed by the first, each by the next, none expired;
        at most 8 certificates."""
        now = _write_time(info)
        leaf_pem = info.data.get("certificate")
        if value is None or now is None or leaf_pem is None:
            return value
        chain = _load_certificates(value)
        if len(chain) > MAX_CHAIN:
            raise ValueError(f"{len(chain)} certificates: a chain has at most {MAX_CHAIN}")
        child = _load_certificates(leaf_pem)[0]
        for position, issuer in enumerate(chain, start=1):
            what = "the certificate" if position == 1 else f"chain certificate {position - 1}"
            try:
                child.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                raise ValueError(
                    f"{what} ({child.subject.rfc4514_string()}) is not issued by chain "
                    f"certificate {position} ({issuer.subject.rfc4514_string()}): the chain "
                    "must start with the leaf's issuer, each certificate followed by its own"
                ) from None
            _check_validity(f"chain certificate {position}", issuer, now)
            child = issuer
        return value

    @field_validator("private_key")
    @classmethod
    def _key_is_the_leafs(cls, value: str, info: ValidationInfo) -> str:
        """When written: the certificate's key (RSA of 2048 bits or more, EC, Ed25519)."""
        now = _write_time(info)
        leaf_pem = info.data.get("certificate")
        if now is None or leaf_pem is None:
            return value
        try:
            key = serialization.load_pem_private_key(value.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # the library's message may quote the key's bytes: never shown
            raise ValueError("does not parse as an unencrypted PEM private key") from None
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key of {key.key_size} bits: at least {MIN_RSA_BITS}")
        if not isinstance(
            key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise ValueError("is neither an RSA, an EC nor an Ed25519 key")
        leaf = _load_certificates(leaf_pem)[0]
        if _spki(key.public_key()) != _spki(leaf.public_key()):
            raise ValueError(
                "does not match the certificate (its public key is not the certificate's)"
            )
        return value

    @property
    def directory(self) -> str:
        return f"{CERTIFICATE_DIR}{self.id}/"

    @property
    def fullchain_path(self) -> str:
        return self.directory + "fullchain.pem"

    @property
    def key_path(self) -> str:
        return self.directory + "privkey.pem"

    def covers(self, name: str) -> bool:
        """Whether a client accepts this certificate for ``name`` (RFC 6125, 6.4.3): an
        exact name, or ``*.base`` for a name exactly one label below ``base``. A served
        wildcard ``*.base`` (nginx: any depth) counts as covered by the same wildcard."""
        return covers(self.common_names, name)


def covers(certificate_names: Sequence[str], name: str) -> bool:
    """``Certificate.covers`` over a list of certificate names."""
    wanted = canonical(name)
    names = {canonical(n) for n in certificate_names}
    if wanted in names:
        return True
    if wanted.startswith("*."):
        return False  # only the same wildcard covers a served wildcard
    label, dot, parent = wanted.partition(".")
    return bool(dot and label and "." in parent and f"*.{parent}" in names)


def certificate_object(
    object_id: int, certificate: str, private_key: str, ca_chain: str | None = None
) -> dict[str, Any]:
    """The raw ``certificates`` object for a leaf, its key and chain, with the leaf's own
    names as ``common_names`` (what an ACME client stores after an order)."""
    raw: dict[str, Any] = {
        "id": object_id,
        "common_names": leaf_names(certificate),
        "certificate": certificate,
        "private_key": private_key,
    }
    if ca_chain:
        raw["ca_chain"] = ca_chain
    return raw


def fullchain(certificate: Certificate) -> str:
    """The leaf then the chain, as nginx's ``ssl_certificate`` reads them."""
    parts = [certificate.certificate, certificate.ca_chain or ""]
    return "".join(part.strip() + "\n" for part in parts if part.strip())


def certificate_files(certificate: Certificate) -> list[File]:
    """The two files of one certificate on a node (the key a secret, root's only)."""
    origin = (certificate.describe(),)
    return [
        File(certificate.fullchain_path, fullchain(certificate), mode=0o644, origin=origin),
        File(
            certificate.key_path,
            certificate.private_key.strip() + "\n",
            mode=0o600,
            origin=origin,
            secret=True,
        ),
    ]


__all__ = [
    "CERTIFICATE_DIR",
    "Certificate",
    "Clock",
    "certificate_files",
    "certificate_object",
    "covers",
    "fullchain",
    "leaf_names",
    "system_clock",
]
