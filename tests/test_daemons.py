"""``daemons``: the rendered unit passes a real ``systemd-analyze verify`` with hostile
arguments, runs as the tenant with only its home writable, and is placed on the nodes in
``node_ids`` only."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ccm.cluster.store import ObjectStore
from ccm.errors import DanglingReference, ReferencedObject, ValidationFailed
from ccm.models import Node, Snapshot, parse_object
from ccm.plan.changes import File
from ccm.plan.templates import TemplateRenderer, package_templates
from configurations.daemons import Daemon, Daemons, systemd_quote
from configurations.unix_users import UnixUser

ALICE = UnixUser(id=1, username="alice")
RUN1 = Node(id=1, hostname="run1", groups=["daemons"])
RUN2 = Node(id=2, hostname="run2", groups=["daemons"])
HOSTILE = [
    "/usr/bin/python3",
    "-c",
    'import sys; print(sys.argv)  # 100% "$HOME" \\n ${PATH} %h %% `id` ; rm -rf /',
    "with space",
    "back\\slash",
]


def daemon(id: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "name": "worker",
        "unix_user_id": 1,
        "command": ["/home/alice/bin/worker", "--queue", "default"],
        "node_ids": [1],
        **extra,
    }


def plan(node: str, *objects: Any) -> list[File]:
    render = TemplateRenderer(package_templates(Daemons), configuration="daemons")
    snapshot = Snapshot.of(1, [ALICE, RUN1, RUN2, *objects]).viewed_from(node)
    return [c for c in Daemons().plan(snapshot, render) if isinstance(c, File)]


def test_the_unit_passes_systemd_analyze_verify_with_hostile_arguments(tmp_path: Path) -> None:
    worker = Daemon.model_validate(
        daemon(command=HOSTILE, memory_limit_mib=256, cpu_limit_percent=150)
    )
    (unit,) = plan("run1", worker)
    assert unit.path == "/etc/systemd/system/ccm-daemon-worker.service"
    path = tmp_path / "ccm-daemon-worker.service"
    path.write_text(unit.content)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # no warning either: systemd ignores a bad setting with a message and exit status 0
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")
    lines = unit.content.splitlines()
    assert "User=alice" in lines and "WorkingDirectory=/home/alice" in lines
    assert "MemoryMax=256M" in lines and "CPUQuota=150%" in lines
    assert {"ProtectSystem=strict", "ProtectHome=tmpfs", "BindPaths=/home/alice"} <= set(lines)
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert exec_start == "ExecStart=" + " ".join(systemd_quote(a) for a in HOSTILE)
    assert "%%" in exec_start and "$$HOME" in exec_start


def test_a_broken_unit_would_fail_the_same_verify(tmp_path: Path) -> None:
    """The check above can fail: an unescaped quote is refused by systemd-analyze."""
    path = tmp_path / "broken.service"
    path.write_text('[Service]\nExecStart="/bin/sh" "unterminated\n')
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Unbalanced quoting" in verified.stderr


def test_the_unit_is_written_on_the_nodes_in_node_ids_only() -> None:
    worker = Daemon.model_validate(daemon(node_ids=[2]))
    assert plan("run1", worker) == []
    assert [f.path for f in plan("run2", worker)] == [
        "/etc/systemd/system/ccm-daemon-worker.service"
    ]
    assert plan("unregistered", worker) == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("command", [], "at least the program to run"),
        ("command", ["relative/prog"], "an absolute path"),
        ("command", ["-/bin/sh"], "an absolute path"),
        ("command", ["@/bin/sh", "x"], "an absolute path"),
        ("command", ["/bin/sh", "line\nbreak"], "without control characters"),
        ("command", ["/bin/sh", "x" * 1025], "without control characters"),
        ("command", ["/bin/sh"] + ["x"] * 64, "at most 64 items"),
        ("node_ids", [], "at least 1 item"),
        ("node_ids", [1, 1], "each node may be named once"),
        ("name", "Worker", "a name of a-z"),
        ("memory_limit_mib", 1, "greater than or equal to 16"),
        ("cpu_limit_percent", 0, "greater than or equal to 1"),
    ],
)
def test_bad_input_names_the_field_and_the_reason(field: str, value: Any, reason: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_object("daemons", daemon(**{field: value}))
    assert any(
        p.startswith(f"daemons/1: {field}") and reason in p for p in refused.value.problems
    ), refused.value.problems


def test_the_program_is_inside_the_tenants_home_or_a_known_interpreter(
    store: ObjectStore,
) -> None:
    store.put("unix-users", [{"id": 1, "username": "alice"}, {"id": 2, "username": "bob"}])
    store.put("nodes", [{"id": 1, "hostname": "run1", "groups": ["daemons"]}])
    with pytest.raises(ValidationFailed) as refused:
        store.put("daemons", [daemon(command=["/home/bob/bin/steal"])])
    assert refused.value.problems[0].startswith(
        "daemons/1: command: '/home/bob/bin/steal' is neither inside the home of 'alice'"
    )
    with pytest.raises(ValidationFailed):
        store.put("daemons", [daemon(command=["/usr/sbin/useradd", "x"])])
    store.put("daemons", [daemon(command=["/usr/bin/python3", "/home/alice/app.py"])])
    store.put("daemons", [daemon(2, name="other", command=["/home/alice/bin/run"])])
    assert len(store.list("daemons")) == 2


def test_every_id_of_node_ids_is_a_reference_the_store_holds(store: ObjectStore) -> None:
    """A list of ids is checked id by id: dangling on write, and a delete of any of them
    is refused while the daemon names it."""
    store.put("unix-users", [{"id": 1, "username": "alice"}])
    store.put("nodes", [{"id": 1, "hostname": "run1"}, {"id": 2, "hostname": "run2"}])
    with pytest.raises(DanglingReference) as dangling:
        store.put("daemons", [daemon(node_ids=[1, 3])])
    assert "nodes/3" in str(dangling.value)
    store.put("daemons", [daemon(node_ids=[1, 2])])
    with pytest.raises(ReferencedObject, match="daemons/1"):
        store.delete("nodes", 2)
    store.put("daemons", [daemon(node_ids=[1])])
    store.delete("nodes", 2)
