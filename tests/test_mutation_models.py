"""The models' rules at their boundaries, and the messages that name what is wrong.

What ``tests/test_tenant_input.py`` does not pin down (found by ``scripts/mutation
models``): each length limit accepted at the limit and refused one beyond it; cron
fields at their edges; the error that names the object, the field and the reason (the
Cluster API shows it to whoever wrote the object); the field a duplicate value is named
by; references and the type registry as an extension type sees them (types defined at
run time, as a ``configurations`` module or a third-party package defines them);
snapshots that compare by revision and content.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pytest
from test_store import cron, mail, pool, user, vhost

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed
from ccm.models import (
    AbsolutePath,
    CcmObject,
    Node,
    ObjectId,
    Ref,
    Snapshot,
    Text,
    model_for,
    parse_object,
    parse_objects,
    pattern,
)
from ccm.models.base import object_types
from configurations.clusters import Cluster
from configurations.crons import Cron
from configurations.fpm_pools import FpmPool
from configurations.mail_accounts import MailAccount
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost


def problems_of(type_name: str, raw: Any) -> list[str]:
    with pytest.raises(ValidationFailed) as refused:
        parse_object(type_name, raw)
    assert refused.value.type_name == type_name
    assert str(refused.value).startswith(f"invalid {type_name}: ")
    return refused.value.problems


def accepted(type_name: str, raw: dict[str, Any]) -> CcmObject:
    return parse_object(type_name, raw)


# -- lengths: at the limit accepted, one beyond refused, the message says which ----------

LABEL = "a" * 63


def test_a_domain_of_253_characters_passes_and_254_is_refused_by_its_length() -> None:
    longest = ".".join([LABEL, LABEL, LABEL, "a" * 57, "com"])
    beyond = ".".join([LABEL, LABEL, LABEL, "a" * 58, "com"])  # every label still valid
    assert (len(longest), len(beyond)) == (253, 254)
    assert accepted("virtual-hosts", vhost(1, 1, longest, "/home/a/www"))
    assert problems_of("virtual-hosts", vhost(1, 1, beyond, "/home/a/www")) == [
        "virtual-hosts/1: domain: Value error, 254 characters: a domain name has at most 253"
    ]


def test_a_domain_that_is_not_one_says_what_a_domain_is() -> None:
    assert problems_of("virtual-hosts", vhost(7, 1, "Shop.example.com", "/home/a/www")) == [
        "virtual-hosts/7: domain: Value error, 'Shop.example.com' is not a lower-case fully "
        "qualified domain name"
    ]


def test_an_email_address_of_254_characters_passes_and_255_is_refused() -> None:
    local = "l" * 64
    longest = local + "@" + ".".join([LABEL, LABEL, "a" * 57, "com"])
    beyond = local + "@" + ".".join([LABEL, LABEL, "a" * 58, "com"])
    assert (len(longest), len(beyond)) == (254, 255)
    assert accepted("unix-users", user(1, "alice", email=longest))
    assert problems_of("unix-users", user(1, "alice", email=beyond)) == [
        "unix-users/1: email: Value error, 255 characters: an e-mail address has at most 254"
    ]
    assert problems_of("unix-users", user(1, "alice", email="alice@Example.com")) == [
        "unix-users/1: email: Value error, 'alice@Example.com' is not an e-mail address "
        "(local@domain, lower-case domain)"
    ]


def test_a_path_of_1024_characters_passes_and_1025_is_refused() -> None:
    base = "/home/alice/" + "/".join(["d" * 200] * 5)
    longest = base + "/" + "e" * (1024 - len(base) - 1)
    assert len(longest) == 1024
    assert accepted("virtual-hosts", vhost(1, 1, "a.example.com", longest))
    assert problems_of("virtual-hosts", vhost(1, 1, "a.example.com", longest + "e")) == [
        "virtual-hosts/1: document_root: Value error, 1025 characters: a path has at most 1024"
    ]


# -- paths ------------------------------------------------------------------------------


class PathProbe(CcmObject):
    """An extension type's path field (no TYPE: never registered)."""

    path: AbsolutePath


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/", "/"),
        ("/srv/X", "/srv/X"),
        ("/srv/X/", "/srv/X"),
        ("/home/alice/www/", "/home/alice/www"),
        ("/a.b/c+d/e@f/g-h_i", "/a.b/c+d/e@f/g-h_i"),
    ],
)
def test_an_absolute_path_is_kept_in_one_spelling(given: str, kept: str) -> None:
    assert PathProbe(id=1, path=given).path == kept


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("relative/path", "is not an absolute path of letters, digits and ._/+@-"),
        ("/srv/a b", "is not an absolute path of letters, digits and ._/+@-"),
        ("/srv/../etc", "must be a normalised path (no '..', '.', '//')"),
        ("/srv/./x", "must be a normalised path (no '..', '.', '//')"),
        ("/srv//x", "is not an absolute path of letters, digits and ._/+@-"),
    ],
)
def test_a_path_that_is_not_safe_is_refused_saying_why(given: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        PathProbe(id=1, path=given)
    assert f"{given!r} {reason}" in str(refused.value)


def test_a_shell_of_the_root_directory_is_refused() -> None:
    assert problems_of("unix-users", user(1, "alice", shell="/")) == [
        "unix-users/1: shell: Value error, '/' is not a shell (an absolute path of at most 255)"
    ]


# -- the building blocks an extension type uses ------------------------------------------


def word_probe() -> type[CcmObject]:
    """An extension type's pattern and text fields, defined when a test runs (as an
    extension module is imported when the daemon starts)."""

    class WordProbe(CcmObject):
        word: Annotated[str, pattern(r"[a-z]+", "a lower-case word")]
        text: Text = "x"

    return WordProbe


def test_a_pattern_field_names_what_it_expects() -> None:
    probe = word_probe()
    assert probe.model_validate({"id": 1, "word": "abc"}).word == "abc"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"Value error, 'abc1' is not a lower-case word \["):
        probe.model_validate({"id": 1, "word": "abc1"})
    with pytest.raises(ValueError, match=r"Value error, 'abc\\n' is not a lower-case word"):
        probe.model_validate({"id": 1, "word": "abc\n"})  # fullmatch: no newline at the end


