"""``basic-auth-realms``: what a realm may hold, its htpasswd file (a secret, 0640
root:www-data) and the location it adds to its vhost. What a client gets from a real
nginx (401 without, 200 with credentials, PHP under the path too) is in
``test_serving.py``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import DanglingReference, ReferencedObject, ValidationFailed
from ccm.models import Snapshot, parse_object
from ccm.plan.diff import describe_json, describe_text
from ccm.testing.noderoot import node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.basic_auth import BasicAuthRealm
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

BCRYPT = "$2y$10$chpmzJ.a9300VT.cdBzibu5JlugPaF.4DBchXtrNJzbg7SjBgMy56"
SHA512 = (
    "$6$aNo4UHUZ1x0b9i1s$MhCXVO0xtqvNWHngnmTZTFdBx1VFonMR/fEXRtW3jLls9z4yWz/86i0176fOvUuxvOd"
    "w5aNeXrs7wdQxhrbUl1"
)


def realm(id: int = 1, path: str = "/admin/", **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "virtual_host_id": 1,
        "path": path,
        "name": "Admin area",
        "users": [{"username": "admin", "password_hash": BCRYPT}],
        **extra,
    }


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as caught:
        parse_object("basic-auth-realms", raw)
    (problem,) = caught.value.problems
    return problem


@pytest.mark.parametrize(
    ("password_hash", "reason"),
    [
        ("{PLAIN}secret", "is not a bcrypt ($2y$, $2b$) or SHA-512 crypt ($6$) hash"),
        ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "is not a bcrypt"),
        ("$apr1$abcdefgh$0123456789abcdefghijkl", "is not a bcrypt"),
        ("$1$abcdefgh$0123456789abcdefghijkl", "is not a bcrypt"),
        ("$5$abcdefgh$" + "a" * 43, "is not a bcrypt"),
        ("secret", "is not a bcrypt"),
        (BCRYPT + "\n", "is not a bcrypt"),
        (BCRYPT.replace("$10$", "$13$"), "a bcrypt cost of 13: at most 12"),
        (BCRYPT.replace("$10$", "$31$"), "a bcrypt cost of 31: at most 12"),
        (SHA512.replace("$6$", "$6$rounds=999999999$"), "999999999 SHA-512 rounds"),
        (SHA512.replace("$6$", "$6$rounds=100$"), "100 SHA-512 rounds"),
    ],
)
def test_only_safe_hashes_nginx_verifies(password_hash: str, reason: str) -> None:
    raw = realm(users=[{"username": "admin", "password_hash": password_hash}])
    problem = refused(raw)
    assert problem.startswith("basic-auth-realms/1: users.0.password_hash: "), problem
    assert reason in problem
    assert password_hash.strip() not in problem  # a secret: never echoed


def test_good_hashes_are_accepted() -> None:
    users = [
        {"username": "admin", "password_hash": BCRYPT},
        {"username": "b", "password_hash": BCRYPT.replace("$2y$", "$2b$")},
        {"username": "c", "password_hash": SHA512},
        {"username": "d", "password_hash": SHA512.replace("$6$", "$6$rounds=10000$")},
    ]
    assert isinstance(parse_object("basic-auth-realms", realm(users=users)), BasicAuthRealm)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("path", "admin/", "a URI prefix"),
        ("path", "/admin/../x", "a URI prefix"),
        ("path", "/./admin", "a URI prefix"),
        ("path", "//admin", "a URI prefix"),
        ("path", "/a b", "a URI prefix"),
        ("path", "/admin;", "a URI prefix"),
        ("path", "/admin{", "a URI prefix"),
        ("path", "/.git/", "a URI prefix"),
        ("path", "/admin/\n", "a URI prefix"),
        ("name", 'Admin" ; allow all; "', "text of letters"),
        ("name", "Admin $host", "text of letters"),
        ("name", "Admin\narea", "text of letters"),
        ("name", "", "text of letters"),
        ("users", [], "at least 1 item"),
    ],
)
def test_bad_input_names_the_field(field: str, value: Any, reason: str) -> None:
    problem = refused(realm(**{field: value}))
    assert problem.startswith(f"basic-auth-realms/1: {field}: "), problem
    assert reason in problem


def test_user_names_are_safe_and_distinct() -> None:
    colon = realm(users=[{"username": "ad:min", "password_hash": BCRYPT}])
    assert refused(colon).startswith("basic-auth-realms/1: users.0.username: ")
    twice = realm(users=[{"username": "admin", "password_hash": BCRYPT}] * 2)
    assert refused(twice) == "basic-auth-realms/1: users: Value error, admin given twice"


def test_references_and_one_realm_per_path(store: ObjectStore) -> None:
    with pytest.raises(DanglingReference, match="virtual-hosts/1"):
        store.put("basic-auth-realms", [realm()])
    store.put("unix-users", [{"id": 1, "username": "alice"}])
    store.put(
        "virtual-hosts",
        [{"id": 1, "domain": "a.example.com", "unix_user_id": 1, "document_root": "/home/alice/w"}],
    )
    store.put("basic-auth-realms", [realm()])
    with pytest.raises(ValidationFailed, match="basic-auth-realms/2: virtual_host_id, path: "):
        store.put("basic-auth-realms", [realm(2)])
    assert [r.id for r in store.list("basic-auth-realms")] == [1]
    with pytest.raises(ReferencedObject, match="basic-auth-realms/1"):
        store.delete("virtual-hosts", 1)


# -- on the node ---------------------------------------------------------------------------


def objects(*realms: dict[str, Any]) -> list[Any]:
    return [
        UnixUser(id=1, username="alice"),
        VirtualHost(id=1, domain="a.example.com", unix_user_id=1, document_root="/home/alice/www"),
        *(BasicAuthRealm.model_validate(r) for r in realms),
    ]


def test_the_htpasswd_file_is_a_secret_for_nginx_only(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root")
    engine = Engine(Registry(CONFIGURATIONS), node_settings(root))
    users = [
        {"username": "admin", "password_hash": BCRYPT},
        {"username": "visitor", "password_hash": SHA512},
    ]
    planned = engine.plan(Snapshot.of(1, objects(realm(users=users))))
    text = describe_text(planned.operations, manifest=planned.manifest)
    data = str(describe_json(planned.operations, 1, manifest=planned.manifest))
    assert "/etc/nginx/htpasswd/1" in text
    for shown in (text, data):
        assert BCRYPT not in shown and SHA512 not in shown
        assert "chpmzJ" not in shown and "admin:" not in shown
    engine.apply(Snapshot.of(1, objects(realm(users=users))))
    htpasswd = root / "etc/nginx/htpasswd/1"
    assert htpasswd.read_text().splitlines()[1:] == [f"admin:{BCRYPT}", f"visitor:{SHA512}"]
    listing = subprocess.run(
        ["stat", "-c", "%a %U %G", str(htpasswd)], capture_output=True, text=True, check=True
    )
    assert listing.stdout.split() == ["640", "root", "www-data"]
    site = (root / "etc/nginx/sites-enabled/a.example.com.conf").read_text()
    assert "    location ^~ /admin/ {\n" in site
    assert '        auth_basic "Admin area";\n' in site
    assert "        auth_basic_user_file /etc/nginx/htpasswd/1;\n" in site
