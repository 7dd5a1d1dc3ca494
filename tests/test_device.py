"""Choosing the device: what `auto` picks, and a one-line error for a GPU that is not there."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_usable_cores_counts_each_physical_core_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cores of two hardware threads each: CPUs 0 and 2 share one core, 1 and 3 the
    other; then a container's quota of 1.5 CPUs."""
    here = device_module.usable_cores()
    assert 1 <= here <= device_module.usable_cpus()  # this machine's, before the fakes
    sysfs, cgroup = tmp_path / "cpu", tmp_path / "cgroup"
    for cpu, siblings in ((0, "0,2"), (1, "1,3"), (2, "0,2"), (3, "1,3")):
        topology = sysfs / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_cpus_list").write_text(f"{siblings}\n")
    cgroup.mkdir()
    affinity = {0, 1, 2, 3}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: affinity, raising=False)
    assert device_module.usable_cores(sysfs, cgroup) == 2
    affinity = {0, 2}  # a taskset of one core's two threads
    assert device_module.usable_cores(sysfs, cgroup) == 1
    affinity = {0, 5}  # a CPU whose topology cannot be read: each CPU counts
    assert device_module.usable_cores(sysfs, cgroup) == 2
    affinity = {0, 1, 2, 3}
    (cgroup / "cpu.max").write_text("max 100000\n")  # no quota
    assert device_module.usable_cores(sysfs, cgroup) == 2
    (cgroup / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2, rounded up
    assert device_module.cpu_quota(cgroup) == 2
    (cgroup / "cpu.max").write_text("50000 100000\n")
    assert device_module.usable_cores(sysfs, cgroup) == 1
