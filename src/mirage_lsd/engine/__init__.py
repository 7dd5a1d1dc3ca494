"""The streaming engine: threads, channels, stats and the `StreamEngine` SDK."""

from mirage_lsd.engine.stats import Stats
from mirage_lsd.engine.stream_engine import StreamEngine

__all__ = ["Stats", "StreamEngine"]
