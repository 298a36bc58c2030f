"""Playbooks inside a run, for real (ansible-runner): cost, failure, dry run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import PlaybookFailed
from ccm.models import Snapshot
from ccm.plan.ansible import AnsiblePlaybooks, PlaybookPreview
from ccm.plan.changes import Change, File, Playbook
from ccm.plan.configuration import Configuration, Render
from ccm.plan.diff import describe_text
from ccm.settings import Settings
from ccm.testing.noderoot import node_settings, seed_root

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: "{{ ccm_root }}/etc/marker"
        content: "{{ marker }}\\n"
    - name: maybe fail
      ansible.builtin.fail:
        msg: "asked to fail"
      when: fail | default(false)
"""


class Inputs:
    extra: ClassVar[dict[str, object]] = {}


class Pre(Configuration):
    name = "pre"

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [File("/etc/pre.conf", f"{Inputs.extra.get('marker')}\n")]


class WithPlaybook(Configuration):
    name = "with-playbook"
    depends_on = ("pre",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [Playbook("test.yml", dict(Inputs.extra))]


class After(Configuration):
    name = "after"
    depends_on = ("with-playbook",)

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [File("/etc/after.conf", "after\n")]


class CountingPlaybooks(AnsiblePlaybooks):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.runs = 0

    def __call__(self, configuration: str, playbook: Playbook) -> None:
        self.runs += 1
        super().__call__(configuration, playbook)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "test.yml").write_text(PLAYBOOK)
    root = seed_root(tmp_path / "root")
    Inputs.extra = {"marker": "one"}
    return node_settings(
        root, logged_checks=(), passing_probes=(), ansible={"playbooks_dir": str(playbooks)}
    )


def engine(settings: Settings) -> tuple[Engine, CountingPlaybooks]:
    playbooks = CountingPlaybooks(settings)
    return Engine(Registry([Pre, WithPlaybook, After]), settings, playbooks=playbooks), playbooks


def test_a_playbook_runs_once_per_change_of_its_inputs_or_on_a_full_run(settings: Settings) -> None:
    first, counted = engine(settings)
    report = first.apply(Snapshot(1))
    assert (settings.root / "etc/marker").read_text() == "one\n"
    assert report.actions == ["playbook test.yml"]
    assert counted.runs == 1

    again, counted = engine(settings)
    assert not again.plan(Snapshot(2)).has_changes
    again.apply(Snapshot(2))
    assert counted.runs == 0, "same inputs: Ansible is not started"

    Inputs.extra = {"marker": "two"}
    changed, counted = engine(settings)
    changed.apply(Snapshot(3))
    assert counted.runs == 1
    assert (settings.root / "etc/marker").read_text() == "two\n"

    reconcile, counted = engine(settings)
    reconcile.apply(Snapshot(4), full=True)
    assert counted.runs == 1, "a full reconcile runs it even with the same inputs"


def test_a_failing_task_fails_the_run_naming_it_and_nothing_after_it_applies(
    settings: Settings,
) -> None:
    Inputs.extra = {"marker": "bad", "fail": True}
    failing, _ = engine(settings)
    with pytest.raises(PlaybookFailed) as failure:
        failing.apply(Snapshot(1))
    assert failure.value.configuration == "with-playbook"
    assert failure.value.task == "maybe fail"
    assert "asked to fail" in str(failure.value)
    assert not (settings.root / "etc/after.conf").exists(), "nothing after it was applied"
    assert not (settings.root / "etc/pre.conf").exists(), "what came before was rolled back"
    # a failed playbook records no fingerprint: the fixed input runs it again
    Inputs.extra = {"marker": "good"}
    fixed, counted = engine(settings)
    fixed.apply(Snapshot(2))
    assert counted.runs == 1 and (settings.root / "etc/after.conf").exists()


def test_diff_shows_the_playbooks_check_mode_changes_and_changes_nothing(
    settings: Settings,
) -> None:
    dry, counted = engine(settings)
    planned = dry.plan(Snapshot(1))
    ops = next(ops for ops in planned.operations if ops.configuration == "with-playbook")
    preview = dry.playbooks.check(ops.configuration, ops.playbooks[0])
    assert isinstance(preview, PlaybookPreview) and preview.would_change
    text = describe_text(
        planned.operations, previews={("with-playbook", "test.yml"): preview.lines()}
    )
    assert "playbook test.yml" in text and "write the marker" in text
    assert "+one" in text, "the task's diff is shown"
    assert not (settings.root / "etc/marker").exists()
    assert counted.runs == 0