def test_free_text_with_a_line_break_says_so() -> None:
    with pytest.raises(
        ValueError,
        match=r"Value error, must not contain control characters or line breaks \(newline, …\) \[",
    ):
        word_probe().model_validate({"id": 1, "word": "a", "text": "one\ntwo"})


def test_references_are_derived_from_every_spelling_of_a_ref(registry: None) -> None:
    class Backup(CcmObject):
        TYPE: ClassVar[str] = "test-backups"
        unix_user_id: Annotated[ObjectId, Ref("unix-users")]
        node_id: Annotated[ObjectId, Ref("nodes")] | None = None
        pool_id: Annotated[int, Ref("fpm-pools")] | None = None
        vhost_id: None | Annotated[int, Ref("virtual-hosts")] = None
        copies: int = 1

    assert Backup.REFERENCES == {
        "unix_user_id": "unix-users",
        "node_id": "nodes",
        "pool_id": "fpm-pools",
        "vhost_id": "virtual-hosts",
    }
    assert object_types["test-backups"] is Backup
    assert model_for("test-backups") is Backup
    # the built-in types, optional references included
    assert Cron.REFERENCES == {"unix_user_id": "unix-users", "node_id": "nodes"}
    assert VirtualHost.REFERENCES == {
        "unix_user_id": "unix-users",
        "fpm_pool_id": "fpm-pools",
        "certificate_id": "certificates",
    }
    assert UnixUser.REFERENCES == {}


def test_a_type_name_defined_twice_is_refused_but_a_reload_replaces_it(registry: None) -> None:
    with pytest.raises(TypeError, match="object type 'unix-users' is defined twice"):

        class Impostor(CcmObject):
            TYPE: ClassVar[str] = "unix-users"

    assert object_types["unix-users"] is UnixUser

    def define() -> type[CcmObject]:  # the same class again: a re-imported module
        class Again(CcmObject):
            TYPE: ClassVar[str] = "test-again"

        return Again

    first, second = define(), define()
    assert first is not second
    assert object_types["test-again"] is second


# -- cron schedules at their edges -------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        "5-5 * * * *",  # a range of one value
        "*/1 * * * *",
        "*/59 * * * *",  # the largest step of the minute field
        "0 */23 * * *",
        "0 0 1 2-feb *",  # a number and a name for the same month
        "0 0 1 jan-3 *",
        "0 0 1 jan-dec *",
        "0 0 * * sun-sat",
        "0 0 * * 0-7",
    ],
)
def test_schedules_at_the_edges_are_accepted(schedule: str) -> None:
    assert accepted("crons", cron(1, 1, schedule=schedule))


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("*/60 * * * *", "minute: step 60 is outside 1-59"),
        ("0 */24 * * *", "hour: step 24 is outside 1-23"),
        ("0 0 1 mar-2 *", "month: 'mar-2' is a range that runs backwards"),
        ("0 0 1 3-feb *", "month: '3-feb' is a range that runs backwards"),
        ("0 0 * * 6-1", "day of week: '6-1' is a range that runs backwards"),
        ("0 0 * foo *", "'foo' is not a number or a name"),
        ("0 0 * * jan", "'jan' is not a number or a name"),
        ("0 0 32 * *", "32 is outside 1-31"),
        ("0 0 * * 8", "8 is outside 0-7"),
        ("0 0 * * 1,,2", "day of week: '' is not *, N, N-M or one of those with /step"),
        ("0 0 * * * *", "is not 5 cron fields separated by single spaces"),
        ("0  0 * * *", "is not 5 cron fields separated by single spaces"),
    ],
)
def test_schedules_cron_would_misread_are_refused_saying_why(schedule: str, reason: str) -> None:
    (problem,) = problems_of("crons", cron(4, 1, schedule=schedule))
    assert problem.startswith("crons/4: schedule: Value error, ")
    assert reason in problem


