"""ccm's pytest plugin: a real etcd, a node root and the ``ccm`` command for any test.

Installing ccm registers it (the ``pytest11`` entry point ``ccm``), so a plugin's tests
use these fixtures with no conftest; ``-p no:ccm`` turns it off. Every fixture is named
``ccm_…`` so it cannot shadow a project's own. This is the only module of ccm that
imports pytest, and it imports ccm lazily: a pytest run that uses no ``ccm_`` fixture
pays nothing for it.

- ``ccm_etcd_server``: Debian's ``/usr/bin/etcd`` (``--ccm-etcd PATH`` for another) on
  free loopback ports, one per session, always stopped. A missing etcd FAILS the tests
  that need it, never skips them: a green run means the code met a real etcd.
- ``ccm_etcd_settings``: that etcd, under a key prefix no other test uses.
- ``ccm_root``: a node root under the test's ``tmp_path`` with the system accounts a
  node has.
- ``ccm_settings``: settings for that root and prefix whose commands are harmless.
- ``ccm_node``: ``ccm objects put``, ``ccm apply``, ``ccm diff`` through the real
  command, and the node's files.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ccm.settings import EtcdSettings, Settings
    from ccm.testing.etcd import EtcdServer
    from ccm.testing.node import CcmNode

_prefixes = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ccm", "ccm.testing fixtures")
    group.addoption(
        "--ccm-etcd",
        metavar="PATH",
        default=None,
        help="the etcd binary the ccm_etcd_* fixtures start (default /usr/bin/etcd)",
    )


def start_etcd(config: pytest.Config) -> EtcdServer:
    """A started etcd (the ``--ccm-etcd`` binary), or the test fails with the reason."""
    from ccm.testing.etcd import ETCD_BINARY, EtcdServer, EtcdServerError

    binary = config.getoption("ccm_etcd") or ETCD_BINARY
    server: EtcdServer | None = None
    try:
        server = EtcdServer(binary)
        server.start()
        return server
    except EtcdServerError as error:
        problem = str(error)
    if server is not None:
        server.close()  # its temporary directory too
    # outside the handler: the report shows the reason, not a chain of tracebacks
    pytest.fail(f"cannot run the etcd the tests need: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def ccm_etcd_server(pytestconfig: pytest.Config) -> Iterator[EtcdServer]:
    """The session's etcd: one real single-member etcd on free loopback ports with a
    temporary data directory, started at its first use and stopped (its data removed)
    when the session ends, whatever the tests did. Do not kill it: use
    ``ccm_private_etcd_server`` for an outage. A test that breaks it gets it restarted
    for the next one by ``ccm_etcd_settings``."""
    server = start_etcd(pytestconfig)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def ccm_private_etcd_server(pytestconfig: pytest.Config) -> Iterator[EtcdServer]:
    """An etcd of this test's own, free to be killed (``kill()``) and restarted
    (``restart()``, same ports and data); stopped after the test."""
    server = start_etcd(pytestconfig)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def ccm_etcd_settings(ccm_etcd_server: EtcdServer) -> EtcdSettings:
    """``[etcd]`` settings for the session etcd with a key prefix no other test uses
    (``/ccm-t<pid>-<n>``): tests never see each other's objects and need no cleanup."""
    from ccm.settings import EtcdSettings

    if not ccm_etcd_server.running:  # a test broke it: give the next ones a working etcd
        ccm_etcd_server.restart()
    return EtcdSettings(
        endpoints=(ccm_etcd_server.endpoint,),
        prefix=f"/ccm-t{os.getpid()}-{next(_prefixes)}",
        timeout=5.0,
    )


@pytest.fixture
def ccm_root(tmp_path: Path) -> Path:
    """A node root, ``tmp_path/ccm-root``: copies of this machine's passwd, group,
    shadow, gshadow and login.defs under ``etc/`` (``useradd --prefix`` edits these, never
    the machine's), plus the groups a node has that a container may lack (crontab,
    dovecot)."""
    from ccm.testing.noderoot import seed_root

    return seed_root(tmp_path / "ccm-root")


@pytest.fixture(scope="session")
def ccm_declared_commands() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of the checks and probes the installed configurations declare (the
    ``ccm.configurations`` entry points: ccm's own and every installed plugin's)."""
    from ccm.engine.registry import Registry

    registry = Registry.from_entry_points()
    checks = sorted({name for configuration in registry for name in configuration.checks})
    probes = sorted({name for configuration in registry for name in configuration.probes})
    return tuple(checks), tuple(probes)


@pytest.fixture
def ccm_settings(
    ccm_root: Path,
    ccm_etcd_settings: EtcdSettings,
    ccm_declared_commands: tuple[tuple[str, ...], tuple[str, ...]],
) -> Settings:
    """Settings of a node named ``test`` at ``ccm_root`` on ``ccm_etcd_settings``, where
    nothing touches the machine: every reload and unit action, and every check the
    installed configurations declare, appends a line to ``ROOT/actions.log``
    (``reload nginx``, ``check nginx``, ``check <name>``); every probe is ``true``;
    accounts are made with ``useradd --prefix ROOT``. To change a key, override this
    fixture and return ``ccm_settings.model_copy(update={…})``, or build settings with
    ``ccm.testing.node_settings(root, etcd=…, checks={…})``."""
    from ccm.testing.noderoot import node_settings

    checks, probes = ccm_declared_commands
    return node_settings(
        ccm_root, logged_checks=checks, passing_probes=probes, etcd=ccm_etcd_settings
    )


@pytest.fixture
def ccm_node(ccm_settings: Settings, tmp_path: Path) -> CcmNode:
    """The node of ``ccm_settings`` driven through the real, installed ``ccm`` command
    (its settings in ``tmp_path/ccm.toml``): ``put(type, objects)``, ``delete``,
    ``apply("--all")`` and ``diff()`` return the exit code, stdout and stderr (a failure
    raises unless ``check=False``); ``read("/etc/…")`` and ``path`` give the node's
    files, ``actions()`` the reloads and checks that ran."""
    from ccm.testing.node import CcmNode

    return CcmNode(ccm_settings, tmp_path / "ccm.toml")
