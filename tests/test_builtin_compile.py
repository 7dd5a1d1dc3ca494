"""The built-in model with `compile=True`: torch.compile on a background thread.

The stream runs eagerly until the compiled network is ready, then switches; outputs
must not change (beyond float rounding), and a compiler failure must leave the stream
running eagerly.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from mirage_lsd.models.builtin.model import BuiltinModel

SIZE = (96, 128)  # (height, width) of the test frames


def clip_frames(media: Path, count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(media / "walk.mkv")) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_AREA))
            if len(frames) == count:
                break
    return frames


def run(model: BuiltinModel, frames: list[np.ndarray], wait: bool) -> list[np.ndarray]:
    cond = model.look_prompt("pencil_sketch")
    state = model.init_state(*SIZE)
    if wait:
        model.wait_ready(timeout=600)
    outputs = []
    for image in frames:
        out, state = model.step(image, cond, state, 1)
        outputs.append(out)
    return outputs


def test_compiled_network_gives_the_eager_outputs(media: Path) -> None:
    frames = clip_frames(media, 6)
    eager = run(BuiltinModel.from_file(), frames, wait=False)
    model = BuiltinModel.from_file(compile=True)
    assert model._compiler is not None
    ds = model.downscale_for(*SIZE)
    low = (SIZE[0] // ds, SIZE[1] // ds)
    model._compiler.request(low)
    model.wait_ready(timeout=600)
    assert model._compiler._ready.keys() == {low}
    calls = []
    compiled_net = model._compiler._ready[low]

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return compiled_net(*args, **kwargs)

    model._compiler._ready[low] = counted
    compiled = run(model, frames, wait=True)
    # the compiled network runs once the KV cache is full: frame cache_frames + 1 on
    assert len(calls) == len(frames) - model.cfg.cache_frames
    for a, b in zip(eager, compiled, strict=True):
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 2


def test_compiler_failure_keeps_the_stream_running(
    media: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_compile(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    frames = clip_frames(media, 4)
    model = BuiltinModel.from_file(compile=True)
    assert model.info.compile
    with caplog.at_level(logging.WARNING):
        outputs = run(model, frames, wait=True)
    assert "torch.compile failed, running uncompiled: no C++ compiler found" in caplog.text
    assert not model.info.compile  # what `bench --json` reports: it ran eagerly
    eager = run(BuiltinModel.from_file(), frames, wait=False)
    assert all(np.array_equal(a, b) for a, b in zip(eager, outputs, strict=True))


@pytest.mark.slow  # a cold compile: about 40 s of both cores
def test_a_script_that_ends_mid_compile_exits_cleanly(media: Path, tmp_path: Path) -> None:
    """SDK use: Python waits at exit for a compile under way instead of aborting."""
    script = (
        "from mirage_lsd.models.builtin.model import BuiltinModel\n"
        "import numpy as np\n"
        "model = BuiltinModel.from_file(compile=True)\n"
        "state = model.init_state(96, 128)\n"
        "cond = model.look_prompt('sepia_vintage')\n"
        "frame = np.zeros((96, 128, 3), np.uint8)\n"
        "for _ in range(4):\n"
        "    _, state = model.step(frame, cond, state, 1)\n"
        "assert model._compiler.busy\n"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-cache")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"waiting for the background torch.compile to finish" in result.stderr
