"""``ccm migrate``: carry stored ``mail-accounts`` from ``domain`` to ``mail_domain_id``.

Before ``mail-domains`` existed an account named its domain as free text, so any tenant
could open a mailbox in another tenant's domain. Now an account refers to a
``mail-domains`` object, which has an owner. Stored accounts of the old shape no longer
validate (a node refuses the snapshot, a write of the type fails), so they are
rewritten once, by the operator, when the new ccm is installed:

* every distinct old ``domain`` becomes a ``mail-domains`` object (``is_local``, no
  catch-all) unless one with that domain is already stored, which is then used;
* its owner is the owner of the virtual host that serves the name (an exact name before
  the longest wildcard), because the new rule demands exactly that owner; otherwise the
  owner the operator gives (``--owner example.com=7`` for one domain, ``--owner 7`` for
  every other), a stored ``unix-users`` id. A domain with neither is not guessed: the
  migration stores nothing and lists each such domain with its accounts;
* a hash without a scheme prefix gets the one Dovecot read it as (``$6$`` →
  ``{SHA512-CRYPT}``, ``$2y$`` → ``{BLF-CRYPT}``, ``$argon2id$`` → ``{ARGON2ID}``); a
  hash of any other scheme (``{PLAIN}``, ``$1$`` MD5) is refused, naming the account
  and never the hash: its password has to be set again.

Everything is validated by the models and their cross-object rules against the state
the migration would leave, then written in ONE etcd transaction (the new domains, every
rewritten account, the two events keys) fenced on the events keys of every type it
read: a concurrent write makes it fail and nothing is stored. Accounts already of the
new shape are left alone, so running it again does nothing.

It works on the stored JSON rather than on the models (the framework never imports the
types), and validates through the registry (``parse_object``, ``cross_object_problems``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ccm.cluster.clock import timestamp
from ccm.cluster.etcd import Compare, EtcdClient, Get, KeyValue, Op, Put
from ccm.cluster.keys import Keys
from ccm.errors import CcmError, ValidationFailed
from ccm.models import CcmObject, cross_object_problems, parse_object, reads_of
from ccm.models.names import ServerName, canonical

ACCOUNTS = "mail-accounts"
DOMAINS = "mail-domains"
USERS = "unix-users"
#: the types whose objects serve names for an owner (``domain``, ``server_aliases``)
NAME_HOLDERS = ("virtual-hosts",)

#: a hash without ``{SCHEME}``: the scheme Dovecot's ``CRYPT`` read it as
#: a bare crypt hash's prefixes → its Dovecot scheme (the model then checks the whole hash)
_BARE_SCHEMES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("$6$",), "{SHA512-CRYPT}"),
    (("$2a$", "$2b$", "$2y$"), "{BLF-CRYPT}"),
    (("$argon2id$",), "{ARGON2ID}"),
)


class MigrationRefused(CcmError):
    """The migration stores nothing; ``problems`` says what the operator must supply."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class MailMigration:
    """What the migration writes: new ``mail-domains`` and rewritten ``mail-accounts``."""

    domains: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    #: domain → how its owner was chosen (``virtual-hosts/3``, ``--owner``, ``stored``)
    owners: dict[str, str] = field(default_factory=dict)
    revision: int | None = None

    def lines(self) -> list[str]:
        shown = [
            f"mail-domains/{d['id']}: {d['domain']}, owner unix-users/{d['unix_user_id']} "
            f"({self.owners[d['domain']]})"
            for d in self.domains
        ]
        shown += [
            f"mail-accounts/{a['id']}: mail_domain_id {a['mail_domain_id']}" for a in self.accounts
        ]
        return shown


def parse_owners(values: Iterable[str]) -> tuple[int | None, dict[str, int]]:
    """``--owner 7`` (every domain without a vhost) and ``--owner example.com=7``."""
    default: int | None = None
    per_domain: dict[str, int] = {}
    for value in values:
        name, _, ident = value.rpartition("=")
        if not re.fullmatch(r"[0-9]{1,10}", ident):
            raise MigrationRefused([f"--owner {value!r}: expected ID or DOMAIN=ID"])
        if name:
            per_domain[canonical(name)] = int(ident)
        else:
            default = int(ident)
    return default, per_domain


