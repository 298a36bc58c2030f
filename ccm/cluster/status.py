"""``ccm status``: the cluster as etcd sees it, in DESIGN.md's JSON shape.

    {"revision": <latest events revision>,
     "halt": null | {node, configuration, error, revision, at},
     "lock": {"holder": <node> | null, "waiting": [<node>…]},
     "nodes": [{"node", "alive", "applied_revision", "behind", "groups", "last_run": {…}}],
     "refused": [{"object", "node", "configuration", "error", "revision", "at"}],
     "certificate_managers": [{"manager", "names", "certificate_id", "not_after", "failures",
                               "last_error", "last_attempt", "next_attempt", "node"}]}

``groups`` is the node's ``nodes`` object's groups, or null when it has none (it runs every
configuration). ``refused`` lists the objects a node left as they were because their tenant's input
cannot apply there (``{prefix}/failures/…``); the rest of the fleet went on.
``certificate_managers`` is each manager's ACME state (``{prefix}/acme/managers/<id>``): the
certificate it holds, and a failing order's error and next attempt (null fields: not ordered
yet).

Settings (and so secrets) never appear here.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from ccm.cluster.acme_records import ManagerStates, read_managers
from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.failures import ObjectFailures
from ccm.cluster.halt import HaltFlag
from ccm.cluster.lock import lock_queue
from ccm.cluster.nodes import NodeRecords
from ccm.cluster.store import ObjectStore
from ccm.models import Node


def cluster_status(client: EtcdClient, prefix: str) -> dict[str, Any]:
    store = ObjectStore(client, prefix)
    latest = max(store.event_revisions().values(), default=0)
    registered = {node.hostname: node for node in store.list(Node.TYPE) if isinstance(node, Node)}
    halt = HaltFlag(client, prefix).get()
    queue = lock_queue(client, prefix)
    records = NodeRecords(client, prefix)
    known = records.all()
    alive = records.alive()
    nodes = []
    for node in sorted(set(known) | alive | set(registered)):
        record = known.get(node)
        applied = record.applied_revision if record else None
        entry = registered.get(node)
        nodes.append(
            {
                "node": node,
                "alive": node in alive,
                "applied_revision": applied,
                "behind": applied is None or applied < latest,
                "groups": list(entry.groups) if entry else None,
                "last_run": record.last_run.as_dict() if record and record.last_run else None,
            }
        )
    return {
        "revision": latest,
        "halt": asdict(halt) if halt else None,
        "lock": {
            "holder": queue[0].node if queue else None,
            "waiting": [entry.node for entry in queue[1:]],
        },
        "nodes": nodes,
        "refused": [asdict(failure) for failure in ObjectFailures(client, prefix).all()],
        "certificate_managers": _certificate_managers(client, prefix),
    }


def _certificate_managers(client: EtcdClient, prefix: str) -> list[dict[str, Any]]:
    states = ManagerStates(client, prefix).all()
    found = []
    for manager in read_managers(client, prefix):
        state = states.get(manager.id)

        def when(value: datetime | None) -> str | None:
            return timestamp(value) if value is not None else None

        found.append(
            {
                "manager": manager.id,
                "names": list(manager.common_names),
                "certificate_id": state.certificate_id if state else None,
                "not_after": when(state.not_after) if state else None,
                "failures": state.failures if state else 0,
                "last_error": state.last_error if state else "",
                "last_attempt": when(state.last_attempt) if state else None,
                "next_attempt": when(state.next_attempt) if state else None,
                "node": state.node if state else None,
            }
        )
    return found


def format_status(status: dict[str, Any]) -> str:
    lines = [f"revision {status['revision']}"]
    halt = status["halt"]
    if halt:
        lines.append(
            f"HALTED by {halt['node']} at {halt['at']} (revision {halt['revision']}, "
            f"configuration {halt['configuration']}):"
        )
        lines.extend(f"  {line}" for line in str(halt["error"]).splitlines())
        lines.append("  fix the cause, then run `ccm resume`")
    else:
        lines.append("halt: not set")
    lock = status["lock"]
    lines.append(
        f"lock: {lock['holder'] or 'free'}"
        + (f"; waiting: {', '.join(lock['waiting'])}" if lock["waiting"] else "")
    )
    header = (
        f"{'NODE':<20} {'ALIVE':<6} {'APPLIED':>8} {'BEHIND':<7} {'LAST RUN':<8} "
        f"{'FINISHED':<33} GROUPS"
    )
    lines.append(header)
    for node in status["nodes"]:
        last = node["last_run"] or {}
        applied = "-" if node["applied_revision"] is None else str(node["applied_revision"])
        groups = node.get("groups")
        shown = "all (unregistered)" if groups is None else ",".join(groups) or "(none)"
        lines.append(
            f"{node['node']:<20} {'yes' if node['alive'] else 'no':<6} {applied:>8} "
            f"{'yes' if node['behind'] else 'no':<7} {last.get('result', '-'):<8} "
            f"{last.get('finished', '-'):<33} {shown}"
        )
    refused = status.get("refused") or []
    if refused:
        lines.append(f"REFUSED objects ({len(refused)}): left as they were on these nodes")
        for failure in refused:
            lines.append(
                f"  {failure['object']} on {failure['node']} since revision "
                f"{failure['revision']}: {failure['configuration']}: {failure['error']}"
            )
    managers = status.get("certificate_managers") or []
    if managers:
        lines.append(f"CERTIFICATE MANAGERS ({len(managers)}):")
        for entry in managers:
            names = ",".join(entry["names"])
            if entry["failures"]:
                lines.append(
                    f"  {entry['manager']} {names}: FAILING ({entry['failures']} in a row, "
                    f"next attempt {entry['next_attempt']}): {entry['last_error']}"
                )
            elif entry["not_after"]:
                lines.append(
                    f"  {entry['manager']} {names}: certificate {entry['certificate_id']} "
                    f"until {entry['not_after']}"
                )
            else:
                lines.append(f"  {entry['manager']} {names}: not ordered yet")
    return "\n".join(lines)
