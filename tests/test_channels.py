"""Hand-off policies between pipeline threads."""

from __future__ import annotations

import threading
import time

import pytest

from mirage_lsd.engine.channels import Channel, Closed


def test_newest_wins_and_reports_the_dropped_item() -> None:
    ch: Channel[int] = Channel(1, "newest")
    assert ch.put(1) is None
    assert ch.put(2) == 1
    assert ch.get() == 2


def test_drop_oldest_keeps_the_latest_items() -> None:
    ch: Channel[int] = Channel(2, "drop_oldest")
    drops = [ch.put(i) for i in range(5)]
    assert drops == [None, None, 0, 1, 2]
    assert [ch.get(), ch.get()] == [3, 4]


def test_block_waits_for_room_and_close_unblocks() -> None:
    ch: Channel[int] = Channel(1, "block")
    ch.put(1)
    result: list[object] = []
    putting = threading.Event()

    def producer() -> None:
        try:
            putting.set()
            ch.put(2)
            result.append("put")
        except Closed:
            result.append("closed")

    t = threading.Thread(target=producer)
    t.start()
    assert putting.wait(5)
    t.join(0.2)  # it had time to put, were there room
    assert t.is_alive() and result == [] and len(ch) == 1  # still waiting for room
    assert ch.get() == 1
    t.join(1)
    assert result == ["put"]
    ch.close()
    assert ch.get() == 2  # what was queued is drained
    with pytest.raises(Closed):
        ch.get()


def test_handoff_puts_only_when_a_getter_waits() -> None:
    ch: Channel[int] = Channel(1, "handoff")
    got: list[tuple[int, float]] = []

    def consumer() -> None:
        time.sleep(0.1)
        got.append((ch.get(), time.monotonic()))

    t = threading.Thread(target=consumer)
    t.start()
    ch.wait_ready()
    put_at = time.monotonic()
    ch.put(7)
    t.join(1)
    assert got[0][0] == 7
    assert got[0][1] - put_at < 0.5  # taken at once, not after a getter's next wait


def test_get_timeout() -> None:
    ch: Channel[int] = Channel(1, "block")
    with pytest.raises(TimeoutError):
        ch.get(timeout=0.01)
