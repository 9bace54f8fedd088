"""Two builds of the native kernels side by side in one process: the before / after of a kernel change.

    git show HEAD~1:freqjax/ops/native/kernels/conv_kernels.cc > /tmp/before.cc
    python benchmarks/kernel_ab.py step /tmp/before.cc freqjax/ops/native/kernels/conv_kernels.cc --model cifar_resnet8

The kernels are one translation unit, conv_kernels.cc, that includes the kernel families' headers
(dense.h, winograd.h, ..., simd.h): a quoted include resolves next to the source first, then in
freqjax/ops/native/kernels/. To time a change to a header, copy the folder and pass the copy's
conv_kernels.cc (``git archive HEAD~1 freqjax/ops/native/kernels | tar -x -C /tmp/before``, or
``cp -r`` and edit), since a lone /tmp/before.cc would include today's headers.
    python benchmarks/kernel_ab.py op /tmp/before.cc freqjax/ops/native/kernels/conv_kernels.cc --op winograd_forward \\
        --shape 128,32,32,16 --c-out 16

Both sources are compiled (``freqjax.ops.native.build``, cached by content) and registered under
their own FFI target names (``a_freqjax_*``, ``b_freqjax_*``); a step or op is traced once per
build with its calls renamed, and the two run alternately, so both meet the same moments of a
noisy machine (the CI Xeon's speed drifts 1.5x over seconds, more than most kernel changes).
``step`` times the train step of :func:`freqjax.bench.train_step.make_freqjax_step`; ``op`` one
kernel call on random data (3x3 kernels, ``--stride``, padding 1) and also reports the
largest difference between the builds' outputs relative to the largest output. Prints medians
and 10th percentiles, A (first source) against B. Run with the entry points' malloc tuning
exported (docs/native_kernels.md, CPU memory allocation). A source from before the kernels took packed
16-channel operands (``freqjax.ops.native.packed``, commit 88c7d2e) needs ``--unpacked``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.ops import native

PREFIXES = ("a_", "b_")
OPS = ("winograd_forward", "winograd_weight_grad", "conv_forward", "conv_input_grad", "conv_weight_grad")


def register(source: Path, prefix: str) -> None:
    """Compile ``source`` and register its handlers as ``prefix + target`` (keeps the library loaded)."""
    lib = ctypes.CDLL(str(native.build(source=source)))
    native.register_library(lib, prefix)


@contextlib.contextmanager
def renamed_calls(prefix: str) -> Iterator[None]:
    """While tracing, freqjax.ops.native's FFI calls go to the targets registered under ``prefix``."""
    original = jax.ffi.ffi_call
    jax.ffi.ffi_call = lambda name, *args, **kwargs: original(prefix + name, *args, **kwargs)
    try:
        yield
    finally:
        jax.ffi.ffi_call = original


def alternate(fns: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call: ``rounds`` times, ``calls`` timed calls of each function in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    (a, ta), (b, _) = times.items()
    med = {k: 1e3 * statistics.median(t) for k, t in times.items()}
    p10 = {k: 1e3 * sorted(t)[len(t) // 10] for k, t in times.items()}
    print(
        f"{label}: median A {med[a]:.2f} B {med[b]:.2f} ms, A/B {med[a] / med[b]:.3f}x; "
        f"p10 A {p10[a]:.2f} B {p10[b]:.2f} ms, A/B {p10[a] / p10[b]:.3f}x ({len(ta)} calls each)"
    )


def step(model: str, rounds: int) -> None:
    from freqjax.bench.train_step import make_freqjax_step, random_batch

    x, y = random_batch(model)
    steps = {}
    for prefix in PREFIXES:
        with renamed_calls(prefix):
            steps[prefix] = make_freqjax_step(model, x, y, impl="native")
        for _ in range(5):  # the first steps after compilation are slow
            steps[prefix]()
    report(f"{model} train step, batch {len(x)}", alternate(steps, rounds, 2))


def op(name: str, shape: tuple[int, ...], c_out: int, stride: int, rounds: int) -> None:
    n, h, w, c = shape
    rng = np.random.default_rng(0)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, c, c_out)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(n, ho, wo, c_out)), jnp.float32)
    s, pad = (stride, stride), (1, 1)  # timm's symmetric padding of a 3x3 kernel at stride 1 or 2
    calls = {
        "winograd_forward": lambda x, k, dy: native.winograd_forward(x, k, (1, 1), (h, w)),
        "winograd_weight_grad": lambda x, k, dy: native.winograd_weight_grad(x, dy, (1, 1)),
        "conv_forward": lambda x, k, dy: native.conv_forward(x, k, s, pad, (ho, wo)),
        "conv_input_grad": lambda x, k, dy: native.conv_input_grad(dy, k, shape, s, pad),
        "conv_weight_grad": lambda x, k, dy: native.conv_weight_grad(x, dy, (3, 3), s, pad),
    }
    fns, outs = {}, []
    for prefix in PREFIXES:
        # A new function per build: jax.jit's trace cache is keyed on the Python function.
        def call(x, k, dy):
            return calls[name](x, k, dy)

        with renamed_calls(prefix):
            lowered = jax.jit(call).lower(x, k, dy)
        assert f"{prefix}freqjax_" in lowered.as_text(), "the trace did not take the renamed target"
        executable = lowered.compile()
        compiled = functools.partial(executable, x, k, dy)
        outs.append(compiled())
        fns[prefix] = lambda compiled=compiled: jax.block_until_ready(compiled())
    diff = float(jnp.max(jnp.abs(outs[0] - outs[1])) / jnp.max(jnp.abs(outs[0])))
    label = f"{name} {shape} -> {c_out}, stride {stride} (max relative difference {diff:.1e})"
    report(label, alternate(fns, rounds, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("step", "op"):
        p = sub.add_parser(command)
        p.add_argument("source_a", type=Path)
        p.add_argument("source_b", type=Path)
        p.add_argument("--rounds", type=int, default=30)
        p.add_argument(
            "--unpacked",
            action="store_true",
            help="hand 16-channel operands over unpacked (freqjax.ops.native.packed off): needed for a source from "
            "before the kernels took packed operands (before commit 88c7d2e), which would misread them",
        )
        if command == "step":
            p.add_argument("--model", default="cifar_resnet8")
        else:
            p.add_argument("--op", choices=OPS, default="winograd_forward")
            p.add_argument("--shape", default="128,32,32,16", help="N,H,W,C_in of x")
            p.add_argument("--c-out", type=int, default=16)
            p.add_argument("--stride", type=int, default=1, choices=(1, 2))
    args = parser.parse_args()
    for source in (args.source_a, args.source_b):
        if not source.is_file():
            parser.error(f"{source} is not a file")
    if not native.available():
        parser.error("the native kernels are unavailable here (no C++ compiler, or FREQJAX_NATIVE=0)")
    for source, prefix in zip((args.source_a, args.source_b), PREFIXES, strict=True):
        register(source.resolve(), prefix)
    native.ffi._PACK = not args.unpacked
    if args.command == "step":
        step(args.model, args.rounds)
    else:
        shape = tuple(int(v) for v in args.shape.split(","))
        if len(shape) != 4:
            parser.error(f"--shape must be N,H,W,C, got {args.shape!r}")
        op(args.op, shape, args.c_out, args.stride, args.rounds)


if __name__ == "__main__":
    main()
