"""``ftp-users`` with Debian's real ProFTPD: write-time rules, the rendered files under the
real ``proftpd -t``, and a real server that a tenant logs in to.

The node is driven through the real ``ccm`` command (accounts by ``useradd --prefix``
under its root); its ``proftpd_check`` is the real ``proftpd -t`` on Debian's
configuration with ccm's snippet included (``tests/proftpd_server.py``). Then ProFTPD
itself runs those files on a free loopback port: the tenant logs in with its password,
lands in ``directory_path``, cannot leave it, and what it uploads is the tenant's uid's.
The tenant's uid exists only in the node root's ``etc/passwd``, which ProFTPD never
reads: it takes uid, gid and home from ccm's AuthUserFile.
"""

from __future__ import annotations

import ftplib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from proftpd_server import PROFTPD, PROFTPD_CHECK, FtpServer, check, proftpd_server

from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CcmError, PlanError
from ccm.models import Node, Snapshot
from ccm.plan.changes import Check, File, UnitAction
from ccm.plan.templates import TemplateRenderer, package_templates
from ccm.settings import Settings
from ccm.testing import CcmNode
from ccm.testing.noderoot import node_settings, seed_root
from configurations.ftp_users import CONFIG_FILE, USERS_FILE, FtpUser, ProftpdUsers
from configurations.unix_users import UnixUser

pytestmark = pytest.mark.skipif(not Path(PROFTPD).exists(), reason="Debian's proftpd-core")

UID_BASE = 20000
ALICE_UID = UID_BASE + 1


@cache
def crypt(password: str, salt: str = "ccmtests") -> str:
    """A real SHA-512 crypt hash (OpenSSL's ``passwd -6``; Python's crypt is deprecated)."""
    return subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, password],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip


SHA512 = "$6$saltsalt$" + "A" * 86


def ftp_user(
    id: int = 1, username: str = "alice-web", owner: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "id": id,
        "username": username,
        "unix_user_id": owner,
        "password_hash": SHA512,
        "directory_path": "/home/alice/www",
        **extra,
    }


# --- write-time rules (the real writer, a real etcd) -------------------------------------


def stored(store: ObjectStore) -> dict[str, int]:
    kvs, _ = store.client.get_prefix(store.prefix + "/")
    return {kv.key: kv.mod_revision for kv in kvs}


@pytest.fixture
def tenants(store: ObjectStore) -> ObjectStore:
    store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    return store


def refused(store: ObjectStore, raw: dict[str, Any], *reasons: str) -> str:
    """Put ``raw``: refused naming the object, each reason; nothing stored, no hash shown."""
    before = stored(store)
    with pytest.raises(CcmError) as caught:
        store.put("ftp-users", [raw])
    text = str(caught.value)
    assert f"ftp-users/{raw['id']}" in text, text
    for reason in reasons:
        assert reason in text, text
    assert not raw["password_hash"] or raw["password_hash"] not in text
    assert stored(store) == before
    return text


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("username", 'al"ice', "a login of a-z"),
        ("username", "al'ice", "a login of a-z"),
        ("username", "..", "a login of a-z"),
        ("username", "a:b", "a login of a-z"),
        ("username", "alice\n", "a login of a-z"),
        ("username", "ali\x00ce", "a login of a-z"),
        ("username", "alice\u2028x", "a login of a-z"),
        ("username", "Alice", "a login of a-z"),
        ("username", "a" * 65, "at most 64"),
        ("username", "root", "reserved"),
        ("username", "anonymous", "reserved"),
        ("username", "ftp", "reserved"),
        ("directory_path", "/home/alice/../bob", "normalised path"),
        ("directory_path", "/home/alice/www/..", "normalised path"),
        ("directory_path", "/home/bob/www", "not inside the home of 'alice'"),
        ("directory_path", "/home/bob", "not inside the home of 'alice'"),
        ("directory_path", "/home/alicex/www", "not inside the home of 'alice'"),
        ("directory_path", "/home", "not inside the home of 'alice'"),
        ("directory_path", "/var/www", "not inside the home of 'alice'"),
        ("directory_path", "/", "not inside the home of 'alice'"),
        ("directory_path", "home/alice/www", "an absolute path"),
        ("directory_path", "/home/alice/w w", "an absolute path"),
        ("directory_path", "/home/alice/w:w", "an absolute path"),
        ("directory_path", '/home/alice/"w"', "an absolute path"),
        ("directory_path", "/home/alice/www\n", "an absolute path"),
        ("directory_path", "/home/alice/w\x01w", "an absolute path"),
        ("directory_path", "/home/alice/" + "d" * 1100, "a path has at most 1024"),
        ("directory_path", "/home/alice" + ("/" + "d" * 191) * 4, "779 characters: at most 768"),
        ("unix_user_id", 3, "unix-users/3"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    tenants: ObjectStore, field: str, value: Any, reason: str
) -> None:
    text = refused(tenants, ftp_user(**{field: value}), reason)
    assert field in text


