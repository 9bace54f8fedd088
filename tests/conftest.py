"""Test setup: 8 fake CPU devices, forced before jax is imported anywhere; compiled programs freed per module.

Multi-device code (meshes, sharded batches) is then exercised on any machine, CI included.
"""

import ctypes
import ctypes.util
import gc
import os
import time

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


# A test that ran this long compiled something big (a model's train step); its programs are freed
# at once rather than at the end of the module. Short tests keep sharing their compilations.
_LONG_TEST_S = 5.0


@pytest.fixture(autouse=True)
def _free_memory_after_each_test():
    start = time.perf_counter()
    yield
    if time.perf_counter() - start > _LONG_TEST_S:
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


# Tests that take half a minute or more each on 2 cores (subprocess runs of the main job, several
# processes, executed notebooks, a model's train step): run first, so that the short tests fill
# the end of the run on both pytest-xdist workers instead of one worker finishing a long test alone.
_SLOW_FIRST = (
    "tests/test_main.py::test_efun_s_plus",
    "tests/test_main.py::test_sigkill",
    "tests/test_main_multihost.py",
    "tests/launch/",
    "tests/ops/test_native_targets.py",
    "tests/notebooks/",
    "tests/models/test_models.py::test_train_mode",
    "tests/train/test_workdir.py",
    "tests/train/test_lefun.py",
    "tests/studies/test_grid.py",
    "tests/compress/test_job.py",
    "tests/train/test_init_from.py",
    "tests/studies/test_input_channels.py",
    "tests/studies/test_msnet_sweep.py",
    "tests/data/test_prepare.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:  # the longest first; the rest keep their order (a stable sort)
        return next((i for i, prefix in enumerate(_SLOW_FIRST) if item.nodeid.startswith(prefix)), len(_SLOW_FIRST))

    items.sort(key=rank)
