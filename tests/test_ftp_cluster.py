"""FTP users in a real multi-daemon cluster: only the ``proftpd`` node gets them.

Two ``ccm daemon`` processes against one etcd: ``ftp1`` (proftpd) and ``web1`` (nginx).
``ftp1``'s check is the real ``proftpd -t`` (``tests/proftpd_server.py``); ``web1`` never
writes ProFTPD's files nor reloads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_harness import Cluster
from proftpd_server import PROFTPD, PROFTPD_CHECK, check

SHA512 = "$6$saltsalt$" + "S" * 86

pytestmark = pytest.mark.skipif(not Path(PROFTPD).exists(), reason="Debian's proftpd-core")


@pytest.mark.slow
def test_ftp_users_reach_the_proftpd_node_only(cluster: Cluster) -> None:
    cluster.put_cli(
        "nodes",
        {"id": 1, "hostname": "ftp1", "groups": ["proftpd"]},
        {"id": 2, "hostname": "web1", "groups": ["nginx"]},
    )
    ftp1 = cluster.add("ftp1", checks={"proftpd_check": PROFTPD_CHECK})
    web1 = cluster.add("web1", checks={"proftpd_check": PROFTPD_CHECK})
    for node in (ftp1, web1):
        node.wait_ready()
    cluster.put("unix-users", {"id": 1, "username": "alice"})
    revision = cluster.put(
        "ftp-users",
        {"id": 1, "username": "alice-web", "unix_user_id": 1, "password_hash": SHA512,
         "directory_path": "/home/alice/www"},
    )  # fmt: skip
    cluster.wait_applied(revision)
    assert cluster.halt() is None
    users = (ftp1.root / "etc/proftpd/ccm.passwd").read_text()
    assert f"alice-web:{SHA512}:20001:20001::/home/alice/www:/usr/sbin/nologin\n" in users
    assert check(ftp1.root).returncode == 0
    assert (ftp1.root / "home/alice").is_dir()  # the tenant's home, for its sessions
    reloads = [line.split(" start")[0] for line in ftp1.actions() if " start " in line]
    assert reloads.count("reload proftpd") == 1
    assert not (web1.root / "etc/proftpd").exists()
    assert not any("proftpd" in line for line in web1.actions())