@pytest.mark.parametrize(
    "password_hash",
    [
        "{PLAIN}secret-password",
        "secret-password",
        "{SHA512-CRYPT}" + SHA512,  # Dovecot's form: ProFTPD's crypt() would never match
        "$1$saltsalt$" + "A" * 22,  # MD5 crypt
        "$2y$10$" + "b" * 53,  # bcrypt
        "$5$saltsalt$" + "A" * 43,  # SHA-256 crypt
        "$6$saltsalt$" + "A" * 85,
        "$6$rounds=999999999$saltsalt$" + "A" * 86,  # minutes of CPU per login attempt
        "$6$rounds=999$saltsalt$" + "A" * 86,
        SHA512 + "\nroot::0:0::/:/bin/sh",
        SHA512 + ":0:0",
        "",
    ],
)
def test_only_sha512_crypt_is_taken_and_never_echoed(
    tenants: ObjectStore, password_hash: str
) -> None:
    text = refused(tenants, ftp_user(password_hash=password_hash), "password_hash", "SHA-512")
    assert "secret-password" not in text


@pytest.mark.parametrize(
    "password_hash", [SHA512, "$6$rounds=5000$salt$" + "x" * 86, crypt("correct horse")]
)
def test_sha512_crypt_hashes_are_taken(tenants: ObjectStore, password_hash: str) -> None:
    tenants.put("ftp-users", [ftp_user(password_hash=password_hash)])


def test_a_login_names_one_tenant_across_the_cluster(tenants: ObjectStore) -> None:
    tenants.put("ftp-users", [ftp_user(1, "shop")])
    text = refused(
        tenants,
        ftp_user(2, "shop", owner=2, directory_path="/home/bob/shop"),
        "username: 'shop' is already used by ftp-users/1",
    )
    assert "bob" not in text.split("already used")[0].split("ftp-users/2")[0]
    refused(tenants, ftp_user(3, "shop"), "already used by ftp-users/1")  # its own owner too
    tenants.put("ftp-users", [ftp_user(2, "bob-shop", owner=2, directory_path="/home/bob/shop")])
    # the home itself is inside it
    tenants.put("ftp-users", [ftp_user(4, "alice-all", directory_path="/home/alice")])


def test_a_tenant_with_ftp_users_cannot_be_deleted(tenants: ObjectStore) -> None:
    tenants.put("ftp-users", [ftp_user()])
    before = stored(tenants)
    with pytest.raises(CcmError, match="ftp-users/1"):
        tenants.delete("unix-users", 1)
    assert stored(tenants) == before


# --- planning -------------------------------------------------------------------------------