# -- error messages: object, field, reason ----------------------------------------------


def test_a_raw_value_that_is_not_an_object_is_named_by_type_and_unknown_id() -> None:
    (problem,) = problems_of("crons", [1, 2])
    assert problem.startswith("crons/?: (object): ")


def test_an_object_without_an_id_is_named_with_a_question_mark() -> None:
    problems = problems_of("unix-users", {"username": "alice"})
    assert problems == ["unix-users/?: id: Field required"]


def test_a_problem_inside_a_list_or_mapping_names_its_position() -> None:
    site = vhost(3, 1, "a.example.com", "/home/a/www", server_aliases=["b.example.com", "B"])
    (problem,) = problems_of("virtual-hosts", site)
    assert problem.startswith("virtual-hosts/3: server_aliases.1: Value error, 'B' is not")


def test_every_problem_of_every_object_is_listed_and_named() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_objects("unix-users", [user(1, "Alice"), user(2, "bob"), user(2, "carol")])
    assert refused.value.type_name == "unix-users"
    assert refused.value.problems[0].startswith("unix-users/1: username: ")
    assert refused.value.problems[1:] == ["unix-users/2: id: given 2 times"]


def test_an_unknown_type_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ValidationFailed) as refused:
        model_for("unix-user")
    assert refused.value.type_name == "unix-user"
    (problem,) = refused.value.problems
    assert problem.startswith("unknown object type (known: ")
    assert (
        "basic-auth-realms, certificate-managers, certificates, clusters, crons, daemons, "
        "database-user-grants, database-users, databases, fpm-pools, ftp-users, mail-accounts, "
        "mail-aliases, mail-domains, nodes, redis-instances, unix-users, url-redirects, "
        "virtual-hosts)" in problem
    )


def test_a_php_version_no_cluster_lists_is_refused_naming_the_listed_ones(
    store: ObjectStore,
) -> None:
    store.put("unix-users", [user(1, "alice")])
    store.put("clusters", [{"id": 1, "php_versions": ["8.3", "8.1"]}])
    with pytest.raises(ValidationFailed) as refused:
        store.put("fpm-pools", [pool(1, 1, "web")])  # 8.2
    assert refused.value.problems == [
        "fpm-pools/1: php_version: 8.2 is not installed on the cluster (clusters list 8.1, 8.3)"
    ]


def test_a_cluster_listing_no_php_says_none() -> None:
    web = FpmPool(id=1, name="web", unix_user_id=1, php_version="8.2")

    class View:
        def lookup(self, type_name: str, object_id: int) -> CcmObject | None:
            return None

        def list_type(self, type_name: str) -> list[CcmObject]:
            return [Cluster(id=1)] if type_name == "clusters" else []

    assert web.problems(View()) == [
        "fpm-pools/1: php_version: 8.2 is not installed on the cluster (clusters list none)"
    ]


def test_names_a_vhost_repeats_or_takes_from_another_are_all_listed(
    store: ObjectStore,
) -> None:
    store.put("unix-users", [user(1, "alice")])
    store.put(
        "virtual-hosts",
        [vhost(1, 1, "a.example.com", "/home/alice/a", server_aliases=["b.example.com"])],
    )
    twice = vhost(
        2,
        1,
        "c.example.com",
        "/home/alice/c",
        server_aliases=["d.example.com", "e.example.com", "d.example.com", "e.example.com"],
    )
    with pytest.raises(ValidationFailed) as refused:
        store.put("virtual-hosts", [twice])
    assert refused.value.problems == [
        "virtual-hosts/2: server_aliases: d.example.com, e.example.com given twice"
    ]
    taking = vhost(
        3, 1, "x.example.com", "/home/alice/x", server_aliases=["b.example.com", "a.example.com"]
    )
    with pytest.raises(ValidationFailed) as refused:
        store.put("virtual-hosts", [taking])
    assert refused.value.problems == [
        "virtual-hosts/3: a.example.com, b.example.com already served by virtual-hosts/1 "
        "(a.example.com)"
    ]


