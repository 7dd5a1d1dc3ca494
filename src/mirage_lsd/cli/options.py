"""Options shared by several commands (run, bench, serve)."""

from __future__ import annotations

from typing import Annotated

import typer

from mirage_lsd.device import MAX_THREADS

CompileOpt = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the model (default: the built-in model on CPU and CUDA, in the"
        " background, ~1.5x once ready on CPU, ~2x on CUDA as a CUDA graph, but `run` not"
        " for an input under 3000 frames, which ends before it pays off; needs a C++"
        " compiler on CPU, Triton and a C compiler on CUDA).",
        show_default=False,
    ),
]

Fp16Opt = Annotated[
    bool | None,
    typer.Option(
        "--fp16/--no-fp16",
        help="Half precision (default: on CUDA; CPUs run float32, or bf16 by themselves"
        " on AMX CPUs).",
        show_default=False,
    ),
]

ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="torch threads for the model (default: all physical cores, one fewer for the"
        " built-in model on CPU, leaving one to decoding and encoding; OMP_NUM_THREADS or"
        " MKL_NUM_THREADS if set).",
        min=1,
        max=MAX_THREADS,
        show_default=False,
    ),
]
