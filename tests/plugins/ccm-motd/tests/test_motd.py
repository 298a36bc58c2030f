"""ccm-motd's own tests: only ccm.testing's fixtures, no conftest.

``ccm_node`` is a node under a temporary root whose settings point at a real etcd
(a prefix of this test's own); ``put``, ``apply`` and ``diff`` run the installed ``ccm``
command, which finds this plugin through its entry point.
"""

from __future__ import annotations

from ccm.testing import CcmNode

MESSAGE = {"id": 1, "text": "maintenance on Sunday 02:00 UTC"}


def test_a_message_becomes_a_file_in_motd_d(ccm_node: CcmNode) -> None:
    ccm_node.put("motd-messages", MESSAGE)

    preview = ccm_node.diff()
    assert preview.returncode == 2
    assert "+++ b/etc/motd.d/1" in preview.stdout
    assert not ccm_node.path("/etc/motd.d/1").exists()  # a diff changes nothing

    applied = ccm_node.apply()
    assert "/etc/motd.d/1" in applied.stdout
    assert ccm_node.read("/etc/motd.d/1") == "maintenance on Sunday 02:00 UTC\n"
    assert ccm_node.diff().returncode == 0  # nothing left to change


def test_a_message_with_a_line_break_is_refused_and_nothing_is_stored(
    ccm_node: CcmNode,
) -> None:
    refused = ccm_node.put("motd-messages", {"id": 2, "text": "line\nbreak"}, check=False)
    assert refused.returncode == 1
    assert "motd-messages/2: text" in refused.stderr
    assert ccm_node.objects("motd-messages") == []


def test_a_deleted_message_is_removed_from_the_node(ccm_node: CcmNode) -> None:
    ccm_node.put("motd-messages", [MESSAGE, {"id": 2, "text": "welcome"}])
    ccm_node.apply()
    ccm_node.delete("motd-messages", 1)
    ccm_node.apply()
    assert not ccm_node.path("/etc/motd.d/1").exists()
    assert ccm_node.read("/etc/motd.d/2") == "welcome\n"
