"""One engine run (``Engine``): select, plan, apply, and a canary's health probes, on a real
temporary root with real (harmless) commands.

Playbooks go through :class:`MarkerPlaybooks`, which does a playbook's work without
Ansible (it writes a marker file) and fingerprints the inputs exactly as ccm does;
Ansible's own runs are tested in ``test_playbook_runs.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
from daemon_node import MarkerPlaybooks

from ccm.engine.registry import Registry
from ccm.engine.run import Engine, refuse_referrers
from ccm.errors import GraphError, LockLost, PlanError, SettingsError
from ccm.models import CcmObject, Node, ObjectId, Ref, Snapshot
from ccm.plan.changes import Change, Check, File, Playbook, Probe
from ccm.plan.commands import CommandResult, run_command
from ccm.plan.configuration import Configuration, Render
from ccm.plan.steps import Refusal
from ccm.plan.templates import package_templates
from ccm.settings import Settings
from ccm.testing.noderoot import node_settings, seed_root
from configurations.unix_users import UnixUser

LOG = 'echo "$1" >> "$0/actions.log"'


class Web(Configuration):
    """A file per user; its check and probe carry their default argv (no settings)."""

    name = "web"
    subscribes = ("unix-users",)
    groups = ("nginx",)
    checks: ClassVar = {"web_check": ("sh", "-c", LOG, "{root}", "check web")}
    probes: ClassVar = {"web_probe": ("sh", "-c", LOG, "{root}", "probe web {port}")}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [
            *(File(f"/etc/web/{u.username}", "site\n") for u in snapshot.all(UnixUser)),
            Check("web_check", triggers=("/etc/web/",)),
            Probe("web_probe", triggers=("/etc/web/",), variables={"port": "8080"}),
        ]


class Mail(Configuration):
    """Subscribes to mail accounts; always writes one file, always probes."""

    name = "mail"
    subscribes = ("mail-accounts",)
    groups = ("dovecot",)
    probes: ClassVar = {"mail_probe": ("sh", "-c", 'echo "mail down on $0"; exit 3', "{root}")}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [File("/etc/mail/users", "users\n"), Probe("mail_probe", triggers=("/etc/mail/",))]


class Packages(Configuration):
    """A playbook whose inputs come from the settings' test knob."""

    name = "packages"
    subscribes = ("clusters",)
    inputs: ClassVar[dict[str, Any]] = {"versions": ["8.2"]}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [Playbook("packages.yml", dict(Packages.inputs))]


