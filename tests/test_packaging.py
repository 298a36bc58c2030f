"""The wheel's package list is the folders' (pyproject.toml lists them for setuptools).

The list is explicit because the shipped playbooks are mapped into the package as
``ccm.data.*``; this test keeps it from going stale, and ``scripts/test-wheel`` (run by
CI) installs the built wheel outside the checkout and applies objects with it. The
built-in types' templates are package data of ``configurations`` (its ``templates``
link to the top-level folder), found the way a plugin's are: beside the module.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ccm.plan.resources import resource_dir
from ccm.plan.templates import package_templates
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
