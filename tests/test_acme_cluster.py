"""A managed certificate end to end across a real cluster: two ``ccm daemon`` nodes with
the ``nginx`` group (web1 ``primary_for`` it), a real pebble (Let's Encrypt's test ACME
server) whose DNS sends every name to a real nginx that passes the challenge path to
*web2*'s responder. web1 orders; web2 answers the challenge from etcd, with no rollout
in the way; the certificate is stored through the validated writer and then installed
on both web nodes by the normal rollout; it verifies against pebble's root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_servers import ChallengeNginx, PebbleServer, free_port
from cluster_harness import Cluster, wait_until
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from ccm.cluster.acme_records import ManagerStates
from ccm.testing.etcd import EtcdServer


@pytest.fixture
def pebble() -> Iterator[PebbleServer]:
    server = PebbleServer(http_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.close()


def acme(pebble: PebbleServer, responder_port: int) -> dict[str, Any]:
    return {
        "directory_url": pebble.directory_url,
        "ca_file": str(pebble.ca_file),
        "email": "hostmaster@example.org",
        "responder_listen": f"127.0.0.1:{responder_port}",
    }


def test_one_node_orders_any_node_answers_and_every_web_node_installs(
    private_etcd_server: EtcdServer, pebble: PebbleServer, tmp_path: Path
) -> None:
    with Cluster(private_etcd_server, tmp_path / "cluster") as cluster:
        cluster.put(
            "nodes",
            {"id": 1, "hostname": "web1", "groups": ["nginx"], "primary_for": ["nginx"]},
            {"id": 2, "hostname": "web2", "groups": ["nginx"]},
            {"id": 3, "hostname": "db1", "groups": ["mariadb"]},
        )
        cluster.put("unix-users", {"id": 1, "username": "alice"})
        cluster.put(
            "virtual-hosts",
            {
                "id": 1,
                "domain": "cafe.example.test",
                "unix_user_id": 1,
                "document_root": "/home/alice/www",
            },
        )
        ports = {name: free_port() for name in ("web1", "web2", "db1")}
        nodes = [cluster.add(name, acme=acme(pebble, port)) for name, port in ports.items()]
        for node in nodes:
            node.wait_ready()
        nginx = ChallengeNginx(pebble.http_port, f"127.0.0.1:{ports['web2']}")
        nginx.start()
        try:
            cluster.put(
                "certificate-managers",
                {"id": 1, "common_names": ["cafe.example.test"], "unix_user_id": 1},
            )
            stored = wait_until(
                lambda: cluster.store.list("certificates"),
                60,
                "the ordered certificate in etcd",
                on_timeout=lambda: pebble.logs() + cluster.report(),
            )
            assert "/.well-known/acme-challenge/" in nginx.access_log()  # pebble came by
        finally:
            nginx.close()
        (certificate,) = stored
        assert certificate.common_names == ["cafe.example.test"]
        state = ManagerStates(cluster.client, cluster.prefix).all()[1]
        assert state.node == "web1" and state.certificate_id == certificate.id

        # installed by the rollout on the web nodes only, the key for root only
        revision = cluster.latest_event_revision()
        cluster.wait_applied(revision, ["web1", "web2", "db1"], timeout=60)
        directory = f"etc/ssl/ccm/{certificate.id}"
        for node in nodes[:2]:
            fullchain = (node.root / directory / "fullchain.pem").read_bytes()
            assert (node.root / directory / "privkey.pem").stat().st_mode & 0o777 == 0o600
            chain = x509.load_pem_x509_certificates(fullchain)
            roots = Store(x509.load_pem_x509_certificates(pebble.root_pem()))
            verifier = (
                PolicyBuilder()
                .store(roots)
                .build_server_verifier(x509.DNSName("cafe.example.test"))
            )
            verifier.verify(chain[0], chain[1:])  # raises if it does not verify
        assert not (nodes[2].root / directory).exists()
        # no answer is left behind in etcd once the order is done
        kvs, _ = cluster.client.get_prefix(f"{cluster.prefix}/acme/challenges/")
        assert kvs == []
        assert cluster.halt() is None
