"""Bounded hand-offs between pipeline threads, each with a named policy.

- `newest`: a one-slot "newest frame wins" channel (live capture to inference);
  a put replaces the waiting item, which is returned so the caller counts it.
- `drop_oldest`: a small queue that drops its oldest item when full (live output).
- `block`: a put waits for room (offline: every frame, in order).
- `handoff`: a put waits until a consumer is waiting in `get()` with nothing
  queued, so the item is taken the moment it is put (benchmarks: frames are
  captured exactly when the pipeline can take them).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["newest", "drop_oldest", "block", "handoff"]


class Closed(Exception):
    """The channel was closed and holds nothing more."""


class Channel(Generic[T]):
    """A thread-safe bounded queue with an explicit full-queue policy."""

    def __init__(self, maxsize: int, policy: Policy) -> None:
        if policy in ("newest", "handoff"):
            maxsize = 1
        self.maxsize = maxsize
        self.policy = policy
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._waiting_getters = 0

    def put(self, item: T) -> T | None:
        """Put `item`; return an item dropped to make room, if any. Raises `Closed`."""
        with self._cond:
            if self.policy == "block":
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait()
            elif self.policy == "handoff":
                while (self._items or self._waiting_getters == 0) and not self._closed:
                    self._cond.wait()
            if self._closed:
                raise Closed
            dropped = None
            if len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def wait_ready(self) -> None:
        """For `handoff`: block until a consumer waits. Lets a producer stamp time last."""
        with self._cond:
            while (self._items or self._waiting_getters == 0) and not self._closed:
                self._cond.wait()
            if self._closed:
                raise Closed

    def get(self, timeout: float | None = None) -> T:
        """Take the oldest item. Raises `Closed` when closed and empty, `TimeoutError`."""
        with self._cond:
            self._waiting_getters += 1
            self._cond.notify_all()
            try:
                if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                    raise TimeoutError
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                raise Closed
            finally:
                self._waiting_getters -= 1

    def close(self, discard: bool = False) -> list[T]:
        """Close: getters drain what is left (unless `discard`), then get `Closed`."""
        with self._cond:
            self._closed = True
            left = list(self._items) if discard else []
            if discard:
                self._items.clear()
            self._cond.notify_all()
            return left

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
