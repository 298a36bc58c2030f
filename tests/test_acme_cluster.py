"""A managed certificate end to end across a real cluster, served by a real nginx.

Two ``ccm daemon`` web nodes (web1 ``primary_for`` the ``nginx`` group) and a db node
against one etcd, and a real pebble (Let's Encrypt's test ACME server) whose DNS sends
every name to 127.0.0.1. web2's rendered root runs for real (``serving_node.py``: nginx
from the rendered files, in a private network namespace), bridged both ways: pebble's
HTTP-01 port on the host is web2's nginx port 80, and the address the rendered files
pass the challenge path to (web2's ``responder_listen``) is web2's daemon on the host.
So the validation goes pebble → the rendered vhost → web2's responder → etcd.

web1 orders; web2 answers the challenge from etcd, with no rollout in the way; the
certificate is stored through the validated writer and installed on both web nodes
(not the db node) by the normal rollout; it verifies against pebble's root. Then the
vhost takes it (``certificate_id``, ``force_https``): after that rollout, web2's nginx
answers HTTPS for the name with a chain a client trusting only pebble's root accepts,
and port 80 redirects there.

A renewal (a new certificate under the same id) and a failed challenge retried with
back-off and no halt run against the same real pebble and nginx in ``test_acme.py``,
on a manual clock: the daemons here run on the real one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acme_servers import PebbleServer, free_port
from cluster_harness import Cluster, wait_until
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from serving_node import ServedNode, ServingError

from ccm.cluster.acme_records import ManagerStates
from ccm.cluster.acme_schedule import ManagerState
from ccm.testing.etcd import EtcdServer

NAME = "cafe.example.test"
PAGE = "the cafe, over https\n"
#: pebble's validation request in nginx's access log (Debian's "combined" format), answered
CHALLENGE = re.compile(r'"GET /\.well-known/acme-challenge/[A-Za-z0-9_-]+ HTTP/1\.1" 200 ')


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


def issued(cluster: Cluster, manager_id: int) -> ManagerState | None:
    """The manager's state once its certificate is issued and stored, else None."""
    state = ManagerStates(cluster.client, cluster.prefix).all().get(manager_id)
    return state if state is not None and state.not_after is not None else None


def test_one_node_orders_any_node_answers_and_every_web_node_installs_and_serves(
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
        vhost = {
            "id": 1,
            "domain": NAME,
            "unix_user_id": 1,
            "document_root": "/home/alice/www",
        }
        cluster.put("virtual-hosts", vhost)
        ports = {name: free_port() for name in ("web1", "web2", "db1")}
        nodes = [cluster.add(name, acme=acme(pebble, port)) for name, port in ports.items()]
        for node in nodes:
            node.wait_ready()
        cluster.wait_applied(cluster.latest_event_revision(), list(ports), timeout=60)
        web2 = nodes[1]
        www = web2.root / "home/alice/www"
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text(PAGE)  # what alice uploaded

        served = ServedNode(web2.root)
        try:
            served.start()
            served.forward_out(ports["web2"], ("127.0.0.1", ports["web2"]))
            served.forward_into(pebble.http_port, 80)
        except ServingError as error:
            served.close()
            pytest.fail(f"cannot serve web2's rendered root: {error}", pytrace=False)
        try:
            cluster.put(
                "certificate-managers",
                {"id": 1, "common_names": [NAME], "unix_user_id": 1},
            )
            # the manager's state says "issued" only once the certificate is stored (its
            # id is reserved before the order): wait for that, not for the certificate
            state = wait_until(
                lambda: issued(cluster, 1),
                60,
                "the ordered certificate in etcd",
                on_timeout=lambda: pebble.logs() + served.log_tails() + cluster.report(),
            )
            # pebble came through web2's rendered vhost, answered by web2's responder
            assert CHALLENGE.search(served.nginx_access_log()), served.nginx_access_log()
            (certificate,) = cluster.store.list("certificates")
            assert certificate.common_names == [NAME]
            assert state.node == "web1" and state.certificate_id == certificate.id

            # installed by the rollout on the web nodes only, the key for root only
            revision = cluster.latest_event_revision()
            cluster.wait_applied(revision, list(ports), timeout=60)
            directory = f"etc/ssl/ccm/{certificate.id}"
            root_pem = pebble.root_pem()
            for node in nodes[:2]:
                fullchain = (node.root / directory / "fullchain.pem").read_bytes()
                assert (node.root / directory / "privkey.pem").stat().st_mode & 0o777 == 0o600
                chain = x509.load_pem_x509_certificates(fullchain)
                verifier = (
                    PolicyBuilder()
                    .store(Store(x509.load_pem_x509_certificates(root_pem)))
                    .build_server_verifier(x509.DNSName(NAME))
                )
                verifier.verify(chain[0], chain[1:])  # raises if it does not verify
            assert not (nodes[2].root / directory).exists()
            # no answer is left behind in etcd once the order is done
            kvs, _ = cluster.client.get_prefix(f"{cluster.prefix}/acme/challenges/")
            assert kvs == []

            # the vhost uses it: real HTTPS from web2's nginx, trusting pebble's root only
            cluster.put(
                "virtual-hosts", vhost | {"certificate_id": certificate.id, "force_https": True}
            )
            cluster.wait_applied(cluster.latest_event_revision(), list(ports), timeout=60)
            served.restart_nginx()  # the harness's reloads only log
            ca_file = tmp_path / "pebble-root.pem"
            ca_file.write_bytes(root_pem)
            result = served.get(NAME, "/", https=True, ca_file=ca_file)
            assert (result.status, result.body) == (200, PAGE), str(result)
            redirect = served.get(NAME, "/menu?day=1")
            assert (redirect.status, redirect.location) == (301, f"https://{NAME}/menu?day=1")
        finally:
            served.close()
        assert cluster.halt() is None
