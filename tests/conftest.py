"""Shared fixtures: the real clips in ../shared/media, and small media made from them."""

from __future__ import annotations

from pathlib import Path

import pytest

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture(scope="session")
def media() -> Path:
    """Folder of the shared CC-BY clips (read in place, never copied into the repo)."""
    if not (MEDIA / "walk.mkv").exists():
        pytest.fail(f"shared clips not found at {MEDIA}")
    return MEDIA
