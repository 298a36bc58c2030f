"""A real Postfix delivers mail through the maps ccm wrote: to the right Maildir.

``ccm apply`` renders the maps under a temporary node root and builds them with the real
``postmap``. Then the test starts Debian's Postfix (``postfix -c DIR start``, its own
queue, data and mailbox directories, ``smtpd`` on a free loopback port, the ``virtual``
delivery agent) with a main.cf made of the lines ccm rendered in
``/etc/postfix/ccm/main.cf`` (its paths under the root), and sends messages over SMTP:

* to an alias: delivered to the mailbox it forwards to;
* to the account itself, in a domain with a catch-all: its own mailbox, not the
  catch-all's target;
* to an unknown address of that domain: the catch-all's mailbox;
* to an unknown address of a domain without a catch-all: refused (550).

Postfix's daemons run as ``postfix``, so everything lives under a world-traversable
temporary directory (pytest's own are 0700). The test stops Postfix whatever happens.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from acme_servers import free_port

from ccm.settings import EtcdSettings
from ccm.testing import CcmNode
from ccm.testing.noderoot import node_settings, seed_root

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SHA512 = "{SHA512-CRYPT}$6$saltsalt$" + "S" * 86
#: the owner of the virtual mailboxes (Postfix's virtual_minimum_uid is 100)
VMAIL_ID = 20999

pytestmark = pytest.mark.skipif(not Path(POSTFIX).exists(), reason="Debian's postfix")

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60  1 pickup
cleanup   unix  n - n -   0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -   - trivial-rewrite
bounce    unix  - - n -   0 bounce
defer     unix  - - n -   0 bounce
trace     unix  - - n -   0 bounce
verify    unix  - - n -   1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -   - proxymap
smtp      unix  - - n -   - smtp
error     unix  - - n -   - error
retry     unix  - - n -   - error
discard   unix  - - n -   - discard
virtual   unix  - n n -   - virtual
anvil     unix  - - n -   1 anvil
scache    unix  - - n -   1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ccm-postfix-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(base: Path, ccm_etcd_settings: EtcdSettings) -> CcmNode:
    root = seed_root(base / "root")
    checks = {"postfix_check": ("postconf", "-c", "{root}/etc/postfix/ccm", "-n")}
    settings = node_settings(root, etcd=ccm_etcd_settings, checks=checks)
    return CcmNode(settings, base / "ccm.toml")


@pytest.fixture
def postfix(base: Path, node: CcmNode) -> Iterator[tuple[int, Path]]:
    """Postfix running the maps of ``node`` (applied first by the test): its SMTP port
    and its mailbox directory."""
    node.put("unix-users", [{"id": 1, "username": "alice"}])
    node.put(
        "mail-domains",
        [
            {
                "id": 1,
                "domain": "example.com",
                "unix_user_id": 1,
                "catch_all_forward_addresses": ["catch@example.net"],
            },
            {"id": 2, "domain": "example.net", "unix_user_id": 1},
        ],
    )
    node.put(
        "mail-accounts",
        [
            {"id": 1, "local_part": "info", "mail_domain_id": 1, "password_hash": SHA512},
            {"id": 2, "local_part": "catch", "mail_domain_id": 2, "password_hash": SHA512},
            {"id": 3, "local_part": "bob", "mail_domain_id": 2, "password_hash": SHA512},
        ],
    )
    node.put(
        "mail-aliases",
        [
            {
                "id": 1,
                "local_part": "sales",
                "mail_domain_id": 1,
                "forward_addresses": ["bob@example.net"],
            }
        ],
    )
    node.apply("--all")
    config, mailboxes = base / "postfix", base / "vmail"
    for directory in (config, base / "queue", base / "data", mailboxes):
        directory.mkdir()
    shutil.chown(base / "data", "postfix")
    os.chown(mailboxes, VMAIL_ID, VMAIL_ID)
    maps = node.read("/etc/postfix/ccm/main.cf").replace(
        "/etc/postfix/ccm/", f"{node.root}/etc/postfix/ccm/"
    )
    port = free_port()
    (config / "main.cf").write_text(
        maps + f"queue_directory = {base}/queue\ndata_directory = {base}/data\n"
        f"maillog_file_prefixes = {base}\nmaillog_file = {base}/maillog\n"
        "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmyhostname = mx.test\n"
        "mydestination =\nlocal_transport = error:no local mail\n"
        f"virtual_mailbox_base = {mailboxes}\n"
        f"virtual_uid_maps = static:{VMAIL_ID}\nvirtual_gid_maps = static:{VMAIL_ID}\n"
    )
    (config / "master.cf").write_text(MASTER_CF.format(port=port))
    started = subprocess.run(
        [POSTFIX, "-c", str(config), "start"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        deadline = time.monotonic() + 20
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
                    smtp.noop()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"postfix did not listen: {maillog(base)}")
                time.sleep(0.1)
        yield port, mailboxes
    finally:
        subprocess.run(
            [POSTFIX, "-c", str(config), "stop"], capture_output=True, timeout=60, check=False
        )


def maillog(base: Path) -> str:
    log = base / "maillog"
    return log.read_text() if log.exists() else ""


def delivered(mailboxes: Path, maildir: str, marker: str, base: Path) -> Path:
    """The message holding ``marker`` in ``maildir``'s ``new/`` (waits for delivery)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in (mailboxes / maildir / "new").glob("*"):
            if marker in message.read_text():
                return message
        time.sleep(0.1)
    pytest.fail(f"nothing with {marker!r} in {maildir}: {maillog(base)}")


def send(port: int, recipient: str, marker: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("sender@outside.test", [recipient], f"Subject: {marker}\r\n\r\n{marker}\r\n")


def test_postfix_delivers_through_ccms_maps(base: Path, postfix: tuple[int, Path]) -> None:
    port, mailboxes = postfix
    send(port, "sales@example.com", "to-the-alias")
    message = delivered(mailboxes, "example.net/bob/", "to-the-alias", base)
    assert message.stat().st_uid == VMAIL_ID
    send(port, "info@example.com", "to-the-account")
    delivered(mailboxes, "example.com/info/", "to-the-account", base)
    send(port, "nobody@example.com", "to-the-catch-all")
    delivered(mailboxes, "example.net/catch/", "to-the-catch-all", base)
    # the account's own mail never went to the catch-all
    caught = [m.read_text() for m in (mailboxes / "example.net/catch/new").glob("*")]
    assert not any("to-the-account" in text for text in caught)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(port, "nobody@example.net", "unknown")
    assert refused.value.recipients["nobody@example.net"][0] == 550
