"""``ccm.testing``: what its fixtures promise a plugin's tests.

The etcd is stopped when the session ends even after a failing test, and a missing etcd
fails the tests that need it instead of skipping them (both seen from a pytest run of
its own, as a plugin author's would be). The settings file the real ``ccm`` command
reads is the settings the test built, and no command in them reaches the machine.
``ccm_node`` drives the installed command against a real etcd and a temporary root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ccm.testing
from ccm.settings import CommandSettings, Settings, load_settings
from ccm.testing import CcmCommandFailed, CcmNode, node_settings, seed_root, write_settings
from ccm.testing.noderoot import logging_command

ALICE = {"id": 1, "username": "alice"}
VHOST = {
    "id": 1,
    "domain": "alice.example.com",
    "unix_user_id": 1,
    "document_root": "/home/alice/www",
}


def inner_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on ``directory`` in a process of its own, as a plugin's author runs it."""
    (directory / "pytest.ini").write_text("[pytest]\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CCM_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
        cwd=directory, env=environ, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip


def test_the_session_etcd_is_stopped_even_when_a_test_fails(tmp_path: Path) -> None:
    record = tmp_path / "record"
    (tmp_path / "test_failing.py").write_text(
        "from pathlib import Path\n"
        "def test_fails(ccm_etcd_server):\n"
        f"    Path({str(record)!r}).write_text("
        "f'{ccm_etcd_server.pid} {ccm_etcd_server.base_dir}')\n"
        "    assert False, 'this test fails on purpose'\n"
    )
    # after the session's teardown, while pytest (etcd's parent) still runs
    (tmp_path / "conftest.py").write_text(
        "import os\nfrom pathlib import Path\n"
        "def pytest_sessionfinish(session):\n"
        f"    path = Path({str(record)!r})\n"
        "    pid, base_dir = path.read_text().split()\n"
        "    try:\n        os.kill(int(pid), 0)\n        alive = 'alive'\n"
        "    except ProcessLookupError:\n        alive = 'gone'\n"
        "    path.write_text(f'{alive} {Path(base_dir).exists()}')\n"
    )
    run = inner_pytest(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "this test fails on purpose" in run.stdout
    assert record.read_text() == "gone False"  # etcd stopped, its data removed


def test_a_missing_etcd_fails_the_tests_that_need_it_and_skips_none(tmp_path: Path) -> None:
    (tmp_path / "test_needs_etcd.py").write_text(
        "def test_needs_etcd(ccm_etcd_settings):\n    pass\n"
    )
    run = inner_pytest(tmp_path, "--ccm-etcd", str(tmp_path / "no-such-etcd"))
    report = run.stdout + run.stderr
    assert run.returncode == 1, report
    assert "1 error" in report and "skipped" not in report, report
    assert f"{tmp_path / 'no-such-etcd'} is missing: the tests need a real etcd" in report


def test_the_settings_file_reads_back_as_the_settings_built(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root")
    hostile = 'quote " backslash \\ tab \t newline \n del \x7f é ☃ 😀'
    settings = node_settings(
        root,
        etcd={"endpoints": ["http://127.0.0.1:2379"], "prefix": "/p", "password": hostile},
        ansible={"extra_vars": {"a key": [1, 2.5, True, hostile], "nested": {"x": {"y": 1}}}},
        checks={"odd name.check": ["echo", hostile]},
        reconcile_interval=1e-05,
    )
    path = write_settings(settings, tmp_path / "ccm.toml")
    assert load_settings(path, environ={}) == settings


def test_the_settings_reach_no_command_of_the_machine(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "root")
    settings = node_settings(root, logged_checks=("nginx_check", "plugin_check"))
    for name in CommandSettings.model_fields:
        argv = getattr(settings.commands, name)
        if isinstance(argv, tuple):  # each logs, or works on the root's account files
            assert argv[:2] == ("sh", "-c") or argv[1:3] == ("--prefix", "{root}"), name
    assert settings.commands.reload_unit == tuple(logging_command(root, "reload {unit}"))
    assert settings.checks["plugin_check"] == tuple(logging_command(root, "check plugin_check"))
    assert set(settings.probes.values()) == {("true",)}


def test_the_fixtures_put_apply_and_diff_through_the_real_command(
    ccm_node: CcmNode, ccm_root: Path, ccm_settings: Settings
) -> None:
    assert ccm_node.root == ccm_root == ccm_settings.root
    ccm_node.put("unix-users", ALICE)
    ccm_node.put("virtual-hosts", [VHOST])

    preview = ccm_node.diff()
    assert preview.returncode == 2
    assert "+ account alice" in preview.stdout
    assert not ccm_node.path("/etc/nginx/sites-enabled/alice.example.com.conf").exists()

    applied = ccm_node.apply()
    assert "/etc/nginx/sites-enabled/alice.example.com.conf" in applied.stdout
    assert "server_name alice.example.com" in ccm_node.read(
        "/etc/nginx/sites-enabled/alice.example.com.conf"
    )
    assert ccm_node.read("/etc/passwd").count("\nalice:") == 1  # useradd --prefix ROOT
    assert Path("/etc/passwd").read_text().count("\nalice:") == 0
    logged = ccm_node.actions()  # the check before the reload, neither on the machine
    assert logged.index("check nginx") < logged.index("reload nginx")
    assert ccm_node.diff().returncode == 0

    with pytest.raises(CcmCommandFailed, match="virtual-hosts/2"):
        ccm_node.put("virtual-hosts", {**VHOST, "id": 2, "unix_user_id": 9})
    assert [vhost["id"] for vhost in ccm_node.objects("virtual-hosts")] == [1]


def test_each_test_gets_a_key_prefix_of_its_own(tmp_path: Path) -> None:
    out = tmp_path / "prefixes"
    test = (
        "def test_{n}(ccm_etcd_settings):\n"
        f"    with open({str(out)!r}, 'a') as f: f.write(ccm_etcd_settings.prefix + '\\n')\n"
    )
    (tmp_path / "test_two.py").write_text(test.format(n=1) + test.format(n=2))
    run = inner_pytest(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    prefixes = out.read_text().split()
    assert len(prefixes) == 2 and prefixes[0] != prefixes[1]


def test_the_package_exports_what_it_documents() -> None:
    for name in ccm.testing.__all__:
        assert getattr(ccm.testing, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ccm.testing.nothing  # noqa: B018


def test_loading_the_plugin_imports_no_ccm_module_until_a_fixture_is_used() -> None:
    probe = (
        "import sys, ccm.testing.plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('ccm.') and m not in "
        "('ccm.testing', 'ccm.testing.plugin')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
