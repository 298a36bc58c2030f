"""Registry, dependency graph and event bus: selection and order without any I/O."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from ccm.engine.bus import ALL, EventBus
from ccm.engine.graph import DependencyGraph
from ccm.engine.registry import Registry
from ccm.errors import DependencyCycle, GraphError
from ccm.models import OBJECT_TYPES, Snapshot
from ccm.models.types import load_types
from ccm.plan.changes import Change
from ccm.plan.configuration import Configuration, Render


def make(name: str, subscribes: tuple[str, ...] = (), depends_on: tuple[str, ...] = ()) -> type:
    def plan(self: Configuration, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return []

    return type(
        name.title(),
        (Configuration,),
        {"name": name, "subscribes": subscribes, "depends_on": depends_on, "plan": plan},
    )


def test_run_order_is_topological_with_ties_broken_by_name() -> None:
    registry = Registry(
        [
            make("vhosts", ("virtual-hosts",), ("users", "pools")),
            make("pools", ("fpm-pools",), ("users",)),
            make("users", ("unix-users",)),
            make("mail", ("mail-accounts",)),
            make("crons", ("crons",), ("users",)),
        ]
    )
    assert DependencyGraph(registry).order == ["mail", "users", "crons", "pools", "vhosts"]


def test_selecting_a_type_selects_subscribers_and_their_dependants_in_order() -> None:
    registry = Registry(
        [
            make("users", ("unix-users",)),
            make("pools", ("fpm-pools",), ("users",)),
            make("vhosts", ("virtual-hosts",), ("pools",)),
            make("mail", ("mail-accounts",)),
        ]
    )
    bus = EventBus(registry, DependencyGraph(registry))
    assert bus.select(["fpm-pools"]) == ["pools", "vhosts"]
    assert bus.select(["unix-users"]) == ["users", "pools", "vhosts"]
    assert bus.select(["mail-accounts", "virtual-hosts"]) == ["mail", "vhosts"]
    assert bus.select(["crons"]) == []
    assert bus.select([ALL]) == ["mail", "users", "pools", "vhosts"]


def test_a_cycle_is_an_error_that_names_it() -> None:
    registry = Registry(
        [
            make("a", depends_on=("c",)),
            make("b", depends_on=("a",)),
            make("c", depends_on=("b",)),
            make("d"),
        ]
    )
    with pytest.raises(DependencyCycle) as error:
        DependencyGraph(registry)
    assert set(error.value.cycle) == {"a", "b", "c"}
    assert "->" in str(error.value) and "d" not in error.value.cycle


def test_unknown_dependency_duplicate_name_and_unknown_type_are_refused() -> None:
    with pytest.raises(GraphError, match="depends on 'ghost'"):
        DependencyGraph(Registry([make("a", depends_on=("ghost",))]))
    with pytest.raises(GraphError, match="registered twice"):
        Registry([make("a"), make("a")])
    with pytest.raises(GraphError, match="unknown object types: widgets"):
        Registry([make("a", ("widgets",))])


def test_the_entry_point_registry_holds_the_builtin_configurations() -> None:
    registry = Registry.from_entry_points()
    names = {configuration.name for configuration in registry}
    assert {"unix-users", "crontabs", "php-fpm-pools", "nginx-vhosts", "dovecot-users"} <= names
    order = DependencyGraph(registry).order
    assert order.index("unix-users") < order.index("crontabs")
    assert order.index("php-fpm-pools") < order.index("nginx-vhosts")


def test_a_stored_object_that_no_longer_validates_is_a_plan_error_naming_it() -> None:
    from ccm.cluster.store import InvalidStoredObject
    from ccm.engine.run import Engine
    from ccm.errors import PlanError
    from ccm.settings import Settings
    from configurations.unix_users import UnixUser

    def reads_users(self: Configuration, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        snapshot.all(UnixUser)
        return []

    users = type(
        "Users",
        (Configuration,),
        {"name": "users", "plan": reads_users, "subscribes": ("unix-users",)},
    )

    def broken() -> dict[int, UnixUser]:
        raise InvalidStoredObject("/ccm/objects/unix-users/7", "no longer validates: reserved")

    snapshot = Snapshot(5, loaders={"unix-users": broken})
    engine = Engine(Registry([users]), Settings(root="/nonexistent-root"))
    with pytest.raises(PlanError, match="users: .*unix-users/7.*reserved"):
        engine.plan(snapshot)


def test_a_check_or_probe_name_two_packages_declare_differently_is_refused_naming_both() -> None:
    from configurations import CONFIGURATIONS
    from configurations.virtual_hosts import NGINX_CHECKS, NGINX_PROBES

    hijack = type("Hijack", (make("redirects"),), {"checks": {"nginx_check": ("true",)}})
    with pytest.raises(GraphError) as refused:
        Registry([*CONFIGURATIONS, hijack])
    assert str(refused.value) == (
        "check 'nginx_check' is declared by nginx-vhosts (nginx -t) and by redirects (true): "
        "give one of them another name, or reuse the other's by importing its declaration"
    )
    probe = type("Probe", (make("other"),), {"probes": {"nginx_probe": ("false",)}})
    with pytest.raises(GraphError, match="probe 'nginx_probe' is declared by nginx-vhosts"):
        Registry([*CONFIGURATIONS, probe])
    # the built-in declaration imported: one check, shared
    reuse = type("Reuse", (make("redirects"),), {"checks": NGINX_CHECKS, "probes": NGINX_PROBES})
    registry = Registry([*CONFIGURATIONS, reuse])
    assert registry["redirects"].checks == registry["nginx-vhosts"].checks


def test_a_configuration_needs_a_name_that_is_a_non_empty_string() -> None:
    nameless = type("Nameless", (Configuration,), {"plan": make("x").plan})
    with pytest.raises(GraphError, match="^Nameless has no name$"):
        Registry([nameless])
    for bad in ("", 5):
        with pytest.raises(GraphError, match="has no name$"):
            Registry([type("Bad", (Configuration,), {"name": bad, "plan": make("x").plan})])


def test_every_unknown_subscription_is_named() -> None:
    with pytest.raises(
        GraphError, match="^a subscribes to unknown object types: widgets, gadgets$"
    ):
        Registry([make("a", ("widgets", "gadgets"))])


def test_a_registry_knows_its_configurations_by_name_in_registration_order() -> None:
    users, mail = make("users", ("unix-users",)), make("mail", ("mail-accounts",))
    registry = Registry([users, mail])
    assert len(registry) == 2
    assert "users" in registry and "crons" not in registry
    assert [c.name for c in registry] == ["users", "mail"]
    assert isinstance(registry["mail"], mail)
    assert registry.register(make("crons", ("crons",))).name == "crons"
    assert len(registry) == 3


def test_the_groups_are_every_group_a_configuration_declares() -> None:
    web = type("Web", (make("web"),), {"groups": ("nginx", "php")})
    mail = type("Mail", (make("mail"),), {"groups": ("dovecot",)})
    assert Registry([web, mail, make("any")]).groups == {"nginx", "php", "dovecot"}


def test_a_change_to_nodes_selects_every_configuration() -> None:
    """Node groups decide where each configuration runs: any of them may now run here."""
    registry = Registry([make("users", ("unix-users",)), make("mail", ("mail-accounts",))])
    bus = EventBus(registry, DependencyGraph(registry))
    assert bus.select(["nodes"]) == ["mail", "users"]
    assert bus.select(["unix-users"]) == ["users"]


def test_dependants_of_several_configurations_come_once_in_run_order() -> None:
    registry = Registry(
        [
            make("base"),
            make("left", depends_on=("base",)),
            make("right", depends_on=("base",)),
            make("top", depends_on=("left", "right")),
            make("alone"),
        ]
    )
    graph = DependencyGraph(registry)
    assert graph.with_dependants(["left", "right"]) == ["left", "right", "top"]
    assert graph.with_dependants(["base"]) == ["base", "left", "right", "top"]
    assert graph.with_dependants([]) == []


LAZY = """
from typing import ClassVar

from ccm.models import CcmObject


class Lazy(CcmObject):
    TYPE: ClassVar[str] = "test-lazies"


CONFIGURATIONS = []
"""


def test_a_type_of_an_installed_package_not_yet_imported_is_loaded_to_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: None
) -> None:
    """A configuration may subscribe to a type that another installed package defines:
    registering it imports the entry points, which defines that type."""
    (tmp_path / "ccm_test_lazy.py").write_text(LAZY)
    dist = tmp_path / "ccm_test_lazy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ccm-test-lazy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ccm.configurations]\nlazy = ccm_test_lazy:CONFIGURATIONS\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_types.cache_clear()
    try:
        assert "test-lazies" not in OBJECT_TYPES
        lazy = Registry([make("lazy", ("test-lazies",))])
        assert "lazy" in lazy and "test-lazies" in OBJECT_TYPES
    finally:
        sys.modules.pop("ccm_test_lazy", None)
        load_types.cache_clear()
