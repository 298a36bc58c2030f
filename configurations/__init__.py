"""The built-in object types of ccm, each one module, loaded through the
``ccm.configurations`` entry point like any third-party package.

A module ``configurations/<type>.py`` holds everything about its type: the model with its
rules and references, and the configuration(s) that plan what a node makes of it. Its
templates are in ``templates/<type>/`` (beside the modules as ``configurations/templates``).
They import only ``ccm.models``, ``ccm.plan`` and ``ccm.errors``: a built-in type has the
shape of a plugin.

Run order follows ``depends_on``::

    unix-users ─┬─► crontabs
                ├─► php-fpm-pools ─► nginx-vhosts
                └─────────────────► nginx-vhosts
    php-versions ─► php-fpm-pools
    dovecot-users
    postfix-maps
    redis-instances
    unix-users ─► daemons
    mariadb-databases, postgresql-databases (SQL, on the primary)
    unix-users ─► proftpd-users
"""

from __future__ import annotations

from ccm.plan.configuration import Configuration

# a type nothing renders on a node (the ACME orderer reads it): registered by its import
from configurations import certificate_managers  # noqa: F401
from configurations.clusters import PhpVersions
from configurations.crons import Crontabs
from configurations.daemons import Daemons
from configurations.databases import MariadbDatabases, PostgresqlDatabases
from configurations.fpm_pools import PhpFpmPools
from configurations.ftp_users import ProftpdUsers
from configurations.mail_accounts import DovecotUsers
from configurations.mail_aliases import PostfixMaps
from configurations.redis_instances import RedisInstances
from configurations.unix_users import UnixUsers
from configurations.virtual_hosts import NginxVhosts

#: every built-in configuration, listed once (the entry point's value)
CONFIGURATIONS: tuple[type[Configuration], ...] = (
    UnixUsers,
    Crontabs,
    PhpVersions,
    PhpFpmPools,
    NginxVhosts,
    DovecotUsers,
    PostfixMaps,
    RedisInstances,
    Daemons,
    MariadbDatabases,
    PostgresqlDatabases,
    ProftpdUsers,
)
