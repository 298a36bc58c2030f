"""Every accepted set of ``unix-users`` renders extrausers files that mean exactly it.

Hypothesis draws batches of raw ``unix-users`` objects with ``tests/strategies.py`` (the
issue 7 strategies: plausible names, an attacker's edits, wild values, boundary ids). Each
is written through the real writer (``ObjectStore.put`` on a real etcd, as
``test_accepted_applies`` does), so what reaches the node is exactly what a Cluster API
could store. The extrausers backend then plans against a node root with this machine's
accounts, and:

- nothing is refused (none of the drawn names or uids is on this machine);
- ``passwd``, ``group`` and ``shadow`` hold one line per accepted user, in id order, of
  exactly 7, 4 and 9 fields that parse back to its name, uid, gid, e-mail, home and
  shell; no name is reserved, no name or uid repeats;
- glibc agrees: with those files as ``/var/lib/extrausers`` and an nsswitch.conf of
  ``extrausers`` alone, in a private mount namespace (see ``test_extrausers_nss``),
  ``getent passwd``/``group``/``shadow`` enumerate exactly the rendered lines. Debian's
  libnss-extrausers stops reading a file at the first line it cannot parse, so this also
  proves no line breaks the ones after it.

Applying (the homes, ``useradd``) is the same as for ``useradd`` and covered in
``test_extrausers``; this property is about the rendering.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from strategies import batches
from test_accepted_applies import Outcome, write_batch

from ccm.cluster.etcd import EtcdClient
from ccm.cluster.store import ObjectStore
from ccm.engine.registry import Registry
from ccm.engine.run import Engine
from ccm.models.reserved import reserved_name
from ccm.settings import EtcdSettings
from ccm.testing.noderoot import node_settings, seed_root
from configurations import UnixUsers
from configurations.unix_users import UnixUser

EXAMPLES = int(os.environ.get("CCM_PROPERTY_EXAMPLES", "60"))
UID_BASE = 20000
_examples = itertools.count()

_GETENT = r"""
set -e
printf 'passwd: extrausers\ngroup: extrausers\nshadow: extrausers\n' > "$1/nsswitch.conf"
mount --bind "$1/nsswitch.conf" /etc/nsswitch.conf
mount --bind "$1/extrausers" /var/lib/extrausers
for database in passwd group shadow; do
  getent "$database" > "$1/$database.out" || [ $? -eq 2 ]  # 2: none at all
done
"""


def getent_all(scratch: Path, files: dict[str, str]) -> dict[str, str]:
    """What glibc enumerates from ``files`` alone (NSS set to extrausers only)."""
    (scratch / "extrausers").mkdir(parents=True)
    for name, content in files.items():
        (scratch / "extrausers" / name).write_text(content)
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _GETENT, "sh", scratch],
        check=True,
        timeout=60,
    )
    return {name: (scratch / f"{name}.out").read_text() for name in files}


@pytest.fixture(scope="module")
def node_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_root(tmp_path_factory.mktemp("extrausers-property") / "root")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    derandomize=os.environ.get("CI") == "true",
)
@given(batch=batches(types=("unix-users",)))
def test_every_accepted_set_of_users_renders_valid_extrausers_files(
    etcd_client: EtcdClient, etcd_settings: EtcdSettings, node_root: Path, batch: object
) -> None:
    n = next(_examples)
    store = ObjectStore(etcd_client, f"{etcd_settings.prefix}/ex{n}", writer="property")
    write_batch(etcd_client, store, batch, Outcome())  # type: ignore[arg-type]
    snapshot = store.snapshot()
    users = sorted(snapshot.all(UnixUser), key=lambda user: user.id)

    settings_ = node_settings(
        node_root, logged_checks=(), passing_probes=(), accounts={"backend": "extrausers"}
    )
    planned = Engine(Registry([UnixUsers]), settings_).plan(snapshot)
    assert not planned.refused, planned.refused
    (ops,) = planned.operations
    files = {
        name: next(
            (s.change.content for s in ops.steps if s.changed == f"/var/lib/extrausers/{name}"),
            "",
        )
        for name in ("passwd", "group", "shadow")
    }

    expected_passwd = [
        [u.username, "x", str(UID_BASE + u.id), str(UID_BASE + u.id), u.email or "", u.home,
         u.shell]
        for u in users
    ]  # fmt: skip
    assert [line.split(":") for line in files["passwd"].splitlines()] == expected_passwd
    assert [line.split(":") for line in files["group"].splitlines()] == [
        [u.username, "x", str(UID_BASE + u.id), ""] for u in users
    ]
    assert [line.split(":") for line in files["shadow"].splitlines()] == [
        [u.username, "!", "", "", "", "", "", "", ""] for u in users
    ]
    for content in files.values():
        assert content == "" or content.endswith("\n")
        assert "\r" not in content and len(content.splitlines()) == len(users)
    names = [u.username for u in users]
    assert len(set(names)) == len(names) and not any(map(reserved_name, names))

    scratch = node_root.parent / f"getent{n}"
    assert getent_all(scratch, files) == files
