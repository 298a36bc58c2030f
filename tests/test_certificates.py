"""``certificates`` and the vhosts that use them: the PEM checked at write time, coverage
both ways, the files on the node, one reload per renewal, and a key that never shows.

The certificates come from a test CA made with ``cryptography`` (``certs.py``). The
write-time rules read the time from the store's context (``clock``), so an expired or a
not-yet-valid certificate is a fixed point in time, not a race with the wall clock.
"""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from certs import NOW, TestCa, key_pem, new_key
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ReferencedObject, ValidationFailed
from ccm.models import Snapshot, parse_object
from ccm.testing.node import CcmNode
from ccm.testing.noderoot import actions, node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.certificates import Certificate, certificate_object, covers
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

CA = TestCa(valid_from=NOW - timedelta(days=400))
SHOP = ["shop.example.com", "www.shop.example.com"]


def at_now() -> dict[str, Any]:
    """The write context of a store whose clock says ``NOW``."""
    return {"uid_base": 20000, "clock": lambda: NOW}


def issued(names: list[str] = SHOP, **options: Any) -> dict[str, Any]:
    options.setdefault("valid_from", NOW - timedelta(days=10))
    return CA.issue(names, **options).raw(names=sorted(names))


def refusal(raw: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("certificates", raw, context or at_now())
    (problem,) = refused.value.problems
    assert raw["private_key"] not in problem
    return problem


@pytest.fixture
def clocked(store: ObjectStore) -> ObjectStore:
    store.context["clock"] = lambda: NOW
    return store


def vhost(id: int = 1, domain: str = "shop.example.com", **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "domain": domain,
        "unix_user_id": 1,
        "document_root": "/home/alice/www",
        **extra,
    }


# -- the PEM, at write time ------------------------------------------------------------------


def test_a_sound_certificate_is_accepted() -> None:
    cert = parse_object("certificates", issued(), at_now())
    assert isinstance(cert, Certificate)
    assert cert.common_names == SHOP


def test_a_key_that_is_not_the_certificates_is_refused() -> None:
    raw = issued()
    raw["private_key"] = key_pem(new_key())
    problem = refusal(raw)
    assert problem.startswith("certificates/1: private_key: ")
    assert "does not match the certificate" in problem


def test_an_expired_certificate_is_refused() -> None:
    raw = issued(valid_from=NOW - timedelta(days=100), days=90)
    problem = refusal(raw)
    assert problem.startswith("certificates/1: certificate: ")
    assert "the certificate expired on 2026-05-22" in problem
    # the same object a day earlier (the injected clock) was fine
    parse_object("certificates", raw, {"clock": lambda: NOW - timedelta(days=11)})


def test_a_certificate_not_yet_valid_is_refused() -> None:
    problem = refusal(issued(valid_from=NOW + timedelta(days=1)))
    assert "certificates/1: certificate: " in problem and "is not valid before" in problem


def test_a_stored_certificate_that_expired_since_still_reads_back() -> None:
    """A node reads stored objects without a write context: an expired certificate still
    installs (nginx serves it; its renewal is the fix), only the shape is checked."""
    raw = issued(valid_from=NOW - timedelta(days=100), days=90)
    assert isinstance(parse_object("certificates", raw), Certificate)
    assert isinstance(Certificate.model_validate_json(json.dumps(raw)), Certificate)


def test_a_chain_that_does_not_link_up_is_refused() -> None:
    raw = issued()
    raw["ca_chain"] = TestCa("another").chain_pem
    problem = refusal(raw)
    assert problem.startswith("certificates/1: ca_chain: ")
    assert "is not issued by chain certificate 1" in problem
    # the chain's second certificate must have issued its first: the root after it does
    raw["ca_chain"] = CA.chain_pem + CA.root_pem
    assert parse_object("certificates", raw, at_now())
    raw["ca_chain"] = CA.chain_pem + TestCa("other").root_pem
    assert "chain certificate 1 (CN=ccm test intermediate) is not issued by chain" in refusal(raw)


def test_every_name_must_be_a_host_name_and_listed() -> None:
    raw = issued(["shop.example.com", "under_score.example.com"])
    raw["common_names"] = ["shop.example.com"]
    problem = refusal(raw)
    assert problem.startswith("certificates/1: certificate: ")
    assert "'under_score.example.com' is not a host name" in problem
    ip = x509.IPAddress(__import__("ipaddress").ip_address("192.0.2.1"))
    assert "names 192.0.2.1, which is not a host name" in refusal(issued(extra_san=[ip]))
    raw = issued()
    raw["common_names"] = ["shop.example.com"]
    problem = refusal(raw)
    assert problem.startswith("certificates/1: certificate: ")
    assert "the certificate's names are shop.example.com, www.shop.example.com" in problem


def test_without_subject_alternative_names_the_common_name_counts() -> None:
    cert = parse_object("certificates", issued(["legacy.example.com"], san=False), at_now())
    assert isinstance(cert, Certificate) and cert.common_names == ["legacy.example.com"]


def test_weak_and_malformed_material_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    problem = refusal(issued(key=weak))
    assert "certificates/1: private_key: " in problem and "RSA key of 1024 bits" in problem
    raw = issued()
    raw["certificate"] = raw["certificate"] + raw["ca_chain"]
    assert "exactly one certificate" in refusal(raw)
    raw = issued()
    raw["private_key"] = raw["private_key"].replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
    assert "certificates/1: private_key: " in refusal(raw)
    raw = issued()
    raw["certificate"] = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
    assert "certificates/1: certificate: " in refusal(raw)


def test_a_refusal_never_shows_the_private_key() -> None:
    """Even a key that does not parse: the library's message would quote its bytes."""
    raw = issued()
    body = raw["private_key"].splitlines()
    raw["private_key"] = "\n".join([body[0], "QUJD" + body[1][4:], *body[2:]]) + "\n"
    problem = refusal(raw)
    assert body[1][4:] not in problem and "QUJD" not in problem


def test_certificate_object_takes_the_names_from_the_leaf() -> None:
    leaf = CA.issue(SHOP, valid_from=NOW - timedelta(days=1))
    raw = certificate_object(7, leaf.certificate, leaf.private_key, leaf.ca_chain)
    assert raw["common_names"] == SHOP
    assert isinstance(parse_object("certificates", raw, at_now()), Certificate)


@pytest.mark.parametrize("bad", ["wrong-key", "expired", "foreign-chain"])
def test_a_refused_certificate_stores_nothing(clocked: ObjectStore, bad: str) -> None:
    clocked.put("certificates", [issued()])
    kvs_before, _ = clocked.client.get_prefix(clocked.prefix + "/")
    before = [(kv.key, kv.value, kv.mod_revision) for kv in kvs_before]
    raw = issued(valid_from=NOW - timedelta(days=100), days=90) if bad == "expired" else issued()
    if bad == "wrong-key":
        raw["private_key"] = key_pem(new_key())
    if bad == "foreign-chain":
        raw["ca_chain"] = TestCa("another").chain_pem
    field = {"wrong-key": "private_key", "expired": "certificate", "foreign-chain": "ca_chain"}
    for object_id in (1, 2):  # a replacement and a new object
        with pytest.raises(ValidationFailed) as refused:
            clocked.put("certificates", [dict(raw, id=object_id)])
        (problem,) = refused.value.problems
        assert problem.startswith(f"certificates/{object_id}: {field[bad]}: "), problem
        kvs_after, _ = clocked.client.get_prefix(clocked.prefix + "/")
        assert [(kv.key, kv.value, kv.mod_revision) for kv in kvs_after] == before


# -- coverage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "name", "covered"),
    [
        (["shop.example.com"], "shop.example.com", True),
        (["shop.example.com"], "www.shop.example.com", False),
        (["*.example.com"], "shop.example.com", True),
        (["*.example.com"], "example.com", False),  # a wildcard is one label, not none
        (["*.example.com"], "a.shop.example.com", False),  # ... nor two (RFC 6125)
        (["*.example.com"], "*.example.com", True),  # the same wildcard
        (["*.example.com"], "*.shop.example.com", False),
        (["shop.example.com"], "*.shop.example.com", False),
        (["*.shop.example.com", "shop.example.com"], "SHOP.example.com", True),
    ],
)
def test_coverage_follows_rfc_6125(names: list[str], name: str, covered: bool) -> None:
    assert covers(names, name) is covered


