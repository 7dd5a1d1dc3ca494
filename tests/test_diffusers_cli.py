"""The diffusers backend through the user's paths: `mirage-lsd run/bench --model DIR` and
`StreamEngine(model=DIR, model_options=...)`, on a tiny SD pipeline and a real clip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import MEDIA
from diffusers_tiny import save_tiny_lora, save_tiny_sd, save_tiny_taesd
from test_cli import assert_one_line_error, mirage, video_info

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.errors import UserError

CLIP = MEDIA / "walk.mkv"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_cli")
    sd = save_tiny_sd(root / "sd")
    return {
        "sd": sd,
        "taesd": save_tiny_taesd(root / "taesd"),
        "lora": save_tiny_lora(root / "lora", sd),
    }


def first_frames(n: int, size: int = 64) -> list[np.ndarray]:
    with av.open(str(CLIP)) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24", width=size, height=size))
            if len(out) == n:
                return out
    raise AssertionError("clip too short")


def test_run_writes_every_frame_with_all_the_flags(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    report = tmp_path / "report.json"
    result = mirage(
        "run", str(MEDIA / "classroom.gif"), "-o", str(out), "-p", "a watercolor painting",
        "--model", str(tiny["sd"]), "--vae", str(tiny["taesd"]), "--size", "64x64",
        "--steps", "2", "--strength", "0.6", "--lora", f"{tiny['lora']}:0.5",
        "--guidance", "initialize", "--negative-prompt", "blurry", "--seed", "7",
        "--bank-size", "2", "--flow-blend", "0.2", "--device", "cpu", "--quiet",
        "--report", str(report), timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # as offline users run it: nothing fetched
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    frames_in, _, _ = video_info(MEDIA / "classroom.gif")
    frames_out, shape, _ = video_info(out)
    assert frames_out == frames_in and shape == (64, 64)
    data = json.loads(report.read_text())
    assert data["frames_out"] == frames_in and data["model"] == str(tiny["sd"])


def test_bench_json_on_a_diffusers_folder(tiny: dict[str, Path]) -> None:
    result = mirage(
        "bench", str(CLIP), "--model", str(tiny["sd"]), "--vae", str(tiny["taesd"]),
        "--size", "64x64", "--frames", "5", "--warmup", "1", "--device", "cpu", "--json",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert data["frames"] == 5 and data["model"] == str(tiny["sd"])
    assert data["latency_ms"]["p50"] > 0 and data["stages_ms"]["model"] > 0


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--strength", "2"], ["--strength", "(0, 1]"]),
        (["--guidance", "loud"], ["--guidance", "none, full"]),
        (["--t-index", "45,32"], ["--t-index", "increasing"]),
        (["--bank-size", "1000"], ["--bank-size"]),
    ],
)
def test_bad_flag_values_are_one_line_errors(
    tiny: dict[str, Path], tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    out = tmp_path / "never.mp4"
    result = mirage("run", str(CLIP), "-o", str(out), "--model", str(tiny["sd"]), *flags)
    assert_one_line_error(result, *words)
    assert not out.exists()


def test_diffusers_flags_on_a_registered_model_are_an_error(tmp_path: Path) -> None:
    for flag in (["--strength", "0.3"], ["--seed", "2"]):  # 2 is the default: still given
        result = mirage("run", str(CLIP), "-o", str(tmp_path / "x.mp4"), *flag)
        assert_one_line_error(result, "do not apply", "mirage-lsd-v1")
    # nor on a weight file of the built-in model given by its path (`mirage-lsd train`'s)
    from mirage_lsd.models.builtin.model import DEFAULT_WEIGHTS

    result = mirage(
        "run", str(CLIP), "-o", str(tmp_path / "x.mp4"), "--model", str(DEFAULT_WEIGHTS),
        "--lora", "some/lora",
    )  # fmt: skip
    assert_one_line_error(result, "do not apply", DEFAULT_WEIGHTS.name)


def test_downscale_on_a_diffusers_model_is_an_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "never.mp4"
    result = mirage(
        "run", str(CLIP), "-o", str(out), "--model", str(tiny["sd"]), "--downscale", "5"
    )
    assert_one_line_error(result, "--downscale", "built-in model only")
    assert not out.exists()


def test_sdk_model_options(tiny: dict[str, Path]) -> None:
    images = first_frames(3)

    def outputs(**options: object) -> list[np.ndarray]:
        engine = StreamEngine(
            str(tiny["sd"]),
            device="cpu",
            max_steps=1,
            prompt="an oil painting",
            model_options={"vae": str(tiny["taesd"]), **options},
        )
        return [engine.process(image) for image in images]

    a, b, c = outputs(seed=1), outputs(seed=1), outputs(seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # fixed noise
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))  # seed matters
    with pytest.raises(UserError, match="unknown diffusers option"):
        StreamEngine(str(tiny["sd"]), device="cpu", model_options={"strenght": 0.3})