def plan(objects: list[Any], *, uid_base: int = UID_BASE, node: str = "test") -> list[Any]:
    settings = node_settings(Path("/nonexistent"), accounts={"uid_base": uid_base})
    render = TemplateRenderer(package_templates(ProftpdUsers), globals={"node_settings": settings})
    return list(ProftpdUsers().plan(Snapshot.of(1, objects).viewed_from(node), render))


ALICE = UnixUser(id=1, username="alice")
BOB = UnixUser(id=2, username="bob")


def users_lines(changes: list[Any]) -> list[str]:
    (users,) = [c for c in changes if isinstance(c, File) and c.path == USERS_FILE]
    return [line for line in users.content.splitlines() if not line.startswith("#")]


def test_the_users_file_is_complete_sorted_and_the_tenants_uid() -> None:
    objects = [
        ALICE,
        BOB,
        FtpUser.model_validate(ftp_user(1, "zz-alice")),
        FtpUser.model_validate(ftp_user(2, "bob", owner=2, directory_path="/home/bob/a/b")),
        FtpUser.model_validate(ftp_user(3, "alice", directory_path="/home/alice")),
    ]
    changes = plan(objects)
    assert users_lines(changes) == [
        f"alice:{SHA512}:20001:20001::/home/alice:/usr/sbin/nologin",
        f"bob:{SHA512}:20002:20002::/home/bob/a/b:/usr/sbin/nologin",
        f"zz-alice:{SHA512}:20001:20001::/home/alice/www:/usr/sbin/nologin",
    ]
    # the node's uid_base, read from its settings as the accounts are made
    assert users_lines(plan(objects, uid_base=30000))[0].split(":")[2:4] == ["30001", "30001"]
    users, config, checked, reload = changes
    assert (users.mode, users.owner, users.group, users.secret) == (0o600, "root", "root", True)
    assert users.origin == (
        "ftp-users/1", "ftp-users/2", "ftp-users/3", "unix-users/1", "unix-users/2",
    )  # fmt: skip
    assert config.path == CONFIG_FILE and config.origin == users.origin
    assert "AuthUserFile /etc/proftpd/ccm.passwd\n" in config.content
    assert checked == Check("proftpd_check", triggers=(USERS_FILE, CONFIG_FILE))
    # a new user needs no reload: each session reads the file (test_a_tenant_logs_in…)
    assert reload == UnitAction("proftpd", "reload", triggers=(CONFIG_FILE,))


def test_the_uid_is_never_guessed_without_the_nodes_settings() -> None:
    render = TemplateRenderer(package_templates(ProftpdUsers), configuration="proftpd-users")
    objects = [ALICE, FtpUser.model_validate(ftp_user())]
    with pytest.raises(PlanError, match="node_settings"):
        ProftpdUsers().plan(Snapshot.of(1, objects), render)


def test_an_unregistered_node_without_ftp_users_gets_nothing_a_proftpd_node_gets_both() -> None:
    assert plan([ALICE]) == []
    proftpd_node = Node(id=1, hostname="ftp1", groups=["proftpd"])
    changes = plan([ALICE, proftpd_node], node="ftp1")
    assert [c.path for c in changes if isinstance(c, File)] == [USERS_FILE, CONFIG_FILE]
    assert users_lines(changes) == []


def test_the_longest_line_the_writer_takes_is_one_proftpd_reads(tmp_path: Path) -> None:
    """A 768-character path with the longest login, hash and uid: one line ProFTPD parses
    (a path of 1,000 was accepted once and split by ProFTPD's 1,023-byte line reader)."""
    owner = UnixUser(id=147_483_646, username="u" * 32)
    longest = FtpUser.model_validate(
        {
            "id": 1,
            "username": "f" * 64,
            "unix_user_id": owner.id,
            "password_hash": "$6$rounds=100000$" + "s" * 16 + "$" + "h" * 86,
            "directory_path": (owner.home + ("/" + "d" * 199) * 4)[:768],
        }
    )
    assert len(longest.directory_path) == 768
    for change in plan([owner, longest], uid_base=2_000_000_000):
        if isinstance(change, File):
            target = tmp_path / change.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(change.content)
            target.chmod(change.mode)
    (line,) = users_lines(plan([owner, longest], uid_base=2_000_000_000))
    assert line.split(":")[2] == str(2**31 - 2) and len(line) == 227 + 768 <= 1023
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr


