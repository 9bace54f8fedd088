"""Compile time of a model's init and train step under two ``XLA_FLAGS`` settings (the test suite's question).

    python benchmarks/compile_time.py --models efficientnet_b0,densenet121

``tests/conftest.py`` compiles at ``--xla_backend_optimization_level=0`` because the suite is
bound by XLA compile time. This times, per model, in fresh child processes with the suite's 8
CPU devices, alternating the default level and level 0: tracing + compiling the init and the SGD train step of
:func:`freqjax.bench.train_step.make_freqjax_step` on a batch of 8 images at 32 px (the train-mode
test's size; DCT models at 4x4), and then running 8 steps, in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

DEVICES = "--xla_force_host_platform_device_count=8"  # as tests/conftest.py: the 'cpu' conv impl
LEVEL_0 = f"{DEVICES} --xla_backend_optimization_level=0"

_CHILD = """
import json, sys, time
from freqjax.bench.train_step import make_freqjax_step, random_batch
x, y = random_batch(sys.argv[1], 8, 32)  # DCT models: 32 px is 4x4 blocks
start = time.perf_counter()
step = make_freqjax_step(sys.argv[1], x, y)  # jit + compile of the init and of the train step
compile_s = time.perf_counter() - start
start = time.perf_counter()
for _ in range(8):
    step()
print(json.dumps({"compile_s": compile_s, "eight_steps_s": time.perf_counter() - start}))
"""


def _run(name: str, flags: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _CHILD, name], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet_b0")
    parser.add_argument("--pairs", type=int, default=1)
    args = parser.parse_args()
    print("seconds, default level / level 0: init + train-step compile, then 8 steps")
    for name in args.models.split(","):
        for _ in range(args.pairs):
            default, level0 = _run(name, DEVICES), _run(name, LEVEL_0)
            compile_s, steps_s = (f"{default[k]:.1f} / {level0[k]:.1f}" for k in ("compile_s", "eight_steps_s"))
            ratio = default["compile_s"] / level0["compile_s"]
            print(f"  {name}: compile {compile_s} ({ratio:.2f}x), 8 steps {steps_s}", flush=True)


if __name__ == "__main__":
    main()
