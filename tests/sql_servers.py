"""Real MariaDB and PostgreSQL servers for the tests, on free loopback ports with
temporary data directories (Debian's ``mariadb-server`` 10.11 and ``postgresql`` 15).

Both run with their real authentication: MariaDB's ``root@localhost`` authenticates by
``unix_socket`` (the tests run as root), and PostgreSQL's ``postgres`` superuser by
SCRAM password over TCP. A tenant user the tests make logs in with its password, so a
stored hash is proved by a real login. Each server is started once per test session and
stopped (its process group killed) even when a test fails; the data directories go with
the session's temporary directory.

MariaDB runs as root (``--user=root``: its data directory stays in the session's private
temporary directory); PostgreSQL refuses root, so ``initdb`` and ``postgres`` run as
``postgres`` (``setpriv``), owning a directory of their own under /tmp.
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pymysql

MARIADB_INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: the PostgreSQL superuser's password in the tests (a real SCRAM login)
PG_PASSWORD = "admin-pass-for-tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _owned_by(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class MariaDB:
    """A running MariaDB: its socket (for ``root``) and its TCP port (for tenants)."""

    socket: str
    port: int

    def admin(self) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        return pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)

    def query(self, statement: str, *args: object) -> list[tuple[object, ...]]:
        connection = self.admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, args or None)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def login(self, user: str, password: str, database: str | None = None) -> None:
        """Log in as a tenant over TCP (``pymysql.err.OperationalError`` when refused)."""
        connection = pymysql.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, database=database
        )
        connection.close()


@dataclass(frozen=True)
class PostgreSQL:
    """A running PostgreSQL: its socket directory and TCP port."""

    socket_dir: str
    port: int

    def conninfo(
        self, user: str = "postgres", password: str = PG_PASSWORD, dbname: str = "postgres"
    ) -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname
        )

    def query(self, statement: str, *args: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.conninfo(), autocommit=True) as connection:
            rows = connection.execute(statement, args or None).fetchall()
            return list(rows)

    def execute(self, statement: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as connection:
            connection.execute(statement)  # type: ignore[arg-type]

    def login(self, user: str, password: str, dbname: str = "postgres") -> None:
        """Log in as a tenant over TCP (``psycopg.OperationalError`` when refused)."""
        with psycopg.connect(self.conninfo(user, password, dbname)):
            pass


def _wait(ready: callable, process: subprocess.Popen[bytes], log: Path, what: str) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + 60
    while True:
        try:
            ready()
            return
        except Exception as error:
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"{what} did not start ({error}):\n{text[-3000:]}") from None
        time.sleep(0.1)


def _accepts(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(path)


@contextmanager
def mariadb_server(base: Path) -> Iterator[MariaDB]:
    """``mariadb-install-db`` into ``base/data``, then ``mariadbd`` on a free port."""
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    sock = str(base / "mysqld.sock")
    log = base / "error.log"
    port = free_port()
    subprocess.run(
        [MARIADB_INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    process = subprocess.Popen(
        [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", "--user=root", f"--log-error={log}",
         f"--pid-file={base / 'mysqld.pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=32M"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        server = MariaDB(sock, port)
        # the socket first (a PyMySQL connect that fails early leaves its socket open)
        _wait(lambda: _accepts(sock), process, log, "mariadbd")
        server.query("SELECT 1")
        yield server
    finally:
        _stop(process)


@contextmanager
def postgresql_server() -> Iterator[PostgreSQL]:
    """``initdb`` (SCRAM for TCP, peer for the socket) into a directory of its own under
    /tmp (``postgres`` must reach it, and pytest keeps its own temporary tree 0700), then
    ``postgres`` on a free port with its socket there; the directory goes afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ccm-test-postgresql-"))
    try:
        with _postgresql_in(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _postgresql_in(base: Path) -> Iterator[PostgreSQL]:
    _owned_by(base, "postgres")
    data = base / "data"
    pwfile = base / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    _owned_by(pwfile, "postgres")
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    subprocess.run(
        [*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
         f"--pwfile={pwfile}", "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8",
         "--locale=C.UTF-8"],
        check=True, capture_output=True, cwd=base,
    )  # fmt: skip
    port = free_port()
    log = base / "postgres.log"
    log.touch()
    _owned_by(log, "postgres")
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [*as_postgres, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
             "-k", str(base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "shared_buffers=16MB"],
            stdout=output, stderr=output, start_new_session=True, cwd=base,
        )  # fmt: skip
    try:
        server = PostgreSQL(str(base), port)
        _wait(lambda: server.query("SELECT 1"), process, log, "postgres")
        yield server
    finally:
        _stop(process)