def test_a_vhost_may_use_only_a_certificate_that_covers_it(clocked: ObjectStore) -> None:
    clocked.put("unix-users", [{"id": 1, "username": "alice"}])
    clocked.put("certificates", [issued(["*.example.com"])])
    with pytest.raises(ValidationFailed) as refused:
        clocked.put(
            "virtual-hosts",
            [vhost(server_aliases=["example.com", "a.b.example.com"], certificate_id=1)],
        )
    assert refused.value.problems == [
        "virtual-hosts/1: certificate_id: certificates/1 does not cover example.com "
        "(served as server_aliases; the certificate covers *.example.com)",
        "virtual-hosts/1: certificate_id: certificates/1 does not cover a.b.example.com "
        "(served as server_aliases; the certificate covers *.example.com)",
    ]
    assert clocked.list("virtual-hosts") == []
    clocked.put("virtual-hosts", [vhost(server_aliases=["www.example.com"], certificate_id=1)])


def test_a_replacement_that_drops_a_name_in_use_is_refused(clocked: ObjectStore) -> None:
    """Both ways: the certificate is written, the vhost's rule is the one that breaks."""
    clocked.put("unix-users", [{"id": 1, "username": "alice"}])
    clocked.put("certificates", [issued()])
    clocked.put("virtual-hosts", [vhost(server_aliases=["www.shop.example.com"], certificate_id=1)])
    before = clocked.get("certificates", 1)
    with pytest.raises(ValidationFailed) as refused:
        clocked.put("certificates", [issued(["shop.example.com"])])
    assert refused.value.problems == [
        "virtual-hosts/1: certificate_id: certificates/1 does not cover www.shop.example.com "
        "(served as server_aliases; the certificate covers shop.example.com)"
    ]
    assert clocked.get("certificates", 1) == before
    # a renewal with the same names is fine
    clocked.put("certificates", [issued()])
    assert clocked.get("certificates", 1) != before


