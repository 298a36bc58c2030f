"""The HTTP-01 responder's protocol, over real HTTP on loopback (IPv4 and IPv6): what
it answers, with which status, headers and body, and what it refuses before looking
anything up. Its lookup is the function it is given: here a table, or a lookup that
fails the way an unreachable etcd does (``tests/test_acme.py`` runs it against etcd,
pebble and nginx)."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from ccm.daemon.acme_responder import MAX_PATH, PATH_PREFIX, ChallengeResponder
from ccm.errors import ClusterError

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
ANSWER = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class Lookups:
    """Answers from a table, and the tokens it was asked for."""

    def __init__(self, down: bool = False) -> None:
        self.asked: list[str] = []
        self.down = down

    def __call__(self, token: str) -> str | None:
        self.asked.append(token)
        if self.down:
            raise ClusterError("etcd at 127.0.0.1:2379: connection refused")
        return ANSWER if token == TOKEN else None


def request(
    address: tuple[str, int], path: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture
def lookups() -> Lookups:
    return Lookups()


@pytest.fixture
def responder(lookups: Lookups) -> Iterator[tuple[str, int]]:
    server = ChallengeResponder(lookups)
    try:
        yield server.serve("127.0.0.1:0")
    finally:
        server.close()


def test_a_published_token_is_answered_with_its_key_authorization(
    responder: tuple[str, int], lookups: Lookups
) -> None:
    status, headers, body = request(responder, PATH_PREFIX + TOKEN)
    assert (status, body) == (200, ANSWER.encode())
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == str(len(ANSWER))
    # names itself, and never the Python version behind it
    assert headers["Server"].strip() == "ccm-acme"
    assert lookups.asked == [TOKEN]


def test_a_query_string_is_ignored_and_head_has_headers_only(
    responder: tuple[str, int], lookups: Lookups
) -> None:
    assert request(responder, f"{PATH_PREFIX}{TOKEN}?a=1?b=2")[::2] == (200, ANSWER.encode())
    status, headers, body = request(responder, PATH_PREFIX + TOKEN, "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(ANSWER)))
    assert lookups.asked == [TOKEN, TOKEN]


def test_an_unknown_token_is_404_and_so_is_any_other_path_unlooked_up(
    responder: tuple[str, int], lookups: Lookups
) -> None:
    status, headers, body = request(responder, PATH_PREFIX + "unknown")
    assert (status, body) == (404, b"no such challenge\n")
    assert headers["Content-Length"] == str(len(body))
    assert lookups.asked == ["unknown"]
    for path in ("/", "/index.php", "/.well-known/acme-challenge", "/x" + PATH_PREFIX + TOKEN):
        assert request(responder, path)[::2] == (404, b"not found\n"), path
    too_long = PATH_PREFIX + "a" * (MAX_PATH - len(PATH_PREFIX) + 1)
    assert request(responder, too_long)[::2] == (404, b"not found\n")
    longest = PATH_PREFIX + "a" * (MAX_PATH - len(PATH_PREFIX))
    assert request(responder, longest)[::2] == (404, b"no such challenge\n")
    status, headers, body = request(responder, "/", "HEAD")
    assert (status, body, headers["Content-Length"]) == (404, b"", str(len(b"not found\n")))
    assert lookups.asked == ["unknown", "a" * (MAX_PATH - len(PATH_PREFIX))]


def test_an_unreachable_etcd_is_503_never_a_wrong_answer() -> None:
    with ChallengeResponder(Lookups(down=True)) as server:
        address = server.serve("127.0.0.1:0")
        status, headers, body = request(address, PATH_PREFIX + TOKEN)
    assert (status, body) == (503, b"etcd unreachable\n")
    assert headers["Content-Length"] == str(len(body))


def test_it_serves_on_ipv6_and_close_frees_the_port(lookups: Lookups) -> None:
    server = ChallengeResponder(lookups)
    host, port = server.serve("[::1]:0")
    assert host == "::1" and port > 0
    assert request((host, port), PATH_PREFIX + TOKEN)[0] == 200
    server.close()
    server.close()  # twice is harmless
    with socket.socket(socket.AF_INET6) as probe:
        assert probe.connect_ex(("::1", port)) != 0


def test_closing_a_responder_that_never_served_is_harmless(lookups: Lookups) -> None:
    ChallengeResponder(lookups).close()
    with ChallengeResponder(lookups):
        pass


def test_head_sends_no_body_on_the_wire(responder: tuple[str, int]) -> None:
    """http.client never reads a HEAD answer's body: read the raw bytes instead."""
    with socket.create_connection(responder, timeout=10) as raw:
        raw.sendall(f"HEAD {PATH_PREFIX}{TOKEN} HTTP/1.0\r\n\r\n".encode())
        received = b""
        while chunk := raw.recv(4096):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and body == b""


def test_a_stalled_client_does_not_hold_up_close(lookups: Lookups) -> None:
    """A connection that never sends its request keeps a request thread waiting: close()
    still returns (the request threads are daemon threads, not joined)."""
    server = ChallengeResponder(lookups)
    address = server.serve("127.0.0.1:0")
    with socket.create_connection(address, timeout=10) as stalled:
        stalled.sendall(b"GET ")  # and nothing more
        closing = threading.Thread(target=server.close, daemon=True)
        closing.start()
        closing.join(timeout=10)
        assert not closing.is_alive(), "close() waited for a stalled client"
