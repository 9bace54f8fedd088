"""freqjax.runtime: the malloc tunables the entry points run with, measured in child processes."""

import json
import os
import platform
import subprocess
import sys

import pytest

from freqjax import runtime

# One XLA execution per call whose 64 MiB result is freed before the next call: the shape of a
# train step's buffers (above glibc's largest mmap threshold, 32 MiB).
_CHILD = """
import json, resource
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((16 << 20,), jnp.float32)
for _ in range(3):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
print(json.dumps({"faults_per_call": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10}))
"""


def _faults_per_call(tunables: str) -> float:
    env = dict(os.environ, GLIBC_TUNABLES=tunables, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["faults_per_call"]


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc tunables are glibc's (Linux)"
)
def test_malloc_tunables_stop_per_call_page_faults():
    # Faults only ever come in addition (another process's memory pressure can make a tuned child
    # fault its heap in again: once 8,522 per call during a full CI run, beside the other pytest
    # worker), so each setting's figure is the least of three children.
    tuned = min(_faults_per_call(runtime.MALLOC_TUNABLES) for _ in range(3))
    previous = min(_faults_per_call(runtime.MALLOC_THRESHOLDS) for _ in range(3))
    # Re-mapping 64 MiB per call faults it in again: 32 huge pages at best, 16,384 small ones at
    # worst (measured: 544 per call); tuned, the freed buffer is reused (measured: 16-22).
    assert tuned * 10 <= previous, (tuned, previous)
