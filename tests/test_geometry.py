"""Output size handling: parsing, aspect-preserving fit, padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirage_lsd.errors import UserError
from mirage_lsd.geometry import apply_fit, pad_to_multiple, parse_size, plan_fit


def test_parse_size_is_width_by_height() -> None:
    assert parse_size("1280x720") == (720, 1280)
    assert parse_size(" 640X480 ") == (480, 640)


@pytest.mark.parametrize(
    "bad", ["", "1280", "1280x", "x720", "12.5x720", "-1x5", "0x0", "99999x10"]
)
def test_parse_size_rejects_malformed(bad: str) -> None:
    with pytest.raises(UserError) as err:
        parse_size(bad)
    assert "\n" not in str(err.value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_parse_size_never_crashes(text: str) -> None:
    try:
        h, w = parse_size(text)
    except UserError:
        return
    assert 16 <= h <= 8192 and 16 <= w <= 8192


sides = st.integers(min_value=16, max_value=400)


@settings(max_examples=60, deadline=None)
@given(sides, sides, sides, sides, st.sampled_from(["crop", "letterbox"]))
def test_fit_gives_exactly_the_requested_size(
    sh: int, sw: int, oh: int, ow: int, mode: str
) -> None:
    image = np.random.default_rng(0).integers(0, 256, (sh, sw, 3), dtype=np.uint8)
    out = apply_fit(image, plan_fit((sh, sw), (oh, ow), mode))  # type: ignore[arg-type]
    assert out.shape == (oh, ow, 3) and out.dtype == np.uint8


def test_crop_keeps_the_center_and_letterbox_pads_black() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = 255  # a white center square
    cropped = apply_fit(image, plan_fit((100, 200), (100, 100), "crop"))
    assert cropped.min() == 255  # only the center is kept
    boxed = apply_fit(image, plan_fit((100, 200), (100, 100), "letterbox"))
    assert boxed[:20].max() == 0 and boxed[-20:].max() == 0  # bars above and below
    assert boxed[50, 50].min() == 255


@pytest.mark.parametrize("mode", ["crop", "letterbox"])
@pytest.mark.parametrize(
    ("src", "out"), [((513, 512), (512, 512)), ((301, 300), (300, 300)), ((100, 1000), (4096, 16))]
)
def test_near_and_extreme_sizes_are_fitted_exactly(
    src: tuple[int, int], out: tuple[int, int], mode: str
) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*src, 3), dtype=np.uint8)
    assert apply_fit(image, plan_fit(src, out, mode)).shape == (*out, 3)  # type: ignore[arg-type]


def test_same_size_is_passed_through_without_copy() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    assert apply_fit(image, plan_fit((48, 64), (48, 64))) is image


def test_pad_to_multiple() -> None:
    image = np.zeros((241, 321, 3), np.uint8)
    padded = pad_to_multiple(image, 8)
    assert padded.shape == (248, 328, 3)
    assert pad_to_multiple(padded, 8) is padded