# -- server aliases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias", ["a.example.com", "*.example.com", "*.a.example.com", "xn--e1afmkfd.xn--p1ai"]
)
def test_server_aliases_plain_and_wildcard_are_accepted(alias: str) -> None:
    site = accepted("virtual-hosts", vhost(1, 1, "x.example.com", "/h/w", server_aliases=[alias]))
    assert isinstance(site, VirtualHost) and site.server_aliases == [alias]


@pytest.mark.parametrize("alias", ["*.com.", "*example.com", "a.*.example.com", "*.*.example.com"])
def test_a_wildcard_anywhere_but_the_first_label_is_refused(alias: str) -> None:
    (problem,) = problems_of(
        "virtual-hosts", vhost(1, 1, "x.example.com", "/h/w", server_aliases=[alias])
    )
    assert problem.startswith("virtual-hosts/1: server_aliases.0: ")


# -- uniqueness: the duplicate is named by its field -------------------------------------


@pytest.mark.parametrize(
    ("type_name", "first", "second", "named"),
    [
        ("unix-users", user(1, "alice"), user(2, "alice"), "username: 'alice'"),
        ("fpm-pools", pool(1, 1, "web"), pool(2, 1, "web"), "name: 'web'"),
        (
            "virtual-hosts",
            vhost(1, 1, "a.example.com", "/home/alice/a"),
            vhost(2, 1, "a.example.com", "/home/alice/b"),
            "domain: 'a.example.com'",
        ),
        ("crons", cron(1, 1), cron(2, 1), "unix_user_id+name: (1, 'backup')"),
        ("mail-accounts", mail(1), mail(2), "address: 'info@mail-domains/1'"),
        (
            "nodes",
            {"id": 1, "hostname": "web1", "groups": ["nginx"], "primary_for": ["nginx"]},
            {"id": 2, "hostname": "web1"},
            "hostname: 'web1'",
        ),
        (
            "nodes",
            {"id": 1, "hostname": "web1", "groups": ["nginx"], "primary_for": ["nginx"]},
            {"id": 2, "hostname": "web2", "groups": ["nginx"], "primary_for": ["nginx"]},
            "primary_for nginx: 'nginx'",
        ),
    ],
)
def test_a_duplicate_unique_value_is_named_by_its_field(
    store: ObjectStore, type_name: str, first: Any, second: Any, named: str
) -> None:
    if type_name not in ("unix-users", "nodes"):
        store.put("unix-users", [user(1, "alice")])
    if type_name == "mail-accounts":
        store.put("mail-domains", [{"id": 1, "domain": "example.org", "unix_user_id": 1}])
    store.put(type_name, [first])
    with pytest.raises(ValidationFailed) as refused:
        store.put(type_name, [second])
    assert f"{type_name}/2: {named} is already used by {type_name}/1" in refused.value.problems


# -- snapshots ----------------------------------------------------------------------------

ALICE = UnixUser(id=1, username="alice")
BOB = UnixUser(id=2, username="bob")
WEB1 = Node(id=1, hostname="web1", groups=["nginx"])


def test_a_snapshot_keeps_its_revision_and_so_does_its_view_from_a_node() -> None:
    snapshot = Snapshot.of(42, [ALICE, WEB1])
    assert snapshot.revision == 42
    view = snapshot.viewed_from("web1")
    assert (view.revision, view.node) == (42, "web1")
    assert view.this_node() == WEB1
    assert view == snapshot  # the same objects at the same revision
    assert view.get(UnixUser, 1) == ALICE


def test_snapshots_are_equal_only_with_the_same_revision_and_objects() -> None:
    assert Snapshot.of(5, [ALICE]) == Snapshot.of(5, [ALICE])
    assert Snapshot.of(5, [ALICE]) != Snapshot.of(6, [ALICE])
    assert Snapshot.of(5, [ALICE]) != Snapshot.of(5, [BOB])
    assert Snapshot.of(5, [ALICE]) != Snapshot.of(5, [ALICE, WEB1])  # a type more
    assert Snapshot.of(5, [ALICE, WEB1]) != Snapshot.of(5, [ALICE])
    assert Snapshot.of(5, []) == Snapshot(5, loaders={"crons": dict})  # empty either way
    assert Snapshot.of(5, [ALICE]) != "a snapshot"


def test_models_are_values_that_stay_frozen() -> None:
    account = MailAccount.model_validate(mail(1))
    with pytest.raises(ValueError, match="frozen"):
        account.quota_mib = 5  # type: ignore[misc]
    assert account == MailAccount.model_validate(mail(1))
    assert hash(account) == hash(MailAccount.model_validate(mail(1)))