# --- a node: the real ccm, the real proftpd -t ---------------------------------------------


@pytest.fixture
def node(ccm_settings: Settings, tmp_path: Path) -> CcmNode:
    """A node whose ``proftpd_check`` is the real ``proftpd -t``."""
    checks = {**ccm_settings.checks, "proftpd_check": tuple(PROFTPD_CHECK)}
    return CcmNode(ccm_settings.model_copy(update={"checks": checks}), tmp_path / "ccm.toml")


def put_tenants(node: CcmNode) -> None:
    node.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    node.put(
        "ftp-users",
        [
            ftp_user(1, "alice-web", password_hash=crypt("alice's secret")),
            ftp_user(2, "bob-web", owner=2, password_hash=crypt("bob's secret", "othersalt"),
                     directory_path="/home/bob/www"),
        ],
    )  # fmt: skip


def test_the_rendered_files_pass_proftpd_and_a_broken_one_does_not(node: CcmNode) -> None:
    put_tenants(node)
    node.apply("--all")
    users = node.path(USERS_FILE)
    assert (users.stat().st_mode & 0o777, users.stat().st_uid) == (0o600, 0)
    lines = [line for line in users.read_text().splitlines() if not line.startswith("#")]
    assert [line.split(":")[0] for line in lines] == ["alice-web", "bob-web"]
    assert check(node.root).returncode == 0
    assert node.actions().count("check proftpd_check") == 0  # the real check ran, not a log
    assert node.actions().count("reload proftpd") == 1
    # the check can fail: world-readable, or a line ProFTPD cannot parse
    users.chmod(0o644)
    readable = check(node.root)
    assert readable.returncode != 0 and "AuthUserFile" in readable.stderr
    users.chmod(0o600)
    users.write_text(users.read_text() + "\n")
    assert "Malformed entry" in check(node.root).stderr


def test_a_failing_check_leaves_the_users_file_as_it_was(node: CcmNode) -> None:
    put_tenants(node)
    node.apply("--all")
    before = node.read(USERS_FILE)
    node.put("ftp-users", [ftp_user(3, "alice-new", directory_path="/home/alice/new")])
    # anyone could replace the users file in a world-writable directory: ProFTPD refuses it
    node.path("/etc/proftpd").chmod(0o777)
    failed = node.apply(check=False)
    assert failed.returncode != 0
    assert "world-writable" in failed.stdout + failed.stderr
    assert node.read(USERS_FILE) == before
    assert node.actions().count("reload proftpd") == 1


def test_the_check_refuses_a_snippet_proftpd_cannot_read(node: CcmNode) -> None:
    """An operator's template (``templates_dir``) with a typo: checked on its own, the
    snippet fails (ProFTPD's ``-t`` on the main config would skip the broken include)."""
    put_tenants(node)
    node.apply("--all")
    config = node.path(CONFIG_FILE)
    config.write_text(config.read_text() + "DefaultRooot ~\n")
    result = check(node.root)
    assert result.returncode != 0 and "DefaultRooot" in result.stderr


def test_hashes_never_reach_a_diff(node: CcmNode) -> None:
    put_tenants(node)
    hashes = [crypt("alice's secret"), crypt("bob's secret", "othersalt")]
    for args in ((), ("--json",)):
        result = node.diff(*args)
        shown = result.stdout + result.stderr
        assert "etc/proftpd/ccm.passwd" in shown
        assert not any(h in shown or h.split("$")[-1][:20] in shown for h in hashes)
    node.apply("--all")
    node.put("ftp-users", [ftp_user(1, "alice-web", password_hash=crypt("new one"))])
    changed = node.diff("--json")
    assert json.loads(changed.stdout)
    assert crypt("new one").split("$")[-1][:20] not in changed.stdout + changed.stderr


