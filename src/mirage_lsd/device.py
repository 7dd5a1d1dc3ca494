"""Choosing the compute device and precision, without importing torch at startup."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import shutil
import sys
import warnings
from functools import cache
from pathlib import Path

from mirage_lsd.errors import UserError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when present, else CPU; 'cuda' without CUDA is a user error."""
    name = device.lower().strip()
    base = name.split(":")[0]
    if base not in DEVICES:
        raise UserError(f"unknown device '{device}': use auto, cpu or cuda")
    if base == "auto":
        return "cuda" if cuda_available() else "cpu"
    if base == "cuda" and not cuda_available():
        raise UserError("CUDA was asked for but no CUDA GPU is available: use --device cpu")
    return name


def resolve_dtype(device: str, fp16: bool | None = None) -> str:
    """float16 on CUDA unless `fp16` is False; on CPU float32 (fp16=True warns once).

    None picks for the user: half precision is what a GPU streams at, and CPUs have no
    fast fp16 (the built-in model uses bf16 by itself where AMX makes it fast).
    """
    if fp16 is None:
        return "float16" if device.startswith("cuda") else "float32"
    if not fp16:
        return "float32"
    if device.startswith("cuda"):
        return "float16"
    warnings.warn("fp16 is not supported on CPU: using float32", RuntimeWarning, stacklevel=3)
    return "float32"


def usable_cpus() -> int:
    """Logical CPUs this process may run on (a taskset's or cpuset's limit, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usable_cores(
    sysfs: Path = Path("/sys/devices/system/cpu"), cgroup: Path = Path("/sys/fs/cgroup")
) -> int:
    """Physical cores this process may run on: each core counted once however many
    hardware threads it runs (torch's own default is one thread per physical core),
    within a taskset's or cpuset's CPUs and a container's CPU quota. Where the OS does
    not say (no Linux topology in `sysfs`), logical CPUs."""
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1
    cpus = os.sched_getaffinity(0)
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:  # the CPUs of its core: the same text for each hardware thread of one core
            siblings = topology / "core_cpus_list"
            if not siblings.exists():  # kernels before 5.6
                siblings = topology / "thread_siblings_list"
            cores.add(siblings.read_text().strip())
        except OSError:  # no topology to read: each CPU counts
            cores = set(cpus)
            break
    return max(1, min(len(cores) or len(cpus), cpu_quota(cgroup) or len(cpus)))


def cpu_quota(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs a container's quota allows (`docker --cpus 2`, a Kubernetes limit), rounded
    up; None without one. cgroup v2's cpu.max, else v1's cfs quota and period."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
        return None
    return max(1, math.ceil(int(quota) / max(int(period), 1)))


MAX_THREADS = 1024
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's own default follows these


def check_threads(threads: object, what: str = "threads") -> int:
    """A thread count from 1 to MAX_THREADS, or a UserError naming `what`."""
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise UserError(f"{what} must be a whole number from 1 to {MAX_THREADS}, got {threads!r}")
    return threads


def use_threads(count: int) -> None:
    """Run torch's operators on `count` threads, in this thread and in those started later.

    torch keeps the count per thread (OpenMP's setting) and a new thread takes the last
    one set anywhere, so the engine sets it on the thread that runs the model, which
    hands it on to the model's background compile. Nothing to do without torch (the
    identity model)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)


@cache
def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles, where bfloat16 matmuls are much faster than float32."""
    import torch

    with contextlib.suppress(AttributeError, RuntimeError):  # torch's own probe, any OS
        if torch.cpu._is_amx_tile_supported():
            return True
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return "amx_bf16" in line.split()
    return False


COMPILE_ENV = "MIRAGE_LSD_COMPILE"
"""Set to 0 or 1 to turn the built-in model's automatic torch.compile off or on."""

SHORT_STREAM = 3000
"""An offline stream known to have fewer frames is not compiled automatically: it ends
before the compile pays off (about 100 s at 30 FPS; on 2 cores a first compile costs
10-30 s of CPU beside the stream; benchmarks/RESULTS.md, "A background compile on short
files")."""


def compile_by_default(device: str) -> bool:
    """Whether the built-in model compiles its network when the caller did not say.

    Yes on CPU when a C++ compiler is on PATH (Inductor's CPU code needs one), and on
    CUDA when Triton can build its launcher (`triton_buildable`): compiling runs on a
    background thread and cuts the network's time by about a third on 2 CPU cores; on
    CUDA, replayed as a CUDA graph, it halved a 720p step's time on an H200
    (benchmarks/RESULTS.md, "On a GPU").
    `MIRAGE_LSD_COMPILE=0|1` overrides the choice (CI and tests turn it off).
    """
    env = os.environ.get(COMPILE_ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    if env:
        raise UserError(f"{COMPILE_ENV} must be 0 or 1, got '{env}'")
    if device.startswith("cuda"):
        return triton_buildable()
    return device.startswith("cpu") and cxx_compiler() is not None


def triton_buildable() -> bool:
    """Whether torch.compile's CUDA backend can work here: Triton installed (no Windows
    wheels ship it), a C compiler, and Python's headers, which its launcher includes."""
    found = importlib.util.find_spec("triton") is not None
    return found and c_compiler() is not None and python_headers() is not None


def python_headers() -> Path | None:
    """Python.h where Triton's launcher build looks for it (Debian's `posix_local`
    scheme read as `posix_prefix`, as Triton does), or Python's own include folder."""
    import sysconfig

    scheme = sysconfig.get_default_scheme()
    scheme = "posix_prefix" if scheme == "posix_local" else scheme
    folders = [sysconfig.get_paths(scheme=scheme)["include"], sysconfig.get_config_var("INCLUDEPY")]
    return next((Path(f, "Python.h") for f in folders if f and Path(f, "Python.h").is_file()), None)


def c_compiler() -> str | None:
    """Path of the C compiler Triton builds its CUDA launcher with ($CC, else gcc or clang)."""
    if cc := os.environ.get("CC"):
        return shutil.which(cc)
    return shutil.which("gcc") or shutil.which("clang")


def cxx_compiler() -> str | None:
    """Path of the C++ compiler torch.compile would use on CPU ($CXX, else the usual one)."""
    default = "clang++" if sys.platform == "darwin" else "cl" if os.name == "nt" else "g++"
    return shutil.which(os.environ.get("CXX") or default)
