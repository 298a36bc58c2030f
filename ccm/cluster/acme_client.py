"""One ACME order (RFC 8555, HTTP-01), through the ``acme`` library.

Library: ``acme`` (PyPI), the protocol half of certbot, maintained by the EFF with every
certbot release and used against Let's Encrypt by millions of hosts daily. It does the
JWS signing, nonces, account registration, order, authorization polling and
finalization; we keep only the policy: which names, where the answers go, which key.
The alternatives were weaker: ``sewer`` and ``simple_acme_dns`` are unmaintained or
DNS-01 only, ``acme-tiny`` is a script, and a hand-written client would re-implement the
JWS and nonce handling the issue forbids us to write.

An order: a fresh EC P-256 key and a CSR for the names (``cryptography``), a new order,
for each pending authorization its HTTP-01 key authorization published through
``answers`` (etcd, so any web node can answer), the challenges answered, then the
authorizations polled and the order finalized within ``timeout`` seconds; the answers
are withdrawn however it ends. The ACME server is verified with ``ca_file`` when set.

Every failure is an :class:`AcmeOrderFailed` with a one-line reason from the server (the
problem document) or the network; never a key.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import requests
from acme import challenges, crypto_util, errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwk import JWKRSA

from ccm.errors import CcmError

#: a reason longer than this is cut (a server may send a long problem document)
MAX_REASON = 600
USER_AGENT = "ccm (certificate-managers)"


class AcmeOrderFailed(CcmError):
    """An ACME order did not give a certificate; the message says why, in one line."""


class Answers(Protocol):
    """Where HTTP-01 answers go (``ccm.cluster.acme_challenges.ChallengeAnswers``)."""

    def publish(self, token: str, key_authorization: str, ttl: int) -> int: ...

    def withdraw(self, lease: int) -> None: ...


@dataclass(frozen=True)
class Issued:
    """A certificate as the ACME server issued it, PEM text throughout."""

    certificate: str  # the leaf
    chain: str  # the intermediates, leaf excluded ("" when the server sent none)
    private_key: str  # PKCS#8; a secret
    not_after: datetime.datetime  # UTC

    @property
    def fullchain(self) -> str:
        return self.certificate + self.chain

    def __repr__(self) -> str:  # never the key
        return f"Issued(not_after={self.not_after.isoformat()})"


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def split_fullchain(fullchain_pem: str) -> tuple[str, str, datetime.datetime]:
    """The leaf PEM, the rest of the chain PEM, and the leaf's expiry (UTC)."""
    certificates = x509.load_pem_x509_certificates(fullchain_pem.encode())
    pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates]
    return pems[0], "".join(pems[1:]), certificates[0].not_valid_after_utc


class AcmeClient:
    """An account at one ACME directory; :meth:`order` gets a certificate for names."""

    def __init__(
        self,
        directory_url: str,
        account_key: JWKRSA,
        *,
        email: str = "",
        ca_file: str = "",
        timeout: float = 90.0,
        challenge_ttl: int = 600,
    ) -> None:
        self.directory_url = directory_url
        self.email = email
        self.timeout = timeout
        self.challenge_ttl = challenge_ttl
        # requests takes a CA bundle's path where the library's type says bool
        verify: bool = ca_file or True  # type: ignore[assignment]
        self._net = ClientNetwork(
            account_key, verify_ssl=verify, user_agent=USER_AGENT, timeout=int(timeout)
        )
        self._client: ClientV2 | None = None

    def _registered(self) -> ClientV2:
        """The client, registered once (again with the same key: the same account)."""
        if self._client is not None:
            return self._client
        directory = ClientV2.get_directory(self.directory_url, self._net)
        client = ClientV2(directory, self._net)
        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True
        )
        try:
            client.new_account(registration)
        except errors.ConflictError as existing:  # this key has an account already
            account = client.query_registration(
                messages.RegistrationResource(uri=existing.location, body=messages.Registration())
            )
            if tuple(account.body.contact) != tuple(registration.contact):
                # ``[acme] email`` changed: the expiry mail goes to the new address
                client.update_registration(
                    account, messages.Registration(contact=registration.contact)
                )
        self._client = client
        return client

    def register(self) -> str:
        """Register the account (idempotent: the same key is the same account, its
        contact updated to ``email``); its URL."""
        try:
            self._registered()
        except (errors.Error, messages.Error, requests.RequestException, ValueError) as error:
            raise AcmeOrderFailed(f"account at {self.directory_url}: {_reason(error)}") from None
        account = self._net.account
        return str(account.uri) if account is not None else ""

    def close(self) -> None:
        """Close the HTTP connections to the ACME server."""
        self._net.session.close()

    def contact(self) -> tuple[str, ...]:
        """The account's contact URIs as the ACME server has them now."""
        client = self._registered()
        account = self._net.account
        if account is None:
            return ()
        return tuple(client.query_registration(account).body.contact)

    def order(self, names: Sequence[str], answers: Answers) -> Issued:
        """A certificate for ``names`` (all of them in its subjectAltName), its chain and
        its new private key."""
        if not names:
            raise AcmeOrderFailed("an order needs at least one name")
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        csr = crypto_util.make_csr(key_pem, list(names))
        leases: list[int] = []
        try:
            client = self._registered()
            order = client.new_order(csr)
            pending = []
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue  # validated recently: the server reuses it
                challenge = next(
                    (
                        c
                        for c in authorization.body.challenges
                        if isinstance(c.chall, challenges.HTTP01)
                    ),
                    None,
                )
                if challenge is None:
                    name = authorization.body.identifier.value
                    raise AcmeOrderFailed(f"{name}: the ACME server offers no HTTP-01 challenge")
                response, validation = challenge.response_and_validation(self._net.key)
                token = challenge.chall.encode("token")
                leases.append(answers.publish(token, validation, self.challenge_ttl))
                pending.append((challenge, response))
            for challenge, response in pending:
                client.answer_challenge(challenge, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout)
            finished = client.poll_and_finalize(order, deadline)
        except errors.ValidationError as error:
            raise AcmeOrderFailed(_validation_reason(error)) from None
        except errors.TimeoutError:
            raise AcmeOrderFailed(f"no certificate within {self.timeout:g} s") from None
        except requests.RequestException as error:
            raise AcmeOrderFailed(f"{self.directory_url}: {_reason(error)}") from None
        except (errors.Error, messages.Error, ValueError) as error:
            raise AcmeOrderFailed(_reason(error)) from None
        finally:
            for lease in leases:
                try:
                    answers.withdraw(lease)
                except CcmError:
                    pass  # the lease ends by itself after challenge_ttl
        certificate, chain, not_after = split_fullchain(finished.fullchain_pem)
        return Issued(certificate, chain, key_pem.decode(), not_after)


def _validation_reason(error: errors.ValidationError) -> str:
    """``name: the server's problem`` for each failed authorization, on one line."""
    parts = []
    for authorization in error.failed_authzrs:
        problems = [str(c.error) for c in authorization.body.challenges if c.error is not None]
        parts.append(f"{authorization.body.identifier.value}: {'; '.join(problems)}")
    return _reason(ValueError("validation failed: " + " | ".join(parts)))
