"""The etcd adapter: the ONLY module of ccm that imports ``pyetcd`` or ``grpc``.

Everything else in ccm (the object store, the watcher, the lock, the halt flag, node
state) talks to etcd through ``EtcdClient``, with small typed values of its own
(``KeyValue``, ``Compare``, ``Put``/``Delete``/``Get``, ``TxnResult``, ``WatchEvent``) and
errors from ``ccm.errors`` (``ClusterError`` and the subclasses defined here). That keeps
the untyped client library, its exceptions and its traps in one place:

* ``etcd-sdk-python`` marks an endpoint dead for 300 s after one failure: endpoints are
  built with ``time_retry=1``, and the gRPC reconnect backoff is capped at 2 s, so the
  client works again within about 2 s of etcd coming back (ETCD-NOTES.md).
* Its authentication sends the token as *call credentials*, which gRPC refuses on a
  plain-http channel; we authenticate ourselves, lazily (no I/O in the constructor, so a
  daemon can start while etcd is down), send the token as metadata, and authenticate
  again when etcd says the token expired (simple tokens last 5 minutes and die with a
  restart).
* etcd refuses a transaction with more than ``--max-txn-ops`` (128 by default) compares
  or operations on one level. ``txn()`` packs longer operation lists into nested
  sub-transactions without compares (etcd's budget allows about 64 x 64 of them); they
  are applied atomically, at one revision, exactly like a flat transaction.
* Its watch does not resume after a disconnect, and a compacted start revision arrives
  as an exception object on a callback. ``watch_prefix()`` turns both into exceptions
  raised from the iterator: ``WatchDisconnected`` (re-watch from the last revision + 1)
  and ``RevisionCompacted`` (history is gone: assume everything changed).
* Failover is ours, inside every call, within one request timeout (``timeout``):
  pyetcd only moves to another endpoint on the *next* call after a failure, and picks
  the first endpoint at random, so a lone ``ccm objects put`` that picked a member
  frozen by SIGSTOP (it accepts TCP but never sends HTTP/2 SETTINGS) failed, and a
  client connected to a member that froze waited its whole timeout, then failed. Now a
  call that gets UNAVAILABLE (no connection: gRPC's connect attempt gives up after
  ~0.2 s without HTTP/2 SETTINGS, with ``min_reconnect_backoff_ms`` 100; or the member
  died, or lost its leader) goes to the next endpoint; and a request unanswered after
  ``_PROBE_AFTER`` makes the client ask the same endpoint for its status: an endpoint
  that cannot answer even that is frozen or cut off, so the request is cancelled and
  sent to the next endpoint; one that answers with a higher raft term than when the
  request was sent had a leader election meanwhile, which may have dropped the
  request (etcd answers only after its own 7 s request timeout): it is sent again.
  A retried write is at-least-once, exactly as if the caller had retried it after an
  error: every ccm write is compare-guarded or idempotent.
  Open watches on an endpoint found dead end with ``WatchDisconnected`` (re-watch), and
  an idle watch checks its endpoint every ``_WATCH_CHECK`` seconds.
* gRPC caps received messages at 4 MiB; a snapshot of a large cluster is bigger, so the
  channel accepts up to 512 MiB.

Error messages name the endpoint and the operation, never the password.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
import pyetcd
from pyetcd import etcdrpc
from pyetcd import events as pyetcd_events
from pyetcd import exceptions as pyetcd_exceptions

from ccm.errors import (
    ClusterError,
    EtcdUnavailable,
    LeaseNotFound,
    RevisionCompacted,
    SettingsError,
    WatchDisconnected,
)
from ccm.settings import EtcdSettings

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "Compare",
    "Delete",
    "EtcdClient",
    "EtcdUnavailable",
    "Get",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "OpResult",
    "Put",
    "RevisionCompacted",
    "TxnResult",
    "Watch",
    "WatchBatch",
    "WatchDisconnected",
    "WatchEvent",
    "prefix_range_end",
]

#: etcd's default ``--max-txn-ops``: compares or operations allowed on one txn level.
DEFAULT_MAX_TXN_OPS = 128

#: How long a thread blocked on a gRPC stream or future sleeps between looks (gRPC's
#: default: 0.1 s, so that a signal reaches a main thread blocked there soon). A daemon
#: keeps a watch stream open for days: ten wake-ups a second of its reader thread were
#: most of an idle daemon's CPU. A second keeps SIGTERM and Ctrl-C prompt enough; every
#: wait still ends the moment its call completes (the condition is notified).
GRPC_WAIT_SLICE = 1.0


def _longer_grpc_wait_slices() -> None:
    """Set gRPC's wait slice (a module constant of its own, read at each wait): a gRPC
    without it keeps its default, nothing else changes."""
    common = getattr(grpc, "_common", None)
    if common is not None and hasattr(common, "MAXIMUM_WAIT_TIMEOUT"):
        common.MAXIMUM_WAIT_TIMEOUT = GRPC_WAIT_SLICE


_longer_grpc_wait_slices()

_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Reconnect soon after etcd comes back, not after gRPC's default backoff (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Detect a silently dead connection (no RST) under a long-lived watch. etcd accepts
    # pings every 5 s or more while a stream is open; none are sent without one.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]
_ENDPOINT_RETRY_SECONDS = 1
#: A request unanswered after this long makes the client ask the endpoint for its status
#: (at most a tenth of the request timeout)...
_PROBE_AFTER = 0.5
#: ...which it must answer within this (at most a fifth of the request timeout), or the
#: request goes to the next endpoint.
_PROBE_TIMEOUT = 1.0
#: An endpoint that answered anything this recently is not probed again.
_FRESH = 1.0
#: An open watch that delivered nothing for this long checks that its endpoint lives.
_WATCH_CHECK = 1.0
#: what gRPC says when nothing listens on an endpoint (lower case): the one failure not
#: worth waiting for. Any other (a member electing a leader, one too slow to commit or to
#: answer a status request on a loaded machine) means a member lives: the call waits for
#: the marked endpoints to come back, within its request timeout.
_DOWN_DETAILS = ("failed to connect", "connection refused")
#: how often such a call looks for a member to answer again
_ELECTION_POLL = 0.1
_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_STALE_TOKEN_DETAILS = ("invalid auth token", "revision of auth store is old")

T = TypeVar("T")


# -- errors ---------------------------------------------------------------------------


# -- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """One stored key, as etcd reports it (``lease`` is 0 when the key has none)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int
    version: int = 1


