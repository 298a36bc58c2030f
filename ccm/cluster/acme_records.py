"""Reading what the renewal plans over, and keeping its state: etcd in, plain data out.

* the managers: ``{prefix}/objects/certificate-managers/<id>`` (the wire contract's JSON;
  only ``id`` and ``common_names`` are read, so the renewal does not depend on how the
  model's other rules are written);
* the certificates they hold: ``{prefix}/objects/certificates/<id>``, whose PEM gives the
  names and expiry actually issued (not what the state says was ordered);
* their state: ``{prefix}/acme/managers/<id>`` (``ManagerState`` as JSON), which
  ``ccm status`` shows and the orderer rewrites after every attempt.

A stored value that does not parse is skipped with a warning (it never stops the others).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from cryptography import x509

from ccm.cluster.acme_schedule import Held, Manager, ManagerState
from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import EtcdClient
from ccm.cluster.keys import Keys
from ccm.log import get_logger

MANAGERS = "certificate-managers"
CERTIFICATES = "certificates"
_TIMES = ("last_attempt", "last_success", "next_attempt", "not_after")


def _ids(client: EtcdClient, prefix: str) -> dict[int, bytes]:
    kvs, _ = client.get_prefix(prefix)
    found = {}
    for kv in kvs:
        name = kv.key[len(prefix) :]
        if name.isdigit():
            found[int(name)] = kv.value
    return found


def read_managers(client: EtcdClient, prefix: str) -> list[Manager]:
    managers = []
    for object_id, raw in _ids(client, Keys(prefix).objects_of(MANAGERS)).items():
        try:
            names = json.loads(raw)["common_names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TypeError("common_names is not a list of names")
            managers.append(Manager(object_id, tuple(names)))
        except (ValueError, KeyError, TypeError) as error:
            get_logger().warning(
                "unreadable certificate manager skipped", id=object_id, error=str(error)
            )
    return sorted(managers, key=lambda m: m.id)


def held_certificate(raw: bytes) -> Held:
    """The names and expiry of a stored ``certificates`` object's leaf certificate."""
    pem = json.loads(raw)["certificate"]
    leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = frozenset(names.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = frozenset()
    return Held(dns, leaf.not_valid_after_utc)


def read_held(client: EtcdClient, prefix: str, states: dict[int, ManagerState]) -> dict[int, Held]:
    """Manager id → the certificate stored under its ``certificate_id``."""
    stored = _ids(client, Keys(prefix).objects_of(CERTIFICATES))
    held = {}
    for manager_id, state in states.items():
        raw = stored.get(state.certificate_id) if state.certificate_id is not None else None
        if raw is None:
            continue
        try:
            held[manager_id] = held_certificate(raw)
        except (ValueError, KeyError, TypeError) as error:
            get_logger().warning(
                "unreadable managed certificate: ordering again",
                certificate_id=state.certificate_id,
                error=type(error).__name__,
            )
    return held


def certificate_ids(client: EtcdClient, prefix: str) -> set[int]:
    """The ids of every stored ``certificates`` object, and of deleted ones."""
    keys = Keys(prefix)
    return set(_ids(client, keys.objects_of(CERTIFICATES))) | set(
        _ids(client, keys.tombstones(CERTIFICATES))
    )


def _encode(state: ManagerState) -> bytes:
    data: dict[str, Any] = asdict(state)
    data["names"] = list(state.names)
    for name in _TIMES:
        value = getattr(state, name)
        data[name] = timestamp(value) if value is not None else None
    return json.dumps(data).encode()


def _decode(raw: bytes) -> ManagerState:
    data = json.loads(raw)
    known = {f.name for f in fields(ManagerState)}
    values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
    values["names"] = tuple(values.get("names", ()))
    for name in _TIMES:
        if values.get(name):
            values[name] = datetime.fromisoformat(values[name])
    return ManagerState(**values)


class ManagerStates:
    """``{prefix}/acme/managers/<id>``: one JSON record per manager."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def all(self) -> dict[int, ManagerState]:
        states = {}
        for manager_id, raw in _ids(self.client, self.keys.acme_managers).items():
            try:
                states[manager_id] = _decode(raw)
            except (ValueError, KeyError, TypeError) as error:
                get_logger().warning(
                    "unreadable acme state ignored", id=manager_id, error=str(error)
                )
        return states

    def put(self, manager_id: int, state: ManagerState) -> None:
        self.client.put(self.keys.acme_manager(manager_id), _encode(state))

    def delete(self, manager_id: int) -> None:
        self.client.delete(self.keys.acme_manager(manager_id))
