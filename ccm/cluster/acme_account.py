"""The ACME account key, kept in etcd at ``{prefix}/acme/account``.

Why etcd and not the ordering node's disk: the orderer is whichever node is
``primary_for`` nginx, and that changes (a node is replaced, the role moves). A key on
the old node's disk would be lost with it, and the new primary would register a second
account — and Let's Encrypt's rate limits and its expiry mail are per account. etcd
already holds the secrets ccm manages (certificates' private keys, password hashes), is
shared by every node and outlives any one of them; it is protected the same way (TLS,
client certificates, etcd users). The account's URL is not stored: registering again
with the same key is idempotent in RFC 8555 (the server answers with the existing
account), so a new primary needs nothing but the key.

The key is created once, by whoever comes first, in a create-only transaction: two
nodes that race (a primary hand-over mid-check) end up with the same key.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.errors import DeserializationError
from josepy.jwk import JWKRSA

from ccm.cluster.etcd import Compare, EtcdClient, Put
from ccm.cluster.keys import Keys
from ccm.errors import ClusterError

#: RSA 2048 signs with RS256, which every ACME server accepts
ACCOUNT_KEY_BITS = 2048


def _parse(raw: bytes) -> JWKRSA:
    try:
        key = JWKRSA.json_loads(json.loads(raw)["key"])
    except (ValueError, KeyError, TypeError, DeserializationError) as error:
        # the message never carries the stored value: it is a private key
        raise ClusterError(f"acme/account in etcd is unreadable ({type(error).__name__})") from None
    if not isinstance(key, JWKRSA):
        raise ClusterError("acme/account in etcd does not hold an RSA key")
    return key


def account_key(client: EtcdClient, prefix: str) -> JWKRSA:
    """The cluster's ACME account key: the stored one, or a new one stored first."""
    key_name = Keys(prefix).acme_account
    found = client.get(key_name)
    if found is not None:
        return _parse(found.value)
    new = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    record = json.dumps({"key": new.json_dumps()}).encode()
    result = client.txn([Compare.missing(key_name)], [Put(key_name, record)])
    if result.succeeded:
        return new
    stored = client.get(key_name)  # another node stored its key first: use that one
    if stored is None:
        raise ClusterError("acme/account vanished while it was being created")
    return _parse(stored.value)