def _vhost_owner(domain: str, holders: Iterable[Mapping[str, Any]]) -> tuple[int, str] | None:
    """The owner of the most specific name that serves ``domain``, and that object."""
    found: list[tuple[tuple[bool, int], int, str]] = []
    for type_name, raw in ((r["__type"], r) for r in holders):
        for name in (raw.get("domain"), *raw.get("server_aliases", ())):
            if not isinstance(name, str):
                continue
            parsed = ServerName.parse(name)
            if parsed.matches(domain):
                rank = (parsed.base != domain, -len(parsed.base))
                found.append((rank, int(raw["unix_user_id"]), f"{type_name}/{raw['id']}"))
    if not found:
        return None
    _, owner, holder = min(found)
    return owner, holder


def _hash(raw: Mapping[str, Any]) -> str | None:
    """The account's hash with its scheme prefix, or None when it cannot be carried over."""
    value = raw.get("password_hash")
    if not isinstance(value, str):
        return None
    if value.startswith(("{SHA512-CRYPT}", "{BLF-CRYPT}", "{ARGON2ID}")):
        return value
    for prefixes, scheme in _BARE_SCHEMES:
        if value.startswith(prefixes):
            return scheme + value
    return None


def plan(
    stored: Mapping[str, Mapping[int, Mapping[str, Any]]],
    taken_domain_ids: Iterable[int],
    owners: tuple[int | None, dict[str, int]],
) -> MailMigration:
    """The migration of ``stored`` (type → id → raw JSON); pure. ``taken_domain_ids``:
    ids a new mail domain may not take (stored ones and tombstones)."""
    default_owner, per_domain = owners
    migration = MailMigration()
    problems: list[str] = []
    old = {i: raw for i, raw in stored.get(ACCOUNTS, {}).items() if "mail_domain_id" not in raw}
    by_domain: dict[str, list[int]] = {}
    for ident, raw in sorted(old.items()):
        by_domain.setdefault(canonical(str(raw.get("domain", ""))), []).append(ident)
    existing = {canonical(str(raw["domain"])): i for i, raw in stored.get(DOMAINS, {}).items()}
    holders = [{**raw, "__type": t} for t in NAME_HOLDERS for raw in stored.get(t, {}).values()]
    users = stored.get(USERS, {})
    next_id = max([0, *taken_domain_ids]) + 1
    domain_ids: dict[str, int] = {}
    for domain, account_ids in sorted(by_domain.items()):
        accounts = ", ".join(f"mail-accounts/{i}" for i in account_ids)
        if domain in existing:
            domain_ids[domain] = existing[domain]
            continue
        served = _vhost_owner(domain, holders)
        if served is not None:
            owner, how = served
        elif domain in per_domain or default_owner is not None:
            owner = per_domain.get(domain, default_owner)  # type: ignore[assignment]
            how = "--owner"
            if owner not in users:
                problems.append(f"{domain} ({accounts}): --owner unix-users/{owner} is not stored")
                continue
        else:
            problems.append(
                f"{domain} ({accounts}): no virtual host serves it, so its owner is not "
                f"known; give --owner {domain}=UNIX_USER_ID (or --owner ID for every such domain)"
            )
            continue
        domain_ids[domain] = next_id
        migration.owners[domain] = how
        migration.domains.append(
            {"id": next_id, "domain": domain, "unix_user_id": owner, "is_local": True}
        )
        next_id += 1
    for ident, raw in sorted(old.items()):
        domain = canonical(str(raw.get("domain", "")))
        password_hash = _hash(raw)
        if password_hash is None:
            problems.append(
                f"mail-accounts/{ident}: password_hash: not a crypt hash Dovecot verifies "
                "safely; set a new password ({SHA512-CRYPT}, {BLF-CRYPT} or {ARGON2ID})"
            )
            continue
        if domain not in domain_ids:
            continue
        rewritten = {k: v for k, v in raw.items() if k != "domain"}
        rewritten |= {"mail_domain_id": domain_ids[domain], "password_hash": password_hash}
        migration.accounts.append(rewritten)
    if problems:
        raise MigrationRefused(problems)
    return migration


