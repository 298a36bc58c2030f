"""An HTTP server the daemon runs in a thread of its own (``/metrics``, the ACME
responder): the address it bound, and a stop that waits for its thread."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: how often ``serve_http``'s loop looks for a shutdown on its own; ``close`` wakes it
#: at once with a connection. The standard library's half second was two wake-ups a
#: second of every idle daemon.
IDLE_POLL = 3600.0


@dataclass
class Served:
    server: socketserver.TCPServer
    thread: threading.Thread
    #: the loop polls rarely: ``close`` connects to wake it
    wake_to_close: bool = False

    @property
    def address(self) -> tuple[str, int]:
        """The host and port bound (a port 0 asked for any free one)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self.wake_to_close:
            stopping = threading.Thread(target=self.server.shutdown, daemon=True)
            stopping.start()
            while stopping.is_alive():  # the flag is set at some point: wake the loop
                self._wake()
                stopping.join(0.05)
        else:
            self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            socket.create_connection(self.address, timeout=1).close()


def serve_http(listen: str, handler: type[BaseHTTPRequestHandler], name: str) -> Served:
    """A threading HTTP server on ``host:port`` (``[::1]:0`` for IPv6; port 0: any
    free one), each request in a daemon thread, served from a thread called ``name``.
    The address family is the host's: the standard library's server is IPv4 only."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    server = Server((host, int(port)), handler)
    thread = threading.Thread(
        target=server.serve_forever, args=(IDLE_POLL,), name=name, daemon=True
    )
    thread.start()
    return Served(server, thread, wake_to_close=True)
