"""What ``ccm apply`` renders, run by Debian's real memcached (1.6) and checked by systemd.

The instance's files come from a real ``ccm apply`` (``ccm_node``). The test runs them the
way ``memcached@<name>`` would — Debian's ``systemd-memcached-wrapper`` on the rendered
config — with only what belongs to the node redirected, in a copy of the file: the values
of its ``-p``, ``-u`` and ``-Y`` lines (each must be there) become a free loopback port,
``nobody`` instead of the node's tenant, and a copy of the rendered auth file owned as on
the node (root, the account's group, 0640). Then over the wire: nothing
without the password, nothing with a wrong one, everything with the right one, and the
memory, port and protocol the object said. A missing memcached fails these tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm.testing import CcmNode
from ccm.testing.etcd import die_with_parent

WRAPPER = "/usr/share/memcached/scripts/systemd-memcached-wrapper"
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
#: the longest password the type accepts, of every character it allows
PASSWORD = ("aB3.-_~+/=" * 13)[:128]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Client:
    """One connection speaking memcached's ASCII protocol."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("memcached closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def call(self, command: str, data: str | None = None) -> str:
        payload = command + "\r\n" + (data + "\r\n" if data is not None else "")
        self.sock.sendall(payload.encode())
        return self.line()

    def set(self, key: str, value: str) -> str:
        return self.call(f"set {key} 0 0 {len(value)}", value)

    def stats_settings(self) -> dict[str, str]:
        self.sock.sendall(b"stats settings\r\n")
        stats = {}
        while (line := self.line()) != "END":
            _, name, value = line.split(" ", 2)
            stats[name] = value
        return stats

    def close(self) -> None:
        self.sock.close()


def redirected(config: str, values: dict[str, str | None]) -> str:
    """``config`` with the value of each option in ``values`` replaced (None: the line
    dropped); each must be in the rendered file exactly once."""
    lines = config.splitlines()
    for option, value in values.items():
        found = [i for i, line in enumerate(lines) if line.split(" ", 1)[0] == option]
        assert len(found) == 1, f"{option} is rendered {len(found)} times:\n{config}"
        lines[found[0]] = "" if value is None else f"{option} {value}"
    return "\n".join(lines) + "\n"


@pytest.fixture
def applied(ccm_node: CcmNode) -> CcmNode:
    ccm_node.put("unix-users", {"id": 1, "username": "alice"})
    instance = {
        "id": 1,
        "name": "shop",
        "unix_user_id": 1,
        "port": 16411,
        "memory_mb": 48,
        "password": PASSWORD,
    }
    ccm_node.put("memcached-instances", instance)
    ccm_node.apply("--all")
    return ccm_node


@pytest.fixture
def etc() -> Iterator[Path]:
    """A directory for the auth file's copy that any account can reach into (pytest's
    ``tmp_path`` is 0700: the account memcached drops to could not), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="ccm-memcached-"))
    try:
        directory.chmod(0o711)
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def server(applied: CcmNode, etc: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """memcached running the rendered config (see the module docstring): its port and
    the auth file it reads."""
    port = free_port()
    auth = etc / "shop.auth"
    shutil.copyfile(applied.path("/etc/memcached/shop.auth"), auth)
    config = tmp_path / "memcached_shop.conf"
    as_root = os.geteuid() == 0
    if as_root:  # as on a node: root owns it, the account memcached runs as reads it
        os.chown(auth, 0, pwd.getpwnam("nobody").pw_gid)
        os.chmod(auth, 0o640)
    redirect = {"-p": str(port), "-u": "nobody" if as_root else None, "-Y": str(auth)}
    config.write_text(redirected(applied.read("/etc/memcached_shop.conf"), redirect))
    if as_root:
        argv = [WRAPPER, str(config)]  # Debian's own reading of the file, as the unit runs it
    else:  # the wrapper runs as root only: pass the same lines ourselves
        lines = [line for line in config.read_text().splitlines() if line.startswith("-")]
        argv = [MEMCACHED, *(word for line in lines for word in line.split(" ", 1))]
    log = tmp_path / "memcached.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            die_with_parent(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"memcached did not start: {log.read_text()}")
                time.sleep(0.05)
        yield port, auth
    finally:
        process.kill()
        process.wait()


def test_the_rendered_instance_serves_only_clients_with_the_password(
    server: tuple[int, Path],
) -> None:
    port, auth = server
    anonymous = Client(port)
    assert anonymous.call("get anything") == "CLIENT_ERROR unauthenticated"
    anonymous.close()

    wrong = Client(port)
    assert wrong.set("auth", "shop " + PASSWORD[:-1] + "x") == "CLIENT_ERROR authentication failure"
    wrong.close()

    client = Client(port)
    assert client.set("auth", f"shop {PASSWORD}") == "STORED"
    assert client.set("greeting", "hello") == "STORED"
    assert client.call("get greeting") == "VALUE greeting 0 5"
    assert client.line() == "hello" and client.line() == "END"
    settings = client.stats_settings()
    assert settings["maxbytes"] == str(48 * 1024 * 1024)  # memory_mb
    assert settings["tcpport"] == str(port)
    assert settings["udpport"] == "0"
    assert settings["inter"] == "127.0.0.1"
    assert settings["binding_protocol"] == "ascii"
    assert settings["auth_enabled_ascii"] == str(auth)
    client.close()


def test_the_template_unit_passes_systemd_analyze_verify(applied: CcmNode, tmp_path: Path) -> None:
    unit = tmp_path / "memcached@.service"
    shutil.copyfile(applied.path("/etc/systemd/system/memcached@.service"), unit)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "memcached@shop.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
