"""Progress display while a stream runs: a bar for files, a status line for live input."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mirage_lsd.engine.stats import Stats


def make_progress(console: Console, total: int | None, live: bool) -> Progress:
    """A rich progress display; `total` None shows a live status line instead of a bar."""
    columns = [SpinnerColumn() if live or total is None else BarColumn()]
    if total is not None and not live:
        columns += [MofNCompleteColumn(), TimeRemainingColumn()]
    else:
        columns += [TextColumn("{task.completed} frames"), TimeElapsedColumn()]
    columns.append(TextColumn("{task.fields[status]}"))
    return Progress(*columns, console=console, transient=False, refresh_per_second=5)


def status_text(stats: Stats) -> str:
    """One line of live telemetry: FPS, latency and drops."""
    p50, p95 = stats.latency_ms.get("p50"), stats.latency_ms.get("p95")
    text = f"{stats.fps:6.1f} fps"
    if p50 is not None:
        text += f"  latency p50 {p50:.1f} ms  p95 {p95:.1f} ms"
    if stats.dropped:
        text += f"  dropped {stats.dropped} ({stats.drop_ratio:.0%})"
    if stats.corrupt_frames:
        text += f"  corrupt {stats.corrupt_frames}"
    return text
