"""The mail types on a node, with Debian's real Postfix tools under a temporary root.

``ccm apply`` writes the maps, runs the real ``postconf -c`` check and the real
``postmap`` commands (they build the ``.db`` files under the root); then Postfix's own
lookup (``postmap -q`` on those ``.db`` files) resolves each address as Postfix's
``virtual`` delivery would: an alias to its targets, an account to its Maildir and to
itself (so the catch-all never takes its mail), the catch-all to its forwarders. The
reloads of postfix and dovecot are logged, once each; the hashes never reach a diff.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ccm.settings import Settings
from ccm.testing import CcmNode

POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
SHA512 = "{SHA512-CRYPT}$6$saltsalt$" + "S" * 86
BLF = "{BLF-CRYPT}$2y$10$" + "b" * 53

pytestmark = pytest.mark.skipif(not Path(POSTMAP).exists(), reason="Debian's postfix")


@pytest.fixture
def node(ccm_settings: Settings, tmp_path: Path) -> CcmNode:
    """A node whose Postfix check is the real ``postconf`` (postmap always is real)."""
    checks = {
        **ccm_settings.checks,
        "postfix_check": ("postconf", "-c", "{root}/etc/postfix/ccm", "-n"),
    }
    return CcmNode(ccm_settings.model_copy(update={"checks": checks}), tmp_path / "ccm.toml")


def lookup(node: CcmNode, table: str, key: str) -> str | None:
    """What Postfix finds for ``key`` in the built table (None: not there)."""
    directory = node.path("/etc/postfix/ccm")
    result = subprocess.run(
        [POSTMAP, "-c", str(directory), "-q", key, f"hash:{directory}/{table}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.strip() if result.returncode == 0 else None


def put_mail(node: CcmNode) -> None:
    node.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    node.put(
        "mail-domains",
        [
            {
                "id": 1,
                "domain": "example.com",
                "unix_user_id": 1,
                "catch_all_forward_addresses": ["postmaster@example.org"],
            },
            {"id": 2, "domain": "example.net", "unix_user_id": 2},
            {"id": 3, "domain": "elsewhere.org", "unix_user_id": 2, "is_local": False},
        ],
    )
    node.put(
        "mail-accounts",
        [
            {
                "id": 1,
                "local_part": "info",
                "mail_domain_id": 1,
                "password_hash": SHA512,
                "quota_mib": 512,
            },
            {"id": 2, "local_part": "bob", "mail_domain_id": 2, "password_hash": BLF},
            {"id": 3, "local_part": "away", "mail_domain_id": 3, "password_hash": SHA512},
        ],
    )
    node.put(
        "mail-aliases",
        [
            {
                "id": 1,
                "local_part": "sales",
                "mail_domain_id": 1,
                "forward_addresses": ["info@example.com", "bob@example.net"],
            },
            {
                "id": 2,
                "local_part": "hello",
                "mail_domain_id": 2,
                "forward_addresses": ["x@example.org"],
            },
            {
                "id": 3,
                "local_part": "out",
                "mail_domain_id": 3,
                "forward_addresses": ["x@example.org"],
            },
        ],
    )


def test_postfix_resolves_every_address_from_the_built_maps(node: CcmNode) -> None:
    put_mail(node)
    node.apply("--all")
    assert lookup(node, "virtual_mailbox_domains", "example.com") == "OK"
    assert lookup(node, "virtual_mailbox_domains", "example.net") == "OK"
    assert lookup(node, "virtual_mailbox_domains", "elsewhere.org") is None  # not local
    assert lookup(node, "virtual_mailbox_maps", "info@example.com") == "example.com/info/"
    assert lookup(node, "virtual_mailbox_maps", "bob@example.net") == "example.net/bob/"
    assert lookup(node, "virtual_mailbox_maps", "away@elsewhere.org") is None
    aliases = "virtual_alias_maps"
    assert lookup(node, aliases, "sales@example.com") == "info@example.com,bob@example.net"
    assert lookup(node, aliases, "hello@example.net") == "x@example.org"
    assert lookup(node, aliases, "out@elsewhere.org") is None
    # the catch-all, and the account of that domain mapped to itself before it
    assert lookup(node, aliases, "@example.com") == "postmaster@example.org"
    assert lookup(node, aliases, "info@example.com") == "info@example.com"
    assert lookup(node, aliases, "@example.net") is None
    assert lookup(node, aliases, "bob@example.net") is None  # no catch-all: no identity line
    # Dovecot: one line per account, every domain's
    users = [line for line in node.read("/etc/dovecot/users").splitlines() if "@" in line]
    assert [line.split(":")[0] for line in users] == [
        "away@elsewhere.org",
        "bob@example.net",
        "info@example.com",
    ]
    assert users[2] == f"info@example.com:{SHA512}::::::userdb_quota_rule=*:storage=512M"
    actions = node.actions()
    assert actions.count("reload postfix") == 1 and actions.count("reload dovecot") == 1
    assert all(".db" not in line for line in actions)


def test_a_changed_alias_is_rebuilt_and_a_removed_one_is_gone(node: CcmNode) -> None:
    put_mail(node)
    node.apply("--all")
    node.put(
        "mail-aliases",
        [
            {
                "id": 1,
                "local_part": "sales",
                "mail_domain_id": 1,
                "forward_addresses": ["bob@example.net"],
            }
        ],
    )
    node.apply()
    assert lookup(node, "virtual_alias_maps", "sales@example.com") == "bob@example.net"
    node.delete("mail-aliases", 1)
    node.apply()
    assert lookup(node, "virtual_alias_maps", "sales@example.com") is None
    assert node.actions().count("reload postfix") == 3
    assert node.actions().count("reload dovecot") == 1  # the accounts did not change


def test_hashes_never_reach_a_diff(node: CcmNode) -> None:
    put_mail(node)
    for args in ((), ("--json",)):
        result = node.diff(*args)
        shown = result.stdout + result.stderr
        assert "etc/dovecot/users" in shown
        assert "S" * 20 not in shown and "b" * 20 not in shown
    node.apply("--all")
    node.put(
        "mail-accounts",
        [{"id": 2, "local_part": "bob", "mail_domain_id": 2, "password_hash": SHA512}],
    )
    changed = node.diff("--json")
    assert "S" * 20 not in changed.stdout and "b" * 20 not in changed.stdout
    assert json.loads(changed.stdout)


def test_a_postfix_check_that_fails_leaves_the_maps_as_they_were(node: CcmNode) -> None:
    put_mail(node)
    node.apply("--all")
    before = node.read("/etc/postfix/ccm/virtual_alias_maps")
    node.put(
        "mail-aliases",
        [
            {
                "id": 4,
                "local_part": "new",
                "mail_domain_id": 1,
                "forward_addresses": ["x@example.org"],
            }
        ],
    )
    broken = node.settings.model_copy(
        update={
            "checks": {**node.settings.checks, "postfix_check": ("postconf", "-c", "/nonexistent")}
        }
    )
    failing = CcmNode(broken, node.config_path.with_name("broken.toml"))
    assert failing.apply(check=False).returncode != 0
    assert node.read("/etc/postfix/ccm/virtual_alias_maps") == before
    assert lookup(node, "virtual_alias_maps", "new@example.com") is None