class Recorder:
    """A real runner that remembers each argv and the timeout it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: list[str], *, timeout: float) -> CommandResult:
        self.calls.append((argv, timeout))
        return run_command(argv, timeout=timeout)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    Packages.inputs = {"versions": ["8.2"]}
    return seed_root(tmp_path / "root")


def settings_for(root: Path, **overrides: Any) -> Settings:
    return node_settings(root, logged_checks=(), passing_probes=(), node="web1", **overrides)


def logged(root: Path) -> list[str]:
    log = root / "actions.log"
    return log.read_text().splitlines() if log.exists() else []


ALICE = UnixUser(id=1, username="alice")
SNAPSHOT = Snapshot.of(5, [ALICE])


# -- applying -----------------------------------------------------------------------------


def test_declared_checks_and_probes_run_through_the_engines_runner_with_their_defaults(
    root: Path,
) -> None:
    runner = Recorder()
    settings = settings_for(root, commands={"timeout": 17.0})
    report = Engine(Registry([Web]), settings, runner=runner).apply(SNAPSHOT)
    assert logged(root) == ["check web", "probe web 8080"]
    assert [argv[-1] for argv, _ in runner.calls] == ["check web", "probe web 8080"]
    assert {timeout for _, timeout in runner.calls} == {17.0}
    assert report.changed_paths == ["/etc/web/alice"]


def test_a_guard_that_raises_stops_the_run_before_its_first_change(root: Path) -> None:
    def lost() -> None:
        raise LockLost("web1: the lock was lost")

    with pytest.raises(LockLost):
        Engine(Registry([Web]), settings_for(root)).apply(SNAPSHOT, guard=lost)
    assert not (root / "etc/web/alice").exists()
    assert logged(root) == []


def test_only_the_selected_types_are_planned_and_applied(root: Path) -> None:
    engine = Engine(Registry([Web, Mail]), settings_for(root))
    assert engine.select(None) == ["mail", "web"]
    assert engine.select(["unix-users"]) == ["web"]
    assert engine.select([]) == []
    planned = engine.plan(SNAPSHOT, ["unix-users"])
    assert [ops.configuration for ops in planned.operations] == ["web"]
    assert planned.revision == 5
    assert [ops.configuration for ops in engine.plan(SNAPSHOT).operations] == ["mail", "web"]

    engine.apply(SNAPSHOT, ["unix-users"])
    assert (root / "etc/web/alice").exists() and not (root / "etc/mail/users").exists()


def test_a_playbook_runs_when_its_inputs_change_or_on_a_full_run_only(
    root: Path, tmp_path: Path
) -> None:
    playbooks_dir = tmp_path / "playbooks"
    playbooks_dir.mkdir()
    (playbooks_dir / "packages.yml").write_text("- hosts: localhost\n")
    playbooks = MarkerPlaybooks(root, playbooks_dir)
    engine = Engine(Registry([Packages]), settings_for(root), playbooks=playbooks)

    engine.apply(SNAPSHOT)
    assert playbooks.runs() == ["packages packages.yml {'versions': ['8.2']}"]
    assert not engine.plan(SNAPSHOT).has_changes
    engine.apply(SNAPSHOT)
    assert len(playbooks.runs()) == 1  # the same inputs: not run again
    assert engine.plan(SNAPSHOT, full=True).has_changes
    engine.apply(SNAPSHOT, full=True)
    assert len(playbooks.runs()) == 2  # a reconcile runs it all the same
    Packages.inputs = {"versions": ["8.2", "8.3"]}
    engine.apply(SNAPSHOT, ["clusters"])
    assert playbooks.runs()[-1] == "packages packages.yml {'versions': ['8.2', '8.3']}"


def test_an_action_left_pending_is_a_change_to_plan(root: Path) -> None:
    engine = Engine(Registry([Web]), settings_for(root))
    planned = engine.plan(SNAPSHOT)
    assert planned.has_changes
    planned.manifest.pending_actions = []
    planned.operations = []
    assert not planned.has_changes


# -- planning errors name the configuration -----------------------------------------------------


class Broken(Configuration):
    name = "broken"
    error: ClassVar[Exception] = ValueError("boom")

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        raise Broken.error


def test_a_bug_in_a_plan_is_a_plan_error_naming_the_configuration_and_the_error(
    root: Path,
) -> None:
    Broken.error = ValueError("boom")
    with pytest.raises(PlanError) as failed:
        Engine(Registry([Broken]), settings_for(root)).plan(SNAPSHOT)
    assert failed.value.configuration == "broken"
    assert str(failed.value) == "broken: ValueError: boom"


def test_a_ccm_error_in_a_plan_is_raised_as_it_is(root: Path) -> None:
    Broken.error = GraphError("the graph says no")
    with pytest.raises(GraphError, match="^the graph says no$"):
        Engine(Registry([Broken]), settings_for(root)).plan(SNAPSHOT)


class Templated(Configuration):
    name = "templated"

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [File("/etc/motd", render("motd.j2", who="alice"))]


def test_a_missing_template_is_a_plan_error_naming_the_configuration(root: Path) -> None:
    with pytest.raises(PlanError) as failed:
        Engine(Registry([Templated]), settings_for(root)).plan(SNAPSHOT)
    assert failed.value.configuration == "templated"
    assert "'motd.j2' not found" in str(failed.value)


def test_without_a_templates_dir_the_working_directory_is_never_searched(
    root: Path, tmp_path: Path, extension: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``templates_dir``: the package's own templates only, wherever ccm was started."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "banner.j2").write_text("from the working directory\n")
    monkeypatch.chdir(elsewhere)
    Engine(Registry([extension.Banner]), settings_for(root)).apply(SNAPSHOT)
    assert (root / "etc/banner").read_text() == "from the extension\n"


def test_templates_come_from_the_templates_dir_setting(root: Path, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "motd.j2").write_text("hello {{ who }}\n")
    engine = Engine(Registry([Templated]), settings_for(root, templates_dir=str(templates)))
    engine.apply(SNAPSHOT)
    assert (root / "etc/motd").read_text() == "hello alice\n"


EXTENSION = """
from ccm.plan.changes import File
from ccm.plan.configuration import Configuration


