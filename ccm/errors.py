"""The one exception tree of ccm; every error carries its context.

CcmError
├── SettingsError            a bad settings file or environment override (names the key)
├── ValidationFailed         an object refused at write time (type, id, field, reason)
├── StoreError               the object store refused a write or could not answer
│   ├── DanglingReference    a write references an object that does not exist
│   ├── ReferencedObject     a delete would leave referrers (names them)
│   ├── ObjectNotFound       get/delete of an id that is not stored
│   └── InvalidStoredObject  a stored value no longer validates
├── ClusterError             etcd unreachable, lock lost, fencing failed
│   ├── LockLost             the lease behind the cluster lock expired
│   ├── LockTimeout          the lock was not acquired in time
│   │   └── LockCancelled    the wait for the lock was cancelled (stopping)
│   ├── EtcdUnavailable      etcd down or unreachable: retry later
│   │   └── WatchDisconnected    a watch stream broke: re-watch from last + 1
│   ├── RevisionCompacted    history is gone: assume everything changed
│   ├── LeaseNotFound        the lease expired or was revoked
│   └── RunCancelled         the daemon is stopping: the run was rolled back, work kept
├── GraphError               the configuration graph is invalid
│   └── DependencyCycle      a cycle between configurations (names the cycle)
└── RunError                 a run failed on this node (names the configuration)
    ├── PlanError            a configuration could not plan (a template error, a conflict)
    │   └── TenantConflict   the node refuses one tenant's change (a hand-made account):
    │                        that change's objects are refused, the run goes on
    ├── CheckFailed          a check command refused the rendered files (carries output)
    ├── ProbeFailed          a health probe kept failing after the reloads (carries output)
    ├── CommandFailed        an action command exited non-zero (carries argv and output)
    │   ├── ActionFailed     a reload/command after the files were in place (kept pending)
    │   └── LifecycleFailed  a start/restart/enable of a managed unit: the run was restored
    └── PlaybookFailed       an Ansible playbook failed (carries the failing task)
"""

from __future__ import annotations


class CcmError(Exception):
    """Root of every error ccm raises on purpose."""


class SettingsError(CcmError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"settings: {key}: {reason}")
        self.key = key
        self.reason = reason


class ValidationFailed(CcmError):
    """One or more objects were refused; ``problems`` is a list of readable lines."""

    def __init__(self, type_name: str, problems: list[str]) -> None:
        super().__init__(f"invalid {type_name}: " + "; ".join(problems))
        self.type_name = type_name
        self.problems = problems


class StoreError(CcmError):
    pass


class DanglingReference(StoreError):
    def __init__(self, source: str, field: str, target: str) -> None:
        super().__init__(f"{source}: {field} refers to {target}, which does not exist")
        self.source = source
        self.field = field
        self.target = target


class ReferencedObject(StoreError):
    def __init__(self, target: str, referrers: list[str]) -> None:
        super().__init__(f"cannot delete {target}: still referenced by " + ", ".join(referrers))
        self.target = target
        self.referrers = referrers


class ObjectNotFound(StoreError):
    def __init__(self, target: str) -> None:
        super().__init__(f"{target} does not exist")
        self.target = target


class InvalidStoredObject(StoreError):
    """A stored value is not a valid object any more (``key`` names it)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"stored object {key}: {reason}")
        self.key = key
        self.reason = reason


class ClusterError(CcmError):
    pass


class LockLost(ClusterError):
    pass


class EtcdUnavailable(ClusterError):
    """No etcd endpoint answered (down, unreachable, or too slow); retrying may help."""


class WatchDisconnected(EtcdUnavailable):
    """A watch stream broke; re-watch from the last seen revision + 1."""


class RevisionCompacted(ClusterError):
    """The requested revision was compacted away: its history is gone.

    ``compact_revision`` is etcd's current compaction point when etcd said it (a watch),
    ``None`` when it did not (a read at an old revision).
    """

    def __init__(self, message: str, compact_revision: int | None) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseNotFound(ClusterError):
    """The lease expired or was revoked; keys bound to it are gone."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"etcd lease {lease_id:x} does not exist (expired or revoked)")
        self.lease_id = lease_id


class LockTimeout(ClusterError):
    """The lock was not acquired in time; this waiter left the queue."""


class LockCancelled(LockTimeout):
    """``acquire`` was cancelled (its ``cancel`` event was set); this waiter left the queue."""


class GraphError(CcmError):
    pass


class DependencyCycle(GraphError):
    def __init__(self, cycle: list[str]) -> None:
        super().__init__("configuration dependency cycle: " + " -> ".join([*cycle, cycle[0]]))
        self.cycle = cycle


class RunError(CcmError):
    """A run failed; ``configuration`` names where."""

    def __init__(self, configuration: str, message: str) -> None:
        super().__init__(f"{configuration}: {message}")
        self.configuration = configuration
        self.message = message


class PlanError(RunError):
    pass


class TenantConflict(PlanError):
    """A change the node refuses for a reason its tenant caused (the name is taken here).

    Raised while comparing a change with the node; a change that names its ``origin``
    objects gets them refused on this node instead of failing the run.
    """


class CheckFailed(RunError):
    def __init__(self, configuration: str, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(
            configuration,
            f"check {' '.join(argv)!r} failed (exit {returncode}); every file of the run was "
            f"restored:\n{output.strip()}",
        )
        self.argv = argv
        self.returncode = returncode
        self.output = output


class ProbeFailed(RunError):
    def __init__(self, configuration: str, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(
            configuration,
            f"probe {' '.join(argv)!r} kept failing (exit {returncode}) after the reloads; "
            f"every file of the run was restored and reloaded again:\n{output.strip()}",
        )
        self.argv = argv
        self.returncode = returncode
        self.output = output


class CommandFailed(RunError):
    def __init__(self, configuration: str, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(
            configuration,
            f"command {' '.join(argv)!r} failed (exit {returncode}):\n{output.strip()}",
        )
        self.argv = argv
        self.returncode = returncode
        self.output = output


class PlaybookFailed(RunError):
    def __init__(self, configuration: str, playbook: str, task: str, message: str) -> None:
        super().__init__(configuration, f"playbook {playbook}: task {task!r} failed: {message}")
        self.playbook = playbook
        self.task = task


class ActionFailed(CommandFailed):
    """A reload or command failed after every file was checked and in place.

    The files stay (they passed their checks); the action stays pending in the manifest
    and runs again on the node's next run.
    """


class LifecycleFailed(CommandFailed):
    """A start, enable, restart or reload of a unit a configuration manages (or a
    ``daemon-reload``) failed after the files were in place: the run was restored (the
    units it started stopped, its files put back, what it restarted restarted again)."""

    def __init__(self, configuration: str, argv: list[str], returncode: int, output: str) -> None:
        super().__init__(configuration, argv, returncode, output)
        RunError.__init__(
            self,
            configuration,
            f"{' '.join(argv)!r} failed (exit {returncode}); every change of the run was "
            f"restored:\n{output.strip()}",
        )


class RunCancelled(ClusterError):
    """The run was stopped (SIGTERM) before its next change; everything was restored."""


class UnsafePath(OSError):
    """A directory on the way to a target is a symlink: ccm does not write through it.

    An ``OSError`` (not a ``CcmError``) on purpose: the executor treats it as any failed
    write, restores the run and names the configuration (``RunError``).
    """