def test_a_certificate_in_use_cannot_be_deleted(clocked: ObjectStore) -> None:
    clocked.put("unix-users", [{"id": 1, "username": "alice"}])
    clocked.put("certificates", [issued()])
    clocked.put("virtual-hosts", [vhost(certificate_id=1)])
    with pytest.raises(ReferencedObject, match="virtual-hosts/1"):
        clocked.delete("certificates", 1)
    clocked.put("virtual-hosts", [vhost()])
    clocked.delete("certificates", 1)


def test_force_https_needs_a_certificate(clocked: ObjectStore) -> None:
    clocked.put("unix-users", [{"id": 1, "username": "alice"}])
    with pytest.raises(ValidationFailed, match="virtual-hosts/1: force_https: needs a cert"):
        clocked.put("virtual-hosts", [vhost(force_https=True)])
    assert clocked.list("virtual-hosts") == []


# -- on the node ---------------------------------------------------------------------------


def node_objects(certificate: dict[str, Any], **vhost_fields: Any) -> list[Any]:
    return [
        UnixUser(id=1, username="alice"),
        Certificate.model_validate(certificate),
        VirtualHost.model_validate(vhost(**vhost_fields)),
    ]


def test_the_files_on_the_node_and_one_reload_per_renewal(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root")
    engine = Engine(Registry(CONFIGURATIONS), node_settings(root))
    first = issued()
    engine.apply(Snapshot.of(1, node_objects(first, certificate_id=1, force_https=True)))
    fullchain = root / "etc/ssl/ccm/1/fullchain.pem"
    key = root / "etc/ssl/ccm/1/privkey.pem"
    assert fullchain.read_text() == first["certificate"] + first["ca_chain"]
    assert key.read_text() == first["private_key"]
    assert stat.S_IMODE(fullchain.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (key.stat().st_uid, key.stat().st_gid) == (0, 0)
    site = (root / "etc/nginx/sites-enabled/shop.example.com.conf").read_text()
    assert "    ssl_certificate /etc/ssl/ccm/1/fullchain.pem;\n" in site
    assert "    ssl_certificate_key /etc/ssl/ccm/1/privkey.pem;\n" in site

    seen = len(actions(root))
    renewed = issued()
    engine.apply(Snapshot.of(2, node_objects(renewed, certificate_id=1, force_https=True)))
    assert key.read_text() == renewed["private_key"]
    new = actions(root)[seen:]
    assert [line for line in new if "nginx" in line] == ["check nginx", "reload nginx"], new
    seen = len(actions(root))
    engine.apply(Snapshot.of(3, node_objects(renewed, certificate_id=1, force_https=True)))
    assert actions(root)[seen:] == []  # nothing changed: no reload


# -- the key is a secret -------------------------------------------------------------------


def test_the_key_never_shows_in_diff_json_history_logs_or_errors(ccm_node: CcmNode) -> None:
    ccm_node.put("unix-users", [{"id": 1, "username": "alice"}])
    live = CA.issue(SHOP)  # the command's clock is the real one
    raw = live.raw()
    body = [line for line in live.private_key.splitlines() if "-----" not in line]
    shown: list[str] = []

    def check(text: str) -> None:
        shown.append(text)
        for line in body:
            assert line not in text

    bad = dict(raw, private_key=key_pem(new_key()))
    refused = ccm_node.put("certificates", [bad], check=False)
    assert refused.returncode == 1 and "private_key: " in refused.stderr
    check(refused.stdout + refused.stderr)
    for line in [line for line in bad["private_key"].splitlines() if "-----" not in line]:
        assert line not in refused.stdout + refused.stderr
    ccm_node.put("certificates", [raw])
    ccm_node.put("virtual-hosts", [vhost(certificate_id=1)])
    diff = ccm_node.diff()
    assert diff.returncode == 2 and "/etc/ssl/ccm/1/privkey.pem" in diff.stdout
    check(diff.stdout + diff.stderr)
    as_json = ccm_node.diff("--json")
    check(as_json.stdout + as_json.stderr)
    json.loads(as_json.stdout)
    applied = ccm_node.apply()
    check(applied.stdout + applied.stderr)
    renewed = CA.issue(SHOP)
    ccm_node.put("certificates", [renewed.raw()])
    check(ccm_node.diff().stdout)
    check(ccm_node.diff("--json").stdout)
    check(ccm_node.apply().stderr)
    history = ccm_node.ccm("history", "--json", check=True)
    check(history.stdout + history.stderr)
    assert "/etc/ssl/ccm/1/privkey.pem" in history.stdout
    assert ccm_node.read("/etc/ssl/ccm/1/privkey.pem") == renewed.private_key