class Banner(Configuration):
    name = "banner"

    def plan(self, snapshot, render):
        return [File("/etc/banner", render("banner.j2"))]


class Other(Configuration):
    name = "other"

    def plan(self, snapshot, render):
        return []
"""


@pytest.fixture
def extension(tmp_path: Path) -> Iterator[Any]:
    """A configuration module of its own, with a ``templates/`` folder beside it."""
    package = tmp_path / "ccm_test_banner"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text(EXTENSION)
    (package / "templates/banner.j2").write_text("from the extension\n")
    spec = importlib.util.spec_from_file_location("ccm_test_banner", package / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ccm_test_banner"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["ccm_test_banner"]


def test_an_extensions_templates_beside_its_module_are_found(root: Path, extension: Any) -> None:
    registry = Registry([extension.Banner, extension.Other, Web])
    folder = Path(extension.__file__).parent / "templates"
    assert package_templates(extension.Banner) == folder
    Engine(registry, settings_for(root)).apply(SNAPSHOT)
    assert (root / "etc/banner").read_text() == "from the extension\n"


def test_two_packages_with_a_template_of_the_same_name_each_render_their_own(
    root: Path, extension: Any
) -> None:
    """Templates are looked up in the configuration's own package: no shadowing."""

    class Shadow(Configuration):
        name = "shadow"

        def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
            return [File("/etc/shadow-banner", render("banner.j2"))]

    shadow_dir = Path(__file__).parent / "templates"
    assert package_templates(Shadow) == shadow_dir and not (shadow_dir / "banner.j2").exists()
    registry = Registry([extension.Banner])
    Engine(registry, settings_for(root)).apply(SNAPSHOT)
    assert (root / "etc/banner").read_text() == "from the extension\n"
    with pytest.raises(PlanError, match="template 'banner.j2' not found"):
        Engine(Registry([Shadow]), settings_for(root)).plan(SNAPSHOT)


def test_a_configuration_whose_module_is_not_loaded_has_no_templates(extension: Any) -> None:
    del sys.modules["ccm_test_banner"]
    try:
        with pytest.raises(PlanError, match="module ccm_test_banner has no file"):
            package_templates(extension.Banner)
    finally:
        sys.modules["ccm_test_banner"] = extension


# -- health (a canary's soak) ---------------------------------------------------------------


def test_health_runs_every_probe_here_once_and_returns_the_failing_ones(root: Path) -> None:
    runner = Recorder()
    engine = Engine(Registry([Web, Mail]), settings_for(root), runner=runner)
    failing = engine.health(SNAPSHOT)
    assert failing == [
        (
            "mail",
            ["sh", "-c", 'echo "mail down on $0"; exit 3', str(root)],
            f"mail down on {root}\n",
        )
    ]
    assert logged(root) == ["probe web 8080"]
    assert len(runner.calls) == 2  # probes only: no check ran


class TemplatedProbe(Configuration):
    """Renders its file from a template and probes it."""

    name = "templated-probe"
    probes: ClassVar = {"motd_probe": ("sh", "-c", LOG, "{root}", "probe motd {who}")}

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return [
            File("/etc/motd", render("motd.j2", who="alice")),
            Probe("motd_probe", triggers=("/etc/motd",), variables={"who": "alice"}),
        ]


def test_health_plans_with_the_configurations_templates_and_the_commands_timeout(
    root: Path, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "motd.j2").write_text("hello {{ who }}\n")
    runner = Recorder()
    settings = settings_for(root, templates_dir=str(templates), commands={"timeout": 23.0})
    engine = Engine(Registry([TemplatedProbe]), settings, runner=runner)
    assert engine.health(SNAPSHOT) == []
    assert logged(root) == ["probe motd alice"]
    assert [timeout for _, timeout in runner.calls] == [23.0]


