"""The built-in configurations of ccm, loaded through the ``ccm.configurations`` entry point.

Each module holds one configuration: a pure planner that turns a snapshot of objects
into the full intended state (typed changes from ``ccm.plan.changes``), rendering files
from ``templates/``. They import only ``ccm.models``, ``ccm.plan`` and ``ccm.errors``.

Run order follows ``depends_on``::

    unix-users ─┬─► crontabs
                ├─► php-fpm-pools ─► nginx-vhosts
                └─────────────────► nginx-vhosts
    php-versions ─► php-fpm-pools
    dovecot-users
"""

from __future__ import annotations

from ccm.plan.configuration import Configuration
from configurations.crontabs import Crontabs
from configurations.dovecot_users import DovecotUsers
from configurations.nginx_vhosts import NginxVhosts
from configurations.php_fpm_pools import PhpFpmPools
from configurations.php_versions import PhpVersions
from configurations.unix_users import UnixUsers

CONFIGURATIONS: tuple[type[Configuration], ...] = (
    UnixUsers,
    Crontabs,
    PhpVersions,
    PhpFpmPools,
    NginxVhosts,
    DovecotUsers,
)

__all__ = [
    "CONFIGURATIONS",
    "Crontabs",
    "DovecotUsers",
    "NginxVhosts",
    "PhpFpmPools",
    "PhpVersions",
    "UnixUsers",
]
