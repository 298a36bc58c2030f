"""Tenant input is hostile: what the writer refuses, with a message naming object, field and
reason, storing nothing (issue 7's findings 1-3, and the model rules issue 11 asked for).

Each refusal goes through the real writer (``ObjectStore`` on a real etcd) and asserts
that the etcd keys under the test's prefix are exactly what they were before.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_store import HASH, cron, mail, pool, stored_state, user, vhost

from ccm.cluster.store import ObjectStore
from ccm.errors import ValidationFailed
from ccm.models import parse_object
from ccm.models.reserved import RESERVED_NAMES, reserved_name
from configurations.crons import Cron
from configurations.fpm_pools import FpmPool
from configurations.mail_accounts import MailAccount
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost


@pytest.fixture
def tenants(store: ObjectStore) -> ObjectStore:
    store.put("unix-users", [user(1, "alice"), user(2, "eve")])
    store.put("virtual-hosts", [vhost(1, 1, "shop.example.com", "/home/alice/www")])
    return store


def refused(store: ObjectStore, type_name: str, raw: dict[str, Any], *needles: str) -> str:
    """Put ``raw``; assert it is refused, names every needle, and stored nothing."""
    before = stored_state(store)
    with pytest.raises(ValidationFailed) as caught:
        store.put(type_name, [raw])
    message = str(caught.value)
    assert f"{type_name}/{raw.get('id', '?')}" in message
    for needle in needles:
        assert needle in message
    assert stored_state(store) == before
    return message


# -- finding 1: a trailing newline (and other line breaks) is never a different name ------


@pytest.mark.parametrize("suffix", ["\n", "\r", "\x85", "\u2028", "\x00", " "])
def test_a_line_break_after_a_domain_is_refused(tenants: ObjectStore, suffix: str) -> None:
    takeover = vhost(2, 2, "shop.example.com" + suffix, "/home/eve/www")
    refused(tenants, "virtual-hosts", takeover, "domain")


def test_a_newline_after_an_alias_is_refused(tenants: ObjectStore) -> None:
    site = vhost(2, 2, "eve.example.com", "/home/eve/www", server_aliases=["shop.example.com\n"])
    refused(tenants, "virtual-hosts", site, "server_aliases")


def test_the_same_name_in_another_case_or_with_a_dot_is_refused(tenants: ObjectStore) -> None:
    for name in ("SHOP.example.com", "shop.example.com.", "shop.example.com\n"):
        refused(tenants, "virtual-hosts", vhost(2, 2, name, "/home/eve/www"), "domain")


def test_a_newline_in_a_mail_domain_is_refused(store: ObjectStore) -> None:
    for name in ("example.org\nroot:x:0:0", "example.org\n"):
        refused(store, "mail-domains", {"id": 1, "domain": name, "unix_user_id": 1}, "domain")


@pytest.mark.parametrize(
    "schedule", ["0 3 * * *\n", "0 3 * * *\n* * * * * evil", "@daily\n", "0 3 * * *\r"]
)
def test_a_newline_in_a_cron_schedule_is_refused(tenants: ObjectStore, schedule: str) -> None:
    refused(tenants, "crons", cron(1, 1, schedule=schedule), "schedule")


@pytest.mark.parametrize("command", ["run\u2028* * * * * evil", "run\x85evil", "run\nevil"])
def test_a_line_break_in_a_cron_command_is_refused(tenants: ObjectStore, command: str) -> None:
    refused(tenants, "crons", cron(1, 1, command=command), "command")


# -- finding 2: accepted means it applies ----------------------------------------------


def test_a_newline_in_a_shell_is_refused(store: ObjectStore) -> None:
    refused(store, "unix-users", user(1, "alice", shell="/bin/bash\n"), "shell")


def test_a_newline_in_a_php_setting_name_is_refused(tenants: ObjectStore) -> None:
    raw = pool(1, 1, "alice", php_settings={"memory_limit\n": "1G"})
    refused(tenants, "fpm-pools", raw, "php_settings")


def test_a_pool_may_not_load_native_code(tenants: ObjectStore) -> None:
    raw = pool(1, 1, "alice", php_settings={"extension": "/home/alice/evil.so"})
    refused(tenants, "fpm-pools", raw, "php_settings", "extension")


# -- issue 15, finding 2: every pool of a php-fpm shares its OPcache ---------------------


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        # how ccm's pool file guards the shared cache
        ("opcache.validate_permission", False, "OPcache"),
        ("opcache.validate_root", "0", "OPcache"),
        ("opcache.restrict_api", "", "OPcache"),
        # compiled code from a directory of the tenant's into the shared memory
        ("opcache.file_cache", "/home/alice/.opcache", "OPcache"),
        ("opcache.file_cache_consistency_checks", False, "OPcache"),
        ("opcache.preload", "/home/alice/preload.php", "OPcache"),
        ("opcache.preload_user", "root", "OPcache"),
        ("opcache.enable", 0, "OPcache"),  # every opcache.* setting: the prefix is refused
        # the worker's memory, with the shared cache in it
        ("ffi.enable", True, "FFI"),
        ("ffi.preload", "/home/alice/ffi.h", "FFI"),
        ("zend_extension", "/home/alice/evil.so", "native code"),
        ("extension_dir", "/home/alice/ext", "native code"),
    ],
)
def test_a_pool_may_not_set_what_reaches_the_shared_opcache(
    tenants: ObjectStore, name: str, value: str | bool | int, reason: str
) -> None:
    raw = pool(1, 1, "alice", php_settings={"memory_limit": "256M", name: value})
    refused(tenants, "fpm-pools", raw, "php_settings", repr(name), reason)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # opened or run as the tenant, or narrowing only the tenant's own pool
        ("error_log", "/home/alice/logs/php.log"),
        ("auto_prepend_file", "/home/alice/prepend.php"),
        ("session.save_path", "/home/alice/sessions"),
        ("upload_tmp_dir", "/home/alice/tmp"),
        ("sys_temp_dir", "/home/alice/tmp"),
        ("sendmail_path", "/usr/sbin/sendmail -t -i"),
        ("open_basedir", "/home/alice:/tmp"),
        ("disable_functions", "exec,passthru"),
        ("opcache", "1"),  # not under the prefix "opcache." (and no php.ini setting)
        ("ffi", "1"),
    ],
)
def test_a_pool_may_set_what_stays_in_its_own_account(
    tenants: ObjectStore, name: str, value: str
) -> None:
    tenants.put("fpm-pools", [pool(1, 1, "alice", php_settings={name: value})])
    stored = tenants.get("fpm-pools", 1)
    assert isinstance(stored, FpmPool) and stored.php_settings == {name: value}


@pytest.mark.parametrize("object_id", [2**31, 2**63, 10**30])
def test_ids_beyond_an_int32_are_refused(store: ObjectStore, object_id: int) -> None:
    before = stored_state(store)
    with pytest.raises(ValidationFailed, match="id"):
        store.put("unix-users", [user(object_id, "alice")])
    assert stored_state(store) == before


@pytest.mark.parametrize("bad_id", [True, 1.0, "1", 0, -1])
def test_ids_are_positive_integers_and_nothing_else(store: ObjectStore, bad_id: Any) -> None:
    before = stored_state(store)
    with pytest.raises(ValidationFailed, match="id"):
        store.put("unix-users", [user(bad_id, "alice")])
    assert stored_state(store) == before


def test_an_id_whose_uid_is_nobody_is_refused(store: ObjectStore) -> None:
    # uid_base 20000 + 45534 = 65534 (nobody)
    refused(store, "unix-users", user(65534 - 20000, "alice"), "id", "65534", "reserved")


def test_the_writer_checks_uids_with_the_nodes_uid_base(store: ObjectStore) -> None:
    high = ObjectStore(store.client, store.prefix, writer="tests", uid_base=2_000_000_000)
    refused(high, "unix-users", user(2**31 - 1, "alice"), "id", "beyond")
    high.put("unix-users", [user(45534, "alice")])  # uid 2000045534: fine with this base


def test_reading_a_stored_account_never_applies_the_writers_uid_base(
    store: ObjectStore,
) -> None:
    """Nodes read stored objects without a uid base: each checks uids with its own."""
    ObjectStore(store.client, store.prefix, uid_base=100000).put(
        "unix-users", [user(45534, "alice")]
    )
    assert store.get("unix-users", 45534) == UnixUser(id=45534, username="alice")


@pytest.mark.parametrize("name", ["sudo", "adm", "crontab", "etcd", "staff", "systemd-x", "_x"])
def test_system_account_and_group_names_are_refused(store: ObjectStore, name: str) -> None:
    refused(store, "unix-users", user(1, name), "username", "reserved")


def test_a_document_root_nginx_cannot_read_is_refused(tenants: ObjectStore) -> None:
    long_root = "/home/alice/" + "/".join(["d" * 200] * 6)
    refused(tenants, "virtual-hosts", vhost(2, 1, "x.example.com", long_root), "document_root")


def test_a_domain_of_253_characters_is_accepted_and_254_refused(tenants: ObjectStore) -> None:
    label = "a" * 63
    longest = ".".join([label, label, label, "a" * 57, "com"])
    assert len(longest) == 253
    tenants.put("virtual-hosts", [vhost(2, 2, longest, "/home/eve/www")])
    refused(tenants, "virtual-hosts", vhost(3, 2, "a" + longest, "/home/eve/www"), "domain")


def test_a_cron_command_cron_would_cut_is_refused(tenants: ObjectStore) -> None:
    refused(tenants, "crons", cron(1, 1, command="x" * 1000), "command", "999")
    refused(tenants, "crons", cron(1, 1, command="é" * 500), "command", "bytes")
    tenants.put("crons", [cron(1, 1, command="x" * 999)])


@pytest.mark.parametrize(
    "schedule",
    ["61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "*/0 * * * *",
     "5-1 * * * *", "* * * * * *", "* * * *", "0  3 * * *", "@every", "a * * * *"],
)  # fmt: skip
def test_schedules_cron_would_not_read_are_refused(tenants: ObjectStore, schedule: str) -> None:
    refused(tenants, "crons", cron(1, 1, schedule=schedule), "schedule")


@pytest.mark.parametrize(
    "schedule", ["*/5 * * * *", "0 3 * * mon-fri", "0 0 1 jan,jul *", "0 3 * * 7", "@reboot"]
)
def test_schedules_cron_reads_are_accepted(schedule: str) -> None:
    assert Cron(id=1, unix_user_id=1, name="x", schedule=schedule, command="true")


# -- finding 3: identity is never reused ---------------------------------------------------


def test_a_deleted_users_id_is_never_given_to_another_username(tenants: ObjectStore) -> None:
    tenants.delete("virtual-hosts", 1)
    tenants.delete("unix-users", 1)
    message = refused(tenants, "unix-users", user(1, "mallory"), "id", "'alice'")
    assert "new id" in message


def test_a_deleted_username_is_never_given_to_another_id(tenants: ObjectStore) -> None:
    tenants.delete("virtual-hosts", 1)
    tenants.delete("unix-users", 1)
    refused(tenants, "unix-users", user(3, "alice"), "username", "unix-users/1")


def test_a_deleted_user_may_come_back_as_itself(tenants: ObjectStore) -> None:
    tenants.delete("virtual-hosts", 1)
    tenants.delete("unix-users", 1)
    tenants.put("unix-users", [user(1, "alice")])
    assert tenants.get("unix-users", 1) == UnixUser(id=1, username="alice")


def test_a_batch_may_not_hold_the_same_name_twice(store: ObjectStore) -> None:
    before = stored_state(store)
    with pytest.raises(ValidationFailed, match="username"):
        store.put("unix-users", [user(1, "alice"), user(2, "alice")])
    assert stored_state(store) == before


# -- model rules (issue 11): each decided and tested ------------------------------------


def test_a_one_letter_top_level_domain_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="domain"):
        parse_object("virtual-hosts", vhost(1, 1, "example.c", "/home/a/www"))


def test_an_idn_top_level_domain_in_punycode_is_accepted() -> None:
    site = parse_object("virtual-hosts", vhost(1, 1, "xn--e1afmkfd.xn--p1ai", "/home/a/www"))
    assert isinstance(site, VirtualHost)


def test_debians_www_pool_and_phps_global_section_are_refused() -> None:
    for name in ("www", "global"):
        with pytest.raises(ValidationFailed, match="reserved"):
            parse_object("fpm-pools", pool(1, 1, name))


def test_a_quota_of_zero_is_refused_and_none_means_unlimited() -> None:
    with pytest.raises(ValidationFailed, match="quota_mib"):
        parse_object("mail-accounts", mail(1, quota_mib=0))
    account = parse_object("mail-accounts", mail(1))
    assert isinstance(account, MailAccount) and account.quota_mib is None


def test_a_trailing_slash_is_dropped_so_equal_paths_compare_equal() -> None:
    site = parse_object("virtual-hosts", vhost(1, 1, "a.example.com", "/home/a/www/"))
    assert isinstance(site, VirtualHost) and site.document_root == "/home/a/www"


def test_models_are_frozen() -> None:
    account = UnixUser(id=1, username="alice")
    with pytest.raises(ValueError, match="frozen"):
        account.username = "root"  # type: ignore[misc]


def test_every_reserved_name_is_refused_whatever_its_case() -> None:
    assert all(reserved_name(name.upper()) for name in RESERVED_NAMES)
    assert not reserved_name("alice")


def test_password_hashes_are_crypt_strings_only() -> None:
    for bad in (HASH + "\n", HASH + ":0:0", "plain", HASH.replace("$6$", "$6$%u$")):
        with pytest.raises(ValidationFailed, match="password_hash"):
            parse_object("mail-accounts", mail(1, password_hash=bad))


def test_strings_are_never_coerced_from_other_json_types() -> None:
    with pytest.raises(ValidationFailed, match="php_version"):
        parse_object("fpm-pools", pool(1, 1, "a", php_version=8.2))
    with pytest.raises(ValidationFailed, match="username"):
        parse_object("unix-users", {"id": 1, "username": 123})
    assert FpmPool(id=1, name="a", unix_user_id=1, php_version="8.2")


def test_file_names_from_long_names_fit_and_stay_distinct() -> None:
    from ccm.plan.paths import file_name

    label = "a" * 63
    longest = ".".join([label, label, label, "a" * 57, "com"])
    other = longest[:-3] + "net"
    names = {file_name(longest, ".conf"), file_name(other, ".conf")}
    assert len(names) == 2
    assert all(len(name.encode()) <= 255 and name.endswith(".conf") for name in names)
    assert file_name("shop.example.com", ".conf") == "shop.example.com.conf"


@pytest.mark.parametrize("command", ["*foo", "-q /usr/bin/backup"])
def test_a_cron_command_cron_would_read_otherwise_is_refused(
    tenants: ObjectStore, command: str
) -> None:
    refused(tenants, "crons", cron(1, 1, command=command), "command", "start with")
