"""The compiled network replayed as one CUDA graph.

Why: on a GPU the built-in network is a few hundred small kernels, and launching them
from Python costs several times what they run. On an H200 at 1280x720 (a 256x144
denoiser image), fp16, the network alone: 5.3 ms eager, 1.9 ms compiled, 0.48 ms with
torch.compile's own CUDA graphs; with this module's graph the engine's model stage went
from 8.1-8.9 ms compiled to 5.5-5.9 ms (benchmarks/RESULTS.md, "On a GPU").

Why not `torch.compile(mode="reduce-overhead")`: its graph trees assert when called from
several threads (pytorch/pytorch#123177), and a stream's model runs on the engine's
inference thread while the network is compiled on another. Here the graph is captured
once the network is compiled, on the compiling thread, into static input buffers; each
call copies its inputs in, replays, and clones the outputs out (the next replay would
overwrite them). A lock makes streams of the same size that share the model take turns;
they all run on the default CUDA stream, so the clones are queued before the next
replay's copies. Only one capture may be under way in a process, and a first compiled
call (Inductor tunes with device-wide syncs) would break one: `BUILD_LOCK` keeps each
size's first call and capture apart from another's. If capturing fails, the network
runs as compiled, without a graph (logged once).

`MIRAGE_LSD_CUDA_GRAPHS=0` turns graphs off (to compare, or to rule them out).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from mirage_lsd.models.builtin.cache import KV, KVCache
from mirage_lsd.models.builtin.network import NetOutput

GRAPHS_ENV = "MIRAGE_LSD_CUDA_GRAPHS"
WARMUP_CALLS = 2  # on a side stream before capture, as CUDA graphs need
NetFn = Callable[..., NetOutput]
BUILD_LOCK = threading.Lock()  # one first compiled call or capture at a time, per process


def graphs_enabled() -> bool:
    """False when MIRAGE_LSD_CUDA_GRAPHS is 0/false/no/off."""
    return os.environ.get(GRAPHS_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


class GraphedNet:
    """`fn` captured as a CUDA graph for arguments shaped like `example` (see the module doc)."""

    def __init__(self, fn: NetFn, example: Sequence[object]) -> None:
        """Captures now; raises if capturing fails (the caller then keeps `fn`)."""
        self.fn = fn
        self._lock = threading.Lock()
        self._signature = signature(example)
        # the static buffers it reads, with the example's strides: the compiled network
        # guards on them, and other strides would compile it again
        self._inputs = [
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)
            for t in tensors(example)
        ]
        static = with_tensors(example, self._inputs)
        with torch.cuda.device(self._inputs[0].device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # kernels are loaded and tuned outside the capture
                for _ in range(WARMUP_CALLS):
                    fn(*static)
            side.synchronize()
            self._graph = torch.cuda.CUDAGraph()
            # on the model's device (the default capture stream is on the first one used);
            # thread_local: a stream running eagerly meanwhile on another thread is no error
            with torch.cuda.graph(self._graph, stream=side, capture_error_mode="thread_local"):
                self._out: NetOutput = fn(*static)  # the static outputs it writes
            side.synchronize()

    def __call__(self, *args: object) -> NetOutput:
        flat = tensors(args)
        if signature(args, flat) != self._signature:
            return self.fn(*args)  # inputs the graph was not made for
        with self._lock:
            for static, value in zip(self._inputs, flat, strict=True):
                static.copy_(value)
            self._graph.replay()
            return clone_output(self._out)


def tensors(args: Sequence[object]) -> list[Tensor]:
    """The network's tensor arguments, the KV cache's included, in a fixed order."""
    flat: list[Tensor] = []
    for arg in args:
        if isinstance(arg, Tensor):
            flat.append(arg)
        elif isinstance(arg, KVCache):
            flat += [t for frame in arg.frames for kv in frame for t in (kv.k, kv.v)]
    return flat


def with_tensors(args: Sequence[object], flat: Sequence[Tensor]) -> list[object]:
    """`args` with their tensors replaced, in `tensors` order, by `flat`."""
    it = iter(flat)
    out: list[object] = []
    for arg in args:
        if isinstance(arg, Tensor):
            out.append(next(it))
        elif isinstance(arg, KVCache):
            frames = tuple(tuple(KV(next(it), next(it)) for _ in frame) for frame in arg.frames)
            out.append(replace(arg, frames=frames))
        else:
            out.append(arg)
    return out


def signature(args: Sequence[object], flat: list[Tensor] | None = None) -> tuple[object, ...]:
    """What a graph is only valid for: the arguments' kinds, shapes and dtypes (`flat`:
    `tensors(args)`, if the caller has it already)."""
    kinds = tuple(type(a).__name__ if not isinstance(a, Tensor) else "T" for a in args)
    return kinds + tuple((t.shape, t.dtype) for t in (tensors(args) if flat is None else flat))


def clone_output(out: NetOutput) -> NetOutput:
    """A copy that outlives the graph's next replay."""
    kv = tuple(KV(f.k.clone(), f.v.clone()) for f in out.kv)
    return NetOutput(out.x0.clone(), out.gain.clone(), kv)
