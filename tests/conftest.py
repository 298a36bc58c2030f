"""etcd fixtures: one real etcd per test session, and a fresh key prefix per test.

Only etcd fixtures live here, and ``registry`` (used by two files); other fixtures belong
in the test files that use them.
Tests never share keys: each gets its own prefix (``/ccm-t<pid>-<n>``), so they need no
cleanup and cannot see each other. A missing ``/usr/bin/etcd`` FAILS the tests that need
it (it never skips them): a green run must mean the cluster code was exercised.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from etcd_server import EtcdServer, EtcdServerError

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.models.base import object_types
from ccm.settings import EtcdSettings

_prefixes = itertools.count(1)


def _started(server_factory: type[EtcdServer] = EtcdServer) -> EtcdServer:
    try:
        server = server_factory()
        server.start()
    except EtcdServerError as error:
        pytest.fail(f"cannot run the etcd the tests need: {error}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """The session's etcd (do not kill it: use ``private_etcd_server`` for that)."""
    server = _started()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_etcd_server() -> Iterator[EtcdServer]:
    """An etcd of this test's own, free to be killed and restarted."""
    server = _started()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_settings(etcd_server: EtcdServer) -> EtcdSettings:
    """Settings for the session etcd with a prefix no other test uses."""
    if not etcd_server.running:  # a test broke it: give the next ones a working etcd
        etcd_server.restart()
    return EtcdSettings(
        endpoints=(etcd_server.endpoint,),
        prefix=f"/ccm-t{os.getpid()}-{next(_prefixes)}",
        timeout=5.0,
    )


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
