"""Process-level settings for the command-line entry points (not applied on ``import freqjax``).

glibc serves allocations above 32 MiB with fresh ``mmap`` calls and unmaps them on free, so every
XLA CPU execution page-faults its large buffers in 4 KiB pages anew: for ``rgb_to_dct`` at batch
256 that was more than half the time. Two glibc tunables fix it: ``hugetlb=1`` backs malloc'd
memory with transparent huge pages and a high ``trim_threshold`` keeps freed memory for reuse
(the process keeps its peak memory, as a training job does anyway). Setting any threshold
stops glibc from adapting the mmap threshold, which would then stay at 128 KiB and mmap every
mid-sized buffer (batch-1 forwards 1.6-3x slower), so the mmap threshold is pinned at its
largest value, 32 MiB, too. Buffers above that threshold (XLA's per-execution temporary arena
is one: 87 MB for the quick CIFAR ResNet's train step) would still be mmapped and page-faulted
afresh on every step, so ``mmap_max=0`` turns mmap off and ``arena_max=1`` keeps every thread on
the main arena, whose heap can grow to any size (the other arenas' heaps are capped at 64 MiB
and fall back to mmap for anything larger): 550-650 page faults per step became 0-3, and that
train step ran 1.15x faster on the 2-core Xeon (``python benchmarks/malloc_tunables.py``). They
must be set before the process starts, so the entry points re-execute themselves once with them.

The tuning is for XLA's CPU backend only: on a GPU or TPU host the heavy buffers live in device
memory, and the re-exec would only hand the tunables to every data-loading worker. So it applies
only when :func:`default_backend_is_cpu` says JAX will run on the CPU.

Library users (notebooks, their own scripts) can export the same variable before starting
Python: ``export GLIBC_TUNABLES=...`` with the value of :data:`MALLOC_TUNABLES`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MALLOC_TUNABLES",
    "accelerator_plugins",
    "atomic_path",
    "cache_dir",
    "default_backend_is_cpu",
    "reexec_with_malloc_tuning",
]

# Huge pages and pinned thresholds, with mmap still on (freqjax's value before mmap was turned off;
# benchmarks/malloc_tunables.py compares the two).
MALLOC_THRESHOLDS = "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432"
MALLOC_TUNABLES = MALLOC_THRESHOLDS + ":glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0"
_OPT_OUT = "FREQJAX_MALLOC_TUNING"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary file name beside ``path`` to write to; renamed onto ``path`` when the block ends
    normally (readers, other processes included, see no file or the whole file) and removed if it
    raises. ``suffix`` keeps writers that add an extension (``np.save``) on the same name."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cache_dir() -> Path:
    """freqjax's cache (built native kernels, decoded image folders): ``$FREQJAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/freqjax``, else ``~/.cache/freqjax``."""
    if os.environ.get("FREQJAX_CACHE_DIR"):
        return Path(os.environ["FREQJAX_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "freqjax"


def accelerator_plugins() -> list[str]:
    """Installed JAX accelerator plugins, found the way JAX finds them but without importing JAX:
    ``jax_plugins`` entry points (``jax[cuda12]``/``jax[cuda13]``'s ``jax-cuda*-plugin``, ROCm),
    modules of the ``jax_plugins`` namespace package, and ``libtpu`` (``jax[tpu]``)."""
    found = sorted({ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")})
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        import pkgutil

        found += sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations) if m.name not in found)
    if importlib.util.find_spec("libtpu") is not None:
        found.append("libtpu")
    return found


def default_backend_is_cpu() -> bool:
    """Whether JAX's default backend will be the CPU, decided before JAX starts.

    ``JAX_PLATFORMS`` (or the older ``JAX_PLATFORM_NAME``) decides when set: its first entry is
    the default backend. Otherwise JAX picks an accelerator if a plugin for one is installed
    (:func:`accelerator_plugins`). Asking ``jax.default_backend()`` instead would start every
    backend in this process just before it is replaced: seconds of CUDA start-up and, by JAX's
    default, 75 % of the GPU's memory preallocated. An installed plugin whose device is absent
    makes JAX fall back to the CPU; this then says False and the CPU runs without the malloc
    tuning: slower (1.15x on the quick ResNet's step), never wrong.
    """
    platforms = os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME")
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not accelerator_plugins()


def reexec_with_malloc_tuning() -> None:
    """Re-execute this command with :data:`MALLOC_TUNABLES` unless already set, opted out or not on the CPU.

    Does nothing off Linux/glibc, when ``GLIBC_TUNABLES`` is already set (the user's choice
    wins), when ``FREQJAX_MALLOC_TUNING=0``, or when JAX's default backend will be an
    accelerator (:func:`default_backend_is_cpu`). Call it first thing in ``__main__``.
    """
    if os.environ.get(_OPT_OUT, "1") == "0" or "GLIBC_TUNABLES" in os.environ:
        return
    if not default_backend_is_cpu():
        return
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
