"""Choosing the device: what `auto` picks, and a one-line error for a GPU that is not there."""

from __future__ import annotations

import pytest

from mirage_lsd import StreamEngine, UserError
from mirage_lsd import device as device_module
from mirage_lsd.device import resolve_device


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)


@pytest.fixture
def a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "cuda_available", lambda: True)


def test_auto_picks_the_cpu_without_a_gpu(no_gpu: None) -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device(" CPU ") == "cpu"


def test_auto_picks_the_gpu_when_there_is_one(a_gpu: None) -> None:
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_cuda_without_a_gpu_and_unknown_devices_are_one_line_errors(no_gpu: None) -> None:
    for name, message in (("cuda", "no CUDA GPU is available"), ("tpu", "unknown device 'tpu'")):
        with pytest.raises(UserError, match=message) as err:
            resolve_device(name)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no CUDA GPU is available"):
        StreamEngine("identity", device="cuda")
    assert StreamEngine("identity", device="auto").device == "cpu"