def test_health_probes_only_what_runs_on_this_node(root: Path) -> None:
    web_node = Node(id=1, hostname="web1", groups=["nginx"])
    engine = Engine(Registry([Web, Mail]), settings_for(root), runner=Recorder())
    assert engine.health(Snapshot.of(5, [ALICE, web_node])) == []
    assert logged(root) == ["probe web 8080"]


# -- checks and probes by name ---------------------------------------------------------------


def test_an_unknown_check_or_probe_is_refused_naming_the_known_ones(root: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"probes\.wbe_probe: unknown probe \(known: mail_probe, web_probe\)"
    ):
        Engine(Registry([Web, Mail]), settings_for(root, probes={"wbe_probe": ["true"]}))
    with pytest.raises(SettingsError, match=r"checks\.web_check: unknown check \(known: none\)"):
        Engine(Registry([Mail]), settings_for(root, checks={"web_check": ["true"]}))


def test_a_check_named_in_the_settings_replaces_the_default(root: Path) -> None:
    settings = settings_for(root, checks={"web_check": ["sh", "-c", LOG, "{root}", "mine"]})
    engine = Engine(Registry([Web]), settings)
    assert engine.checks["web_check"] == ("sh", "-c", LOG, "{root}", "mine")
    engine.apply(SNAPSHOT)
    assert logged(root)[0] == "mine"


# -- objects that refer to a refused one ----------------------------------------------------


def test_objects_referring_to_a_refused_one_are_refused_too_transitively(registry: None) -> None:
    class Base(CcmObject):
        TYPE: ClassVar[str] = "test-z-bases"

    class Middle(CcmObject):
        TYPE: ClassVar[str] = "test-y-middles"
        base_id: Annotated[ObjectId, Ref("test-z-bases")]

    class Top(CcmObject):  # iterated first: refused only once Middle is
        TYPE: ClassVar[str] = "test-x-tops"
        middle_id: Annotated[ObjectId, Ref("test-y-middles")]

    class Free(CcmObject):
        TYPE: ClassVar[str] = "test-w-frees"

    snapshot = Snapshot.of(
        1,
        [
            Base(id=1),
            Base(id=2),
            Middle(id=1, base_id=1),
            Middle(id=2, base_id=2),
            Top(id=1, middle_id=1),
            Top(id=2, middle_id=1),
            Free(id=1),
        ],
    )
    refused = {"test-z-bases/1": Refusal("accounts", "made by hand")}
    refuse_referrers(snapshot, refused, "sites")
    assert refused == {
        "test-z-bases/1": Refusal("accounts", "made by hand"),
        "test-y-middles/1": Refusal(
            "sites", "it refers to test-z-bases/1, which this node refuses"
        ),
        "test-x-tops/1": Refusal("sites", "it refers to test-y-middles/1, which this node refuses"),
        "test-x-tops/2": Refusal("sites", "it refers to test-y-middles/1, which this node refuses"),
    }


def test_templates_read_this_nodes_settings(tmp_path: Path) -> None:
    """The engine hands every template ``node_settings``: the vhost's ACME location
    passes to the responder this node listens on."""
    from configurations.virtual_hosts import VirtualHost

    root = seed_root(tmp_path / "root")
    settings = node_settings(root, acme={"responder_listen": "127.0.0.1:9411"})
    engine = Engine(Registry.from_entry_points(), settings)
    snapshot = Snapshot.of(
        1,
        [
            UnixUser(id=1, username="alice"),
            VirtualHost(
                id=1, domain="a.example.com", unix_user_id=1, document_root="/home/alice/www"
            ),
        ],
    )
    texts = [
        step.change.content
        for ops in engine.plan(snapshot).operations
        for step in ops.steps
        if step.changed.endswith("/a.example.com.conf") and hasattr(step, "change")
    ]
    assert len(texts) == 1 and "proxy_pass http://127.0.0.1:9411" in texts[0]
