"""The command line against a real etcd and a temporary root: exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from ccm.cli.main import cli
from ccm.cluster.store import ObjectStore
from ccm.settings import EtcdSettings
from ccm.testing.noderoot import node_settings, seed_root


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; in-process runs must not leak it
    (a WARNING filter left behind would hide the INFO events other tests capture)."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def config(tmp_path: Path, etcd_settings: EtcdSettings) -> Path:
    root = seed_root(tmp_path / "root")
    settings = node_settings(root)
    commands = {
        name: list(argv)
        for name, argv in settings.commands.model_dump().items()
        if name != "timeout"
    }
    path = tmp_path / "ccm.toml"
    path.write_text(
        f'node = "cli"\nroot = "{root}"\n'
        f"[etcd]\nendpoints = {json.dumps(list(etcd_settings.endpoints))}\n"
        f'prefix = "{etcd_settings.prefix}"\n'
        "[commands]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in commands.items())
        + "[checks]\n"
        + "".join(f"{k} = {json.dumps(list(v))}\n" for k, v in settings.checks.items())
        + "[probes]\n"
        + "".join(f"{k} = {json.dumps(list(v))}\n" for k, v in settings.probes.items())
    )
    return path


def ccm(config: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], input=stdin)


def put(config: Path, type_name: str, objects: Any) -> Result:
    return ccm(config, "objects", "put", type_name, "-", stdin=json.dumps(objects))


def test_diff_exit_codes_follow_the_plan(config: Path) -> None:
    assert put(config, "unix-users", [{"id": 1, "username": "alice"}]).exit_code == 0
    vhost = {
        "id": 1,
        "domain": "alice.example.com",
        "unix_user_id": 1,
        "document_root": "/home/alice/www",
    }
    assert put(config, "virtual-hosts", vhost).exit_code == 0

    preview = ccm(config, "diff")
    assert preview.exit_code == 2, preview.output
    assert "+ account alice" in preview.output
    assert "+++ b/etc/nginx/sites-enabled/alice.example.com.conf" in preview.output
    assert "! reload nginx" in preview.output

    as_json = json.loads(ccm(config, "diff", "--json", "--type", "virtual-hosts").output)
    assert {c["path"] for c in as_json["changes"]} == {
        "/etc/nginx/sites-enabled/alice.example.com.conf",
        "/etc/nginx/sites-enabled/ccm-default.conf",
    }
    assert as_json["actions"] == ["check nginx_check", "reload nginx", "probe nginx_probe"]

    applied = ccm(config, "apply")
    assert applied.exit_code == 0, applied.output
    assert "/etc/nginx/sites-enabled/alice.example.com.conf" in applied.output
    # progress on stderr, as plain lines (not a terminal): each configuration's start, end
    assert "unix-users: 0/" in applied.stderr and "nginx-vhosts: 0/2" in applied.stderr
    assert "nginx-vhosts: 2/2" in applied.stderr
    assert "nginx-vhosts" not in applied.stdout
    quiet = ccm(config, "diff")
    assert quiet.exit_code == 0 and quiet.output.startswith("no changes"), quiet.output


def test_refusals_exit_1_name_the_problem_and_store_nothing(
    config: Path, store: ObjectStore
) -> None:
    bad = put(
        config,
        "crons",
        {"id": 1, "unix_user_id": 1, "name": "x", "schedule": "* * * * *", "command": "a\nb"},
    )
    assert bad.exit_code == 1
    assert "crons/1: command" in bad.output and "nothing was stored" in bad.output
    dangling = put(
        config,
        "crons",
        {"id": 1, "unix_user_id": 9, "name": "x", "schedule": "@daily", "command": "true"},
    )
    assert dangling.exit_code == 1 and "unix-users/9" in dangling.output
    assert store.list("crons") == []

    assert put(config, "unix-users", {"id": 1, "username": "alice"}).exit_code == 0
    cron = {"id": 1, "unix_user_id": 1, "name": "x", "schedule": "@daily", "command": "true"}
    assert put(config, "crons", cron).exit_code == 0
    refused = ccm(config, "objects", "delete", "unix-users", "1")
    assert refused.exit_code == 1 and "crons/1" in refused.output
    assert ccm(config, "objects", "get", "unix-users", "1").exit_code == 0
    assert json.loads(ccm(config, "objects", "list", "crons").output)[0]["name"] == "x"
    assert ccm(config, "objects", "delete", "crons", "1").exit_code == 0
    missing = ccm(config, "objects", "get", "crons", "1")
    assert missing.exit_code == 1 and "crons/1 does not exist" in missing.output
    unknown = ccm(config, "objects", "put", "widgets", "-", stdin="{}")
    assert unknown.exit_code == 2 and "widgets" in unknown.output
    not_json = ccm(config, "objects", "put", "crons", "-", stdin="{nope")
    assert not_json.exit_code == 1 and "not valid JSON" in not_json.output


def test_halt_blocks_apply_until_resume(config: Path) -> None:
    assert ccm(config, "halt", "--reason", "maintenance window").exit_code == 0
    status = json.loads(ccm(config, "status", "--json").output)
    assert status["halt"]["error"] == "maintenance window"
    blocked = ccm(config, "apply")
    assert blocked.exit_code == 1 and "halted" in blocked.output
    assert "HALTED" in ccm(config, "status").output
    assert ccm(config, "resume").output.strip() == "resumed"
    assert ccm(config, "apply").exit_code == 0
    assert ccm(config, "resume").output.strip() == "the halt flag was not set"


def test_a_failing_check_sets_the_halt_flag_and_exits_1(config: Path) -> None:
    text = config.read_text().replace('nginx_check = ["sh"', 'nginx_check = ["false", "sh"')
    config.write_text(text)
    put(config, "unix-users", {"id": 1, "username": "alice"})
    put(
        config,
        "virtual-hosts",
        {"id": 1, "domain": "a.example.com", "unix_user_id": 1, "document_root": "/home/alice/www"},
    )
    failed = ccm(config, "apply")
    assert failed.exit_code == 1 and "nginx-vhosts" in failed.output
    halt = json.loads(ccm(config, "status", "--json").output)["halt"]
    assert halt["node"] == "cli" and halt["configuration"] == "nginx-vhosts"


def test_bad_settings_exit_1_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "ccm.toml"
    path.write_text("[debounce]\nquiet = -1\n")
    result = ccm(path, "status")
    assert result.exit_code == 1 and "debounce.quiet" in result.output


@pytest.mark.parametrize(
    "content",
    [b"root = '/etc/passwd'\n", b"root = '/no/such/root'\n", b"node = '\xff'\n",
     b"[lock]\nttl = '30'\n"],
)  # fmt: skip
def test_bad_settings_are_one_line_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ccm.toml"
    path.write_bytes(content)
    for command in ("status", "diff", "apply", "daemon"):
        result = ccm(path, command)
        assert result.exit_code == 1, (command, result.output)
        assert result.output.startswith("error: settings: ")
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
        assert not isinstance(result.exception, SystemExit) or result.exception.code == 1


def test_graph_lists_configurations_in_run_order() -> None:
    output = CliRunner().invoke(cli, ["graph"]).output
    assert output.index("unix-users") < output.index("crontabs")
    assert output.index("php-fpm-pools") < output.index("nginx-vhosts")
    assert "subscribes: virtual-hosts" in output


def test_deleting_an_object_removes_what_it_produced_and_nothing_else(config: Path) -> None:
    put(config, "unix-users", [{"id": 1, "username": "alice"}])
    put(
        config,
        "virtual-hosts",
        [
            {
                "id": 1,
                "domain": "a.example.com",
                "unix_user_id": 1,
                "document_root": "/home/alice/a",
            },
            {
                "id": 2,
                "domain": "b.example.com",
                "unix_user_id": 1,
                "document_root": "/home/alice/b",
            },
        ],
    )
    assert ccm(config, "apply").exit_code == 0
    root = Path(config.read_text().split('root = "')[1].split('"')[0])
    sites = root / "etc/nginx/sites-enabled"
    (sites / "hand-made.conf").write_text("# not ccm's\n")
    assert ccm(config, "objects", "delete", "virtual-hosts", "2").exit_code == 0
    preview = ccm(config, "diff")
    assert preview.exit_code == 2 and "- file /etc/nginx/sites-enabled/b.example.com.conf" in (
        preview.output
    )
    assert ccm(config, "apply").exit_code == 0
    assert sorted(p.name for p in sites.iterdir()) == [
        "a.example.com.conf",
        "ccm-default.conf",
        "hand-made.conf",
    ]


#: what `ccm --help` must not import: together ~0.3 s of start-up (issue: ≤ 0.15 s)
HEAVY = ("pydantic", "grpc", "pyetcd", "networkx", "jinja2", "structlog", "configurations")


@pytest.mark.parametrize("argv", [["--help"], ["diff", "--help"], ["objects", "put", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    """`--help` loads click and ccm's error classes only; a command imports what it
    needs when it runs (`benchmarks/startup.py` prints the times)."""
    code = (
        "import sys\n"
        "from ccm.cli.main import main\n"
        f"sys.argv = ['ccm', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "Usage: ccm" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_objects_get_and_list_hide_secret_fields_unless_asked(config: Path) -> None:
    password = "s3cret-redis-password-0123456789"
    instance = {"id": 1, "name": "cache", "port": 16379, "password": password}
    assert put(config, "redis-instances", {**instance, "memory_limit_mib": 64}).exit_code == 0
    for args in (("get", "redis-instances", "1"), ("list", "redis-instances")):
        hidden = ccm(config, "objects", *args)
        assert hidden.exit_code == 0, hidden.output
        assert password not in hidden.output
        assert '"password": "[secret]"' in hidden.output
        assert '"port": 16379' in hidden.output  # the rest as stored
        shown = ccm(config, "objects", *args, "--show-secrets")
        assert f'"password": "{password}"' in shown.output
