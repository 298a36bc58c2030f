"""The one backoff policy (``ccm.cluster.backoff``): delays from settings, stoppable."""

from __future__ import annotations

import threading

import pytest

from ccm.cluster import backoff
from ccm.errors import ClusterError, SettingsError
from ccm.settings import BackoffSettings, load_settings

POLICY = BackoffSettings(initial=0.001, max=0.004)


def test_delays_double_up_to_the_maximum() -> None:
    settings = BackoffSettings(initial=0.5, max=3)
    assert [backoff.delay(settings, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_retries_the_named_errors_until_done_and_reports_each_wait() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ClusterError("etcd away")
        return "done"

    result = backoff.retry_until_done(
        flaky, POLICY, retry_on=ClusterError, on_retry=lambda error, s: waits.append(s)
    )
    assert result == "done" and len(calls) == 4
    assert waits == [0.001, 0.002, 0.004]


def test_other_errors_pass_through_at_once() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        backoff.retry_until_done(broken, POLICY, retry_on=ClusterError)
    assert calls == [1]


def test_a_stop_ends_the_retrying_with_the_last_error() -> None:
    stop = threading.Event()

    def failing() -> None:
        stop.set()  # e.g. SIGTERM during the outage
        raise ClusterError("still away")

    with pytest.raises(ClusterError, match="still away"):
        backoff.retry_until_done(failing, POLICY, retry_on=ClusterError, stop=stop)


def test_the_policy_is_a_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ccm.toml"
    path.write_text("[backoff]\ninitial = 2\nmax = 1\n")
    with pytest.raises(SettingsError, match="backoff"):
        load_settings(path, environ={})
