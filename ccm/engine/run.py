"""One run on this node: select configurations, plan them, then diff or apply.

``Engine.plan`` is the dry run (``ccm diff``): plan every selected configuration from
one snapshot and compare with the node. ``Engine.apply`` performs the same operations
through the executor. Neither knows about etcd: the caller brings the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ccm.engine.bus import ALL, EventBus
from ccm.engine.graph import DependencyGraph
from ccm.engine.registry import Registry
from ccm.errors import CcmError, PlanError, SettingsError, StoreError
from ccm.models import Snapshot
from ccm.plan.actions import Probe
from ccm.plan.ansible import AnsiblePlaybooks
from ccm.plan.changes import Change
from ccm.plan.commands import CommandRunner, fill, run_command
from ccm.plan.executor import Executor, PlaybookExecutor, RunReport
from ccm.plan.manifest import Manifest
from ccm.plan.node import Accounts
from ccm.plan.operations import (
    ConfigurationOperations,
    Refusal,
    compute_operations,
    late_refusals,
)
from ccm.plan.progress import Progress, no_progress
from ccm.plan.templates import TemplateRenderer, renderer_for
from ccm.settings import Settings


@dataclass
class PlannedRun:
    revision: int
    operations: list[ConfigurationOperations]
    manifest: Manifest
    accounts: Accounts
    #: objects this node refuses (``unix-users/3`` → why), left as they are on the node
    refused: dict[str, Refusal] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        """Anything to do: a change, or an action an earlier run left pending."""
        return bool(self.manifest.pending_actions) or any(
            ops.has_changes for ops in self.operations
        )


class Engine:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        runner: CommandRunner = run_command,
        playbooks: PlaybookExecutor | None = None,
        progress: Progress = no_progress,
    ) -> None:
        self.registry = registry
        #: told how far a run's configurations have got (a terminal's bar, the daemon's log)
        self.progress = progress
        self.settings = settings
        self.checks = resolve_checks(registry, settings)
        self.probes = resolve_commands(registry, settings, "probes")
        self.graph = DependencyGraph(registry)
        self.bus = EventBus(registry, self.graph)
        self.runner = runner
        self.playbooks: PlaybookExecutor = playbooks or AnsiblePlaybooks(settings)
        override = Path(settings.templates_dir) if settings.templates_dir else None
        # templates read the node's settings as ``node_settings`` (its ACME responder)
        shared = {"node_settings": settings}
        self.renderers: dict[str, TemplateRenderer] = {
            c.name: renderer_for(type(c), c.name, override, shared) for c in registry
        }

    @property
    def manifest_path(self) -> Path:
        return self.settings.under_root(self.settings.state_dir) / "manifest.json"

    def select(self, types: Iterable[str] | None) -> list[str]:
        return self.bus.select([ALL] if types is None else types)

    def runs_here(self, snapshot: Snapshot) -> set[str]:
        """The configurations that run on the node ``snapshot`` is viewed from: those
        with a group of its ``nodes`` object (or without groups); all when it has none."""
        node = snapshot.this_node()
        return {
            configuration.name
            for configuration in self.registry
            if node is None
            or not (groups := self.registry.groups_of(configuration))
            or not set(groups).isdisjoint(node.groups)
        }

    def plan(
        self, snapshot: Snapshot, types: Iterable[str] | None = None, *, full: bool = False
    ) -> PlannedRun:
        """Plan the selected configurations (all for ``types`` None) against this node.

        ``full`` (a reconcile) also re-runs playbooks whose inputs did not change.
        """
        snapshot = snapshot.viewed_from(self.settings.node)
        manifest = Manifest.load(self.manifest_path)
        for renderer in self.renderers.values():
            renderer.next_run()
        refused: dict[str, Refusal] = {}
        rendered: dict[str, Sequence[Change]] = {}
        while True:
            accounts = Accounts(self.settings.root)
            operations = self._plan_pass(
                snapshot, types, full, manifest, accounts, refused, rendered
            )
            # an object refused after an earlier configuration planned its changes (or
            # those of an object referring to it): plan again, refusing it from the start
            if not late_refusals(operations, refused):
                return PlannedRun(snapshot.revision, operations, manifest, accounts, refused)

    def _plan_pass(
        self,
        snapshot: Snapshot,
        types: Iterable[str] | None,
        full: bool,
        manifest: Manifest,
        accounts: Accounts,
        refused: dict[str, Refusal],
        rendered: dict[str, Sequence[Change]],
    ) -> list[ConfigurationOperations]:
        """Every selected configuration compared with the node once (``rendered`` keeps
        each one's changes for the next pass: they depend on the snapshot alone)."""
        here = self.runs_here(snapshot)
        operations = []
        for name in self.select(types):
            configuration = self.registry[name]
            try:
                # a configuration whose groups this node lacks plans nothing: what it
                # wrote here earlier is removed (a group taken away)
                if name not in rendered:
                    render = self.renderers[name]
                    planned = configuration.plan(snapshot, render) if name in here else []
                    rendered[name] = planned
                operations.append(
                    compute_operations(
                        name,
                        rendered[name],
                        root=self.settings.root,
                        manifest=manifest,
                        accounts=accounts,
                        fingerprint=self.playbooks.fingerprint,
                        full=full,
                        uid_base=self.settings.accounts.uid_base,
                        refused=refused,
                        accounts_backend=self.settings.accounts.backend,
                        settings=self.settings,
                    )
                )
                refuse_referrers(snapshot, refused, name)
            except StoreError as error:  # a stored object this ccm cannot read
                raise PlanError(name, str(error)) from error
            except CcmError:
                raise
            except Exception as error:  # a bug, or the node's disk: say where
                raise PlanError(name, f"{type(error).__name__}: {error}") from error
        return operations

    def health(self, snapshot: Snapshot) -> list[tuple[str, list[str], str]]:
        """Every probe of the configurations running here, once (a canary's soak):
        ``(configuration, argv, output)`` of each that fails."""
        snapshot = snapshot.viewed_from(self.settings.node)
        failures = []
        for name in sorted(self.runs_here(snapshot)):
            for change in self.registry[name].plan(snapshot, self.renderers[name]):
                if not isinstance(change, Probe):
                    continue
                argv = fill(
                    list(self.probes[change.command]),
                    {"root": str(self.settings.root), **change.variables},
                )
                result = self.runner(argv, timeout=self.settings.commands.timeout)
                if result.returncode != 0:
                    failures.append((name, argv, result.output))
        return failures

    def apply(
        self,
        snapshot: Snapshot,
        types: Iterable[str] | None = None,
        *,
        guard: Callable[[], None] = lambda: None,
        full: bool = False,
    ) -> RunReport:
        planned = self.plan(snapshot, types, full=full)
        executor = Executor(
            self.settings,
            planned.manifest,
            planned.accounts,
            runner=self.runner,
            playbooks=self.playbooks,
            revision=snapshot.revision,
            guard=guard,
            checks=self.checks,
            probes=self.probes,
            progress=self.progress,
        )
        report = executor.apply(planned.operations)
        report.refused = dict(planned.refused)
        return report


def resolve_checks(registry: Registry, settings: Settings) -> dict[str, tuple[str, ...]]:
    return resolve_commands(registry, settings, "checks")


def resolve_commands(
    registry: Registry, settings: Settings, kind: Literal["checks", "probes"]
) -> dict[str, tuple[str, ...]]:
    """Every check (or probe) the configurations declare, with the settings' overrides;
    a name in ``[checks]`` (``[probes]``) that no configuration declares is refused (a
    typo would otherwise be found in the middle of a run, or never)."""
    declared: dict[str, tuple[str, ...]] = {}
    for configuration in registry:
        declared.update(getattr(configuration, kind))
    overrides: dict[str, tuple[str, ...]] = getattr(settings, kind)
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise SettingsError(
            f"{kind}.{unknown[0]}",
            f"unknown {kind[:-1]} (known: {', '.join(sorted(declared)) or 'none'})",
        )
    return {**declared, **overrides}


def refuse_referrers(snapshot: Snapshot, refused: dict[str, Refusal], configuration: str) -> None:
    """Objects referring to a refused object are refused too, transitively (a refused
    account's pools, vhosts and crons): the configurations after this one skip them."""
    if not refused:
        return
    grew = True
    while grew:
        grew = False
        for obj in snapshot:
            name = obj.describe()
            if name in refused:
                continue
            for _, target, object_id in obj.references():
                reference = f"{target}/{object_id}"
                if reference in refused:
                    reason = f"it refers to {reference}, which this node refuses"
                    refused[name] = Refusal(configuration, reason)
                    grew = True
                    break
