"""The web types across real daemons: certificates, HTTPS vhosts, redirects and basic
auth reach the nodes with the ``nginx`` group only, and a renewal reloads each of them
once (``cluster_harness``: real daemons, one real etcd, harmless commands)."""

from __future__ import annotations

import pytest
from certs import TestCa
from cluster_harness import Cluster

from ccm.models import Node

WEB1 = Node(id=1, hostname="web1", groups=["nginx", "php"])
WEB2 = Node(id=2, hostname="web2", groups=["nginx", "php"])
MAIL1 = Node(id=3, hostname="mail1", groups=["dovecot"])
BCRYPT = "$2y$10$chpmzJ.a9300VT.cdBzibu5JlugPaF.4DBchXtrNJzbg7SjBgMy56"
KEY = "etc/ssl/ccm/1/privkey.pem"
SITE = "etc/nginx/sites-enabled/shop.example.com.conf"
REDIRECT = "etc/nginx/sites-enabled/redirect_old.example.com.conf"
HTPASSWD = "etc/nginx/htpasswd/1"


@pytest.mark.slow
def test_the_web_types_reach_the_web_nodes_only(cluster: Cluster) -> None:
    ca = TestCa("ccm cluster")
    cluster.put_cli("nodes", *(node.model_dump(mode="json") for node in (WEB1, WEB2, MAIL1)))
    for name in ("web1", "web2", "mail1"):
        cluster.add(name).wait_ready()
    cluster.put_cli("unix-users", {"id": 1, "username": "alice"})
    names = ["shop.example.com", "old.example.com"]
    cluster.put_cli("certificates", ca.issue(names).raw(1))
    cluster.put_cli(
        "virtual-hosts",
        {
            "id": 1,
            "domain": "shop.example.com",
            "unix_user_id": 1,
            "document_root": "/home/alice/www",
            "certificate_id": 1,
            "force_https": True,
        },
    )
    cluster.put_cli(
        "url-redirects",
        {
            "id": 1,
            "domain": "old.example.com",
            "unix_user_id": 1,
            "destination_url": "https://shop.example.com/",
            "certificate_id": 1,
        },
    )
    revision = cluster.put_cli(
        "basic-auth-realms",
        {
            "id": 1,
            "virtual_host_id": 1,
            "path": "/admin/",
            "name": "Admin",
            "users": [{"username": "admin", "password_hash": BCRYPT}],
        },
    )
    cluster.wait_applied(revision)
    assert cluster.halt() is None
    web1, web2, mail1 = (cluster[name] for name in ("web1", "web2", "mail1"))
    for web in (web1, web2):
        for path in (KEY, SITE, REDIRECT, HTPASSWD):
            assert (web.root / path).exists(), (web, path)
        assert "listen 443 ssl http2;" in (web.root / SITE).read_text()
    assert not (mail1.root / "etc/ssl/ccm").exists()
    assert not (mail1.root / "etc/nginx").exists()

    # a renewal: same id, new PEM; each web node installs it and reloads nginx once
    seen = {web.name: len(web.actions()) for web in (web1, web2)}
    renewed = ca.issue(names)
    revision = cluster.put_cli("certificates", renewed.raw(1))
    cluster.wait_applied(revision)
    for web in (web1, web2):
        assert (web.root / KEY).read_text() == renewed.private_key
        new = web.actions()[seen[web.name] :]
        reloads = [line for line in new if line.startswith("reload nginx start")]
        assert len(reloads) == 1, (web, new)
    assert cluster.halt() is None
