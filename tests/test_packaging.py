"""The wheel's package list is the folders' (pyproject.toml lists them for setuptools).

The list is explicit because the shipped playbooks are mapped into the package as
``ccm.data.*``; this test keeps it from going stale, and ``scripts/test-wheel`` (run by
CI) installs the built wheel outside the checkout and applies objects with it. The
built-in types' templates are package data of ``configurations`` (its ``templates``
link to the top-level folder), found the way a plugin's are: beside the module.

``ccm.testing`` ships in the wheel and its pytest plugin is registered by installing
ccm, yet pytest is no runtime dependency: neither ``import ccm`` nor ``ccm --help``
imports it (import-linter holds the imports; this holds the running program).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from ccm.plan.resources import resource_dir
from ccm.plan.templates import package_templates
from ccm.testing.node import ccm_executable
from configurations.virtual_hosts import NginxVhosts

CHECKOUT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_in_the_wheel() -> None:
    listed = set(
        tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(CHECKOUT).parts)
        for top in ("ccm", "configurations")
        for init in (CHECKOUT / top).rglob("__init__.py")
    }
    assert found <= listed
    mapped = {"ccm.data.playbooks", "ccm.data.playbooks.templates"}
    assert listed - found == mapped


def test_an_editable_install_reads_the_checkouts_folders() -> None:
    assert package_templates(NginxVhosts).resolve() == CHECKOUT / "templates"
    assert (resource_dir("playbooks") / "php-versions.yml").is_file()


def test_installing_ccm_registers_its_pytest_plugin() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins["ccm"] == "ccm.testing.plugin"


def imported(argv: list[str]) -> set[str]:
    """The modules a Python program imports (``-X importtime`` lists each one)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_neither_importing_ccm_nor_its_command_imports_pytest() -> None:
    library = imported(["-c", "import ccm, ccm.testing, ccm.testing.node, ccm.cli.main"])
    command = imported([ccm_executable(), "--help"])
    assert "ccm.cli.main" in command and "ccm.testing.node" in library
    for modules in (library, command):
        assert not {m for m in modules if m.split(".")[0] in ("pytest", "_pytest")}