CompareTarget = Literal["mod", "version", "create", "value"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True)
class Compare:
    """One txn condition: ``target(key) op value`` (``value`` is bytes for "value").

    A missing key compares as mod/create/version 0 (and never equals any value).
    """

    key: str
    target: CompareTarget
    op: CompareOp
    value: int | bytes

    def __post_init__(self) -> None:
        if (self.target == "value") != isinstance(self.value, bytes):
            wanted = "bytes" if self.target == "value" else "int"
            raise TypeError(f"a compare on {self.target!r} needs a {wanted} value")

    @classmethod
    def missing(cls, key: str) -> Compare:
        """The key does not exist."""
        return cls(key, "version", "==", 0)

    @classmethod
    def unchanged(cls, key: str, read: KeyValue | None) -> Compare:
        """The key is still as ``read`` saw it: same mod revision, or still missing."""
        return cls.missing(key) if read is None else cls(key, "mod", "==", read.mod_revision)


@dataclass(frozen=True)
class Put:
    """Write ``value`` at ``key``, bound to ``lease`` when it is not 0."""

    key: str
    value: bytes
    lease: int = 0

    @property
    def size(self) -> int:
        """Bytes it adds to a request (key and value)."""
        return len(self.key.encode()) + len(self.value)


@dataclass(frozen=True)
class Delete:
    """Delete ``key`` (every key starting with it when ``prefix``)."""

    key: str
    prefix: bool = False

    @property
    def size(self) -> int:
        """Bytes it adds to a request (the key)."""
        return len(self.key.encode())


@dataclass(frozen=True)
class Get:
    """Read ``key`` (or a prefix) inside a txn, at the txn's revision.

    ``limit`` 0 means all; ``sort`` orders by key, create or mod revision;
    ``max_create_revision`` keeps keys created at or before it (0: no bound).
    """

    key: str
    prefix: bool = False
    limit: int = 0
    sort: Literal["key", "create", "mod"] = "key"
    descending: bool = False
    max_create_revision: int = 0


Op = Put | Delete | Get
#: Per op of the branch that ran: ``Get`` → its kvs, ``Delete`` → keys deleted, ``Put`` → None.
OpResult = list[KeyValue] | int | None


