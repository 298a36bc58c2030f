"""HTTP-01 challenge answers in etcd: ``{prefix}/acme/challenges/<token>``.

The node that orders a certificate publishes each challenge's key authorization here
before it tells the ACME server to validate; the server's request may reach ANY web node
(DNS, a load balancer), and every daemon's responder (``ccm.daemon.acme_responder``)
answers from this key. No rollout, lock or rendered file is in the way: the answer is
visible on every node as soon as the put returns, and a halted fleet still answers.

Each answer is bound to a lease of ``[acme] challenge_ttl`` seconds: the orderer deletes
it when the order ends, and an orderer that dies mid-order leaves nothing behind for
longer than the lease. The token comes from the ACME server on the ordering side and
from an anonymous HTTP request on the answering side: both are checked against RFC
8555's token alphabet (base64url) with ``fullmatch`` and a bounded length before they
become a key.
"""

from __future__ import annotations

import contextlib
import re

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.keys import Keys
from ccm.errors import ClusterError

#: RFC 8555 §8.3: a token is base64url without padding; Let's Encrypt's are 43 characters
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
#: a key authorization is ``<token>.<base64url thumbprint>``
KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{16,128}")


def valid_token(token: str) -> bool:
    return TOKEN.fullmatch(token) is not None


class ChallengeAnswers:
    """Publish, read and withdraw HTTP-01 answers under ``{prefix}/acme/challenges/``."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def publish(self, token: str, key_authorization: str, ttl: int) -> int:
        """Store the answer for ``token`` under a new lease of ``ttl`` seconds; the lease
        id (revoke it, or :meth:`withdraw`, when the order is over)."""
        if not valid_token(token):
            raise ValueError("the ACME server sent a challenge token outside base64url")
        if KEY_AUTHORIZATION.fullmatch(key_authorization) is None:
            raise ValueError("a key authorization is <token>.<thumbprint> in base64url")
        lease = self.client.grant_lease(ttl)
        try:
            self.client.put(self.keys.acme_challenge(token), key_authorization.encode(), lease)
        except ClusterError:
            with contextlib.suppress(ClusterError):
                self.client.revoke_lease(lease)
            raise
        return lease

    def lookup(self, token: str) -> str | None:
        """The answer for ``token``, or None (no such challenge, or not a token)."""
        if not valid_token(token):
            return None
        kv = self.client.get(self.keys.acme_challenge(token))
        return kv.value.decode() if kv else None

    def withdraw(self, lease: int) -> None:
        """Remove an answer by revoking its lease (gone already: fine)."""
        self.client.revoke_lease(lease)
