"""torch.compile'd copies of the network, built on a background thread, one per frame size.

Why: on a CPU the network is bound by memory traffic of small element-wise ops (norms,
FiLM, SiLU, residual adds) between its convolutions; Inductor fuses them, which cuts
the model's time per 720p frame by about a third (37 to 25 ms on 2 cores). Why in the
background: compiling takes ~40 s on 2 cores the first time (then ~5 s from Inductor's
on-disk cache), and a live stream must not freeze for it. Until a size's compiled
network is ready, and for the first frames of a stream (the KV cache is not full yet,
so the graph would differ), the caller runs the network eagerly. If compiling fails (no
C++ compiler, an unsupported platform), the stream keeps running eagerly and the
failure is logged once. A process must not finish while a compile is under way:
interpreter shutdown tears torch's native threads down under it and the process
aborts. So at exit Python waits for it (`_finish_at_exit`), and the CLI, whose outputs
are closed by then, leaves at once instead (`compiling`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from mirage_lsd.errors import first_line
from mirage_lsd.models.builtin.cache import KVCache
from mirage_lsd.models.builtin.cuda_graph import BUILD_LOCK, GraphedNet, graphs_enabled
from mirage_lsd.models.builtin.network import LSDNet, NetOutput

log = logging.getLogger(__name__)

Size = tuple[int, int]  # (h, w) of the denoised image
NetFn = Callable[..., NetOutput]
_LIVE: weakref.WeakSet[BackgroundCompiler] = weakref.WeakSet()  # a running thread holds its own


class BackgroundCompiler:
    """Compiles `net` for each requested size on a daemon thread; `get` never blocks."""

    def __init__(self, net: LSDNet, autocast: Callable[[], AbstractContextManager[object]]) -> None:
        self.net = net
        self.autocast = autocast  # the same autocast the caller runs the network under
        self._ready: dict[Size, NetFn] = {}
        self._pending: dict[Size, threading.Thread] = {}
        self._failed = False
        self._lock = threading.Lock()
        _LIVE.add(self)

    @property
    def failed(self) -> bool:
        """True once compiling failed: the network runs eagerly from then on."""
        with self._lock:
            return self._failed

    @property
    def busy(self) -> bool:
        """True while a size is being compiled."""
        with self._lock:
            return bool(self._pending)

    def request(self, size: Size) -> None:
        """Start compiling for `size` unless it is ready, under way, or compiling failed.

        The compile runs on the caller's torch thread count: Inductor builds it into the
        kernels, and a compiled call on another count would be compiled again, at once,
        on the stream's own thread."""
        threads = torch.get_num_threads()
        with self._lock:
            if self._failed or size in self._ready or size in self._pending:
                return
            thread = threading.Thread(
                target=self._build,
                args=(size, threads),
                name=f"compile-{size[1]}x{size[0]}",
                daemon=True,
            )
            self._pending[size] = thread
        thread.start()

    def get(self, size: Size, cache: KVCache) -> NetFn | None:
        """The compiled network for this size, if ready and the cache is full; else None."""
        if len(cache) != cache.max_frames:
            return None
        return self._ready.get(size)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every requested size is compiled (or failed); for benchmarks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._pending.values()):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _graphed(self, compiled: NetFn, args: tuple[object, ...]) -> NetFn:
        """`compiled` as a CUDA graph; as it is if capturing fails."""
        try:
            return GraphedNet(compiled, args)
        except Exception as exc:
            reason = first_line(exc)
            log.warning("CUDA graph capture failed, running without one: %s", reason)
            return compiled

    def _build(self, size: Size, threads: int) -> None:
        t0 = time.perf_counter()
        try:
            torch.set_num_threads(threads)
            compiled = torch.compile(self.net, dynamic=False)
            on_gpu = next(self.net.parameters()).device.type == "cuda"
            with torch.inference_mode(), self.autocast():
                args = dummy_inputs(self.net, size)
                with BUILD_LOCK if on_gpu else contextlib.nullcontext():  # see cuda_graph
                    compiled(*args)  # compiles for exactly these shapes
                    if on_gpu and graphs_enabled():
                        compiled = self._graphed(compiled, args)
            with self._lock:
                self._ready[size] = compiled
            log.info("compiled the network for %dx%d in %.1f s", size[1], size[0], _since(t0))
        except Exception as exc:  # any compiler failure means: stay eager
            with self._lock:
                self._failed = True
            if _exiting or "shutdown" in str(exc):  # cut short by the program's exit
                log.debug("background torch.compile stopped at exit: %s", exc)
            else:
                reason = first_line(exc)
                log.warning("torch.compile failed, running uncompiled: %s", reason)
        finally:
            with self._lock:
                self._pending.pop(size, None)


def compiling() -> bool:
    """True while any network of this process is being compiled in the background."""
    return any(compiler.busy for compiler in list(_LIVE))


@atexit.register
def _finish_at_exit() -> None:
    """Let a compile under way end before the interpreter shuts down (see the module doc).

    By now Python refuses new work to thread pools, which Inductor needs: the compile
    stops at its next step with an error that only means the program is exiting.
    """
    global _exiting
    _exiting = True
    if compiling():
        log.info("letting the background torch.compile stop before exiting")
        for compiler in list(_LIVE):
            compiler.wait()


_exiting = False  # set at interpreter exit: a compile that stops then has not failed


def dummy_inputs(net: LSDNet, size: Size) -> tuple[object, ...]:
    """Inputs of the shapes a stream's frames have once its KV cache is full."""
    cfg = net.cfg
    h, w = size
    device = next(net.parameters()).device
    rgb = torch.zeros(1, 3, h, w, device=device)
    image = torch.zeros(1, cfg.image_inputs, h, w, device=device)
    t, d, sigma = (torch.full((1,), 0.5, device=device) for _ in range(3))  # distinct, as in use
    prompt = torch.zeros(1, cfg.prompt_dim, device=device)
    mask = torch.ones(1, 1, h, w, device=device)
    frames = cfg.cache_frames if cfg.temporal else 0  # a stream without history keeps none
    cache = KVCache(frames)
    for _ in range(frames):  # fill the cache with real-shaped keys/values
        cache = cache.push(net(rgb, image, rgb, mask, prompt, t, d, sigma, cache).kv)
    with torch.autocast(device.type, enabled=False):  # made once per prompt, in float32
        maps = net.grade.frame_maps(prompt, h, w) if net.grade else None
    return rgb.clone(), image, rgb, mask, prompt, t, d, sigma, cache, None, maps


def _since(t0: float) -> float:
    return time.perf_counter() - t0
