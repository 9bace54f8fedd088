"""Single convolutions and alternating train-step rounds: the figures behind freqjax/ops/conv.py.

    python benchmarks/cpu_conv_ops.py ops            # one op at a time: XLA, cpu_conv, native, PyTorch
    python benchmarks/cpu_conv_ops.py winograd       # native direct vs Winograd kernels, stride-1 3x3
    python benchmarks/cpu_conv_ops.py elementwise    # XLA's loop fusions at 16 channels, 4-D vs 2-D views
    python benchmarks/cpu_conv_ops.py ablation --model cifar_resnet8   # train step without Winograd / BN sums
    python benchmarks/cpu_conv_ops.py rounds --model cifar_resnet8 --rounds 4

``ops`` times, per shape, the jitted forward and forward + backward (input and weight gradients)
of XLA's convolution, of :mod:`freqjax.ops.conv`'s XLA-op formulations ('cpu'), of the
native kernels ('native', :mod:`freqjax.ops.native`) and (dense shapes, if torch is installed) of
``torch.nn.Conv2d`` in channels-last with the same threads; warm medians of 7, ms.
``rounds`` alternates :func:`freqjax.bench.train_step.bench_train_step` between the default path
(native kernels), ``conv_impl('cpu')`` and ``conv_impl('xla')`` (or the ``--paths`` given, e.g.
``freqjax,torch``) several times in one process and prints the medians' ratios, which are
steadier than one run on a noisy machine. Run with the entry points' malloc tuning exported
(docs/native_kernels.md, CPU memory allocation) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.bench.timing import available_cpus
from freqjax.ops import conv as cpu_conv
from freqjax.ops import conv_impl, native

# (batch, side, C_in, C_out, kernel, stride): the quick CIFAR ResNet's 3x3 layers and MobileNetV2's stem.
DENSE = [(128, 32, 16, 16, 3, 1), (128, 32, 3, 16, 3, 1), (128, 32, 16, 32, 3, 2), (128, 8, 64, 64, 3, 1)]
# (batch, side, channels, kernel, stride): MobileNetV2 / eFUN depthwise layers.
DEPTHWISE = [(64, 32, 96, 3, 1), (64, 32, 144, 3, 2), (64, 8, 576, 3, 1), (64, 4, 960, 5, 1)]


def _median_ms(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _fwd_and_vjp(conv, x, w) -> tuple[float, float]:
    """Forward ms and forward + (dx, dw) ms of ``conv(x, w)``."""
    dy = jnp.ones(jax.eval_shape(conv, x, w).shape, jnp.float32)
    fwd = jax.jit(conv)

    def forward_and_grads(x_, w_, dy_):
        y, vjp = jax.vjp(conv, x_, w_)
        return y, *vjp(dy_)  # returning y keeps the forward: jit would drop an unused one

    both = jax.jit(forward_and_grads)
    return _median_ms(fwd, x, w), _median_ms(both, x, w, dy)


def _torch_ms(shape: tuple[int, ...]) -> tuple[float, float] | None:
    n, side, c, o, k, s = shape
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(available_cpus())  # the CPUs XLA uses too
    x = torch.randn(n, c, side, side).to(memory_format=torch.channels_last).requires_grad_()
    conv = torch.nn.Conv2d(c, o, k, s, ((s - 1) + (k - 1)) // 2, bias=False).to(memory_format=torch.channels_last)
    dy = torch.randn_like(conv(x))

    def timed(fn) -> float:
        fn()
        fn()
        times = []
        for _ in range(7):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    def forward():
        with torch.no_grad():
            conv(x)

    def forward_backward():
        x.grad = conv.weight.grad = None
        conv(x).backward(dy)

    return timed(forward), timed(forward_backward)


def ops() -> None:
    rng = np.random.default_rng(0)
    print("dense conv, ms (forward / forward + dx + dw)")
    for shape in DENSE:
        n, side, c, o, k, s = shape
        conv_args = {"strides": (s, s), "padding": ((((s - 1) + (k - 1)) // 2,) * 2,) * 2}
        x = jnp.asarray(rng.normal(size=(n, side, side, c)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, c, o)), jnp.float32)
        xla = _fwd_and_vjp(functools.partial(cpu_conv.xla_conv, **conv_args), x, w)
        ours = _fwd_and_vjp(functools.partial(cpu_conv.conv, **conv_args, impl="cpu"), x, w)
        native = _fwd_and_vjp(functools.partial(cpu_conv.conv, **conv_args, impl="native"), x, w)
        theirs = _torch_ms(shape)
        torch_cell = "-" if theirs is None else f"{theirs[0]:.1f} / {theirs[1]:.1f}"
        print(
            f"  {n}x{side}x{side}x{c} -> {o}, {k}x{k}/{s}: XLA {xla[0]:.1f} / {xla[1]:.1f}, "
            f"cpu_conv {ours[0]:.1f} / {ours[1]:.1f}, native {native[0]:.1f} / {native[1]:.1f}, "
            f"PyTorch {torch_cell}",
            flush=True,
        )
    print("depthwise conv, ms (forward / forward + dx + dw)")
    for n, side, c, k, s in DEPTHWISE:
        conv_args = {"strides": (s, s), "padding": ((((s - 1) + (k - 1)) // 2,) * 2,) * 2}
        x = jnp.asarray(rng.normal(size=(n, side, side, c)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, 1, c)), jnp.float32)
        xla = _fwd_and_vjp(functools.partial(cpu_conv.xla_conv, **conv_args, groups=c), x, w)
        with conv_impl("cpu"):  # depthwise follows the active conv implementation
            ours = _fwd_and_vjp(functools.partial(cpu_conv.depthwise, **conv_args), x, w)
        with conv_impl("native"):
            native = _fwd_and_vjp(functools.partial(cpu_conv.depthwise, **conv_args), x, w)
        print(
            f"  {n}x{side}x{side}x{c}, {k}x{k}/{s}: XLA {xla[0]:.1f} / {xla[1]:.1f}, "
            f"cpu_conv {ours[0]:.1f} / {ours[1]:.1f} ({xla[1] / ours[1]:.1f}x), "
            f"native {native[0]:.1f} / {native[1]:.1f} ({xla[1] / native[1]:.1f}x)",
            flush=True,
        )


# (batch, side, C_in, C_out) of stride-1 3x3 layers: the quick CIFAR ResNet's three and ResNet-style
# ImageNet layers (56x56x64 ... 7x7x512) at small batches.
WINOGRAD = [
    (128, 32, 16, 16),
    (128, 16, 32, 32),
    (128, 8, 64, 64),
    (64, 32, 64, 64),
    (16, 56, 64, 64),
    (16, 28, 128, 128),
    (16, 14, 256, 256),
    (16, 7, 512, 512),
]


def winograd(count: int) -> None:
    """Direct native kernels against Winograd's, forward and weight gradient, alternating ``count`` rounds."""
    from freqjax.ops import native

    if not native.available():
        raise SystemExit("the native kernels are not available (no C++ compiler?)")
    rng = np.random.default_rng(0)
    print("stride-1 3x3, ms (medians of rounds): forward direct / Winograd, weight gradient direct / Winograd")
    for n, side, c, o in WINOGRAD:
        x = jnp.asarray(rng.normal(size=(n, side, side, c)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(3, 3, c, o)), jnp.float32)
        dy = jnp.asarray(rng.normal(size=(n, side, side, o)), jnp.float32)
        out_hw = (side, side)
        fns = [
            (jax.jit(functools.partial(native.conv_forward, strides=(1, 1), pad_top_left=(1, 1), out_hw=out_hw)), w),
            (jax.jit(functools.partial(native.winograd_forward, pad_top_left=(1, 1), out_hw=out_hw)), w),
            (jax.jit(lambda a, b: native.conv_weight_grad(a, b, (3, 3), (1, 1), (1, 1))), dy),
            (jax.jit(lambda a, b: native.winograd_weight_grad(a, b, (1, 1))), dy),
        ]
        times = [[_median_ms(f, x, arg) for f, arg in fns] for _ in range(count)]
        fd, fw, gd, gw = (statistics.median(col) for col in zip(*times, strict=True))
        print(
            f"  {n}x{side}x{side}x{c} -> {o}: forward {fd:.2f} / {fw:.2f} ({fd / fw:.2f}x), "
            f"weight gradient {gd:.2f} / {gw:.2f} ({gd / gw:.2f}x)",
            flush=True,
        )


