"""Timing helpers of the benchmarks: interleaved wall-clock timing, CPU pinning and load, environment notes.

Shared cloud CPUs drift in speed by 1.5x over seconds, so comparisons are timed side by side in
one process (:func:`time_calls_interleaved`) and reported as medians and ratios.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable

__all__ = [
    "available_cpus",
    "cpu_seconds",
    "limit_cpus",
    "malloc_note",
    "other_load",
    "time_call",
    "time_calls_interleaved",
    "torch_missing",
]


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    ``fn`` must block until its work is done (e.g. end with ``jax.block_until_ready``).
    """
    return time_calls_interleaved({"fn": fn}, repeats, warmup)["fn"]


def time_calls_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall-clock seconds of ``repeats`` calls of each of ``fns``, one call of each in turn, after
    ``warmup`` untimed calls of each.

    Taking the calls in turn puts every function through the same moments of a machine whose speed
    drifts (shared cloud CPUs do, by 1.5x over seconds), where timing one function after the other
    compares different moments. Each ``fn`` must block until its work is done.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def available_cpus() -> int:
    """CPUs this process may run on (``os.cpu_count()`` where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def limit_cpus(threads: int) -> str | None:
    """Pin this process to its first ``threads`` allowed CPUs; returns a warning or None.

    Must run before JAX creates its CPU client (the first computation) for XLA to size its
    thread pool to ``threads``; later, XLA keeps its threads but they share ``threads`` CPUs.
    """
    have = available_cpus()
    if threads == have:
        return None
    if threads > have:
        raise ValueError(f"threads={threads} but this process may only run on {have} CPUs")
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError(f"threads={threads} needs os.sched_setaffinity (Linux); use threads={have}")
    from jax._src import xla_bridge

    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    if xla_bridge.backends_are_initialized():
        return f"JAX was already running: XLA keeps its {have}-thread pool, now sharing {threads} CPUs"
    return None


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_load(since: tuple[float, float] | None, wall_s: float) -> float | None:
    """CPUs kept busy by other processes since ``since`` (from :func:`cpu_seconds`) over ``wall_s``."""
    now = cpu_seconds()
    if since is None or now is None or wall_s <= 0:
        return None
    return max(0.0, ((now[0] - since[0]) - (now[1] - since[1])) / wall_s)


def torch_missing() -> str | None:
    """Why the PyTorch side cannot run (torch or timm not importable), or None."""
    for mod in ("torch", "timm"):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            return f"{mod} cannot be imported ({e}; pip install -e '.[torch]'); PyTorch timings skipped"
    return None


def malloc_note() -> str | None:
    """A warning when ``GLIBC_TUNABLES`` fixes ``trim_threshold`` but not ``mmap_threshold``.

    Setting the trim threshold freezes glibc's mmap threshold at 128 KiB, so every larger buffer
    is mmapped and page-faulted afresh on each call (with ``hugetlb=1``, in 2 MiB pages): on a
    2-core EPYC this made batch-1 forwards 1.6-1.9x slower in freqjax and 2.5-3x in PyTorch.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "trim_threshold" in tunables and "mmap_threshold" not in tunables:
        return (
            "GLIBC_TUNABLES sets trim_threshold without mmap_threshold, which slows small-batch "
            "latency (both frameworks); append :glibc.malloc.mmap_threshold=33554432"
        )
    return None
