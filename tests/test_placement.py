"""Node groups and placement (issue 9, part 1): each node runs only its configurations.

In-process tests plan with the real engine and the built-in configurations; the cluster
test runs three real daemons with different groups against one real etcd.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Cluster

from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.errors import ReferencedObject, ValidationFailed
from ccm.models import Node, Snapshot
from ccm.plan.changes import Change
from ccm.plan.configuration import Configuration, Render
from ccm.testing.etcd import EtcdServer
from ccm.testing.noderoot import node_settings, seed_root
from configurations import CONFIGURATIONS
from configurations.crons import Cron
from configurations.mail_accounts import MailAccount
from configurations.mail_domains import MailDomain
from configurations.unix_users import UnixUser
from configurations.virtual_hosts import VirtualHost

HASH = "{SHA512-CRYPT}$6$saltsalt$" + "a" * 86
ALICE = UnixUser(id=1, username="alice")
WEB1 = Node(id=1, hostname="web1", groups=["nginx", "php", "cron"])
WEB2 = Node(id=2, hostname="web2", groups=["nginx", "php", "cron"])
MAIL1 = Node(id=3, hostname="mail1", groups=["dovecot"])
SITE = VirtualHost(
    id=1, domain="alice.example.com", unix_user_id=1, document_root="/home/alice/www"
)
PINNED = Cron(id=1, unix_user_id=1, name="once", schedule="@hourly", command="once", node_id=1)
EVERYWHERE = Cron(id=2, unix_user_id=1, name="each", schedule="@daily", command="each")
MAIL_DOMAIN = MailDomain(id=1, domain="example.org", unix_user_id=1)
MAILBOX = MailAccount(id=1, local_part="info", mail_domain_id=1, password_hash=HASH)
OBJECTS = [WEB1, WEB2, MAIL1, ALICE, SITE, PINNED, EVERYWHERE, MAIL_DOMAIN, MAILBOX]


def engine(root: Path, node: str) -> Engine:
    return Engine(Registry(CONFIGURATIONS), node_settings(root, node=node))


def test_a_registered_node_runs_only_the_configurations_of_its_groups(tmp_path: Path) -> None:
    snapshot = Snapshot.of(1, OBJECTS)
    web = engine(tmp_path, "web1")
    assert web.runs_here(snapshot.viewed_from("web1")) == {
        "unix-users",
        "crontabs",
        "php-versions",
        "php-fpm-pools",
        "nginx-vhosts",
    }
    assert web.runs_here(snapshot.viewed_from("mail1")) == {"dovecot-users"}
    everything = {configuration.name for configuration in CONFIGURATIONS}
    assert web.runs_here(snapshot.viewed_from("unregistered")) == everything


def test_a_web_node_without_dovecot_applies_and_a_mail_node_gets_only_mail(
    tmp_path: Path,
) -> None:
    web_root = seed_root(tmp_path / "web1", extra_groups=("crontab",))
    group = web_root / "etc/group"
    group.write_text("".join(f"{line}\n" for line in group.read_text().splitlines()
                             if not line.startswith("dovecot:")))  # fmt: skip
    report = engine(web_root, "web1").apply(Snapshot.of(1, OBJECTS))
    assert not report.refused
    assert not (web_root / "etc/dovecot/users").exists()
    crontab = (web_root / "var/spool/cron/crontabs/alice").read_text()
    assert "@hourly once" in crontab and "@daily each" in crontab

    mail_root = seed_root(tmp_path / "mail1")
    engine(mail_root, "mail1").apply(Snapshot.of(1, OBJECTS))
    assert (mail_root / "etc/dovecot/users").exists()
    assert not (mail_root / "etc/nginx").exists()
    assert "alice:" not in (mail_root / "etc/passwd").read_text()


def test_a_pinned_cron_runs_on_its_node_only_and_moves(tmp_path: Path) -> None:
    roots = {name: seed_root(tmp_path / name) for name in ("web1", "web2")}
    for name, root in roots.items():
        engine(root, name).apply(Snapshot.of(1, OBJECTS))
    crontab = {name: (root / "var/spool/cron/crontabs/alice") for name, root in roots.items()}
    assert "@hourly once" in crontab["web1"].read_text()
    assert "@hourly once" not in crontab["web2"].read_text()
    assert "@daily each" in crontab["web2"].read_text()

    moved = [obj for obj in OBJECTS if obj is not PINNED] + [
        PINNED.model_copy(update={"node_id": 2})
    ]
    for name, root in roots.items():
        engine(root, name).apply(Snapshot.of(2, moved))
    assert "@hourly once" not in crontab["web1"].read_text()
    assert "@hourly once" in crontab["web2"].read_text()


def test_taking_a_group_away_removes_what_its_configurations_wrote(tmp_path: Path) -> None:
    root = seed_root(tmp_path / "web1")
    engine(root, "web1").apply(Snapshot.of(1, OBJECTS))
    site = root / "etc/nginx/sites-enabled/alice.example.com.conf"
    assert site.exists()
    without_nginx = WEB1.model_copy(update={"groups": ["php", "cron"]})
    report = engine(root, "web1").apply(Snapshot.of(2, [without_nginx, *OBJECTS[1:]]))
    assert not site.exists()
    assert "/etc/nginx/sites-enabled/alice.example.com.conf" in report.changed_paths
    assert (root / "var/spool/cron/crontabs/alice").exists()  # cron still runs here
    assert "alice:" in (root / "etc/passwd").read_text()  # accounts stay while needed


# -- the writer ------------------------------------------------------------------------------


class TenantDaemons(Configuration):
    """A plugin's configuration that runs processes as its tenants' accounts."""

    name = "test-daemons"
    groups = ("daemons",)
    needs_accounts = True

    def plan(self, snapshot: Snapshot, render: Render) -> Sequence[Change]:
        return []


def test_accounts_are_made_on_every_node_whose_configurations_need_them(tmp_path: Path) -> None:
    # without the built-in configurations that need accounts beside the web's
    web = [c for c in CONFIGURATIONS if c.name not in ("daemons", "proftpd-users")]
    builtin = Registry(web)
    assert builtin.groups_of(builtin["unix-users"]) == ("cron", "nginx", "php")
    extended = Registry([*web, TenantDaemons])
    assert extended.groups_of(extended["unix-users"]) == ("cron", "daemons", "nginx", "php")
    assert extended.groups_of(extended["test-daemons"]) == ("daemons",)
    every = Registry(CONFIGURATIONS)  # the built-in daemons and FTP users need accounts too
    assert every.groups_of(every["unix-users"]) == ("cron", "daemons", "nginx", "php", "proftpd")
    daemons_only = Node(id=4, hostname="run1", groups=["daemons"])
    snapshot = Snapshot.of(1, [daemons_only, ALICE]).viewed_from("run1")
    settings = node_settings(seed_root(tmp_path / "run1"), node="run1")
    assert Engine(extended, settings).runs_here(snapshot) == {"unix-users", "test-daemons"}
    # without a configuration that needs them there, no accounts are made on that node
    assert Engine(builtin, settings).runs_here(snapshot) == set()
    assert "unix-users" not in Engine(builtin, settings).runs_here(
        Snapshot.of(1, [MAIL1, ALICE]).viewed_from("mail1")
    )


def node(id: int, hostname: str, *groups: str, primary: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": id, "hostname": hostname, "groups": list(groups), "primary_for": list(primary)}


@pytest.fixture
def writer(store: ObjectStore) -> ObjectStore:
    return ObjectStore(
        store.client, store.prefix, writer="tests", groups=Registry(CONFIGURATIONS).groups
    )


def test_a_misspelt_group_is_refused_naming_the_known_ones(writer: ObjectStore) -> None:
    with pytest.raises(ValidationFailed) as refused:
        writer.put("nodes", [node(1, "web1", "ngnix")])
    assert "nodes/1: groups" in str(refused.value)
    assert "ngnix" in str(refused.value) and "nginx" in str(refused.value)


def test_one_primary_per_group_and_only_for_its_own_groups(writer: ObjectStore) -> None:
    writer.put("nodes", [node(1, "web1", "php", primary=("php",))])
    with pytest.raises(ValidationFailed, match="primary_for php"):
        writer.put("nodes", [node(2, "web2", "php", primary=("php",))])
    with pytest.raises(ValidationFailed, match="its own groups"):
        writer.put("nodes", [node(2, "web2", "php", primary=("cron",))])


def test_a_pinned_cron_needs_its_node_and_keeps_it(writer: ObjectStore) -> None:
    writer.put("nodes", [node(1, "web1", "cron")])
    writer.put("unix-users", [{"id": 1, "username": "alice"}])
    cron = {"id": 1, "unix_user_id": 1, "name": "x", "schedule": "@daily", "command": "true"}
    with pytest.raises(Exception, match="nodes/2"):
        writer.put("crons", [{**cron, "node_id": 2}])
    writer.put("crons", [{**cron, "node_id": 1}])
    with pytest.raises(ReferencedObject, match="crons/1"):
        writer.delete("nodes", 1)


# -- three daemons, three roles ----------------------------------------------------------------


@pytest.fixture
def cluster(private_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        private_etcd_server, tmp_path / "cluster"
    ) as harness:  # stopped, and its logs printed, whatever happens
        yield harness


@pytest.mark.slow
def test_three_nodes_with_different_groups_converge_each_with_its_part(cluster: Cluster) -> None:
    cluster.put_cli("nodes", *(obj.model_dump(mode="json") for obj in (WEB1, WEB2, MAIL1)))
    for name in ("web1", "web2", "mail1"):
        added = cluster.add(name, start=False)
        if name != "mail1":  # web nodes have no Dovecot installed
            group = added.root / "etc/group"
            lines = [
                line for line in group.read_text().splitlines() if not line.startswith("dovecot:")
            ]
            group.write_text("".join(f"{line}\n" for line in lines))
        added.start().wait_ready()
    for obj in (ALICE, SITE, PINNED, EVERYWHERE, MAIL_DOMAIN, MAILBOX):
        revision = cluster.put_cli(obj.TYPE, obj.model_dump(mode="json"))
    cluster.wait_applied(revision)
    assert cluster.halt() is None
    web1, web2, mail1 = (cluster[name].root for name in ("web1", "web2", "mail1"))
    for web in (web1, web2):
        assert (web / "etc/nginx/sites-enabled/alice.example.com.conf").exists()
        assert not (web / "etc/dovecot/users").exists()
    assert "@hourly once" in (web1 / "var/spool/cron/crontabs/alice").read_text()
    assert "@hourly once" not in (web2 / "var/spool/cron/crontabs/alice").read_text()
    assert (mail1 / "etc/dovecot/users").exists()
    assert not (mail1 / "etc/nginx").exists() and not (mail1 / "var/spool/cron").exists()

    status = cluster.status()
    groups = {entry["node"]: entry["groups"] for entry in status["nodes"]}
    assert groups == {"web1": WEB1.groups, "web2": WEB2.groups, "mail1": MAIL1.groups}
    graph = cluster.ccm("graph", "--node", "mail1").stdout
    assert "[runs]    dovecot-users" in graph and "[not here] nginx-vhosts" in graph
    preview = cluster.ccm("diff", "--node", "web2", check=False)
    assert preview.returncode == 2, preview.stderr
    assert "alice.example.com.conf" in preview.stdout and "@daily each" in preview.stdout
    assert "@hourly once" not in preview.stdout

    # the pinned cron moves to web2 in one rollout
    revision = cluster.put_cli("crons", {**PINNED.model_dump(mode="json"), "node_id": 2})
    cluster.wait_applied(revision)
    assert "@hourly once" not in (web1 / "var/spool/cron/crontabs/alice").read_text()
    assert "@hourly once" in (web2 / "var/spool/cron/crontabs/alice").read_text()

    # web2 stops serving websites: its vhost files go, on its next run
    revision = cluster.put_cli("nodes", {**WEB2.model_dump(mode="json"), "groups": ["cron"]})
    cluster.wait_applied(revision)
    assert not (web2 / "etc/nginx/sites-enabled/alice.example.com.conf").exists()
    assert (web1 / "etc/nginx/sites-enabled/alice.example.com.conf").exists()
    assert cluster.halt() is None
