"""A real ProFTPD (Debian's proftpd-core 1.3.8) for the tests, on the files ccm rendered.

The rendered files name node paths (``AuthUserFile /etc/proftpd/ccm.passwd``, homes under
``/home``), so ProFTPD runs — and checks — in a private mount namespace where the node
root's ``etc/proftpd`` (and, for a server, ``home``) are bind-mounted over the machine's:
ProFTPD reads exactly what ccm wrote, at the paths a node has, and nothing of the machine
changes. The tenants' accounts exist only in the root's own ``etc/passwd``: ProFTPD takes
uid, gid and home from its AuthUserFile and never asks NSS for them.

* ``PROFTPD_CHECK``: the ``proftpd_check`` argv a test node uses — the node's own
  ``proftpd -t -c /etc/proftpd/conf.d/ccm.conf`` in that namespace (``SyntaxCheck`` there
  makes it parse the users file too).
* ``proftpd_server(root, base)``: ProFTPD in the foreground (``-n``) as root, standalone,
  on a free loopback port, with its pid, scoreboard and logs under ``base``; the main
  configuration is the test's (port, user, logs) and includes ccm's snippet unchanged.
  Started through ``die_with_parent`` in a process group of its own, which is killed
  (sessions included) when the block ends, whatever happened in it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from acme_servers import free_port

from ccm.testing.etcd import die_with_parent

PROFTPD = shutil.which("proftpd") or "/usr/sbin/proftpd"

_CHECK_SCRIPT = r"""
set -e
mount --bind "$1/etc/proftpd" /etc/proftpd
exec proftpd -t -c /etc/proftpd/conf.d/ccm.conf
"""
#: the real ``proftpd -t`` of a node, for a node rooted anywhere
PROFTPD_CHECK = [
    "unshare", "--mount", "--propagation", "private", "sh", "-c", _CHECK_SCRIPT, "sh", "{root}",
]  # fmt: skip

_SERVER_SCRIPT = r"""
set -e
mount --bind "$1/etc/proftpd" /etc/proftpd
mount --bind "$1/home" /home
if [ "$3" = accounts ]; then  # the node's own accounts, as NSS, PAM and shadow see them
  for name in passwd group shadow; do mount --bind "$1/etc/$name" "/etc/$name"; done
fi
exec proftpd -n -c "$2"
"""


def check(root: Path) -> subprocess.CompletedProcess[str]:
    """``PROFTPD_CHECK`` on ``root`` (its exit code and output)."""
    argv = [str(root) if part == "{root}" else part for part in PROFTPD_CHECK]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class FtpServer:
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            return connection.recv(64).startswith(b"220")
    except OSError:
        return False


@contextmanager
def proftpd_server(root: Path, base: Path, *, accounts: bool = False) -> Iterator[FtpServer]:
    """ProFTPD serving the ccm-rendered files of ``root`` on a free loopback port;
    ``accounts``: with the root's ``etc/passwd``, ``group`` and ``shadow`` as the
    machine's (by default the tenants are unknown to NSS: ProFTPD needs nothing of it)."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "proftpd.log"
    config = base / "proftpd-test.conf"
    config.write_text(
        f"""\
ServerType standalone
ServerName "ccm test"
Port {port}
DefaultAddress 127.0.0.1
SocketBindTight on
UseIPv6 off
User nobody
Group nogroup
PidFile {base}/proftpd.pid
ScoreboardFile {base}/proftpd.scoreboard
SystemLog {log}
TransferLog {base}/xferlog
DelayEngine off
WtmpLog off
UseReverseDNS off
Umask 022 022
AllowOverwrite on
Include /etc/proftpd/conf.d/ccm.conf
"""
    )
    with open(base / "proftpd.out", "wb") as output:
        process = subprocess.Popen(
            die_with_parent(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SERVER_SCRIPT,
                 "sh", str(root), str(config), "accounts" if accounts else "-"]
            ),
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its group: the sessions it forks stop with it
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _banner(port):
            if process.poll() is not None or time.monotonic() > deadline:
                out = (base / "proftpd.out").read_text(errors="replace")
                raise RuntimeError(
                    f"proftpd did not start:\n{out}\n{FtpServer(port, log).log_text()}"
                )
            time.sleep(0.05)
        yield FtpServer(port, log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group (master and sessions), then SIGKILL to whatever is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