@dataclass(frozen=True)
class TxnResult:
    """What a transaction did: which branch ran, at which revision, and each op's result.

    ``revision`` is the store revision after the txn (the revision of its writes, if any).
    """

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...]


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watch; ``value`` is empty for a delete."""

    type: Literal["put", "delete"]
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class WatchBatch:
    """The events of one watch response (one or more revisions), in revision order."""

    revision: int
    events: tuple[WatchEvent, ...]


# -- helpers --------------------------------------------------------------------------


def prefix_range_end(prefix: bytes) -> bytes:
    """The range end that makes ``[prefix, end)`` every key starting with ``prefix``."""
    end = bytearray(prefix)
    for index in reversed(range(len(end))):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"  # all keys


def _decode(key: bytes) -> str:
    return key.decode("utf-8", errors="backslashreplace")


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=_decode(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease),
        version=int(kv.version),
    )


_COMPARE_OPS = {
    "==": etcdrpc.Compare.EQUAL,
    "!=": etcdrpc.Compare.NOT_EQUAL,
    "<": etcdrpc.Compare.LESS,
    ">": etcdrpc.Compare.GREATER,
}
_SORT_TARGETS = {
    "key": etcdrpc.RangeRequest.KEY,
    "create": etcdrpc.RangeRequest.CREATE,
    "mod": etcdrpc.RangeRequest.MOD,
}


def _compare_message(compare: Compare) -> Any:
    message = etcdrpc.Compare(key=compare.key.encode(), result=_COMPARE_OPS[compare.op])
    value = compare.value
    if compare.target == "value":
        message.target = etcdrpc.Compare.VALUE
        message.value = value
    elif compare.target == "mod":
        message.target = etcdrpc.Compare.MOD
        message.mod_revision = value
    elif compare.target == "create":
        message.target = etcdrpc.Compare.CREATE
        message.create_revision = value
    else:
        message.target = etcdrpc.Compare.VERSION
        message.version = value
    return message


def _range_request(get: Get, revision: int = 0) -> Any:
    key = get.key.encode()
    request = etcdrpc.RangeRequest(key=key, limit=get.limit, revision=revision)
    if get.prefix:
        request.range_end = prefix_range_end(key)
    request.sort_target = _SORT_TARGETS[get.sort]
    request.sort_order = (
        etcdrpc.RangeRequest.DESCEND if get.descending else etcdrpc.RangeRequest.ASCEND
    )
    if get.max_create_revision:
        request.max_create_revision = get.max_create_revision
    return request


def _op_message(op: Op) -> Any:
    if isinstance(op, Put):
        return etcdrpc.RequestOp(
            request_put=etcdrpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease)
        )
    if isinstance(op, Delete):
        request = etcdrpc.DeleteRangeRequest(key=op.key.encode())
        if op.prefix:
            request.range_end = prefix_range_end(request.key)
        return etcdrpc.RequestOp(request_delete_range=request)
    return etcdrpc.RequestOp(request_range=_range_request(op))


def _pack(ops: Sequence[Op], entries: int) -> list[Any]:
    """``ops`` as at most ``entries`` request ops: flat, or nested compare-less txns."""
    messages = [_op_message(op) for op in ops]
    if len(messages) <= entries:
        return messages
    size = -(-len(messages) // entries)
    return [
        etcdrpc.RequestOp(request_txn=etcdrpc.TxnRequest(success=messages[i : i + size]))
        for i in range(0, len(messages), size)
    ]


def _txn_layout(compares: int, ops: int, limit: int) -> int:
    """How many entries a txn level may hold so that ``ops`` fit under etcd's limit.

    etcd counts ``max(compares, entries)`` on a level and gives nested txns what is left
    of the limit; the smallest entry count that fits leaves the nested txns most room.
    """
    if max(compares, ops) <= limit:
        return max(ops, 1)
    for entries in range(1, limit + 1):
        room = limit - max(compares, entries)
        if room > 0 and entries * room >= ops:
            return entries
    raise ClusterError(
        f"a transaction of {ops} operations and {compares} compares does not fit in etcd's "
        f"limit of {limit} per level (etcd --max-txn-ops); write fewer objects at once"
    )


def _op_results(responses: Any) -> list[OpResult]:
    results: list[OpResult] = []
    for response in responses:
        kind = response.WhichOneof("response")
        if kind == "response_range":
            results.append([_key_value(kv) for kv in response.response_range.kvs])
        elif kind == "response_delete_range":
            results.append(int(response.response_delete_range.deleted))
        elif kind == "response_txn":  # one of our packing sub-transactions
            results.extend(_op_results(response.response_txn.responses))
        else:
            results.append(None)
    return results


def _channel_credentials(settings: EtcdSettings) -> Any:
    def read(name: str, path: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise SettingsError(f"etcd.{name}", f"cannot read {path}: {error.strerror}") from None

    if bool(settings.cert_file) != bool(settings.key_file):
        raise SettingsError("etcd.cert_file", "cert_file and key_file must be given together")
    return grpc.ssl_channel_credentials(
        root_certificates=read("ca_file", settings.ca_file),
        private_key=read("key_file", settings.key_file),
        certificate_chain=read("cert_file", settings.cert_file),
    )


def _endpoint(url: str, settings: EtcdSettings) -> Any:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise SettingsError("etcd.endpoints", f"{url!r} is not of the form http(s)://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    secure = parts.scheme == "https"
    return pyetcd.Endpoint(
        host,
        port,
        secure=secure,
        creds=_channel_credentials(settings) if secure else None,
        time_retry=_ENDPOINT_RETRY_SECONDS,
        opts=_CHANNEL_OPTIONS,
    )


# -- endpoints --------------------------------------------------------------------------


class _Unresponsive(Exception):
    """The endpoint of a call answered nothing, not even a status request."""


class _LeaderChanged(Exception):
    """The cluster elected a new leader while a call was pending: etcd may have dropped
    the request's proposal (it then answers only after its own request timeout, 5 s +
    2 elections), so the call is sent again."""


class _Link:
    """One endpoint's channel, its stubs, and when it last answered."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint
        self.where = f"{endpoint.protocol}://{endpoint.netloc}"
        channel = endpoint.channel
        self.kv = etcdrpc.KVStub(channel)
        self.lease = etcdrpc.LeaseStub(channel)
        self.maintenance = etcdrpc.MaintenanceStub(channel)
        self._answered_at = float("-inf")
        self.term = 0  # the highest raft term an answer from this endpoint carried

    def answered(self, response: Any = None) -> None:
        self._answered_at = time.monotonic()
        header = getattr(response, "header", None)
        term = int(getattr(header, "raft_term", 0) or 0)
        if term > self.term:
            self.term = term

    def answered_since(self, moment: float) -> bool:
        return self._answered_at > moment


