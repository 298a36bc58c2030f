"""The reserved names are checked against real Debian account databases.

base-passwd's master files list every account and group of a Debian base system; the test
machine's own ``/etc/passwd`` and ``/etc/group`` also hold what the packages the suite
installs (etcd, nginx, php-fpm, cron, Dovecot, PostgreSQL …) created. Every system name
there (uid/gid below 1000 or from 60000 up) must be refused as a tenant's user name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm.models.reserved import reserved_name, uid_problem

MASTER = Path("/usr/share/base-passwd")


def system_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            number = int(fields[2])
            if number < 1000 or number >= 60000:
                names.add(fields[0])
    return names


@pytest.mark.parametrize(
    "path",
    [MASTER / "passwd.master", MASTER / "group.master", Path("/etc/passwd"), Path("/etc/group")],
)
def test_every_system_account_and_group_is_reserved(path: Path) -> None:
    names = system_names(path)
    assert names, f"{path} lists no system names: is this Debian?"
    missing = sorted(name for name in names if not reserved_name(name))
    assert missing == [], f"add to ccm/models/reserved.py: {missing}"


@pytest.mark.parametrize("uid", [0, 999, 60000, 65534, 65535, 2**31 - 1])
def test_reserved_uids(uid: int) -> None:
    assert uid_problem(uid) is not None


@pytest.mark.parametrize("uid", [1000, 20001, 59999, 65536, 2**31 - 2])
def test_usable_uids(uid: int) -> None:
    assert uid_problem(uid) is None
