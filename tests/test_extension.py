"""The extension point: a new object type as a separately installed distribution.

``tests/plugins/ccm-motd`` is a whole extension (type, configuration, template, and its
own tests) that touches nothing in ``ccm/``. The test installs it with pip into a
directory of its own and runs the real ``ccm`` command with that directory on the path:
the type is known to the writer (its rules apply), the daemon side plans and writes it,
and without the distribution the type does not exist. The plugin's own tests, built on
``ccm.testing`` alone (no conftest), pass when pytest runs them the way its author would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ccm.settings import Settings
from ccm.testing import CcmNode

PLUGIN = Path(__file__).parent / "plugins" / "ccm-motd"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the plugin's checkout: the build writes beside the sources, and its
    tests run from there, not from ccm's checkout."""
    copy = tmp_path_factory.mktemp("source") / "ccm-motd"
    shutil.copytree(PLUGIN, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def test_an_installed_extension_adds_a_type_with_no_change_in_ccm(
    installed: Path, ccm_settings: Settings, tmp_path: Path
) -> None:
    node = CcmNode(ccm_settings, tmp_path / "ccm.toml", env={"PYTHONPATH": str(installed)})
    message = [{"id": 1, "text": "maintenance on Sunday 02:00 UTC"}]
    node.put("motd-messages", message)
    refused = node.put("motd-messages", {"id": 2, "text": "line\nbreak"}, check=False)
    assert refused.returncode == 1 and "motd-messages/2: text" in refused.stderr

    graph = node.ccm("graph", check=True)
    assert "motd-messages — messages of the day" in graph.stdout

    node.apply("--all")
    assert node.read("/etc/motd.d/1") == "maintenance on Sunday 02:00 UTC\n"

    without = CcmNode(ccm_settings, tmp_path / "without.toml")  # the plugin not installed
    refused = without.put("motd-messages", message, check=False)
    assert refused.returncode == 2
    assert "'motd-messages' is not an object type" in refused.stderr


def test_the_plugins_own_tests_pass_on_ccm_testing_alone(installed: Path, source: Path) -> None:
    assert not list(source.rglob("conftest.py"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=source,
        env={**_environ(), "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "3 passed" in report, report
    assert "skipped" not in report, report


def _environ() -> dict[str, str]:
    """This process's environment without its pytest and ccm variables: the inner run
    is a plugin author's own ``pytest``."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CCM_", "PYTEST_")) and k != "PYTHONPATH"
    }