class _Done:
    """A call that already finished (a pending call's interface)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value

    def cancel(self) -> None:
        pass


class _FirstResponse:
    """The first response of a streaming call, as a pending call (``result``/``cancel``)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._read, name="ccm-etcd-stream", daemon=True).start()

    def _read(self) -> None:
        try:
            self._value = next(iter(self._stream), None)
        except BaseException as error:  # handed to the caller
            self._error = error
        finally:
            self._stream.cancel()
            self._done.set()

    def result(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise grpc.FutureTimeoutError()
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        self._stream.cancel()


# -- the client -----------------------------------------------------------------------


class EtcdClient:
    """A typed etcd v3 client; every failure is raised as a ``ClusterError``.

    Thread-safe for calls (one gRPC channel per endpoint); build it after any ``fork()``.
    Use it as a context manager, or call ``close()``.
    """

    def __init__(self, settings: EtcdSettings, *, max_txn_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
        if bool(settings.username) != bool(settings.password):
            raise SettingsError("etcd.username", "username and password must be given together")
        endpoints = [_endpoint(url, settings) for url in settings.endpoints]
        self._client: Any = pyetcd.MultiEndpointEtcd3Client(
            endpoints=endpoints, timeout=settings.timeout, failover=True
        )
        self._timeout = settings.timeout
        self._user = settings.username
        self._password = settings.password
        self._auth_lock = threading.Lock()
        self._token: str | None = None
        self._closed = False
        self.max_txn_ops = max_txn_ops
        self._links: dict[str, _Link] = {}
        self._select_lock = threading.Lock()
        #: held while a watch is being opened and while the client closes: pyetcd's watch
        #: thread calls ``Watch`` on the channel after ``add_callback`` started it, and
        #: raises (uncaught, in its own thread) if the channel closed in between
        self._opening = threading.Lock()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        timeout = settings.timeout
        self._probe_after = min(_PROBE_AFTER, timeout / 10)
        self._probe_timeout = min(_PROBE_TIMEOUT, timeout / 5)
        #: with one endpoint there is nowhere to fail over to: a silent watch is left to
        #: the watcher's own stall probe (a busy machine's slow status answer must not
        #: end a healthy watch)
        self.fails_over = len(settings.endpoints) > 1

    @classmethod
    def from_settings(
        cls, settings: EtcdSettings, *, max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    ) -> EtcdClient:
        """Build a client for ``settings`` (no I/O: connecting happens on first use)."""
        return cls(settings, max_txn_ops=max_txn_ops)

    # -- plumbing ------------------------------------------------------------------------

    def _where(self) -> str:
        try:
            endpoint = self._client.endpoint_in_use
            return f"{endpoint.protocol}://{endpoint.netloc}"
        except Exception:  # only for messages: never fail while describing a failure
            return "etcd"

    def _metadata(self) -> Any:
        return self._client.metadata

    def _ensure_token(self) -> None:
        """Authenticate when a user is configured and there is no valid token."""
        if not self._user:
            return
        with self._auth_lock:
            if self._token is not None:
                return
            request = etcdrpc.AuthenticateRequest(name=self._user, password=self._password)
            response = self._client.authstub.Authenticate(request, self._timeout)
            self._token = str(response.token)
            self._client.metadata = (("token", self._token),)
            # New watches must carry the new token: give them a new watcher. Open watches
            # keep theirs (each Watch holds the watcher it was created on).
            self._client._stubs.pop("watcher", None)

    def _drop_token(self, refused: str | None) -> None:
        with self._auth_lock:
            if self._token == refused:
                self._token = None

    # -- endpoints and failover ------------------------------------------------------------

    def _link(self, endpoint: Any) -> _Link:
        link = self._links.get(endpoint.netloc)
        if link is None:
            link = self._links.setdefault(endpoint.netloc, _Link(endpoint))
        return link

    def _pick(self) -> _Link:
        """The endpoint in use if it has not failed lately, else the next one that has not.

        Raises ``NoServerAvailableError`` when every endpoint failed within the last
        ``_ENDPOINT_RETRY_SECONDS``. Switching endpoints makes pyetcd drop its watcher
        (new watches go to the new endpoint).
        """
        with self._select_lock:
            client = self._client
            current = client.endpoint_in_use
            if current is not None and not current.is_failed():
                return self._link(current)
            labels = list(client.endpoints)
            start = labels.index(current.netloc) + 1 if current is not None else 0
            for label in labels[start:] + labels[:start]:
                endpoint = client.endpoints[label]
                if not endpoint.is_failed():
                    client._current_endpoint_label = label
                    return self._link(endpoint)
        raise pyetcd_exceptions.NoServerAvailableError("No endpoint available and not failed")

    def _fail(self, link: _Link) -> None:
        """Mark ``link``'s endpoint failed (for ``time_retry``): calls go elsewhere, and
        watches open on it end (``WatchDisconnected``) so their owners re-watch."""
        with self._select_lock:
            link.endpoint.fail()
            if self._client.endpoint_in_use is link.endpoint:
                with contextlib.suppress(Exception):
                    self._client._clear_old_stubs()
        for watch in list(self._watches):
            if watch.link is link:
                watch.endpoint_failed()

    def _fail_endpoint(self) -> None:
        """Mark the endpoint in use failed (a watch broke on it)."""
        with contextlib.suppress(Exception):
            self._fail(self._link(self._client.endpoint_in_use))

    def _responsive(self, link: _Link, metadata: Any, since: float | None = None) -> bool:
        """Whether the endpoint answers at all: it answered something after ``since``
        (default: within the last ``_FRESH`` seconds), or a status request now."""
        if link.answered_since(time.monotonic() - _FRESH if since is None else since):
            return True
        return self._probe(link, metadata)

    def _probe(self, link: _Link, metadata: Any) -> bool:
        """Ask the endpoint for its status (which carries its raft term)."""
        try:
            status = link.maintenance.Status(
                etcdrpc.StatusRequest(), self._probe_timeout, metadata=metadata
            )
        except grpc.RpcError as error:
            if error.code() in _UNAVAILABLE_CODES:
                return False
            status = None
        link.answered(status)  # a refusal (auth…) is an answer too
        return True

    def _wait(self, pending: Any, link: _Link, metadata: Any, deadline: float) -> Any:
        """The result of ``pending``; ``_Unresponsive`` when its endpoint stops answering."""
        term = link.term
        while True:
            left = deadline - time.monotonic()
            try:
                # past the deadline gRPC itself ends the call (DEADLINE_EXCEEDED)
                return pending.result(timeout=max(0.05, min(left + 0.5, self._probe_after)))
            except grpc.FutureTimeoutError:
                pass
            if not self._probe(link, metadata):
                pending.cancel()
                raise _Unresponsive()
            if not term:
                term = link.term  # the first use of this endpoint: the term from now on
            elif link.term > term:
                pending.cancel()
                raise _LeaderChanged()

    def _rpc(self, what: str, call: Callable[[_Link, Any, float], Any]) -> Any:
        """Run ``call(link, metadata, timeout)`` (it returns a pending call: ``result()``,
        ``cancel()``) on a live endpoint, failing over to the next one when an endpoint
        does not connect, does not answer or is unavailable, all within one request
        timeout; authenticate first, and again once if etcd says the token expired.
        Every failure is raised as a ``ClusterError``."""
        if self._closed:
            raise ClusterError(f"{what}: the etcd client is closed")
        deadline = time.monotonic() + self._timeout
        failures: list[str] = []
        reauthenticated = False
        #: a member lives (it answered with an error, or too slowly): worth waiting for
        #: within the request timeout. Members that all refuse connections are not: etcd
        #: is down, and a lone `ccm objects put` says so at once.
        alive = False
        while True:
            left = deadline - time.monotonic()
            try:
                link = self._pick()
            except pyetcd_exceptions.NoServerAvailableError as error:
                if alive and left > _ELECTION_POLL:
                    time.sleep(_ELECTION_POLL)  # the marked members come back shortly
                    continue
                if failures:
                    raise EtcdUnavailable(
                        f"{what}: no etcd endpoint answered: {'; '.join(failures)}"
                    ) from error
                raise self._error(what, error) from error
            if left <= 0:
                raise EtcdUnavailable(
                    f"{what}: etcd did not answer within {self._timeout:g} s"
                    + (f" ({'; '.join(failures)})" if failures else "")
                )
            token = self._token
            try:
                self._ensure_token()
                token = self._token
                metadata = self._metadata()
                pending = call(link, metadata, left)
                result = self._wait(pending, link, metadata, deadline)
            except _Unresponsive:
                self._fail(link)
                alive = True  # it took the connection: frozen, or starved of CPU
                failures.append(
                    f"etcd at {link.where} did not answer, not even a status request within "
                    f"{self._probe_timeout:g} s"
                )
                continue
            except _LeaderChanged:
                alive = True
                failures.append(f"etcd at {link.where} changed leader while the call waited")
                continue
            except grpc.RpcError as error:
                details = error.details() or ""
                if (
                    not reauthenticated
                    and token is not None
                    and any(text in details for text in _STALE_TOKEN_DETAILS)
                ):
                    reauthenticated = True
                    self._drop_token(token)
                    continue
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    self._fail(link)
                    alive = alive or not any(text in details.lower() for text in _DOWN_DETAILS)
                    failures.append(f"etcd at {link.where} is unavailable: {details}")
                    continue
                raise self._error(what, error, link) from error
            except pyetcd_exceptions.Etcd3Exception as error:
                raise self._error(what, error, link) from error
            except ValueError as error:  # gRPC: "Cannot invoke RPC on closed channel!"
                raise ClusterError(f"{what}: {error}") from error
            link.answered(result)
            return result

    def _error(self, what: str, error: Exception, link: _Link | None = None) -> ClusterError:
        if isinstance(error, pyetcd_exceptions.NoServerAvailableError):
            endpoints = ", ".join(
                f"{endpoint.protocol}://{endpoint.netloc}"
                for endpoint in self._client.endpoints.values()
            )
            return EtcdUnavailable(
                f"{what}: no etcd endpoint available ({endpoints}: each failed within the "
                f"last {_ENDPOINT_RETRY_SECONDS} s)"
            )
        where = link.where if link is not None else self._where()
        if isinstance(error, pyetcd_exceptions.WatchTimedOut):
            if link is not None:
                self._fail(link)
            return EtcdUnavailable(
                f"{what}: etcd at {where} did not create the watch within {self._timeout:g} s"
            )
        if isinstance(error, pyetcd_exceptions.RevisionCompactedError):
            return RevisionCompacted(
                f"{what}: revision compacted (etcd keeps history from {error.compacted_revision})",
                int(error.compacted_revision),
            )
        if not isinstance(error, grpc.RpcError):
            return ClusterError(f"{what}: {type(error).__name__}: {error}")
        code = error.code()
        details = error.details() or ""
        if code in _UNAVAILABLE_CODES or code == grpc.StatusCode.INTERNAL:
            if link is not None:
                self._fail(link)
            else:
                self._fail_endpoint()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return EtcdUnavailable(
                f"{what}: etcd at {where} did not answer within {self._timeout:g} s"
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return EtcdUnavailable(f"{what}: etcd at {where} is unavailable: {details}")
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return RevisionCompacted(f"{what}: {details}", None)
        if "authentication failed" in details:
            return ClusterError(f"{what}: etcd at {where} refused user {self._user!r}: {details}")
        return ClusterError(f"{what}: etcd at {where} refused: {code.name}: {details}")

    def _range(self, what: str, get: Get, revision: int = 0) -> Any:
        request = _range_request(get, revision)
        return self._rpc(
            what,
            lambda link, metadata, timeout: link.kv.Range.future(
                request, timeout, metadata=metadata
            ),
        )

    # -- key-value -----------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key, or None when it does not exist."""
        response = self._range(f"get {key}", Get(key))
        return _key_value(response.kvs[0]) if response.kvs else None

    def get_prefix(self, prefix: str, revision: int | None = None) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix``, sorted by key, read at one revision.

        Returns the kvs and the revision they reflect: ``revision`` when given (raising
        ``RevisionCompacted`` when it is gone), else the store's current revision.
        """
        response = self._range(f"get prefix {prefix}", Get(prefix, prefix=True), revision or 0)
        kvs = [_key_value(kv) for kv in response.kvs]
        return kvs, revision or int(response.header.revision)

    def current_revision(self) -> int:
        """The store's current revision."""
        request = etcdrpc.RangeRequest(key=b"\0", count_only=True)
        response = self._rpc(
            "read revision",
            lambda link, metadata, timeout: link.kv.Range.future(
                request, timeout, metadata=metadata
            ),
        )
        return int(response.header.revision)

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """If every compare holds, apply ``success``, else ``failure``; atomically.

        More operations than etcd's per-level limit are packed into nested
        sub-transactions (still one atomic write at one revision); more compares than the
        limit are refused by etcd (``ClusterError``).
        """
        limit = self.max_txn_ops
        entries = _txn_layout(len(compares), max(len(success), len(failure)), limit)
        request = etcdrpc.TxnRequest(
            compare=[_compare_message(compare) for compare in compares],
            success=_pack(success, entries),
            failure=_pack(failure, entries),
        )
        response = self._rpc(
            f"txn ({len(compares)} compares, {len(success)}/{len(failure)} ops)",
            lambda link, metadata, timeout: link.kv.Txn.future(request, timeout, metadata=metadata),
        )
        return TxnResult(
            succeeded=bool(response.succeeded),
            revision=int(response.header.revision),
            responses=tuple(_op_results(response.responses)),
        )

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write one key; returns the revision of the write."""
        return self.txn([], [Put(key, value, lease)]).revision

    def delete(self, key: str, prefix: bool = False) -> int:
        """Delete one key (or a prefix); returns how many keys were deleted."""
        result = self.txn([], [Delete(key, prefix)]).responses[0]
        return result if isinstance(result, int) else 0

    def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (reads and watches there then fail)."""
        request = etcdrpc.CompactionRequest(revision=revision, physical=True)
        self._rpc(
            f"compact at {revision}",
            lambda link, metadata, timeout: link.kv.Compact.future(
                request, timeout, metadata=metadata
            ),
        )

    # -- leases --------------------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        request = etcdrpc.LeaseGrantRequest(TTL=ttl, ID=0)
        response = self._rpc(
            f"grant lease ({ttl} s)",
            lambda link, metadata, timeout: link.lease.LeaseGrant.future(
                request, timeout, metadata=metadata
            ),
        )
        if response.error:
            raise ClusterError(f"grant lease ({ttl} s): {response.error}")
        return int(response.ID)

    def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive once; returns its renewed TTL (``LeaseNotFound`` if gone)."""
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def keep_alive(link: _Link, metadata: Any, timeout: float) -> _FirstResponse:
            return _FirstResponse(
                link.lease.LeaseKeepAlive(iter([request]), timeout, metadata=metadata)
            )

        response = self._rpc(f"refresh lease {lease_id:x}", keep_alive)
        if response is None or response.TTL <= 0:
            raise LeaseNotFound(lease_id)
        return int(response.TTL)

    def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease (deleting its keys); a lease already gone is fine."""
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        try:
            self._rpc(
                f"revoke lease {lease_id:x}",
                lambda link, metadata, timeout: link.lease.LeaseRevoke.future(
                    request, timeout, metadata=metadata
                ),
            )
        except ClusterError as error:
            if "lease not found" not in str(error):
                raise

    def lease_ttl(self, lease_id: int) -> int:
        """Seconds the lease has left; -1 when it expired or was revoked."""
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)
        response = self._rpc(
            f"lease {lease_id:x} ttl",
            lambda link, metadata, timeout: link.lease.LeaseTimeToLive.future(
                request, timeout, metadata=metadata
            ),
        )
        return int(response.TTL)

    # -- watch ---------------------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int | None = None) -> Watch:
        """Watch every key under ``prefix``, from ``start_revision`` (None: from now).

        Raises, here or later from the iterator, ``RevisionCompacted`` when
        ``start_revision`` is older than etcd's history and ``WatchDisconnected`` when the
        stream breaks. Nothing resumes by itself: re-watch from the last revision + 1.
        """
        key = prefix.encode()
        events: queue.SimpleQueue[object] = queue.SimpleQueue()

        def create(link: _Link, metadata: Any, timeout: float) -> _Done:
            # pyetcd's watcher waits for the creation without a watchdog: never open a
            # watch on an endpoint that does not answer
            if not self._responsive(link, metadata):
                raise _Unresponsive()
            with self._select_lock:
                if self._client.endpoint_in_use is not link.endpoint:
                    self._client._current_endpoint_label = link.endpoint.netloc
                watcher = self._client.watcher
            with self._opening:
                if self._closed:
                    raise ClusterError(f"watch {prefix}: the etcd client is closed")
                watch_id = watcher.add_callback(
                    key,
                    events.put,
                    range_end=prefix_range_end(key),
                    start_revision=start_revision,
                )
            return _Done((watcher, int(watch_id), link))

        watcher, watch_id, link = self._rpc(f"watch {prefix}", create)
        watch = Watch(self, prefix, watcher, watch_id, events, link)
        self._watches.add(watch)
        return watch

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the channels; open watches end with ``WatchDisconnected``."""
        with self._opening:  # a watch being opened has its stream before the channel goes
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_CANCELLED = object()
_ENDPOINT_FAILED = object()


class Watch:
    """An open watch: iterate for ``WatchBatch``es; ``cancel()`` (from any thread) ends it.

    Iteration raises ``WatchDisconnected`` or ``RevisionCompacted``; after that, or after
    ``cancel()``, the watch is over.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        watcher: Any,
        watch_id: int,
        events: queue.SimpleQueue[object],
        link: _Link | None = None,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self._watcher = watcher
        self._watch_id = watch_id
        self._events = events
        self._done = False
        self.link = link

    @property
    def done(self) -> bool:
        """True once cancelled or failed: nothing more will come."""
        return self._done

    def cancel(self) -> None:
        """Stop watching; a thread blocked in iteration returns."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            self._watcher.cancel(self._watch_id)
        self._events.put(_CANCELLED)

    def endpoint_failed(self) -> None:
        """The client found this watch's endpoint dead: end the watch (the owner
        re-watches, on another endpoint)."""
        self._events.put(_ENDPOINT_FAILED)

    def _next(self, timeout: float | None) -> Any:
        """The next item; with endpoints to fail over to, every ``_WATCH_CHECK`` seconds
        of silence, check the endpoint (a frozen member keeps the stream open and
        silent). With one endpoint nothing is checked, so nothing wakes the thread
        before ``timeout``: an idle daemon sleeps."""
        deadline = None if timeout is None else time.monotonic() + timeout
        checking = self._client.fails_over
        while True:
            wait: float | None = _WATCH_CHECK if checking else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                return self._events.get(timeout=wait)
            except queue.Empty:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty
            link = self.link
            if link is not None and not self._client._closed and checking:
                if link.endpoint.is_failed() or not self._client._responsive(
                    link, self._client._metadata()
                ):
                    return _ENDPOINT_FAILED

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        """The next batch; None when ``timeout`` passed first or the watch was cancelled."""
        if self._done and self._events.empty():
            return None
        try:
            item: Any = self._next(timeout)
        except queue.Empty:
            return None
        if item is _CANCELLED:
            self._done = True
            return None
        if item is _ENDPOINT_FAILED:
            self._done = True
            with contextlib.suppress(Exception):
                self._watcher.cancel(self._watch_id)
            link = self.link
            where = link.where if link is not None else self._client._where()
            if link is not None and not link.endpoint.is_failed():
                self._client._fail(link)
            raise WatchDisconnected(
                f"watch {self.prefix}: etcd at {where} stopped answering; re-watch elsewhere"
            )
        if isinstance(item, pyetcd_exceptions.RevisionCompactedError):
            self._done = True
            raise RevisionCompacted(
                f"watch {self.prefix}: start revision compacted (etcd keeps history from "
                f"{item.compacted_revision})",
                int(item.compacted_revision),
            )
        if item is None or isinstance(item, Exception):
            self._done = True
            with contextlib.suppress(Exception):
                self._watcher.cancel(self._watch_id)
            if isinstance(item, grpc.RpcError) and item.code() in _UNAVAILABLE_CODES:
                self._client._fail_endpoint()
            reason = f": {item.details()}" if isinstance(item, grpc.RpcError) else ""
            raise WatchDisconnected(
                f"watch {self.prefix}: stream to etcd at {self._client._where()} broke{reason}"
            )
        return WatchBatch(
            revision=int(item.header.revision),
            events=tuple(_watch_event(event) for event in item.events),
        )

    def __iter__(self) -> Iterator[WatchBatch]:
        while True:
            batch = self.get()
            if batch is None:
                return
            yield batch

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


def _watch_event(event: Any) -> WatchEvent:
    deleted = isinstance(event, pyetcd_events.DeleteEvent)
    return WatchEvent(
        type="delete" if deleted else "put",
        key=_decode(event.key),
        value=b"" if deleted else bytes(event.value),
        mod_revision=int(event.mod_revision),
    )
