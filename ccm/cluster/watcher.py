"""The event watcher: which object types changed, at which revision, without missing any.

The Cluster API touches ``{prefix}/events/<type>`` in the same txn as every object write
(DESIGN.md, "the thin event"). :class:`EventWatcher` watches that directory from a start
revision on a daemon thread and reports, for every batch etcd sends, the set of types
it touched (puts and deletes alike) and the newest revision in it: ``on_types(types,
revision)``. The daemon feeds them to the debouncer. It talks to etcd only through
:class:`~ccm.cluster.etcd.EtcdClient`.

No etcd client resumes a watch by itself, so this module does, and it is the part that
matters:

* **Disconnects** (``WatchDisconnected``, ``EtcdUnavailable``, any other
  ``ClusterError``): re-watch from the last revision seen + 1, so nothing between is
  lost. Attempts are paced by tenacity's capped exponential wait (``backoff_initial``,
  doubling up to ``backoff_max``); the thread sleeps in ``threading.Event.wait`` between
  them, so an etcd outage costs no CPU and :meth:`EventWatcher.stop` interrupts the
  sleep. A watch that had delivered something (or lived ``backoff_max`` seconds) before
  it broke is re-opened at once, with a fresh backoff.
* **Compaction** (``RevisionCompacted``: the revisions after the last one seen are no
  longer in etcd's history): the events in between are unknowable, so
  ``on_full("compacted")`` asks for a full run and the watch starts again from the
  current revision.
* **Stalls**: a watch can stop delivering without breaking (a half-open connection, a
  stream etcd stopped serving). Every ``probe_interval`` one Range reads the newest mod
  revision under ``{prefix}/events/``; when it is above the last revision the watch
  delivered, and the watch does not catch up within a short grace (an event may just be
  in flight), the watch is re-established from the last revision + 1.

The revision reported (and kept as :attr:`EventWatcher.last_revision`) is the newest
*mod revision among the batch's events*, not the response header's revision: while a
watch catches up on history, etcd sends at most 1000 revisions per response under the
header of the *current* revision, so the header can run ahead of what was delivered.

Callbacks run on the watcher's thread and must be quick (the daemon only records the
types); an exception from one is logged and does not stop the watcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import tenacity

from ccm.cluster.clock import Clock, SystemClock
from ccm.cluster.etcd import (
    EtcdClient,
    Get,
    KeyValue,
    RevisionCompacted,
    Watch,
    WatchBatch,
    WatchDisconnected,
)
from ccm.errors import ClusterError
from ccm.log import get_logger

__all__ = ["EventWatcher"]

#: The longest grace a probe gives an in-flight event before it calls the watch stalled.
STALL_GRACE_MAX: Final = 1.0


class _Reconnect(Exception):
    """A watch session ended on purpose (stalled, or broke after it had worked):
    re-watch at once, with a fresh backoff."""


class EventWatcher:
    """Watch ``{prefix}/events/`` from ``start_revision`` (inclusive) on a daemon thread.

    ``on_types(types, revision)`` gets the types touched by each batch and the batch's
    newest revision; ``on_full(reason)`` means "everything may have changed" (the history
    after :attr:`last_revision` was compacted). ``start()`` once, ``stop()`` always.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        start_revision: int,
        on_types: Callable[[set[str], int], None],
        on_full: Callable[[str], None],
        *,
        clock: Clock | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        probe_interval: float = 30.0,
    ) -> None:
        if start_revision < 1:
            raise ValueError(f"etcd revisions start at 1, not {start_revision}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial <= backoff_max, not {backoff_initial}, {backoff_max}"
            )
        if probe_interval <= 0:
            raise ValueError(f"probe_interval must be > 0, not {probe_interval}")
        self.client = client
        self.directory = f"{prefix}/events/"
        self._on_types = on_types
        self._on_full = on_full
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._probe_interval = probe_interval
        self._grace = min(probe_interval, STALL_GRACE_MAX)
        self._last = start_revision - 1
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._watch: Watch | None = None
        self._interrupted = False  # a watch broke, stalled or failed: log its return
        self._thread: threading.Thread | None = None
        self._log = get_logger(component="watcher", directory=self.directory)

    @property
    def last_revision(self) -> int:
        """The newest revision delivered (``start_revision - 1`` before the first)."""
        return self._last

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the watcher thread (once)."""
        if self._thread is not None:
            raise RuntimeError("an EventWatcher starts only once")
        self._thread = threading.Thread(target=self._run, name="ccm-event-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """End the thread: cancel the open watch or the backoff sleep, then join it.

        Returns at once when nothing blocks in etcd; an etcd call in flight (creating a
        watch, a probe) ends within the client's timeout.
        """
        self._stop.set()
        with self._mutex:
            watch = self._watch
        if watch is not None:
            watch.cancel()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> EventWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        self._log.info("watching for events", start_revision=self._last + 1)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ClusterError),
            wait=tenacity.wait_exponential(
                multiplier=self._backoff_initial, min=self._backoff_initial, max=self._backoff_max
            ),
            stop=self._stopped,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        while not self._stop.is_set():
            try:
                retrying(self._session)
            except _Reconnect:
                self._interrupted = True
                continue  # a fresh Retrying state: re-watch now, backoff from the start
            except ClusterError:
                continue  # only when stopping: the loop ends
            except Exception:  # a bug; never let the daemon lose its watcher silently
                self._log.exception("event watcher failed; re-watching")
                self._sleep(self._backoff_max)
        self._log.info("event watcher stopped", last_revision=self._last)

    def _stopped(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._stop.is_set()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self._interrupted = True
        self._log.warning(
            "etcd watch unavailable; retrying",
            error=str(error),
            attempt=retry_state.attempt_number,
            retry_in=round(delay, 3),
            resume_revision=self._last + 1,
        )

    def _session(self) -> None:
        """One watch, from the last revision + 1, until it breaks, stalls or is stopped."""
        if self._stop.is_set():
            return
        try:
            watch = self.client.watch_prefix(self.directory, start_revision=self._last + 1)
        except RevisionCompacted as error:
            self._compacted(error)
            raise _Reconnect() from error
        with self._mutex:
            self._watch = watch
        if self._stop.is_set():  # stop() came before the watch was published
            watch.cancel()
        elif self._interrupted:
            self._interrupted = False
            self._log.info("etcd watch re-established", resume_revision=self._last + 1)
        opened_at = self._clock.monotonic()
        delivered = False
        try:
            for batch_delivered in self._consume(watch):
                delivered = delivered or batch_delivered
        except WatchDisconnected as error:
            worked = delivered or self._clock.monotonic() - opened_at >= self._backoff_max
            if not worked:
                raise
            self._log.warning("etcd watch broke; re-watching", error=str(error))
            raise _Reconnect() from error
        except RevisionCompacted as error:
            self._compacted(error)
            raise _Reconnect() from error
        finally:
            with self._mutex:
                self._watch = None
            watch.cancel()

    def _consume(self, watch: Watch) -> Iterator[bool]:
        """Deliver the watch's batches (yielding whether each held events) until it is
        cancelled; probe for a stall every ``probe_interval`` and raise ``_Reconnect``
        when the watch stays behind etcd for longer than the grace."""
        clock = self._clock
        next_probe = clock.monotonic() + self._probe_interval
        behind = 0  # a revision the watch must deliver by `behind_deadline`; 0: none
        behind_deadline = 0.0
        while not self._stop.is_set():
            due = behind_deadline if behind else next_probe
            batch = watch.get(timeout=max(0.0, due - clock.monotonic()))
            if batch is not None:
                yield self._deliver(batch)
                if behind and self._last >= behind:
                    behind = 0
                continue
            if watch.done:
                return
            now = clock.monotonic()
            if behind:
                if now >= behind_deadline:
                    self._log.warning(
                        "etcd watch stalled: it is behind etcd; re-watching",
                        last_revision=self._last,
                        etcd_revision=behind,
                    )
                    raise _Reconnect()
            elif now >= next_probe:
                latest = self._latest_event_revision()
                now = clock.monotonic()
                next_probe = now + self._probe_interval
                if latest > self._last:
                    behind, behind_deadline = latest, now + self._grace

    def _compacted(self, error: RevisionCompacted) -> None:
        current = self.client.current_revision()
        self._log.warning(
            "events after the last seen revision were compacted: full run",
            last_revision=self._last,
            compacted_to=error.compact_revision,
            resume_revision=current + 1,
        )
        self._last = max(self._last, current)
        self._call(self._on_full, "compacted")

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self._log.exception("event watcher callback failed", callback=repr(callback))

    def _deliver(self, batch: WatchBatch) -> bool:
        """Report one batch; False when it holds no event (nothing to report)."""
        if not batch.events:
            return False
        revision = max(event.mod_revision for event in batch.events)
        types = {
            event.key[len(self.directory) :]
            for event in batch.events
            if event.key.startswith(self.directory) and len(event.key) > len(self.directory)
        }
        self._last = max(self._last, revision)
        if types:
            self._call(self._on_types, types, revision)
        return True

    def _latest_event_revision(self) -> int:
        newest = Get(self.directory, prefix=True, sort="mod", descending=True, limit=1)
        found = self.client.txn([], [newest]).responses[0]
        kvs: list[KeyValue] = found if isinstance(found, list) else []
        return kvs[0].mod_revision if kvs else 0
