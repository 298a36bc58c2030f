"""Secrets never reach a diff, a log, the history or an error.

A file rendered with ``secret=True`` (a Redis config with its ``requirepass``) shows in
``ccm diff`` (text and ``--json``) as keyed fingerprints and the numbers of the lines
that changed; its removal too (the manifest remembers it was secret). Command output
that echoes it (a check printing the config) is redacted before it becomes an error, a
halt record, a history entry or a log line. A model field marked ``Secret`` is never
echoed by the writer's refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
from noderoot import node_settings, seed_root
from pydantic import BaseModel, ConfigDict

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.history import RunHistory
from ccm.cluster.store import ObjectStore
from ccm.daemon.node_run import NodeRun
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import CheckFailed, ValidationFailed
from ccm.models import CcmObject, Secret, Snapshot, parse_object, pattern
from ccm.plan.changes import Change, Check, File
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import describe_json, describe_text
from ccm.plan.secrets import KEY_FILE, Hidden, Redactor, fingerprint, node_key, ranges
from ccm.settings import EtcdSettings, Settings

CONF = "/etc/redis/redis-shop.conf"
PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "staple-monkey-orbit"


def redis_conf(password: str, port: int = 6380) -> str:
    return f"port {port}\nrequirepass {password}\nmaxmemory 64mb\n"


class Keeper(Configuration):
    name = "keeper"
    checks: ClassVar = {"keeper_check": ("true",)}
    changes: ClassVar[list[Change]] = []

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return Keeper.changes


def secret_file(password: str, **more: Any) -> File:
    return File(CONF, redis_conf(password, **more), mode=0o640, secret=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Keeper.changes = []
    return seed_root(tmp_path / "root")


def settings_for(root: Path, **overrides: Any) -> Settings:
    return node_settings(root, logged_checks=(), passing_probes=(), **overrides)


def engine(root: Path, **overrides: Any) -> Engine:
    return Engine(Registry([Keeper]), settings_for(root, **overrides))


def shown(root: Path, revision: int) -> tuple[str, dict[str, Any]]:
    """What ``ccm diff`` prints, as text and as ``--json``."""
    planned = engine(root).plan(Snapshot(revision))
    text = describe_text(planned.operations, manifest=planned.manifest)
    data = describe_json(planned.operations, revision, manifest=planned.manifest)
    return text, data


def key_of(root: Path) -> bytes:
    return (root / "var/lib/ccm" / KEY_FILE).read_bytes()


def mac(root: Path, content: str) -> str:
    digest = hmac.new(key_of(root), content.encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:16]


def assert_hidden(*outputs: str, secrets: Sequence[str] = (PASSWORD, NEW_PASSWORD)) -> None:
    for output in outputs:
        for secret in secrets:
            assert secret not in output


# -- ccm diff ----------------------------------------------------------------------------------


def test_a_new_secret_file_shows_its_fingerprint_and_lines_never_its_content(
    root: Path,
) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    text, data = shown(root, 1)
    after = mac(root, redis_conf(PASSWORD))
    assert text == (
        "# keeper\n"
        f"+ file {CONF} (new; 0640 root:root)\n"
        f"  secret content not shown: (none) -> {after}; new lines 1-3\n"
    )
    change = data["changes"][0]
    assert change["secret"] == {
        "before": None,
        "after": after,
        "added_lines": [1, 2, 3],
        "removed_lines": [],
    }
    assert change["diff"] == text.splitlines(keepends=True)[2]
    assert_hidden(text, json.dumps(data))


def test_a_changed_secret_file_shows_both_fingerprints_and_the_changed_line(
    root: Path,
) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    engine(root).apply(Snapshot(1))
    Keeper.changes = [secret_file(NEW_PASSWORD)]
    text, data = shown(root, 2)
    before, after = mac(root, redis_conf(PASSWORD)), mac(root, redis_conf(NEW_PASSWORD))
    assert before != after
    assert text == (
        "# keeper\n"
        f"~ file {CONF} (content; 0640 root:root)\n"
        f"  secret content not shown: {before} -> {after}; new lines 2, old lines 2\n"
    )
    assert data["changes"][0]["secret"] == {
        "before": before,
        "after": after,
        "added_lines": [2],
        "removed_lines": [2],
    }
    assert_hidden(text, json.dumps(data))


def test_the_fingerprint_is_keyed_so_a_guess_cannot_be_checked_against_it(root: Path) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    _, data = shown(root, 1)
    plain = hashlib.sha256(redis_conf(PASSWORD).encode()).hexdigest()
    assert plain[:16] not in json.dumps(data)
    key = root / "var/lib/ccm" / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_bytes()) == 32
    assert shown(root, 1)[1] == data  # the same key next time: comparable fingerprints


def test_the_removal_of_a_secret_file_never_shows_its_old_content(root: Path) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    engine(root).apply(Snapshot(1))
    manifest = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    assert manifest["configurations"]["keeper"]["secrets"] == [CONF]
    Keeper.changes = []
    text, data = shown(root, 2)
    before = mac(root, redis_conf(PASSWORD))
    assert text == (
        f"# keeper\n- file {CONF}\n  secret content not shown: {before} -> (none); old lines 1-3\n"
    )
    assert data["changes"][0]["operation"] == "remove"
    assert data["changes"][0]["secret"]["before"] == before
    assert_hidden(text, json.dumps(data))
    engine(root).apply(Snapshot(2))
    manifest = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    assert manifest["configurations"] == {}


def test_a_file_that_is_no_longer_secret_still_hides_its_old_content_once(root: Path) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    engine(root).apply(Snapshot(1))
    Keeper.changes = [File(CONF, "port 6380\n", mode=0o640)]
    text, _ = shown(root, 2)
    assert "secret content not shown" in text
    assert_hidden(text)
    engine(root).apply(Snapshot(2))
    Keeper.changes = [File(CONF, "port 6381\n", mode=0o640)]
    text, _ = shown(root, 3)
    assert "-port 6380\n+port 6381\n" in text  # an ordinary file again


def test_a_failed_run_that_made_a_secret_file_ordinary_keeps_it_secret(root: Path) -> None:
    """The file is put back with its secret content: its removal later must hide it."""
    Keeper.changes = [secret_file(PASSWORD)]
    engine(root).apply(Snapshot(1))
    Keeper.changes = [File(CONF, "port 6380\n"), Check("keeper_check", ("/etc/redis/",))]
    with pytest.raises(CheckFailed):
        engine(root, checks={"keeper_check": ["false"]}).apply(Snapshot(2))
    assert (root / CONF.lstrip("/")).read_text() == redis_conf(PASSWORD)
    Keeper.changes = []
    text, _ = shown(root, 3)
    assert "secret content not shown" in text
    assert_hidden(text)


def test_a_secret_file_whose_mode_alone_changes_shows_no_content_line(root: Path) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    engine(root).apply(Snapshot(1))
    Keeper.changes = [File(CONF, redis_conf(PASSWORD), mode=0o600, secret=True)]
    text, data = shown(root, 2)
    assert text == f"# keeper\n~ file {CONF} (mode 0640 -> 0600; 0600 root:root)\n"
    assert data["changes"][0]["diff"] == ""


def test_a_refused_secret_file_stays_secret(root: Path) -> None:
    origin = ("redis-instances/1",)
    Keeper.changes = [File(CONF, redis_conf(PASSWORD), secret=True, origin=origin)]
    engine(root).apply(Snapshot(1))
    (root / "etc/redis/taken.conf").write_text("hand-made\n")
    Keeper.changes = [
        File("/etc/redis/taken.conf", "x\n", origin=origin),
        File(CONF, redis_conf(NEW_PASSWORD), secret=True, origin=origin),
    ]
    report = engine(root).apply(Snapshot(2))
    assert "redis-instances/1" in report.refused
    manifest = json.loads((root / "var/lib/ccm/manifest.json").read_text())
    assert manifest["configurations"]["keeper"]["secrets"] == [CONF]


# -- command output: errors, logs, the history ---------------------------------------------------

#: a check that prints the config it checks, as a config test's error does, and fails
_ECHOING_CHECK = ["sh", "-c", 'echo "bad line:"; cat "$1/etc/redis/redis-shop.conf"; exit 1']


def test_a_check_that_echoes_a_secret_file_fails_without_showing_it(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    Keeper.changes = [secret_file(PASSWORD), Check("keeper_check", ("/etc/redis/",))]
    checks = {"keeper_check": [*_ECHOING_CHECK, "sh", "{root}"]}
    with pytest.raises(CheckFailed) as failed:
        engine(root, checks=checks).apply(Snapshot(1))
    # every line of the secret file goes, not only the password's
    assert failed.value.output == "bad line:\n[secret]\n[secret]\n[secret]\n"
    assert "[secret]" in str(failed.value)
    logs = capfd.readouterr()
    assert_hidden(str(failed.value), failed.value.output, logs.out, logs.err)


def test_the_old_content_of_a_secret_file_is_redacted_too(root: Path) -> None:
    Keeper.changes = [secret_file(PASSWORD)]
    engine(root).apply(Snapshot(1))
    # the check prints the file as it was (a backup of it, say)
    (root / "old.conf").write_text(redis_conf(PASSWORD))
    check = ["sh", "-c", 'cat "$1/old.conf"; exit 1', "sh", "{root}"]
    Keeper.changes = [secret_file(NEW_PASSWORD), Check("keeper_check", ("/etc/redis/",))]
    with pytest.raises(CheckFailed) as failed:
        engine(root, checks={"keeper_check": check}).apply(Snapshot(2))
    assert_hidden(failed.value.output)


def test_history_and_halt_record_what_changed_never_the_secret(
    root: Path, etcd_client: EtcdClient, etcd_settings: EtcdSettings, store: ObjectStore
) -> None:
    settings = settings_for(root, etcd=etcd_settings.model_dump())
    Keeper.changes = [secret_file(PASSWORD), Check("keeper_check", ("/etc/redis/",))]
    outcome = NodeRun(settings, etcd_client, engine(root)).run(full=True)
    assert outcome.result == "success"
    Keeper.changes = [secret_file(NEW_PASSWORD), Check("keeper_check", ("/etc/redis/",))]
    failing = settings_for(
        root,
        etcd=etcd_settings.model_dump(),
        checks={"keeper_check": [*_ECHOING_CHECK, "sh", "{root}"]},
    )
    failing_engine = Engine(Registry([Keeper]), failing)
    outcome = NodeRun(failing, etcd_client, failing_engine).run(full=True)
    assert outcome.result == "failed"
    records = RunHistory(etcd_client, etcd_settings.prefix).read(node="test")
    assert [record.result for record in records] == ["failed", "success"]
    assert records[1].changed == [CONF]
    assert "[secret]" in records[0].error
    halt = NodeRun(failing, etcd_client, failing_engine).halt.get()
    assert halt is not None and "[secret]" in halt.error
    raw = [kv.value.decode() for kv in etcd_client.get_prefix(etcd_settings.prefix)[0]]
    assert_hidden(*raw)


# -- the redactor and the fingerprint helpers ------------------------------------------------------


def test_the_redactor_replaces_lines_and_long_words_longest_first() -> None:
    redact = Redactor({"requirepass hunter2hunter2", "hunter2hunter2", "requirepass"})
    assert redact("x requirepass hunter2hunter2 y") == "x [secret] y"
    assert redact("got hunter2hunter2") == "got [secret]"
    assert redact("nothing here") == "nothing here"
    assert Redactor(set())("requirepass") == "requirepass"
    assert Redactor({"a.b*c(d)"})("x a.b*c(d) axbbc") == "x [secret] axbbc"


def test_only_lines_and_words_of_eight_characters_or_more_are_secret_text() -> None:
    from ccm.plan.secrets import secret_text

    found = secret_text(b"port 1\n  requirepass s3cretpw  \n}\nabcdefg\n")
    assert found == {"requirepass s3cretpw", "requirepass", "s3cretpw"}
    assert secret_text(b"abc defg\n") == {"abc defg"}  # a line of eight, words of less
    assert secret_text(None) == set()


def test_a_secret_file_that_is_not_utf8_is_shown_and_redacted_all_the_same() -> None:
    from ccm.plan.secrets import secret_text

    before, after = b"key \xff\xfe\xfd binary-ish\n", b"key text-only-now\n"
    hidden = Hidden.of(b"k" * 32, before, after)
    assert (hidden.added, hidden.removed) == ((1,), (1,))
    assert secret_text(before) == {"key \ufffd\ufffd\ufffd binary-ish", "binary-ish"}


def test_hidden_lines_number_every_changed_line_on_each_side() -> None:
    key = b"k" * 32
    hidden = Hidden.of(key, b"a\nb\nc\nd\n", b"a\nB\nc\nd\ne\nf\n")
    assert (hidden.added, hidden.removed) == ((2, 5, 6), (2,))
    assert hidden.lines() == [
        f"  secret content not shown: {hidden.before} -> {hidden.after}; "
        "new lines 2, 5-6, old lines 2\n"
    ]
    assert Hidden.of(key, b"a\n", b"a\n").lines() == [
        f"  secret content not shown: {fingerprint(key, b'a' + bytes([10]))} -> "
        f"{fingerprint(key, b'a' + bytes([10]))}\n"
    ]
    assert fingerprint(key, None) is None
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{16}", fingerprint(key, b"") or "")


@pytest.mark.parametrize(
    ("numbers", "text"),
    [((1,), "1"), ((1, 2, 3), "1-3"), ((1, 3), "1, 3"), ((2, 3, 5, 7, 8, 9), "2-3, 5, 7-9")],
)
def test_line_numbers_are_shown_as_runs(numbers: tuple[int, ...], text: str) -> None:
    assert ranges(numbers) == text


def test_a_key_is_made_in_a_state_directory_that_exists_without_one(tmp_path: Path) -> None:
    key = node_key(tmp_path)
    assert (tmp_path / KEY_FILE).read_bytes() == key
    assert len(key) == 32


@pytest.mark.parametrize("where", ["under a file", "a dangling link"])
def test_where_no_key_can_be_made_this_process_gets_its_own(tmp_path: Path, where: str) -> None:
    if where == "under a file":
        (tmp_path / "file").write_text("not a directory")
        directory = tmp_path / "file" / "state"
    else:
        directory = tmp_path / "link"
        directory.symlink_to(tmp_path / "nowhere")
    key = node_key(directory)
    assert len(key) == 32
    assert node_key(directory) == key  # the same within this process
    assert not (tmp_path / "nowhere").exists()


def test_a_key_made_by_another_process_is_read_not_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"x" * 32)
    assert node_key(tmp_path) == b"x" * 32


def test_a_key_cut_short_is_not_used(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"x" * 31)
    key = node_key(tmp_path)
    assert len(key) == 32 and key != b"x" * 31 + key[-1:]
    assert (tmp_path / KEY_FILE).read_bytes() == b"x" * 31


def test_changed_lines_are_found_in_a_long_file_of_repeated_lines() -> None:
    """difflib's "popular line" heuristic would call every line of such a file changed."""
    before = b"same\n" * 150 + b"mid\n" + b"same\n" * 150
    after = b"same\n" * 150 + b"MID\n" + b"same\n" * 150
    hidden = Hidden.of(b"k" * 32, before, after)
    assert (hidden.added, hidden.removed) == ((151,), (151,))


