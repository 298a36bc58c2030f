"""``url-redirects``: the destination a tenant may give, one namespace with the vhosts
(both ways, wildcards between owners included), and the rendered server block. What a
client gets from a real nginx is in ``test_serving.py``."""

from __future__ import annotations

from typing import Any

import pytest

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed
from ccm.models import Snapshot, parse_object
from ccm.plan.changes import File
from ccm.plan.templates import TemplateRenderer, package_templates
from configurations.unix_users import UnixUser
from configurations.url_redirects import UrlRedirect
from configurations.virtual_hosts import NginxVhosts


def redirect(id: int = 1, domain: str = "old.example.com", **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "domain": domain,
        "unix_user_id": 1,
        "destination_url": "https://new.example.com/",
        **extra,
    }


def vhost(id: int, domain: str, user: int = 1, **extra: Any) -> dict[str, Any]:
    home = {1: "alice", 2: "bob"}[user]
    return {
        "id": id,
        "domain": domain,
        "unix_user_id": user,
        "document_root": f"/home/{home}/www",
        **extra,
    }


@pytest.fixture
def tenants(store: ObjectStore) -> ObjectStore:
    store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    return store


# -- the destination -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "the scheme 'javascript' is not allowed"),
        ("JavaScript:alert(1)", "the scheme 'javascript' is not allowed"),
        ("data:text/html,<script>x</script>", "the scheme 'data' is not allowed"),
        ("ftp://example.com/", "the scheme 'ftp' is not allowed"),
        ("//example.com/", "is not an absolute http or https URL"),
        ("https://example.com/a\nLocation: https://evil.example", "no $, quotes"),
        ("https://example.com/\u2028", "is not an absolute"),
        ("https://example.com/$host", "no $, quotes"),
        ('https://example.com/"; return 200 "x', "is not an absolute"),
        ("https://example.com/a b", "is not an absolute"),
        ("https://example.com/a\\b", "is not an absolute"),
        ("https://EXAMPLE.com/", "lower-case host name"),
        ("https://user@example.com/", "is not an absolute"),
        ("https://example.com:99999/", "port 99999 is not a port"),
        ("https://example.com/%zz", "is not an absolute"),
        ("https://example.com/" + "a" * 2100, "a destination has at most 2048"),
    ],
)
def test_a_bad_destination_is_refused(url: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("url-redirects", redirect(destination_url=url))
    (problem,) = refused.value.problems
    assert problem.startswith("url-redirects/1: destination_url: "), problem
    assert reason in problem


@pytest.mark.parametrize(
    "url",
    [
        "https://new.example.com",
        "http://new.example.com:8080/a/b.html",
        "https://xn--bcher-kva.example/%C3%A9t%C3%A9/",
        "https://new.example.com/shop;jsessionid=1/(x)*!",
    ],
)
def test_good_destinations_are_accepted(url: str) -> None:
    assert isinstance(parse_object("url-redirects", redirect(destination_url=url)), UrlRedirect)


def test_a_kept_path_or_query_never_follows_a_query_or_fragment(tenants: ObjectStore) -> None:
    with pytest.raises(ValidationFailed) as refused:
        tenants.put("url-redirects", [redirect(destination_url="https://new.example.com/?a=1")])
    assert refused.value.problems == [
        "url-redirects/1: destination_url: has a query or a fragment, which the request's "
        "own would follow (keep_path and keep_query): remove it, or turn keep_path and "
        "keep_query off"
    ]
    tenants.put(
        "url-redirects",
        [
            redirect(
                destination_url="https://new.example.com/?a=1#top",
                keep_path=False,
                keep_query=False,
            )
        ],
    )


def test_a_redirect_to_its_own_names_is_refused(tenants: ObjectStore) -> None:
    with pytest.raises(ValidationFailed, match=r"url-redirects/1: destination_url: www\.old"):
        tenants.put(
            "url-redirects",
            [
                redirect(
                    server_aliases=["www.old.example.com"],
                    destination_url="https://www.old.example.com/",
                )
            ],
        )
    assert tenants.list("url-redirects") == []


def test_status_codes_are_redirects_only() -> None:
    with pytest.raises(ValidationFailed, match="url-redirects/1: status_code: "):
        parse_object("url-redirects", redirect(status_code=200))
    with pytest.raises(ValidationFailed, match="url-redirects/1: status_code: "):
        parse_object("url-redirects", redirect(status_code="301"))


# -- one namespace with the vhosts, both ways ----------------------------------------------


def test_a_redirect_cannot_take_a_vhosts_name(tenants: ObjectStore) -> None:
    tenants.put("virtual-hosts", [vhost(1, "shop.example.com")])
    with pytest.raises(ValidationFailed) as refused:
        tenants.put("url-redirects", [redirect(domain="shop.example.com")])
    assert refused.value.problems == [
        "url-redirects/1: shop.example.com already served by virtual-hosts/1 (shop.example.com)"
    ]
    assert tenants.list("url-redirects") == []


def test_a_vhost_cannot_take_a_redirects_name(tenants: ObjectStore) -> None:
    """The other way: the redirect's rule runs again when a vhost is written."""
    tenants.put("url-redirects", [redirect(domain="old.example.com")])
    with pytest.raises(ValidationFailed) as refused:
        tenants.put(
            "virtual-hosts", [vhost(1, "new.example.com", server_aliases=["old.example.com"])]
        )
    assert refused.value.problems == [
        "url-redirects/1: old.example.com already served by virtual-hosts/1 (new.example.com)"
    ]
    assert tenants.list("virtual-hosts") == []


def test_two_redirects_cannot_share_a_name(tenants: ObjectStore) -> None:
    tenants.put("url-redirects", [redirect(1, "old.example.com")])
    with pytest.raises(ValidationFailed, match="url-redirects/2: old.example.com already served"):
        tenants.put(
            "url-redirects", [redirect(2, "other.example.com", server_aliases=["old.example.com"])]
        )


def test_wildcards_between_owners_are_refused_both_ways(tenants: ObjectStore) -> None:
    tenants.put(
        "virtual-hosts", [vhost(1, "bob.example.net", 2, server_aliases=["*.bob.example.net"])]
    )
    with pytest.raises(ValidationFailed) as refused:
        tenants.put("url-redirects", [redirect(domain="shop.bob.example.net")])
    assert refused.value.problems == [
        "url-redirects/1: domain: shop.bob.example.net is covered by *.bob.example.net, "
        "served by virtual-hosts/1 (bob.example.net) of another owner (unix-users/2); "
        "nginx would give names of one owner to the other"
    ]
    # bob's own redirect may carve a name out of his wildcard
    tenants.put("url-redirects", [redirect(domain="shop.bob.example.net", unix_user_id=2)])
    # alice's redirect first, then bob's wildcard vhost above it: refused, naming both
    tenants.put("url-redirects", [redirect(2, domain="shop.carol.example.org")])
    with pytest.raises(ValidationFailed) as refused:
        tenants.put(
            "virtual-hosts",
            [vhost(2, "carol.example.org", 2, server_aliases=["*.carol.example.org"])],
        )
    assert refused.value.problems == [
        "url-redirects/2: domain: shop.carol.example.org is covered by *.carol.example.org, "
        "served by virtual-hosts/2 (carol.example.org) of another owner (unix-users/2); "
        "nginx would give names of one owner to the other"
    ]
    assert [v.id for v in tenants.list("virtual-hosts")] == [1]


def test_a_redirects_certificate_must_cover_it(tenants: ObjectStore) -> None:
    from certs import TestCa

    tenants.put("certificates", [TestCa().issue(["old.example.com"]).raw()])
    with pytest.raises(ValidationFailed) as refused:
        tenants.put(
            "url-redirects",
            [redirect(server_aliases=["www.old.example.com"], certificate_id=1)],
        )
    assert refused.value.problems == [
        "url-redirects/1: certificate_id: certificates/1 does not cover www.old.example.com "
        "(served as server_aliases; the certificate covers old.example.com)"
    ]
    tenants.put("url-redirects", [redirect(certificate_id=1)])


# -- the server block ------------------------------------------------------------------------


def rendered(*objects: Any) -> dict[str, File]:
    render = TemplateRenderer(package_templates(NginxVhosts), configuration="nginx-vhosts")
    plan = NginxVhosts().plan(Snapshot.of(1, [UnixUser(id=1, username="alice"), *objects]), render)
    return {change.path: change for change in plan if isinstance(change, File)}


def test_the_file_is_named_so_no_vhost_can_have_its_name() -> None:
    """``redirect-<domain>.conf`` would be the file of a vhost named ``redirect-<domain>``."""
    files = rendered(UrlRedirect.model_validate(redirect(domain="shop.example.com")))
    assert "/etc/nginx/sites-enabled/redirect_shop.example.com.conf" in files
    content = files["/etc/nginx/sites-enabled/redirect_shop.example.com.conf"].content
    assert '        return 301 "https://new.example.com$request_uri";\n' in content
    assert "listen 443" not in content


@pytest.mark.parametrize(
    ("keep_path", "keep_query", "target"),
    [
        (True, True, "https://new.example.com/shop$request_uri"),
        (True, False, "https://new.example.com/shop$ccm_request_path"),
        (False, True, "https://new.example.com/shop/$is_args$args"),
        (False, False, "https://new.example.com/shop/"),
    ],
)
def test_what_follows_the_destination(keep_path: bool, keep_query: bool, target: str) -> None:
    obj = UrlRedirect.model_validate(
        redirect(
            destination_url="https://new.example.com/shop/",
            keep_path=keep_path,
            keep_query=keep_query,
        )
    )
    assert obj.target == target


def test_the_name_index_finds_exactly_the_overlapping_blocks() -> None:
    """``server_names`` looks a block's neighbours up instead of comparing it with every
    block: the lookup must find exactly the blocks the pairwise rule would."""
    from itertools import product

    from configurations.server_names import _Index

    family = [
        "bob.example.net",
        "x.bob.example.net",
        "a.b.bob.example.net",
        "example.net",
        "*.bob.example.net",
        "*.x.bob.example.net",
        "*.example.net",
        "other.example.org",
        "*.other.example.org",
    ]
    blocks = [
        UrlRedirect.model_validate(
            redirect(i, f"d{i}.example.com", server_aliases=[name], unix_user_id=1 + i % 2)
        )
        for i, name in enumerate(family, start=1)
    ]
    index = _Index(blocks, ("url-redirects",))
    for mine, theirs in product(blocks, blocks):
        expected = bool(
            mine.served.overlaps(theirs.served) or mine.served.names & theirs.served.names
        )
        found = theirs in index.candidates(mine.served)
        assert found == expected, (mine.server_aliases, theirs.server_aliases)
