"""etcd fixtures: ccm's own tests use the ``ccm_…`` fixtures of ``ccm.testing.plugin``
(installed with ccm, loaded by its ``pytest11`` entry point) under shorter names.

Only etcd fixtures live here, and ``registry`` (used by two files); other fixtures belong
in the test files that use them.
Tests never share keys: each gets its own prefix (``ccm_etcd_settings``), so they need no
cleanup and cannot see each other. A missing ``/usr/bin/etcd`` FAILS the tests that need
it (it never skips them): a green run must mean the cluster code was exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import Cluster

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.models.base import object_types
from ccm.settings import EtcdSettings
from ccm.testing.etcd import EtcdServer


@pytest.fixture(scope="session")
def etcd_server(ccm_etcd_server: EtcdServer) -> EtcdServer:
    """The session's etcd (do not kill it: use ``private_etcd_server`` for that)."""
    return ccm_etcd_server


@pytest.fixture
def private_etcd_server(ccm_private_etcd_server: EtcdServer) -> EtcdServer:
    """An etcd of this test's own, free to be killed and restarted."""
    return ccm_private_etcd_server


@pytest.fixture
def etcd_settings(ccm_etcd_settings: EtcdSettings) -> EtcdSettings:
    """Settings for the session etcd with a prefix no other test uses."""
    return ccm_etcd_settings


@pytest.fixture
def etcd_client(etcd_settings: EtcdSettings) -> Iterator[EtcdClient]:
    with EtcdClient.from_settings(etcd_settings) as client:
        yield client


@pytest.fixture
def store(etcd_client: EtcdClient, etcd_settings: EtcdSettings) -> ObjectStore:
    return ObjectStore(etcd_client, etcd_settings.prefix, writer="tests")


@pytest.fixture
def registry() -> Iterator[None]:
    """Types a test defines are registered; they are removed again afterwards."""
    before = dict(object_types)
    try:
        yield
    finally:
        object_types.clear()
        object_types.update(before)


#: a plugin's own tests run in its own pytest, with the plugin installed (test_extension)
collect_ignore = ["plugins"]


@pytest.fixture
def cluster(private_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Cluster]:
    """Real ``ccm daemon`` nodes against this module's private etcd; every daemon is
    stopped and its log tail printed when the test ends, whatever happened (test files
    with a cluster of their own shape define their own)."""
    with Cluster(private_etcd_server, tmp_path / "cluster") as harness:
        yield harness