# -- model fields marked Secret --------------------------------------------------------------------

_CRYPT = r"\$6\$[./A-Za-z0-9]{8,16}\$[./A-Za-z0-9]{86}"


@pytest.fixture
def vault_type(registry: None) -> type[CcmObject]:
    class Login(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        username: Annotated[str, pattern("[a-z]+", "a lower-case name")]
        password_hash: Annotated[str, Secret, pattern(_CRYPT, "a SHA-512 crypt hash")]

    class Vault(CcmObject):
        TYPE: ClassVar[str] = "test-vaults"
        name: Annotated[str, pattern("[a-z]+", "a lower-case name")]
        password: Annotated[str, Secret, pattern("[a-z0-9-]{16,64}", "16 to 64 of a-z0-9-")]
        backup_password: Annotated[str, Secret, pattern("[a-z]{8}", "8 of a-z")] | None = None
        logins: list[Login] = []

    return Vault


BAD = {
    "id": 1,
    "name": "Bad",
    "password": "Hunter2 is my\npassword",
    "backup_password": "OtherSecret1",
    "logins": [{"username": "Bob", "password_hash": "plaintext-pw-1"}],
}


def test_the_fields_marked_secret_are_listed(vault_type: type[CcmObject]) -> None:
    assert vault_type.SECRETS == frozenset({"password", "backup_password"})


def test_a_refusal_names_each_secret_field_and_never_echoes_its_value(
    vault_type: type[CcmObject],
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("test-vaults", BAD)
    assert refused.value.problems == [
        "test-vaults/1: name: Value error, 'Bad' is not a lower-case name",
        "test-vaults/1: password: Value error, '<secret>' is not 16 to 64 of a-z0-9-",
        "test-vaults/1: backup_password: Value error, '<secret>' is not 8 of a-z",
        "test-vaults/1: logins.0.username: Value error, 'Bob' is not a lower-case name",
        "test-vaults/1: logins.0.password_hash: Value error, '<secret>' is not a SHA-512 "
        "crypt hash",
    ]
    assert_hidden(str(refused.value), secrets=("Hunter2", "OtherSecret1", "plaintext-pw-1"))


def test_the_store_refuses_a_secret_without_echoing_it(
    vault_type: type[CcmObject], store: ObjectStore
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        store.put("test-vaults", [BAD])
    assert "password: Value error, '<secret>'" in str(refused.value)
    assert_hidden(str(refused.value), secrets=("Hunter2", "OtherSecret1", "plaintext-pw-1"))


def test_a_secret_of_another_type_than_a_string_is_refused_without_a_value(
    vault_type: type[CcmObject],
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("test-vaults", {"id": 1, "name": "a", "password": 12345678901234567})
    assert refused.value.problems == ["test-vaults/1: password: Input should be a valid string"]
