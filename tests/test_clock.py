"""The sources' clocks: one timeline that never goes back, and camera-like pacing."""

from __future__ import annotations

import threading
import time

from mirage_lsd.sources._clock import JUMP_BACK_S, Pacer, Timeline


def test_a_restart_continues_one_step_after_the_last_frame() -> None:
    timeline = Timeline(step_s=0.04)
    assert [timeline(t) for t in (0.0, 0.04, 0.08)] == [0.0, 0.04, 0.08]
    timeline.restart()  # a loop or a reconnection: the stream's clock starts at 0 again
    assert [round(timeline(t), 6) for t in (0.0, 0.04)] == [0.12, 0.16]


def test_a_jump_back_shifts_the_timeline_but_a_small_step_back_does_not() -> None:
    timeline = Timeline(step_s=0.1)
    for t in (10.0, 10.1, 10.2):
        timeline(t)
    # a duplicate or a slight step back passes as it is: the sinks' clocks nudge it
    small = 10.2 - JUMP_BACK_S / 2
    assert timeline(small) == small
    # a discontinuity (an ad, a restarted encoder): one step after the last frame
    assert round(timeline(3.0), 6) == round(small + 0.1, 6)
    assert round(timeline(3.1), 6) == round(small + 0.2, 6)


def test_frames_without_a_time_are_one_step_apart() -> None:
    timeline = Timeline(step_s=0.5)
    assert [timeline(None) for _ in range(3)] == [0.0, 0.5, 1.0]


def test_the_pacer_waits_for_each_frame_and_does_not_catch_up_after_a_stall() -> None:
    pacer = Pacer(slack_s=0.05)
    assert pacer.wait_until(0.0) == 0.0  # the first frame sets the origin
    waited = pacer.wait_until(0.2)
    assert 0.15 < waited < 1.0  # held until it was due
    time.sleep(0.5)  # the consumer stalls for far longer than the slack
    restarted = time.monotonic()
    assert pacer.wait_until(0.3) == 0.0  # late: the schedule restarts from now, no burst
    pacer.wait_until(0.8)  # and the next frames are due from there: 0.5 s on
    assert 0.4 < time.monotonic() - restarted < 3.0


def test_an_interrupted_pacer_stops_waiting_at_once() -> None:
    pacer = Pacer(slack_s=0.05)
    pacer.wait_until(0.0)
    threading.Timer(0.1, pacer.interrupt).start()
    t0 = time.monotonic()
    pacer.wait_until(30.0)  # a long pause in a variable-rate file
    assert time.monotonic() - t0 < 5.0
    assert pacer.wait_until(60.0) < 1.0  # and every later wait


def test_reconnect_waits_double_up_to_the_cap_and_cost_nothing_for_huge_counts() -> None:
    from mirage_lsd.sources.base import RetryPolicy

    policy = RetryPolicy(attempts=10**12, initial_delay_s=0.5, max_delay_s=8.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(10**11) == 8.0  # "retry for ever" builds no list of waits
