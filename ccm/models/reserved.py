"""Names and uids a tenant's account may never take: one list, checked against Debian.

A ``unix-users`` object becomes a real account made with ``useradd --user-group``, so its
name must be free as a user name AND as a group name on every node, now and after the
packages ccm drives are installed. ``tests/test_reserved.py`` checks this list against
base-passwd's master files and against the accounts and groups of the test machine
(which has installed every package the suite uses), so a package that brings a new
system account fails the suite until the name is added here.
"""

from __future__ import annotations

#: base-passwd (every Debian system): users and groups
_BASE = (
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc "
    "gnats nobody adm tty disk kmem dialout fax voice cdrom floppy tape sudo audio dip "
    "operator src shadow utmp video sasl plugdev staff users nogroup"
)
#: accounts and groups of the base system's other packages and of the services ccm drives
#: (nginx, php-fpm, cron, Dovecot, Postfix, MariaDB, PostgreSQL, Redis, ProFTPD, etcd …)
_PACKAGES = (
    "messagebus polkitd sshd ntp ntpsec chrony tcpdump ssl-cert netdev input kvm render sgx "
    "crontab dovecot dovenull postfix postdrop exim mysql mariadb postgres redis memcache "
    "memcached etcd nginx apache php php-fpm ftp proftpd ftpuser opendkim opendmarc clamav "
    "amavis spamd debian-spamd bind named unbound dnsmasq rspamd vmail varnish vcache "
    "varnishlog haproxy uuidd tss avahi colord geoclue pulse rtkit saned usbmux lightdm "
    "statd _rpc rpc rpcuser nslcd sssd ldap openldap munin nagios zabbix prometheus "
    "node-exporter telegraf grafana elasticsearch rabbitmq mongodb docker lxd libvirt "
    "libvirt-qemu"
)
#: names that would confuse operators or ccm itself
_CCM = "ccm admin administrator hostmaster postmaster webmaster abuse www"

RESERVED_NAMES = frozenset(f"{_BASE} {_PACKAGES} {_CCM}".split())
#: whole families: ``_apt``, ``_ssh``, ``systemd-network``, ``Debian-exim`` (lower-cased)
RESERVED_PREFIXES = ("_", "systemd-", "debian-")

#: uids no account of ccm may get: Debian reserves 60000-64999 for global allocation,
#: systemd allocates dynamic users from 61184-65519, 65534 is nobody and 65535 is the
#: 16-bit (uid_t)-1; 0-999 are the system's.
RESERVED_UID_RANGES = ((0, 999), (60000, 65535))
#: uids above this trip signed 32-bit tools; (uid_t)-1 is never valid
MAX_UID = 2**31 - 2


def reserved_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_NAMES or lowered.startswith(RESERVED_PREFIXES)


def uid_problem(uid: int) -> str | None:
    """Why ``uid`` may not be an account's uid, or None."""
    if uid > MAX_UID:
        return f"uid {uid} is beyond the highest usable uid {MAX_UID}"
    for low, high in RESERVED_UID_RANGES:
        if low <= uid <= high:
            return f"uid {uid} lies in the reserved range {low}-{high}"
    return None