# Train-step variants of the native path: which of the later native pieces each one switches off.
ABLATIONS = {
    "native": (),
    "no_winograd": ("winograd",),
    "no_bn_sums": ("bn_sums",),
    "no_packing": ("packing",),
    "direct_only": ("winograd", "bn_sums"),
}


def elementwise(count: int) -> None:
    """XLA's loop fusions on a 128x32x32x16 activation (BatchNorm's passes at 16 channels) and on
    a (2048, 1024) view of it, alternating ``count`` rounds: XLA CPU's emitter vectorises the
    4-D loops across rows of 16 channels once a fusion has more than a few ops."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(128, 32, 32, 16)), jnp.float32)
    s, b = (jnp.asarray(rng.normal(size=16), jnp.float32) for _ in range(2))
    chain = jax.jit(lambda a: ((a * 2 + 1) * 3 + 1) * 2)
    cases = {
        "x * scale + shift": (jax.jit(lambda a, s_, b_: a * s_ + b_), (x, s, b)),
        "relu(x * scale + shift)": (jax.jit(lambda a, s_, b_: jnp.maximum(a * s_ + b_, 0.0)), (x, s, b)),
        "((x * 2 + 1) * 3 + 1) * 2, 4-D": (chain, (x,)),
        "((x * 2 + 1) * 3 + 1) * 2, (2048, 1024)": (chain, (x.reshape(2048, -1),)),
    }
    times = [[_median_ms(f, *args) for f, args in cases.values()] for _ in range(count)]
    print("XLA loop fusions over 128x32x32x16 float32, ms (medians of rounds)")
    for name, col in zip(cases, zip(*times, strict=True), strict=True):
        print(f"  {name}: {statistics.median(col):.2f}", flush=True)


@contextlib.contextmanager
def _switched_off(parts: tuple[str, ...]):
    """Trace with the Winograd kernels, the native BatchNorm sums and/or the packed view of
    16-channel activations (freqjax.ops.native.packed) switched off (benchmark only)."""
    from freqjax.ops import batchnorm as native_bn

    saved = cpu_conv._winograd_applies, native_bn.applies, native.ffi._PACK
    if "winograd" in parts:
        cpu_conv._winograd_applies = lambda *args: False
    if "bn_sums" in parts:
        native_bn.applies = lambda x: False
    if "packing" in parts:
        native.ffi._PACK = False
    try:
        yield
    finally:
        cpu_conv._winograd_applies, native_bn.applies, native.ffi._PACK = saved


def ablation(model: str, count: int) -> None:
    """Median train-step ms of each :data:`ABLATIONS` variant, alternating two steps of each ``count`` times."""
    from freqjax.bench.train_step import make_freqjax_step, random_batch

    x, y = random_batch(model)
    batch = len(x)
    steps = {}
    for name, parts in ABLATIONS.items():
        with _switched_off(parts):
            steps[name] = make_freqjax_step(model, x, y, impl="native")
        steps[name]()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(count):
        for name, step in steps.items():
            for _ in range(2):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["direct_only"])
    print(f"{model}, batch {batch}: median train-step ms of {2 * count} alternating steps")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"  {name}: {1e3 * med:.1f} ms, {batch / med:,.0f} images/s, {base / med:.2f}x direct_only", flush=True)


def rounds(model: str, count: int, paths: tuple[str, ...]) -> None:
    from freqjax.bench.train_step import bench_train_step

    runs: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(count):
        r = bench_train_step(model, paths=paths, repeats=9)
        for p in paths:
            runs[p].append(r[f"{p}_images_per_s"])
        print("  round: " + ", ".join(f"{p} {runs[p][-1]:,.1f}" for p in paths) + " images/s", flush=True)
    med = {p: statistics.median(v) for p, v in runs.items()}
    ratios = [f"freqjax / {p} {med['freqjax'] / med[p]:.2f}x" for p in paths if p != "freqjax" and "freqjax" in med]
    print(f"{model}: medians " + ", ".join(f"{p} {med[p]:,.1f}" for p in paths) + " images/s; " + ", ".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ops")
    wino = sub.add_parser("winograd")
    wino.add_argument("--rounds", type=int, default=3)
    elem = sub.add_parser("elementwise")
    elem.add_argument("--rounds", type=int, default=5)
    abl = sub.add_parser("ablation")
    abl.add_argument("--model", default="cifar_resnet8")
    abl.add_argument("--rounds", type=int, default=15)
    r = sub.add_parser("rounds")
    r.add_argument("--model", default="cifar_resnet8")
    r.add_argument("--rounds", type=int, default=4)
    r.add_argument("--paths", default="freqjax,freqjax_cpu,freqjax_xla", help="train_bench paths, comma-separated")
    args = parser.parse_args()
    if args.command == "ops":
        ops()
    elif args.command == "winograd":
        winograd(args.rounds)
    elif args.command == "elementwise":
        elementwise(args.rounds)
    elif args.command == "ablation":
        ablation(args.model, args.rounds)
    else:
        rounds(args.model, args.rounds, tuple(p for p in args.paths.split(",") if p))


if __name__ == "__main__":
    main()