def _validate(stored: Mapping[str, Mapping[int, Mapping[str, Any]]], m: MailMigration) -> None:
    """The models' field rules and cross-object rules, on the state the write leaves."""
    state: dict[str, dict[int, CcmObject]] = {}
    problems: list[str] = []
    written: list[CcmObject] = []
    new = {DOMAINS: m.domains, ACCOUNTS: m.accounts}
    for type_name, objects in stored.items():
        replaced = {raw["id"] for raw in new.get(type_name, [])}
        for ident, raw in objects.items():
            if ident in replaced or (type_name == ACCOUNTS and "mail_domain_id" not in raw):
                continue
            state.setdefault(type_name, {})[ident] = parse_object(type_name, raw)
    for type_name, raws in new.items():
        for raw in raws:
            try:
                obj = parse_object(type_name, raw)
            except ValidationFailed as failed:
                problems += failed.problems
                continue
            state.setdefault(type_name, {})[obj.id] = obj
            written.append(obj)

    def lookup(type_name: str, ident: int) -> CcmObject | None:
        return state.get(type_name, {}).get(ident)

    def list_type(type_name: str) -> list[CcmObject]:
        return [obj for _, obj in sorted(state.get(type_name, {}).items())]

    for obj in written:
        problems += cross_object_problems(obj, lookup, list_type)
    if problems:
        raise MigrationRefused(problems)


def migrate_mail(
    client: EtcdClient,
    prefix: str,
    owners: tuple[int | None, dict[str, int]],
    *,
    writer: str = "ccm-migrate",
    dry_run: bool = False,
) -> MailMigration:
    """Read, plan, validate and (unless ``dry_run``) store the migration in one txn."""
    keys = Keys(prefix)
    types = sorted({ACCOUNTS, DOMAINS, USERS, *reads_of(ACCOUNTS), *reads_of(DOMAINS)})
    gets: list[Op] = [Get(keys.event(t)) for t in types]
    gets += [Get(keys.objects_of(t), prefix=True) for t in types]
    gets.append(Get(keys.tombstones(DOMAINS), prefix=True))
    result = client.txn([], gets)
    responses = [r if isinstance(r, list) else [] for r in result.responses]
    events: dict[str, KeyValue | None] = {
        t: next(iter(responses[i]), None) for i, t in enumerate(types)
    }
    stored: dict[str, dict[int, dict[str, Any]]] = {}
    for i, type_name in enumerate(types):
        for kv in responses[len(types) + i]:
            raw = json.loads(kv.value)
            stored.setdefault(type_name, {})[int(raw["id"])] = raw
    tombstones = [int(kv.key.rpartition("/")[2]) for kv in responses[-1]]
    migration = plan(stored, [*stored.get(DOMAINS, {}), *tombstones], owners)
    if not migration.accounts:
        return migration
    _validate(stored, migration)
    if dry_run:
        return migration
    event = json.dumps({"at": timestamp(datetime.now(UTC)), "by": writer}, separators=(",", ":"))
    ops: list[Op] = [
        Put(keys.object(DOMAINS, raw["id"]), _encode(raw)) for raw in migration.domains
    ]
    ops += [Put(keys.object(ACCOUNTS, raw["id"]), _encode(raw)) for raw in migration.accounts]
    ops += [Put(keys.event(t), event.encode()) for t in (DOMAINS, ACCOUNTS)]
    compares = [Compare.unchanged(keys.event(t), events[t]) for t in types]
    committed = client.txn(compares, ops)
    if not committed.succeeded:
        raise MigrationRefused(["the objects changed while the migration read them; run it again"])
    migration.revision = committed.revision
    return migration


def _encode(raw: Mapping[str, Any]) -> bytes:
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode()
