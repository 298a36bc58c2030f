"""The HTTP-01 responder: every daemon answers ``/.well-known/acme-challenge/<token>``.

Served on ``[acme] responder_listen`` (loopback); every vhost and nginx's default server
pass that path here (``proxy_pass``), so whichever web node an ACME server's request
reaches answers it, straight from etcd (``ccm.cluster.acme_challenges``), one read per
request: challenges are rare and the answer must be there the moment the orderer
published it, with no rollout or cache in between.

Only GET and HEAD of that one path are answered: 200 with the key authorization, 404
for an unknown or malformed token (the request is anonymous and hostile), 503 when etcd
cannot be read. The standard library's threading server is enough for this trickle.
"""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from ccm.daemon.served import Served, serve_http
from ccm.errors import ClusterError
from ccm.log import get_logger

PATH_PREFIX = "/.well-known/acme-challenge/"
#: longer request paths are refused before any lookup
MAX_PATH = len(PATH_PREFIX) + 128


def _handler(lookup: Callable[[str], str | None]) -> type[BaseHTTPRequestHandler]:
    log = get_logger()

    class Handler(BaseHTTPRequestHandler):
        server_version = "ccm-acme"
        sys_version = ""

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if len(path) > MAX_PATH or not path.startswith(PATH_PREFIX):
                self._send(404, b"not found\n", body)
                return
            try:
                answer = lookup(path[len(PATH_PREFIX) :])
            except ClusterError as error:
                log.warning("acme challenge not answered: etcd unreachable", error=str(error))
                self._send(503, b"etcd unreachable\n", body)
                return
            if answer is None:
                self._send(404, b"no such challenge\n", body)
            else:
                self._send(200, answer.encode(), body)

        def _send(self, status: int, payload: bytes, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(body=False)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("acme responder", request=format % args)

    return Handler


class ChallengeResponder:
    """``serve(listen)`` in a background thread; ``close()`` stops it."""

    def __init__(self, lookup: Callable[[str], str | None]) -> None:
        self.lookup = lookup
        self._served: Served | None = None

    def serve(self, listen: str) -> tuple[str, int]:
        """Answer on ``host:port`` (port 0: any free one); the address bound."""
        self._served = serve_http(listen, _handler(self.lookup), "ccm-acme-responder")
        return self._served.address

    def close(self) -> None:
        if self._served is not None:
            self._served.close()
            self._served = None

    def __enter__(self) -> ChallengeResponder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
