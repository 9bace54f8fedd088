"""Train-step time and page faults per step under two ``GLIBC_TUNABLES`` settings, alternating processes.

    python benchmarks/malloc_tunables.py --model cifar_resnet8 --pairs 4
    python benchmarks/malloc_tunables.py --impl xla --pairs 2      # XLA's own convolutions

glibc tunables are read once at process start, so the two settings cannot share a process: each
run is a fresh child process timing :func:`freqjax.bench.train_step.make_freqjax_step` (8 warm-up
steps, then ``--steps`` timed ones), the two settings alternating ``--pairs`` times. Each child
reports its median ms per step and its minor page faults per timed step
(``getrusage().ru_minflt``). The settings are ``freqjax.runtime.MALLOC_TUNABLES`` against the
previous default, which lacked ``arena_max=1:mmap_max=0`` (or any two given with ``--a`` / ``--b``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from freqjax.runtime import MALLOC_THRESHOLDS, MALLOC_TUNABLES

_CHILD = """
import json, resource, statistics, sys
from freqjax.bench.timing import time_call
from freqjax.bench.train_step import make_freqjax_step, random_batch
name, impl, steps = sys.argv[1], (None if sys.argv[2] == "default" else sys.argv[2]), int(sys.argv[3])
step = make_freqjax_step(name, *random_batch(name), impl=impl)
time_call(step, 1, warmup=7)  # 8 warm-up steps, outside the fault count
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = time_call(step, steps, warmup=0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"ms": 1e3 * statistics.median(times), "faults_per_step": faults / steps}))
"""


def _run(tunables: str, model: str, impl: str, steps: int) -> dict:
    env = dict(os.environ, GLIBC_TUNABLES=tunables)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, model, impl, str(steps)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_resnet8")
    parser.add_argument("--impl", default="default", help="conv implementation: default, native, cpu or xla")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--a", default=MALLOC_THRESHOLDS, help="first GLIBC_TUNABLES value (default: the previous one)")
    parser.add_argument("--b", default=MALLOC_TUNABLES, help="second value (default: freqjax's MALLOC_TUNABLES)")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"a": [], "b": []}
    print(f"{args.model}, impl {args.impl}: ms per step (median of {args.steps}), minor page faults per step")
    print(f"  a = {args.a}\n  b = {args.b}")
    for _ in range(args.pairs):
        for key in ("a", "b"):
            runs[key].append(_run(getattr(args, key), args.model, args.impl, args.steps))
        a, b = runs["a"][-1], runs["b"][-1]
        print(
            f"  pair: a {a['ms']:.1f} ms ({a['faults_per_step']:.0f} faults), "
            f"b {b['ms']:.1f} ms ({b['faults_per_step']:.0f} faults), b / a {b['ms'] / a['ms']:.2f}",
            flush=True,
        )
    ratios = [b["ms"] / a["ms"] for a, b in zip(runs["a"], runs["b"], strict=True)]
    med = {k: statistics.median(r["ms"] for r in v) for k, v in runs.items()}
    print(f"medians: a {med['a']:.1f} ms, b {med['b']:.1f} ms; median per-pair b / a {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
