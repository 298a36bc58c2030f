"""Mail in a real multi-daemon cluster: each node gets only its groups' part.

Three ``ccm daemon`` processes against one etcd: ``mx1`` (postfix, dovecot), ``mx2``
(postfix) and ``web1`` (nginx). Postfix's check is the real ``postconf -c`` and the maps
are built by the real ``postmap`` on each postfix node; Postfix's lookup on those
``.db`` files resolves the alias.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cluster_harness import Cluster

SHA512 = "{SHA512-CRYPT}$6$saltsalt$" + "S" * 86
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"


def lookup(root: Path, table: str, key: str) -> str:
    directory = root / "etc/postfix/ccm"
    result = subprocess.run(
        [POSTMAP, "-c", str(directory), "-q", key, f"hash:{directory}/{table}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout.strip()


@pytest.mark.slow
def test_mail_reaches_the_postfix_and_dovecot_nodes_only(cluster: Cluster) -> None:
    cluster.put_cli(
        "nodes",
        {"id": 1, "hostname": "mx1", "groups": ["postfix", "dovecot"]},
        {"id": 2, "hostname": "mx2", "groups": ["postfix"]},
        {"id": 3, "hostname": "web1", "groups": ["nginx"]},
    )
    nodes = [cluster.add(name) for name in ("mx1", "mx2", "web1")]
    for node in nodes:
        node.wait_ready()
    cluster.put("unix-users", {"id": 1, "username": "alice"})
    cluster.put("mail-domains", {"id": 1, "domain": "example.com", "unix_user_id": 1})
    cluster.put(
        "mail-accounts",
        {"id": 1, "local_part": "info", "mail_domain_id": 1, "password_hash": SHA512},
    )
    revision = cluster.put(
        "mail-aliases",
        {"id": 1, "local_part": "sales", "mail_domain_id": 1,
         "forward_addresses": ["info@example.com"]},
    )  # fmt: skip
    cluster.wait_applied(revision)
    assert cluster.halt() is None
    mx1, mx2, web1 = (cluster[name].root for name in ("mx1", "mx2", "web1"))
    for mx in (mx1, mx2):
        assert lookup(mx, "virtual_alias_maps", "sales@example.com") == "info@example.com"
        assert lookup(mx, "virtual_mailbox_maps", "info@example.com") == "example.com/info/"
    assert (mx1 / "etc/dovecot/users").read_text().count(f"info@example.com:{SHA512}:") == 1
    assert not (mx2 / "etc/dovecot/users").exists()
    assert not (web1 / "etc/postfix/ccm").exists() and not (web1 / "etc/dovecot").exists()
    mx1_reloads = [
        line.split(" start")[0] for line in cluster["mx1"].actions() if " start " in line
    ]
    assert "reload dovecot" in mx1_reloads and "reload postfix" in mx1_reloads
    assert not any("dovecot" in line for line in cluster["mx2"].actions())
    assert not any("postfix" in line for line in cluster["web1"].actions())