# --- a real ProFTPD on those files ---------------------------------------------------------


@pytest.fixture
def served(node: CcmNode, tmp_path: Path) -> Iterator[tuple[CcmNode, FtpServer]]:
    """alice's and bob's FTP users applied, alice's www with a file of hers; ProFTPD on it."""
    put_tenants(node)
    node.apply("--all")
    www = node.path("/home/alice/www")
    www.mkdir()
    (www / "index.html").write_text("alice's site\n")
    bob_www = node.path("/home/bob/www")
    bob_www.mkdir()
    (bob_www / "private.txt").write_text("bob's\n")
    for path, uid in (
        (www, ALICE_UID),
        (www / "index.html", ALICE_UID),
        (bob_www, ALICE_UID + 1),
        (bob_www / "private.txt", ALICE_UID + 1),
    ):
        os.chown(path, uid, uid)  # fmt: skip
    # a link a tenant may plant: inside the chroot it points nowhere
    (www / "escape").symlink_to("/home/bob/www")
    with proftpd_server(node.root, tmp_path / "proftpd") as server:
        try:
            yield node, server
        finally:
            print(server.log_text())


def login(server: FtpServer, user: str, password: str) -> ftplib.FTP:
    client = ftplib.FTP()
    try:
        client.connect("127.0.0.1", server.port, timeout=10)
        client.login(user, password)
    except BaseException:
        client.close()
        raise
    return client


def test_a_tenant_logs_in_lands_in_its_directory_and_cannot_leave(
    served: tuple[CcmNode, FtpServer],
) -> None:
    node, server = served
    client = login(server, "alice-web", "alice's secret")
    try:
        assert client.pwd() == "/"  # the chroot is directory_path
        # the planted link points nowhere inside the chroot: not even listed
        assert client.nlst() == ["index.html"]
        client.cwd("..")
        assert client.pwd() == "/" and client.nlst() == ["index.html"]
        for outside in ("/home/bob/www", "/home/alice", "/etc", "escape"):
            with pytest.raises(ftplib.error_perm, match="550"):
                client.cwd(outside)
        with pytest.raises(ftplib.error_perm, match="550"):
            client.retrbinary("RETR ../bob/www/private.txt", lambda data: None)
        client.storbinary("STOR upload.txt", io.BytesIO(b"from alice\n"))
        client.mkd("sub")
    finally:
        client.quit()
    upload = node.path("/home/alice/www/upload.txt")
    assert upload.read_bytes() == b"from alice\n"
    assert (upload.stat().st_uid, upload.stat().st_gid) == (ALICE_UID, ALICE_UID)
    assert node.path("/home/alice/www/sub").stat().st_uid == ALICE_UID


def test_a_wrong_password_or_another_tenants_password_is_refused(
    served: tuple[CcmNode, FtpServer],
) -> None:
    _, server = served
    for user, password in (
        ("alice-web", "wrong"),
        ("alice-web", "bob's secret"),
        ("alice-web", ""),
        ("alice", "alice's secret"),  # the tenant's account is no FTP login
        ("root", "alice's secret"),
    ):
        with pytest.raises(ftplib.error_perm, match="530"):
            login(server, user, password).quit()
    login(server, "bob-web", "bob's secret").quit()


def test_a_user_added_later_logs_in_without_a_reload_into_a_new_directory(
    served: tuple[CcmNode, FtpServer],
) -> None:
    node, server = served
    node.put(
        "ftp-users",
        [ftp_user(3, "alice-blog", password_hash=crypt("blog pass"),
                  directory_path="/home/alice/blog/public")],
    )  # fmt: skip
    node.apply()
    assert node.actions().count("reload proftpd") == 1  # the first run's only
    assert not node.path("/home/alice/blog").exists()
    client = login(server, "alice-blog", "blog pass")
    try:
        assert client.pwd() == "/" and client.nlst() == []
    finally:
        client.quit()
    made = node.path("/home/alice/blog/public")
    for path in (made, made.parent):  # made at the login, by the tenant, not by root
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (ALICE_UID, 0o755)


