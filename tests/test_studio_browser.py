"""The studio page in headless chromium (fake camera = a y4m made from walk.mkv).

Part of the default run (`.ci/run` installs what it needs); alone: `pytest -m browser
tests/test_studio_browser.py`. Needs Debian's chromium and `npm ci --prefix
tests/browser` (playwright-core, driving /usr/bin/chromium); without them it is
skipped, and fails under CI.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import skip_or_fail_in_ci
from test_server import running_server

from mirage_lsd.looks.catalog import render_look
from mirage_lsd.server.settings import ServerSettings

pytestmark = pytest.mark.browser

BROWSER_DIR = Path(__file__).parent / "browser"
INSTALL = "apt-get install -y chromium nodejs npm && npm ci --prefix tests/browser"
SAMPLE = (120, 160)  # the node script samples videos at 160x120


def _chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    skip_or_fail_in_ci(f"chromium not found: {INSTALL}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def driver() -> list[str]:
    chromium = _chromium()
    node = shutil.which("node")
    if node is None or not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        skip_or_fail_in_ci(f"node or playwright-core missing: {INSTALL}")
    return [node, str(BROWSER_DIR / "studio.mjs"), chromium]


@pytest.fixture(scope="module")
def fake_camera(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of walk.mkv at 320x240, 15 fps, as the y4m chromium's fake camera loops."""
    path = tmp_path_factory.mktemp("camera") / "walk.y4m"
    with av.open(str(media / "walk.mkv")) as src, path.open("wb") as out:
        out.write(b"YUV4MPEG2 W320 H240 F15:1 Ip A1:1 C420jpeg\n")
        for i, frame in enumerate(src.decode(video=0)):
            if i >= 120:
                break
            if i % 2 == 0:  # 30 -> 15 fps
                planes = frame.reformat(320, 240, format="yuv420p").to_ndarray()  # (360, 320)
                out.write(b"FRAME\n" + np.ascontiguousarray(planes).tobytes())
    return path


def drive(
    driver: list[str], scenario: str, url: str, camera: Path, token: str | None = None
) -> dict:
    node, script, chromium = driver
    cfg = {
        "url": url,
        "chromium": chromium,
        "y4m": str(camera),
        "scenario": scenario,
        "token": token,
    }
    done = subprocess.run(
        [node, script, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=BROWSER_DIR,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"driver failed: {done.stderr[-2000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, f"{result['error']}\npage log:\n" + "\n".join(result["log"])
    return result


def pixels(flat: list[int]) -> np.ndarray:
    return np.asarray(flat, dtype=np.uint8).reshape(*SAMPLE, 3)


def look_error(sample: dict, look: str | None) -> float:
    """How far the output's mean colour is from the look applied to the input (levels)."""
    inp, out = pixels(sample["input"]), pixels(sample["output"])
    expected = inp if look is None else render_look(look, inp)
    return float(np.abs(out.reshape(-1, 3).mean(0) - expected.reshape(-1, 3).mean(0)).max())


def colour_shift(sample: dict) -> float:
    inp, out = pixels(sample["input"]), pixels(sample["output"])
    return float(np.abs(out.reshape(-1, 3).mean(0) - inp.reshape(-1, 3).mean(0)).max())


def _downloads(downloads: dict[str, str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The snapshot PNG and the decoded frames of the WebM recording, as RGB arrays."""
    png = cv2.imdecode(
        np.frombuffer(base64.b64decode(downloads["png"]), np.uint8), cv2.IMREAD_COLOR
    )
    with av.open(io.BytesIO(base64.b64decode(downloads["webm"])), format="webm") as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return cv2.cvtColor(png, cv2.COLOR_BGR2RGB), frames


def _warm(image: np.ndarray) -> bool:
    """The sunset look: red well over blue (the clip itself is neutral)."""
    r, _, b = image.reshape(-1, 3).mean(0)
    return bool(r - b > 60)


def test_studio_page_end_to_end(driver: list[str], fake_camera: Path) -> None:
    with running_server(ServerSettings(max_sessions=3)) as server:
        result = drive(driver, "studio", server.url, fake_camera)

    # transformed frames arrive and look like the chosen look applied to the input
    assert look_error(result["night"], "night_vision") < 15 < colour_shift(result["night"])
    # the prompt typed in the page changes the output
    assert look_error(result["sunset"], "sunset") < 15 < colour_shift(result["sunset"])
    assert look_error(result["sunset"], "night_vision") > 30
    # strength 0 shows the input, under the same prompt
    assert look_error(result["strength0"], None) < 15 < look_error(result["strength0"], "sunset")
    # snapshot and recording hold the transformed output
    snapshot, recording = _downloads(result["downloads"])
    assert snapshot.shape == (240, 320, 3) and _warm(snapshot)
    assert len(recording) >= 10 and all(_warm(frame) for frame in recording[2:])
    # two pages, two sessions, two stream states
    assert result["a_id"] != result["b_id"]
    assert sorted(result["sessions_two_pages"]) == sorted([result["a_id"], result["b_id"]])
    assert look_error(result["plain"], None) < 15
    assert look_error(result["a_meanwhile"], "sunset") < 15
    # the live readout shows engine telemetry
    assert result["readout"]["fps"] != "-" and result["readout"]["stats"]["ttff_ms"] > 0
    # closing a tab or pressing stop frees the session; Stop by the page's own DELETE
    # (aiortc would also end a session whose peer closed, later)
    assert result["b_freed"] and result["a_freed"]
    assert f"/api/sessions/{result['a_id']}" in result["deletes"]
    # WHIP from the page's RTCPeerConnection, transformed, watched over WHEP
    assert result["whip_location"].startswith("/whip/")
    assert result["whep_location"].startswith("/whep/")
    assert look_error(result["underwater"], "underwater") < 15 < colour_shift(result["underwater"])
    assert result["whip_freed"]
    # a fast slider drag is throttled in the page: no rate-limit error, the last value applied
    assert result["drag"] == {"error": "", "sent": 1}
    # an input that ends by itself stops the page: camera off, session freed, Start enabled
    assert result["ended"] == {
        "state": "error",
        "error": "the input ended",
        "track": "ended",
        "start_enabled": True,
    }
    assert result["ended_freed"]
    # a session the server ends is reported at once (the data channel closes), not after
    # the peer connection's 30 s timeout
    ended = result["ended_by_server"]
    assert ended["state"] == "error" and ended["error"] == "the session has ended"
    assert ended["ms"] < 5000, ended


def test_page_needs_the_token_beyond_loopback(driver: list[str], fake_camera: Path) -> None:
    with running_server(ServerSettings(host="0.0.0.0")) as server:
        result = drive(driver, "token", server.url, fake_camera, token=server.token)
    assert result["without_token"].startswith("401")
    assert result["with_token_presets"] == ["night_vision", "sunset", "underwater"]
    assert "token" not in result["url_after_load"]  # out of the address bar and history
    assert result["reload_presets"] == result["with_token_presets"]  # kept for the tab
    assert "token" not in result["url_after_reload"]
    assert result["insecure_error"].startswith("camera and screen need https or localhost")
