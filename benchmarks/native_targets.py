"""Train-step images/s of the native kernels' builds beside the other conv paths, side by side in one process.

    git show f52356c~1:freqjax/ops/native/kernels/conv_kernels.cc > /tmp/before.cc
    python benchmarks/native_targets.py --before /tmp/before.cc --models cifar_resnet8,mobilenetv2_100,resnet18

Paths (one step of each in turn, medians; freqjax.bench.timing.time_calls_interleaved):
``native_before``: ``--before`` (an older kernel source, e.g. the 16-float-vector kernels from
before simd.h) registered under its own FFI names, as benchmarks/kernel_ab.py does; ``native``:
this CPU's build (``-march=native``); ``native_<target>`` for each ``--targets`` entry (e.g.
``x86-64-v3``, ``generic``: freqjax.ops.native.build.TARGETS); ``cpu`` and ``xla``: the other conv
implementations (freqjax.ops.backend); ``default``: what the backend picks on this machine.
Prints the CPU, each build's vector ISA and one table; re-executes itself once with the malloc
tuning of the entry points (docs/native_kernels.md, CPU memory allocation).
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import statistics
from pathlib import Path

from kernel_ab import renamed_calls

from freqjax.runtime import reexec_with_malloc_tuning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cifar_resnet8,mobilenetv2_100,resnet18")
    parser.add_argument("--before", type=Path, help="an older kernel source to time as native_before")
    parser.add_argument("--targets", default="", help="comma-separated other build targets, e.g. x86-64-v3,generic")
    parser.add_argument("--paths", default="native,cpu,xla,default", help="of native, cpu, xla, default")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if args.before and not args.before.is_file():
        parser.error(f"{args.before} is not a file")
    reexec_with_malloc_tuning()

    from freqjax.bench.timing import time_calls_interleaved
    from freqjax.bench.train_step import make_freqjax_step, random_batch
    from freqjax.ops import native, resolve_conv_impl

    if not native.available():
        parser.error("the native kernels are unavailable here (no C++ compiler, or FREQJAX_NATIVE=0)")
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    flags = set(Path("/proc/cpuinfo").read_text().split())
    print(f"CPU: {cpu} ({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else platform.machine()})")
    print(f"native build: {native.simd()}; default conv impl: {resolve_conv_impl()}")
    builds: dict[str, str] = {}  # path -> FFI prefix
    if args.before:
        native.register_library(ctypes.CDLL(str(native.build(source=args.before.resolve()))), "before_")
        builds["native_before"] = "before_"
    for target in filter(None, args.targets.split(",")):
        prefix = f"t{len(builds)}_"
        lib = ctypes.CDLL(str(native.build(target=target)))
        native.register_library(lib, prefix)
        builds[f"native_{target}"] = prefix
        print(f"native_{target} build: {native.simd(lib)}")
    impls = {"native": "native", "cpu": "cpu", "xla": "xla", "default": None}
    paths = [p for p in args.paths.split(",") if p]
    rows = []
    for model in args.models.split(","):
        x, y = random_batch(model)
        steps = {}
        for path, prefix in builds.items():
            with renamed_calls(prefix):
                steps[path] = make_freqjax_step(model, x, y, impl="native")
        for path in paths:
            steps[path] = make_freqjax_step(model, x, y, impl=impls[path])
        times = time_calls_interleaved(steps, args.repeats, args.warmup)
        ips = {path: len(x) / statistics.median(t) for path, t in times.items()}
        rows.append((f"{model} (b{len(x)}, {x.shape[1]} px)", ips))
        print(f"{model}: " + ", ".join(f"{p} {v:.1f}" for p, v in ips.items()), flush=True)
    names = list(rows[0][1])
    print(f"\ntrain step, images/s, median of {args.repeats} steps per path, interleaved")
    print("| model | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, ips in rows:
        best = max(ips.values())
        cells = [f"**{ips[n]:,.1f}**" if ips[n] == best else f"{ips[n]:,.1f}" for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