def test_a_directory_path_through_a_tenants_symlink_is_never_entered(
    served: tuple[CcmNode, FtpServer],
) -> None:
    """ProFTPD chroots as root: a link the tenant made where its directory_path points
    (inside its home, so the writer accepts it) must not lead into another home."""
    node, server = served
    node.path("/home/alice/link").symlink_to("/home/bob/www")
    node.path("/home/alice/hop").symlink_to("/home/bob")
    node.put(
        "ftp-users",
        [
            ftp_user(3, "alice-link", password_hash=crypt("p1"), directory_path="/home/alice/link"),
            ftp_user(
                4, "alice-hop", password_hash=crypt("p2"), directory_path="/home/alice/hop/www"
            ),
        ],
    )
    node.apply()
    # even a home its tenant opened up (0755): ProFTPD would chroot there as root
    node.path("/home/bob").chmod(0o755)
    for user, password in (("alice-link", "p1"), ("alice-hop", "p2")):
        with pytest.raises(ftplib.error_perm, match="530"):
            login(server, user, password).quit()


def test_a_system_account_with_a_password_never_logs_in(node: CcmNode, tmp_path: Path) -> None:
    """Only ccm's AuthUserFile counts (``AuthOrder mod_auth_file.c``): a login of the node
    itself, with a password PAM and ``/etc/shadow`` would take, is refused."""
    put_tenants(node)
    node.apply("--all")
    etc = node.path("/etc")
    (etc / "passwd").write_text(
        (etc / "passwd").read_text() + "staffer:x:1500:1500::/home/staffer:/bin/sh\n"
    )
    (etc / "group").write_text((etc / "group").read_text() + "staffer:x:1500:\n")
    (etc / "shadow").write_text(
        (etc / "shadow").read_text() + f"staffer:{crypt('staff pass')}:19000:0:99999:7:::\n"
    )
    node.path("/home/staffer").mkdir()
    os.chown(node.path("/home/staffer"), 1500, 1500)
    with proftpd_server(node.root, tmp_path / "proftpd", accounts=True) as server:
        with pytest.raises(ftplib.error_perm, match="530"):
            login(server, "staffer", "staff pass").quit()
        login(server, "bob-web", "bob's secret").quit()


# --- a tenant this node refuses -------------------------------------------------------------


def test_a_refused_tenant_never_gets_an_ftp_login_on_that_node(tmp_path: Path) -> None:
    """A login ``alice`` that ccm did not make exists on this node: the tenant ``alice`` is
    refused here, and no FTP login with its uid into that person's home is written."""
    root = seed_root(tmp_path / "root")
    passwd = root / "etc/passwd"
    passwd.write_text(passwd.read_text() + "alice:x:1500:1500::/home/alice:/bin/sh\n")
    settings = node_settings(root, checks={"proftpd_check": PROFTPD_CHECK})
    objects = [
        ALICE,
        BOB,
        FtpUser.model_validate(ftp_user(1, "alice-web", password_hash=crypt("a"))),
        FtpUser.model_validate(
            ftp_user(2, "bob-web", owner=2, directory_path="/home/bob", password_hash=crypt("b"))
        ),
    ]
    report = Engine(Registry.from_entry_points(), settings).apply(Snapshot.of(1, objects))
    assert {"unix-users/1", "ftp-users/1"} <= set(report.refused)
    assert "ftp-users/2" not in report.refused
    assert not (root / USERS_FILE.lstrip("/")).exists()
    assert not (root / CONFIG_FILE.lstrip("/")).exists()
