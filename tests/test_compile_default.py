"""When the built-in model compiles without being told: on CPU with a C++ compiler, on
CUDA where Triton can build its launcher.

`tests/conftest.py` sets MIRAGE_LSD_COMPILE=0 for the suite; these tests set it back.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mirage_lsd import device
from mirage_lsd.device import COMPILE_ENV, compile_by_default
from mirage_lsd.errors import UserError
from mirage_lsd.models.builtin.model import BuiltinModel


def test_cpu_with_a_compiler_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COMPILE_ENV)
    monkeypatch.setenv("CXX", sys.executable)  # any program on disk stands for one
    monkeypatch.setenv("CC", "no-such-compiler-mirage-lsd")
    assert compile_by_default("cpu") and not compile_by_default("cuda")
    assert not compile_by_default("mps")  # unmeasured there: off unless asked


def test_cuda_compiles_where_triton_can_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton, which torch.compile uses on CUDA, builds its launcher with a C compiler
    against Python's headers; without Triton (Windows wheels) there is no compiling."""
    monkeypatch.delenv(COMPILE_ENV)
    monkeypatch.setenv("CC", sys.executable)
    monkeypatch.setenv("CXX", "no-such-compiler-mirage-lsd")
    found = {"triton": True}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: object() if name == "triton" and found["triton"] else
        None if name == "triton" else real_find_spec(name, *a),
    )  # fmt: skip
    monkeypatch.setattr(device, "python_headers", lambda: Path("Python.h"))
    assert compile_by_default("cuda") and not compile_by_default("cpu")
    monkeypatch.setattr(device, "python_headers", lambda: None)  # no python3-dev
    assert not compile_by_default("cuda")
    monkeypatch.setattr(device, "python_headers", lambda: Path("Python.h"))
    found["triton"] = False
    assert not compile_by_default("cuda")


def test_no_compiler_means_no_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COMPILE_ENV)
    monkeypatch.setenv("CXX", "no-such-compiler-mirage-lsd")
    monkeypatch.setenv("CC", "no-such-compiler-mirage-lsd")
    assert not compile_by_default("cpu") and not compile_by_default("cuda")


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("off", False), ("1", True)])
def test_the_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv(COMPILE_ENV, value)
    monkeypatch.setenv("CXX", "no-such-compiler-mirage-lsd")
    assert compile_by_default("cpu") is expected
    model = BuiltinModel.from_file()
    assert model.info.compile is expected and (model._compiler is not None) is expected


def test_explicit_choice_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMPILE_ENV, "1")
    model = BuiltinModel.from_file(compile=False)
    assert not model.info.compile and model._compiler is None


def test_a_bad_environment_value_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMPILE_ENV, "sometimes")
    with pytest.raises(UserError, match="MIRAGE_LSD_COMPILE must be 0 or 1"):
        BuiltinModel.from_file()
