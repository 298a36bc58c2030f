"""``ccm migrate`` against a real etcd: stored ``mail-accounts`` of the old shape (a free
``domain``) become accounts of ``mail-domains`` objects, in one transaction or not at all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.keys import Keys
from ccm.testing import CcmNode

BARE = "$6$saltsalt$" + "Q" * 86
SHA512 = "{SHA512-CRYPT}$6$saltsalt$" + "S" * 86


@pytest.fixture
def client(ccm_node: CcmNode) -> Any:
    with EtcdClient.from_settings(ccm_node.settings.etcd) as etcd:
        yield etcd


def old_account(
    client: EtcdClient,
    node: CcmNode,
    id: int,
    local_part: str,
    domain: str,
    password_hash: str = BARE,
) -> None:
    """Store an account as the previous ccm wrote it (the store no longer would)."""
    raw = {"id": id, "local_part": local_part, "domain": domain, "password_hash": password_hash}
    client.put(
        Keys(node.settings.etcd.prefix).object("mail-accounts", id), json.dumps(raw).encode()
    )


def everything(client: EtcdClient, node: CcmNode) -> dict[str, bytes]:
    kvs, _ = client.get_prefix(node.settings.etcd.prefix + "/")
    return {kv.key: kv.value for kv in kvs}


@pytest.fixture
def old_cluster(ccm_node: CcmNode, client: EtcdClient) -> CcmNode:
    ccm_node.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    ccm_node.put(
        "virtual-hosts",
        [
            {
                "id": 1,
                "domain": "shop.example.com",
                "unix_user_id": 2,
                "document_root": "/home/bob/shop",
                "server_aliases": ["*.bob.example.com"],
            }
        ],
    )
    old_account(client, ccm_node, 1, "info", "shop.example.com")
    old_account(client, ccm_node, 2, "sales", "shop.example.com", SHA512)
    old_account(client, ccm_node, 3, "me", "mail.bob.example.com")
    old_account(client, ccm_node, 4, "info", "example.org")
    return ccm_node


def test_a_domain_nobody_serves_needs_an_owner_and_nothing_is_stored(
    old_cluster: CcmNode, client: EtcdClient
) -> None:
    before = everything(client, old_cluster)
    refused = old_cluster.ccm("migrate")
    assert refused.returncode == 1
    assert "example.org (mail-accounts/4): no virtual host serves it" in refused.stderr
    assert "--owner example.org=UNIX_USER_ID" in refused.stderr
    assert "shop.example.com" not in refused.stderr  # its owner is known
    unknown = old_cluster.ccm("migrate", "--owner", "example.org=99")
    assert unknown.returncode == 1 and "unix-users/99 is not stored" in unknown.stderr
    assert everything(client, old_cluster) == before


def test_accounts_move_to_mail_domains_in_one_transaction(
    old_cluster: CcmNode, client: EtcdClient
) -> None:
    dry = old_cluster.ccm("migrate", "--owner", "1", "--dry-run", check=True)
    assert "would migrate 4 mail-accounts, 3 new mail-domains" in dry.stdout
    done = old_cluster.ccm("migrate", "--owner", "1", check=True)
    assert "migrated 4 mail-accounts, 3 new mail-domains at revision" in done.stdout
    assert BARE not in done.stdout + done.stderr
    domains = {d["domain"]: d for d in old_cluster.objects("mail-domains")}
    # the vhost's owner for its exact name and for a name below its wildcard
    assert domains["shop.example.com"]["unix_user_id"] == 2
    assert domains["mail.bob.example.com"]["unix_user_id"] == 2
    assert domains["example.org"]["unix_user_id"] == 1  # --owner
    accounts = {a["id"]: a for a in old_cluster.objects("mail-accounts", show_secrets=True)}
    ids = {d["domain"]: d["id"] for d in domains.values()}
    assert accounts[1]["mail_domain_id"] == ids["shop.example.com"]
    assert accounts[3]["mail_domain_id"] == ids["mail.bob.example.com"]
    assert accounts[1]["password_hash"] == "{SHA512-CRYPT}" + BARE  # the scheme Dovecot used
    assert accounts[2]["password_hash"] == SHA512
    assert "domain" not in accounts[4]
    # once is enough: a second run finds nothing to do
    again = old_cluster.ccm("migrate", check=True)
    assert "migrated 0 mail-accounts, 0 new mail-domains" in again.stdout
    # and the node applies the result
    old_cluster.apply("--all")
    assert "info@example.org:{SHA512-CRYPT}" in old_cluster.read("/etc/dovecot/users")


def test_a_stored_mail_domain_is_used(old_cluster: CcmNode, client: EtcdClient) -> None:
    # (the writer refuses every write that reads the old accounts until they are migrated)
    raw = {"id": 7, "domain": "example.org", "unix_user_id": 1, "is_local": True}
    key = Keys(old_cluster.settings.etcd.prefix).object("mail-domains", 7)
    client.put(key, json.dumps(raw).encode())
    done = old_cluster.ccm("migrate", check=True)
    assert "migrated 4 mail-accounts, 2 new mail-domains" in done.stdout
    accounts = {a["id"]: a for a in old_cluster.objects("mail-accounts")}
    assert accounts[4]["mail_domain_id"] == 7
    assert {d["id"] for d in old_cluster.objects("mail-domains")} == {7, 8, 9}


def test_a_hash_dovecot_cannot_verify_safely_is_named_never_shown(
    old_cluster: CcmNode, client: EtcdClient
) -> None:
    old_account(client, old_cluster, 5, "old", "shop.example.com", "{PLAIN}hunter2-secret")
    before = everything(client, old_cluster)
    refused = old_cluster.ccm("migrate", "--owner", "1")
    assert refused.returncode == 1
    assert "mail-accounts/5: password_hash: not a crypt hash" in refused.stderr
    assert "hunter2" not in refused.stdout + refused.stderr
    assert everything(client, old_cluster) == before
