"""The debouncer at exact instants: a ManualClock moves time, nothing sleeps."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccm.cluster.clock import Clock, ManualClock, SystemClock
from ccm.daemon.debounce import ALL, Debouncer

T0 = 1000.0  # not zero, so an instant cannot be right by coincidence


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(monotonic=T0)


@pytest.fixture
def debouncer(clock: ManualClock) -> Debouncer:
    return Debouncer(quiet=10, max_wait=60, clock=clock)


# --- the clocks -------------------------------------------------------------------------


def test_manual_clock_advances_both_clocks_together() -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(monotonic=5.0, wall=start)
    clock.advance(2.5)
    assert clock.monotonic() == 7.5
    assert clock.wall() == start + timedelta(seconds=2.5)


def test_manual_clock_set_moves_monotonic_forward_only() -> None:
    clock = ManualClock(monotonic=10.0)
    clock.set(monotonic=12.0)
    assert clock.monotonic() == 12.0
    with pytest.raises(ValueError, match="backwards"):
        clock.set(monotonic=11.0)
    with pytest.raises(ValueError, match="negative"):
        clock.advance(-1)
    assert clock.monotonic() == 12.0


def test_manual_clock_wall_is_utc_and_may_jump() -> None:
    clock = ManualClock()
    cest = timezone(timedelta(hours=2))
    clock.set(wall=datetime(2020, 1, 1, 2, 0, tzinfo=cest))
    assert clock.wall() == datetime(2020, 1, 1, 0, 0, tzinfo=UTC)
    assert clock.wall().tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        clock.set(wall=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="finite"):
        ManualClock(monotonic=math.nan)


def test_system_clock_is_a_clock_with_aware_utc_wall_time() -> None:
    clock: Clock = SystemClock()
    assert clock.wall().tzinfo is UTC
    first = clock.monotonic()
    assert clock.monotonic() >= first


# --- when a run is due -------------------------------------------------------------------


def test_nothing_pending_is_never_due(debouncer: Debouncer, clock: ManualClock) -> None:
    assert debouncer.pending == frozenset()
    assert debouncer.due_at() is None
    assert debouncer.seconds_until_due() is None
    clock.advance(1000)
    assert not debouncer.is_due()


def test_a_single_event_is_due_exactly_quiet_seconds_later(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    debouncer.add(["site"])
    assert debouncer.due_at() == T0 + 10
    assert debouncer.seconds_until_due() == 10.0

    clock.advance(9.5)
    assert not debouncer.is_due()
    assert debouncer.seconds_until_due() == 0.5

    clock.advance(0.5)
    assert clock.monotonic() == T0 + 10
    assert debouncer.is_due()
    assert debouncer.seconds_until_due() == 0.0


def test_due_at_equal_to_now_counts_as_due(debouncer: Debouncer, clock: ManualClock) -> None:
    debouncer.add(["site"])
    clock.set(monotonic=T0 + 10)
    assert debouncer.due_at() == clock.monotonic()
    assert debouncer.is_due()


def test_past_due_waits_zero_not_a_negative_time(debouncer: Debouncer, clock: ManualClock) -> None:
    debouncer.add(["site"])
    clock.advance(25)
    assert debouncer.is_due()
    assert debouncer.due_at() == T0 + 10
    assert debouncer.seconds_until_due() == 0.0


def test_events_every_5s_postpone_the_run_until_max_wait_after_the_first(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    for _ in range(12):  # events at T0+0, +5, ... +55: never 10 s of quiet
        debouncer.add(["site"])
        now = clock.monotonic()
        assert debouncer.due_at() == min(now + 10, T0 + 60)
        assert not debouncer.is_due()
        clock.advance(5)

    assert clock.monotonic() == T0 + 60
    assert debouncer.due_at() == T0 + 60
    assert debouncer.is_due()
    debouncer.add(["site"])  # a further event at the cap does not postpone it
    assert debouncer.due_at() == T0 + 60
    assert debouncer.is_due()


def test_an_event_inside_the_quiet_period_postpones_exactly(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    debouncer.add(["site"])
    clock.advance(7)
    debouncer.add(["cron"])
    assert debouncer.due_at() == T0 + 17
    clock.advance(9.75)
    assert not debouncer.is_due()
    clock.advance(0.25)
    assert debouncer.is_due()


def test_quiet_zero_is_due_immediately(clock: ManualClock) -> None:
    debouncer = Debouncer(quiet=0, max_wait=60, clock=clock)
    debouncer.add(["site"])
    assert debouncer.due_at() == T0
    assert debouncer.is_due()
    assert debouncer.seconds_until_due() == 0.0


def test_max_wait_shorter_than_quiet_caps_the_wait(clock: ManualClock) -> None:
    debouncer = Debouncer(quiet=10, max_wait=3, clock=clock)
    debouncer.add(["site"])
    assert debouncer.due_at() == T0 + 3
    clock.advance(3)
    assert debouncer.is_due()


def test_max_wait_zero_is_due_immediately(clock: ManualClock) -> None:
    debouncer = Debouncer(quiet=10, max_wait=0, clock=clock)
    debouncer.add(["site"])
    assert debouncer.is_due()


# --- what is pending ---------------------------------------------------------------------


def test_types_of_a_burst_accumulate(debouncer: Debouncer, clock: ManualClock) -> None:
    debouncer.add(["site"])
    clock.advance(1)
    debouncer.add(["cron", "unix_user"])
    clock.advance(1)
    debouncer.add(["site"])
    assert debouncer.pending == {"site", "cron", "unix_user"}
    clock.advance(10)
    assert debouncer.take() == frozenset({"site", "cron", "unix_user"})


def test_take_returns_and_clears_everything(debouncer: Debouncer, clock: ManualClock) -> None:
    debouncer.add(["site", "cron"])
    clock.advance(10)
    assert debouncer.take() == frozenset({"site", "cron"})
    assert debouncer.pending == frozenset()
    assert debouncer.due_at() is None
    assert debouncer.seconds_until_due() is None
    assert not debouncer.is_due()
    assert debouncer.take() == frozenset()


def test_take_before_due_is_allowed(debouncer: Debouncer) -> None:
    debouncer.add(["site"])
    assert not debouncer.is_due()
    assert debouncer.take() == frozenset({"site"})


def test_a_new_burst_after_take_re_anchors_max_wait(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    debouncer.add(["site"])
    clock.advance(50)
    debouncer.add(["site"])
    assert debouncer.due_at() == T0 + 60
    clock.advance(10)
    debouncer.take()

    clock.advance(5)  # T0 + 65: the first event of a new burst
    debouncer.add(["cron"])
    assert debouncer.due_at() == T0 + 75
    for _ in range(11):  # keep it busy: the cap is 60 s after T0 + 65, not after T0
        clock.advance(5)
        debouncer.add(["cron"])
    assert clock.monotonic() == T0 + 120
    assert debouncer.due_at() == T0 + 125
    assert not debouncer.is_due()


def test_all_absorbs_other_types(debouncer: Debouncer) -> None:
    debouncer.add(["site"])
    debouncer.add([ALL])
    assert debouncer.pending == {ALL}
    debouncer.add(["cron"])
    assert debouncer.pending == {ALL}
    assert debouncer.take() == frozenset({ALL})


def test_all_in_the_same_event_absorbs_its_companions(debouncer: Debouncer) -> None:
    debouncer.add(["site", ALL, "cron"])
    assert debouncer.take() == frozenset({ALL})


def test_all_follows_the_same_timing(debouncer: Debouncer, clock: ManualClock) -> None:
    debouncer.add([ALL])
    assert debouncer.due_at() == T0 + 10
    clock.advance(10)
    assert debouncer.is_due()


def test_an_empty_event_is_not_an_event(debouncer: Debouncer, clock: ManualClock) -> None:
    debouncer.add([])
    assert debouncer.due_at() is None
    debouncer.add(["site"])
    clock.advance(8)
    debouncer.add([])  # does not postpone
    assert debouncer.due_at() == T0 + 10


# --- restore after a run that did not apply -----------------------------------------------


def test_restore_keeps_the_work_pending_and_due_now(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    debouncer.add(["site", "cron"])
    clock.advance(10)
    taken = debouncer.take()
    clock.advance(3)  # the run took the lock, found the halt flag, gave up
    debouncer.restore(taken)

    assert debouncer.pending == {"site", "cron"}
    assert debouncer.due_at() == T0 + 13
    assert debouncer.is_due()
    assert debouncer.seconds_until_due() == 0.0

    clock.advance(600)  # held while halted: still due, still the same work
    assert debouncer.is_due()
    assert debouncer.take() == frozenset({"site", "cron"})


def test_events_after_a_restore_join_it_without_postponing(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    debouncer.add(["site"])
    clock.advance(10)
    debouncer.restore(debouncer.take())
    clock.advance(1)
    debouncer.add(["cron"])
    assert debouncer.due_at() == T0 + 10
    assert debouncer.is_due()
    assert debouncer.take() == frozenset({"site", "cron"})


def test_restore_merges_with_events_that_arrived_during_the_run(
    debouncer: Debouncer, clock: ManualClock
) -> None:
    debouncer.add(["site"])
    clock.advance(10)
    taken = debouncer.take()
    clock.advance(2)
    debouncer.add(["cron"])  # during the run: alone it would be due at T0 + 22
    assert debouncer.due_at() == T0 + 22
    clock.advance(2)
    debouncer.restore(taken)
    assert debouncer.pending == {"site", "cron"}
    assert debouncer.due_at() == T0 + 14
    assert debouncer.is_due()


def test_restore_of_all_absorbs_pending_types(debouncer: Debouncer) -> None:
    debouncer.add(["cron"])
    debouncer.restore([ALL])
    assert debouncer.take() == frozenset({ALL})


def test_restore_of_nothing_changes_nothing(debouncer: Debouncer) -> None:
    debouncer.restore([])
    assert debouncer.due_at() is None
    debouncer.add(["site"])
    debouncer.restore(frozenset())
    assert not debouncer.is_due()


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quiet", "max_wait", "named"),
    [
        (-1, 60, "quiet"),
        (10, -0.5, "max_wait"),
        (math.nan, 60, "quiet"),
        (10, math.inf, "max_wait"),
    ],
)
def test_bad_durations_are_refused_by_name(
    clock: ManualClock, quiet: float, max_wait: float, named: str
) -> None:
    with pytest.raises(ValueError, match=f"^debounce {named} must be a finite number"):
        Debouncer(quiet=quiet, max_wait=max_wait, clock=clock)


def test_repr_shows_the_settings_and_what_is_pending(clock: ManualClock) -> None:
    debouncer = Debouncer(quiet=10, max_wait=60, clock=clock)
    assert repr(debouncer) == "Debouncer(quiet=10.0, max_wait=60.0, pending=[], due_at=None)"
    debouncer.add(["crons", "unix-users"])
    assert repr(debouncer) == (
        f"Debouncer(quiet=10.0, max_wait=60.0, pending=['crons', 'unix-users'], "
        f"due_at={clock.monotonic() + 10})"
    )


def test_a_bare_string_is_refused_not_split_into_characters(debouncer: Debouncer) -> None:
    with pytest.raises(TypeError, match="'site'"):
        debouncer.add("site")
    with pytest.raises(TypeError):
        debouncer.restore("site")
    assert debouncer.pending == frozenset()


def test_an_empty_type_name_is_refused(debouncer: Debouncer) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        debouncer.add(["site", ""])
    assert debouncer.pending == frozenset()


# --- properties ---------------------------------------------------------------------------

durations = st.integers(min_value=0, max_value=120).map(float)
gaps = st.lists(st.integers(min_value=0, max_value=30).map(lambda n: n / 4), max_size=40)


# No example database: nothing written into the tree; no deadline: no flakes on a busy CI.
@settings(database=None, deadline=None)
@given(quiet=durations, max_wait=durations, gaps=gaps)
def test_due_at_is_the_earlier_of_quiet_after_last_and_max_wait_after_first(
    quiet: float, max_wait: float, gaps: list[float]
) -> None:
    clock = ManualClock(monotonic=T0)
    debouncer = Debouncer(quiet=quiet, max_wait=max_wait, clock=clock)
    debouncer.add(["site"])
    for gap in gaps:
        clock.advance(gap)
        debouncer.add(["site"])
    last = clock.monotonic()
    due = debouncer.due_at()
    assert due == min(last + quiet, T0 + max_wait)
    assert due <= T0 + max_wait
    assert debouncer.is_due() == (clock.monotonic() >= due)
    wait = debouncer.seconds_until_due()
    assert wait == max(0.0, due - clock.monotonic())
    clock.advance(wait)
    assert debouncer.is_due()
