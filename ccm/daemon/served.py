"""An HTTP server the daemon runs in a thread of its own (``/metrics``, the ACME
responder): the address it bound, and a stop that waits for its thread."""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass


@dataclass
class Served:
    server: socketserver.TCPServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        """The host and port bound (a port 0 asked for any free one)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
