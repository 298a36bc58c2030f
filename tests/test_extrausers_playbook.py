"""``playbooks/extrausers.yml`` for real: ansible-runner and ansible-playbook against
``localhost ansible_connection=local``, ``ccm_root`` a temporary root, packages off (the
playbook refuses them under any root but ``/``), as ``test_ansible`` runs php-versions."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ccm.errors import PlaybookFailed
from ccm.plan.ansible import AnsiblePlaybooks, default_playbooks_dir
from ccm.plan.changes import Playbook
from ccm.settings import AnsibleSettings, Settings

PLAYBOOK = Playbook("extrausers.yml")
DATABASES = ("passwd", "group", "shadow")


def runner(root: Path, **extra_vars: object) -> AnsiblePlaybooks:
    return AnsiblePlaybooks(
        Settings(
            node="test-node",
            root=root,
            ansible=AnsibleSettings(
                playbooks_dir=str(default_playbooks_dir()), timeout=120, extra_vars=extra_vars
            ),
        )
    )


def sources(text: str) -> dict[str, list[str]]:
    return {
        found.group(1): found.group(2).split()
        for found in re.finditer(r"(?m)^([a-z]+):[ \t]*(.*)$", text)
    }


def test_sets_files_extrausers_keeps_the_rest_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    shutil.copy("/etc/nsswitch.conf", root / "etc/nsswitch.conf")
    host = sources(Path("/etc/nsswitch.conf").read_text())
    nsswitch = root / "etc/nsswitch.conf"
    before = nsswitch.read_text()
    playbooks = runner(root)

    assert playbooks.check("unix-users", PLAYBOOK).lines() != ["playbook extrausers.yml: no change"]
    assert nsswitch.read_text() == before, "check mode changes nothing"

    playbooks("unix-users", PLAYBOOK)
    after = sources(nsswitch.read_text())
    for database in DATABASES:
        others = [s for s in host[database] if s not in ("files", "compat", "extrausers")]
        assert after[database] == ["files", "extrausers", *others], database
    unchanged = {name: value for name, value in host.items() if name not in DATABASES}
    assert {name: after[name] for name in unchanged} == unchanged
    assert (root / "var/lib/extrausers").is_dir()

    text = nsswitch.read_text()
    playbooks("unix-users", PLAYBOOK)
    assert nsswitch.read_text() == text
    assert playbooks.check("unix-users", PLAYBOOK).lines() == ["playbook extrausers.yml: no change"]


def test_a_missing_nsswitch_conf_gets_the_three_lines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    runner(root)("unix-users", PLAYBOOK)
    assert sources((root / "etc/nsswitch.conf").read_text()) == {
        database: ["files", "extrausers"] for database in DATABASES
    }


def test_packages_are_refused_under_a_temporary_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PlaybookFailed, match="Check the inputs"):
        runner(root, ccm_manage_packages=True)("unix-users", PLAYBOOK)
    assert not (root / "etc").exists()
