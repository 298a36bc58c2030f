"""The file kinds: ``File`` and ``Directory`` changes, and the steps they plan.

A ``File`` compares its content, mode and ownership with the node and plans a
``WriteFile`` (or nothing); a ``Directory`` plans an ``EnsureDirectory``; a file a
configuration owned and no longer plans becomes a ``RemoveFile``. A ``Prerequisite``
plans nothing: it refuses its objects on a node that lacks a directory. Each step writes
atomically and without following links (``ccm.plan.fsutil``), and records how to put
back exactly what was there before. A secret file (``File(..., secret=True)``, or one
the manifest remembers as secret) never shows its content: ``ccm.plan.secrets``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ccm.errors import PlanError, TenantConflict
from ccm.plan.fsutil import atomic_write, make_directory, make_parents, remove_file, set_mode_owner
from ccm.plan.node import Accounts, PathState, read_path
from ccm.plan.secrets import Hidden, node_key, secret_text
from ccm.plan.steps import ConfigurationOperations, NodeView, Run

_COLOURS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}
_RESET = "\033[0m"


# -- intents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """A file with exactly this content, mode and ownership.

    ``secret``: its content (old and new) never appears in ``ccm diff``, logs, history or
    errors; a diff shows fingerprints and changed line numbers instead.
    """

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    origin: tuple[str, ...] = ()
    secret: bool = False

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        if self.path in ops.planned_files:
            raise PlanError(ops.configuration, f"{self.path} is planned twice")
        other = node.manifest.owner_of_file(self.path)
        if other is not None and other != ops.configuration:
            raise PlanError(ops.configuration, f"{self.path} is already owned by {other}")
        missing = node.accounts.missing(self.owner, self.group)
        if missing:  # a tenant's file whose account this node refused: refuse the file too
            raise TenantConflict(ops.configuration, f"{self.path}: {missing}")
        before = read_path(node.under(self.path))
        if before.exists and not before.is_file:
            raise TenantConflict(ops.configuration, f"{self.path} {not_a_file(before)}")
        if before.exists and other is None:
            raise TenantConflict(
                ops.configuration,
                f"{self.path} exists but was not written by ccm; refusing to overwrite it "
                "(move it away to let ccm manage it)",
            )
        ops.planned_files.add(self.path)
        content = self.content.encode()
        hidden = self.hide(ops, node, before.content, content)
        if not before.exists:
            ops.add(WriteFile(self.path, before, self, True, ("new",), hidden))
            return
        content_changed = before.content != content
        reasons = mode_owner_reasons(before, self.mode, self.owner, self.group, node.accounts)
        if content_changed:
            reasons.insert(0, "content")
        if reasons:
            ops.add(WriteFile(self.path, before, self, content_changed, tuple(reasons), hidden))

    def hide(
        self, ops: ConfigurationOperations, node: NodeView, before: bytes | None, after: bytes
    ) -> Hidden | None:
        """For a secret file, or one that was secret until now: what a diff shows instead
        of the content; its text is kept from every command output of the run."""
        was_secret = self.path in node.manifest.owned(ops.configuration).secrets
        if not (self.secret or was_secret):
            return None
        ops.secret_text.update(secret_text(before))
        if self.secret:
            ops.planned_secrets.add(self.path)
            ops.secret_text.update(secret_text(after))
        return Hidden.of(node_key(node.manifest.path.parent), before, after)

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        """Refused: a file ccm wrote earlier stays as it is (never removed as orphaned)."""
        owned = node.manifest.owned(ops.configuration)
        if self.path in owned.files:
            ops.planned_files.add(self.path)
            if self.path in owned.secrets:
                ops.planned_secrets.add(self.path)


@dataclass(frozen=True)
class Directory:
    """A directory with this mode and ownership. Never removed by ccm (it may hold data).

    ``owner_id``: the owner is the account ccm makes for that object id. An existing
    directory owned by any other uid (a deleted user's kept home, the system's own) is
    refused, never handed over.
    """

    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"
    owner_id: int | None = None
    origin: tuple[str, ...] = ()

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        before = read_path(node.under(self.path), with_content=False)
        if before.exists and not before.is_dir:
            what = (
                "a symlink (ccm never writes through one)" if before.is_link else "not a directory"
            )
            raise TenantConflict(ops.configuration, f"{self.path} exists and is {what}")
        self._refuse_foreign_owner(ops.configuration, before, node)
        reasons = (
            ["new"]
            if not before.exists
            else mode_owner_reasons(before, self.mode, self.owner, self.group, node.accounts)
        )
        if reasons:
            ops.add(EnsureDirectory(self.path, before, self, tuple(reasons)))

    def keep(self, ops: ConfigurationOperations, node: NodeView) -> None:
        """Refused: nothing to keep (directories are never removed)."""

    def _refuse_foreign_owner(self, configuration: str, before: PathState, node: NodeView) -> None:
        """An existing directory owned by another uid is never handed over: it holds data
        (a deleted tenant's kept home), or it is the system's (root's)."""
        if not before.exists or before.uid is None:
            return
        if self.owner_id is not None:
            expected: int | None = node.uid_base + self.owner_id
        else:
            entry = node.accounts.users.get(self.owner)
            expected = entry.uid if entry else None
        if before.uid != expected:
            raise TenantConflict(
                configuration,
                f"{self.path} exists and belongs to uid {before.uid} "
                f"({node.accounts.user_name(before.uid)}), not to {self.owner}; refusing to "
                "hand it over (move it away if it is meant for this account)",
            )


@dataclass(frozen=True)
class Prerequisite:
    """A directory the node must already have; ccm never makes it (the ``pool.d/`` of a
    PHP version someone installed on this node). Without it, the ``origin`` objects are
    refused on this node alone, before any of their changes is compared (list it ahead
    of them): ``reason`` says what is missing."""

    path: str
    reason: str
    origin: tuple[str, ...] = ()

    def compare(self, ops: ConfigurationOperations, node: NodeView) -> None:
        # without a trailing slash: lstat then sees a link as a link, not its target
        if not read_path(node.under(self.path.rstrip("/")), with_content=False).is_dir:
            raise TenantConflict(ops.configuration, f"{self.reason} (no {self.path} here)")


def mode_owner_reasons(
    before: PathState, mode: int, owner: str, group: str, accounts: Accounts
) -> list[str]:
    reasons = []
    if before.mode is not None and before.mode != mode:
        reasons.append(f"mode {before.mode:04o} -> {mode:04o}")
    if before.uid is not None and accounts.user_name(before.uid) != owner:
        reasons.append(f"owner {accounts.user_name(before.uid)} -> {owner}")
    if before.gid is not None and accounts.group_name(before.gid) != group:
        reasons.append(f"group {accounts.group_name(before.gid)} -> {group}")
    return reasons


# -- steps -----------------------------------------------------------------------------------


class _FileStep:
    """What the file steps share: applied after the accounts, reported by their path."""

    ORDER: ClassVar[int] = 1
    DEFERRED: ClassVar[bool] = False
    path: str

    @property
    def claim(self) -> tuple[str, str] | None:
        return None

    @property
    def changed(self) -> str:
        return self.path


@dataclass(frozen=True)
class WriteFile(_FileStep):
    path: str
    before: PathState
    change: File
    content_changed: bool
    reasons: tuple[str, ...]
    #: a secret file's fingerprints and changed lines, shown instead of its content
    hidden: Hidden | None = None

    @property
    def claim(self) -> tuple[str, str] | None:
        return ("file", self.path)

    def apply(self, run: Run, configuration: str) -> None:
        target, root, change, before = (
            run.root / self.path.lstrip("/"),
            run.root,
            self.change,
            self.before,
        )
        uid = run.accounts.uid(change.owner, configuration=configuration)
        gid = run.accounts.gid(change.group, configuration=configuration)
        created = make_parents(target, root)
        run.journal.record(f"parents of {self.path}", lambda: remove_empty(created))
        if before.exists and before.content is not None:
            content, mode = before.content, 0o600 if before.mode is None else before.mode

            def restore() -> None:
                atomic_write(target, content, mode=mode, uid=before.uid, gid=before.gid, root=root)

            run.journal.record(self.path, restore)
        else:
            run.journal.record(self.path, lambda: remove_file(target, root))
        if self.content_changed or not before.exists:
            atomic_write(  # synced with the whole run (``Executor.apply``)
                target,
                change.content.encode(),
                mode=change.mode,
                uid=uid,
                gid=gid,
                root=root,
                durable=False,
            )
        else:  # only mode or owner differ
            set_mode_owner(target, change.mode, uid, gid, root)

    def text(self, colour: bool) -> list[str]:
        c = self.change
        sign = "~" if self.before.exists else "+"
        reasons = ", ".join(self.reasons)
        lines = [f"{sign} file {self.path} ({reasons}; {c.mode:04o} {c.owner}:{c.group})\n"]
        if self.content_changed:
            lines += self._diff(colour)
        return lines

    def _diff(self, colour: bool) -> list[str]:
        if self.hidden is not None:
            return self.hidden.lines()
        diff = unified(self.path, self.before.content, self.change.content.encode())
        return coloured(diff, colour)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": "file",
            "operation": "write",
            "reasons": list(self.reasons),
            "diff": "".join(self._diff(False)) if self.content_changed else "",
            **({"secret": self.hidden.as_json()} if self.hidden is not None else {}),
        }


@dataclass(frozen=True)
class EnsureDirectory(_FileStep):
    path: str
    before: PathState
    change: Directory
    reasons: tuple[str, ...]

    def apply(self, run: Run, configuration: str) -> None:
        target, root = run.root / self.path.lstrip("/"), run.root
        uid = run.accounts.uid(self.change.owner, configuration=configuration)
        gid = run.accounts.gid(self.change.group, configuration=configuration)
        if not self.before.exists:
            created = make_directory(target, root)
            run.journal.record(self.path, lambda: remove_empty(created))
        else:
            mode, before_uid, before_gid = self.before.mode, self.before.uid, self.before.gid

            def restore() -> None:
                set_mode_owner(
                    target, 0o755 if mode is None else mode, before_uid or 0, before_gid or 0, root
                )

            run.journal.record(self.path, restore)
        set_mode_owner(target, self.change.mode, uid, gid, root)

    def text(self, colour: bool) -> list[str]:
        d = self.change
        return [
            f"~ directory {self.path} ({', '.join(self.reasons)}; "
            f"{d.mode:04o} {d.owner}:{d.group})\n"
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": "directory",
            "operation": "ensure",
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class RemoveFile(_FileStep):
    """A file the configuration wrote earlier and no longer plans."""

    path: str
    before: PathState
    #: a secret file's fingerprint, shown instead of its old content
    hidden: Hidden | None = None

    def apply(self, run: Run, configuration: str) -> None:
        target, root, before = run.root / self.path.lstrip("/"), run.root, self.before
        content = before.content or b""

        def restore() -> None:
            atomic_write(
                target,
                content,
                mode=0o600 if before.mode is None else before.mode,
                uid=before.uid,
                gid=before.gid,
                root=root,
            )

        run.journal.record(self.path, restore)
        remove_file(target, root)

    def text(self, colour: bool) -> list[str]:
        return [f"- file {self.path}\n", *self._diff(colour)]

    def _diff(self, colour: bool) -> list[str]:
        if self.hidden is not None:
            return self.hidden.lines()
        return coloured(unified(self.path, self.before.content, None), colour)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": "file",
            "operation": "remove",
            "diff": "".join(self._diff(False)),
            **({"secret": self.hidden.as_json()} if self.hidden is not None else {}),
        }


def plan_removals(ops: ConfigurationOperations, node: NodeView) -> None:
    """Files the configuration owned and no longer plans are removed (only those); a
    secret one shows its fingerprint, never its content."""
    owned = node.manifest.owned(ops.configuration)
    for path in sorted(owned.files - ops.planned_files):
        before = read_path(node.under(path))
        if not before.is_file:  # replaced by a link or a directory since: not ccm's
            continue
        hidden = None
        if path in owned.secrets:
            ops.secret_text.update(secret_text(before.content))
            hidden = Hidden.of(node_key(node.manifest.path.parent), before.content, None)
        ops.add(RemoveFile(path, before, hidden))


def not_a_file(before: PathState) -> str:
    """Why a path ccm would write a file to cannot take one."""
    if before.is_dir:
        return "is a directory, not a file"
    if before.is_link:
        return "is a symlink (ccm never replaces one with a file)"
    return "exists and is not a regular file"


def remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


# -- showing contents ------------------------------------------------------------------------


def _lines(content: bytes | None) -> list[str]:
    if content is None:
        return []
    return content.decode(errors="replace").splitlines(keepends=True)


def unified(path: str, before: bytes | None, after: bytes | None) -> list[str]:
    lines = list(
        difflib.unified_diff(
            _lines(before),
            _lines(after),
            fromfile="/dev/null" if before is None else f"a{path}",
            tofile="/dev/null" if after is None else f"b{path}",
        )
    )
    return [
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    ]


def coloured(lines: list[str], colour: bool) -> list[str]:
    if not colour:
        return lines
    out = []
    for line in lines:
        code = _COLOURS.get(line[:1])
        out.append(f"{code}{line.rstrip(chr(10))}{_RESET}\n" if code else line)
    return out
