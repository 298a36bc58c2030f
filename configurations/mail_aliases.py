"""``mail-aliases`` and ``postfix-maps``: forwarders, and Postfix's virtual maps in full.

An alias is ``local_part`` in a ``mail-domains`` object, forwarding to
``forward_addresses``; it belongs to that domain's owner. At write time an alias never
takes an account's address (Postfix would resolve the alias and never fill the
mailbox), and never closes a forwarding loop inside the cluster
(``configurations/mail_routing.py``).

``postfix-maps`` renders, on nodes with the ``postfix`` group, under
``/etc/postfix/ccm/`` (0644 root; no secret in them):

* ``virtual_mailbox_domains`` — every local mail domain (``example.com OK``);
* ``virtual_mailbox_maps`` — every account of a local domain and its Maildir, relative
  to the node's ``virtual_mailbox_base`` (``info@example.com example.com/info/``);
* ``virtual_alias_maps`` — every alias of a local domain (``sales@example.com
  a@example.org,b@example.net``) and every catch-all (``@example.com x@example.org``).
  A domain with a catch-all also maps each of its accounts to itself: Postfix looks up
  ``user@domain`` before ``@domain``, so without that line the catch-all would take the
  accounts' mail too;
* ``main.cf`` — the three settings that point Postfix at these maps. It is the
  configuration ``postconf`` checks and ``postmap`` builds with (``-c``), and holds the
  lines the node's own ``/etc/postfix/main.cf`` carries (README, "Mail").

After the files are in place: the check ``postfix_check`` (``postconf -c
/etc/postfix/ccm -n``: Postfix parses the main.cf); then one ``postmap`` per changed
map (it rebuilds that map's ``.db``) and one reload of ``postfix``. A run starts its
commands after its unit actions (``ccm.plan.pending``), so the reload comes before the
``postmap``s; that is harmless because Postfix's daemons notice a rebuilt table on
their own and restart (the reload only makes a change immediate), but it is why the
maps take effect with the next request rather than at the reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field

from ccm.models.base import CcmObject, ObjectsView
from ccm.models.fields import ObjectId, Ref, pattern
from ccm.models.snapshot import Snapshot
from ccm.plan.changes import Change, Check, Command, File, UnitAction
from ccm.plan.configuration import Configuration, Render
from configurations.mail_accounts import LOCAL_PART, LOCAL_PART_RULE, MailAccount
from configurations.mail_domains import ForwardAddresses, MailDomain
from configurations.mail_routing import (
    MAIL_ACCOUNTS,
    MAIL_ALIASES,
    MAIL_DOMAINS,
    Routing,
    clash_problems,
    loop_problem,
)


class MailAlias(CcmObject):
    """An address of a mail domain that forwards to other addresses."""

    TYPE: ClassVar[str] = MAIL_ALIASES
    READS: ClassVar[tuple[str, ...]] = (MAIL_DOMAINS, MAIL_ACCOUNTS, MAIL_ALIASES)
    local_part: Annotated[str, Field(strict=True), pattern(LOCAL_PART, LOCAL_PART_RULE)]
    mail_domain_id: Annotated[ObjectId, Ref(MAIL_DOMAINS)]
    forward_addresses: ForwardAddresses

    def unique_keys(self) -> dict[str, Any]:
        return {"address": f"{self.local_part}@mail-domains/{self.mail_domain_id}"}

    def problems(self, view: ObjectsView) -> list[str]:
        routing = Routing.of(view)
        problems = clash_problems(self, routing, MAIL_ACCOUNTS)
        address = routing.address(self)
        if address is not None:
            problems += loop_problem(self.describe(), "forward_addresses", routing, address)
        return problems


POSTFIX_DIR = "/etc/postfix/ccm/"
MAPS = ("virtual_mailbox_domains", "virtual_mailbox_maps", "virtual_alias_maps")
POSTFIX_CHECK = "postfix_check"
POSTFIX_CHECKS: Mapping[str, tuple[str, ...]] = {
    POSTFIX_CHECK: ("postconf", "-c", "{root}/etc/postfix/ccm", "-n")
}


def postmap(name: str) -> Command:
    """Rebuild one map's ``.db`` when its source changed."""
    source = POSTFIX_DIR + name
    argv = ("postmap", "-c", "{root}" + POSTFIX_DIR.rstrip("/"), "hash:{root}" + source)
    return Command(argv, triggers=(source,))


def map_entries(
    domains: Sequence[MailDomain], accounts: Sequence[MailAccount], aliases: Sequence[MailAlias]
) -> dict[str, list[tuple[str, str]]]:
    """Each map's ``(key, value)`` lines, sorted by key: pure, so tests read it too."""
    local = {d.id: d for d in domains if d.is_local}
    mailbox_domains = [(d.domain, "OK") for d in local.values()]
    mailboxes = []
    identities = []
    for account in accounts:
        domain = local.get(account.mail_domain_id)
        if domain is None:
            continue
        address = f"{account.local_part}@{domain.domain}"
        mailboxes.append((address, f"{domain.domain}/{account.local_part}/"))
        if domain.catch_all_forward_addresses:
            identities.append((address, address))
    forwards = [
        (
            f"{alias.local_part}@{local[alias.mail_domain_id].domain}",
            ",".join(alias.forward_addresses),
        )
        for alias in aliases
        if alias.mail_domain_id in local
    ]
    catch_alls = [
        ("@" + d.domain, ",".join(d.catch_all_forward_addresses))
        for d in local.values()
        if d.catch_all_forward_addresses
    ]
    return {
        "virtual_mailbox_domains": sorted(mailbox_domains),
        "virtual_mailbox_maps": sorted(mailboxes),
        "virtual_alias_maps": sorted(forwards + identities + catch_alls),
    }


class PostfixMaps(Configuration):
    name = "postfix-maps"
    subscribes = (MailDomain.TYPE, MailAccount.TYPE, MailAlias.TYPE)
    summary = "Postfix's virtual mailbox domains, mailbox and alias maps; postmap, reload"
    groups = ("postfix",)
    checks = POSTFIX_CHECKS

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        entries = map_entries(
            snapshot.all(MailDomain), snapshot.all(MailAccount), snapshot.all(MailAlias)
        )
        changes: list[Change] = [
            File(POSTFIX_DIR + "main.cf", render("mail-aliases/main.cf.j2", maps=MAPS))
        ]
        for name in MAPS:
            content = render("mail-aliases/map.j2", name=name, entries=entries[name])
            changes.append(File(POSTFIX_DIR + name, content))
        changes.append(Check(POSTFIX_CHECK, triggers=(POSTFIX_DIR,)))
        changes += [postmap(name) for name in MAPS]
        changes.append(UnitAction("postfix", "reload", triggers=(POSTFIX_DIR,)))
        return changes
