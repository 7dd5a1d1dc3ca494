"""Shared fixtures: the real clips in ../shared/media, and small media made from them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from mirage_lsd.device import COMPILE_ENV

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"

# The built-in model compiles in the background by default on CPU; in tests that would
# spend ~40 s of both cores per model. Tests that want it pass compile=True (or --compile).
os.environ[COMPILE_ENV] = "0"

# Hypothesis keeps no example database: tests write under tmp_path, never into the repo
settings.register_profile("mirage-lsd", database=None)
settings.load_profile("mirage-lsd")


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose tools are missing here; fail it under CI, which installs them
    (`.ci/run`), so that a broken install cannot turn its checks green by skipping."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    """An engine sets torch's thread count on the thread that runs its model, and with it
    the count threads started later take: each test hands the next the one it began with."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if torch is not None and before is not None:  # also the count later threads take
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def media() -> Path:
    """Folder of the shared CC-BY clips (read in place, never copied into the repo)."""
    if not (MEDIA / "walk.mkv").exists():
        pytest.fail(f"shared clips not found at {MEDIA}")
    return MEDIA
