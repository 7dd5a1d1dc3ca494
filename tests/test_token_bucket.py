"""The server's rate limiter, on a clock the test moves."""

from __future__ import annotations

import pytest

from mirage_lsd.server.security import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_rate_refills_and_never_above_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    assert bucket.refused == 1
    clock.now += 0.25  # half a token
    assert not bucket.allow()
    clock.now += 0.25  # one token in all
    assert bucket.allow() and not bucket.allow()
    clock.now += 3600.0  # an hour idle refills to the burst, not to 7200 tokens
    assert sum(bucket.allow() for _ in range(10)) == 3
    assert bucket.refused == 1 + 1 + 1 + 7


@pytest.mark.parametrize("rate", [0.5, 10.0])
def test_the_long_run_rate_is_the_given_rate(rate: float) -> None:
    clock = Clock()
    bucket = TokenBucket(rate=rate, burst=1, clock=clock)
    passed = 0
    for _ in range(1000):  # asked 100 times a second for 10 s
        clock.now += 0.01
        passed += bucket.allow()
    assert abs(passed - rate * 10) <= 1
