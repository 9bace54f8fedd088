"""Test setup: 8 fake CPU devices, forced before jax is imported anywhere; compiled programs freed per module.

Multi-device code (meshes, sharded batches) is then exercised on any machine, CI included.
"""

import ctypes
import ctypes.util
import gc
import os

import pytest

# LLVM optimisation level 0: the suite is XLA-compile bound (a model's train step compiles for
# 10-40 s on 2 cores, its tiny batch runs in well under one); level 0 compiled efficientnet_b0's
# init and train step 1.44x faster (benchmarks/compile_time.py).
# Values are unchanged to rounding; the native kernels are compiled by their own build.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

assert jax.device_count() == 8, f"conftest expected 8 CPU devices, jax sees {jax.devices()}"


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if os.name == "posix" else None


def _return_freed_memory() -> None:
    """glibc keeps freed heap pages (XLA's compiler frees gigabytes) unless asked to give them back."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


@pytest.fixture(autouse=True)
def _trim_after_each_test(request):
    """Give freed memory back after every test; in modules that compile a new model per test
    (``FREE_COMPILED_AFTER_EACH_TEST = True``) drop the compiled programs too."""
    yield
    if getattr(request.module, "FREE_COMPILED_AFTER_EACH_TEST", False):
        jax.clear_caches()
        gc.collect()
    _return_freed_memory()


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop jit caches (compiled executables, traced models) after each test module.

    Each module compiles its own models; kept for the whole session they grew each pytest worker
    to 6-8 GB. Tests inside a module still share their compilations.
    """
    yield
    jax.clear_caches()
    gc.collect()
    _return_freed_memory()
