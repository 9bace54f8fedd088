"""Forward-pass latency of freqjax models next to the same architecture in PyTorch/timm.

:func:`bench_latency` times one model at one batch size in both frameworks on the same CPU, in
the same process, with the same random input: freqjax as ``jax.jit(model.apply)`` with
``train=False``, PyTorch as the :func:`freqjax.interop.torch_models.timm_model` counterpart in eval mode
under ``torch.inference_mode()``. Figures are warm medians (after compilation and warm-up calls);
the jit compile time is reported on its own. ``python -m freqjax.bench latency`` is the CLI.

Threads: torch gets ``torch.set_num_threads(threads)``. XLA's CPU client sizes its thread pool
from the CPUs the process may run on and cannot be resized once JAX has started, so
:func:`freqjax.bench.timing.limit_cpus` pins the whole process to ``threads`` CPUs with ``os.sched_setaffinity``;
called before the first JAX computation, XLA then uses that many threads too.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable, Iterator

import numpy as np

from freqjax.bench.timing import available_cpus, cpu_seconds, malloc_note, other_load, time_call, torch_missing

__all__ = ["bench_latency", "default_repeats", "run_latency", "speed_ratios"]


def default_repeats(batch: int) -> int:
    """Timed calls per framework: 10 at batch 1, fewer for big batches (at least 3)."""
    return max(3, min(10, -(-40 // batch)))


def _freqjax_times(
    name: str, x: np.ndarray, *, repeats: int, warmup: int, impl: str | None, dtype: str
) -> tuple[list[float], float]:
    import jax
    import jax.numpy as jnp

    from freqjax.models import abstract_variables, create_model, random_variables
    from freqjax.ops import conv_impl

    model = create_model(name, dtype=jnp.dtype(dtype))
    xj = jax.device_put(x.astype(dtype))
    # random He-normal weights: model.init would take longer than the benchmark
    variables = jax.device_put(random_variables(abstract_variables(model, x.shape), seed=1))
    start = time.perf_counter()
    with conv_impl(impl):
        fwd = jax.jit(lambda v, inp: model.apply(v, inp, train=False)).lower(variables, xj).compile()
    compile_s = time.perf_counter() - start
    times = time_call(lambda: jax.block_until_ready(fwd(variables, xj)), repeats, warmup)
    return times, compile_s


def _torch_times(name: str, x: np.ndarray, *, repeats: int, warmup: int, threads: int, dtype: str) -> list[float]:
    import torch

    from freqjax.interop.torch_models import timm_model

    torch.set_num_threads(threads)
    tdtype = getattr(torch, dtype)
    model = timm_model(name).to(tdtype).eval()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(tdtype)
    with torch.inference_mode():
        return time_call(lambda: model(xt), repeats, warmup)


def bench_latency(
    name: str,
    batch: int,
    *,
    repeats: int | None = None,
    warmup: int = 2,
    impl: str | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    torch: bool = True,
    seed: int = 0,
) -> dict:
    """Warm forward latency of model ``name`` at ``batch`` in freqjax and (optionally) PyTorch.

    Returns a dict with ``freqjax_ms_per_image``, ``freqjax_compile_s``, ``torch_ms_per_image``
    and ``ratio`` (torch / freqjax, > 1 when freqjax is faster; None without torch), plus
    ``torch_note`` when PyTorch was asked for but is missing. Raises ValueError for unknown names.
    """
    from freqjax.models import model_info
    from freqjax.ops import resolve_conv_impl

    info = model_info(name)
    impl = resolve_conv_impl(impl)
    repeats = repeats or default_repeats(batch)
    threads = threads or available_cpus()
    x = np.random.default_rng(seed).standard_normal((batch, *info.input_shape), dtype=np.float32)
    cpu0, start = cpu_seconds(), time.perf_counter()
    times, compile_s = _freqjax_times(name, x, repeats=repeats, warmup=warmup, impl=impl, dtype=dtype)
    ours = 1e3 * statistics.median(times) / batch
    result = {
        "model": name,
        "batch": batch,
        "input_shape": list(info.input_shape),
        "conv_impl": impl,
        "dtype": dtype,
        "threads": threads,
        "repeats": repeats,
        "freqjax_ms_per_image": round(ours, 3),
        "freqjax_compile_s": round(compile_s, 2),
        "torch_ms_per_image": None,
        "ratio": None,
    }
    note = torch_missing() if torch else None
    if note:
        result["torch_note"] = note
    elif torch:
        theirs = (
            1e3
            * statistics.median(_torch_times(name, x, repeats=repeats, warmup=warmup, threads=threads, dtype=dtype))
            / batch
        )
        result["torch_ms_per_image"] = round(theirs, 3)
        result["ratio"] = round(theirs / ours, 2)
    load = other_load(cpu0, time.perf_counter() - start)
    result["other_cpu_load"] = None if load is None else round(load, 2)
    return result


def speed_ratios(results: Iterable[dict], fast: str = "efun", slow: str = "efficientnet_b0") -> Iterator[dict]:
    """Per batch size: how many times faster ``fast`` is than ``slow`` (ms ``slow`` / ms ``fast``)."""
    by_key = {(r["model"], r["batch"]): r for r in results}
    for (model, batch), r in by_key.items():
        other = by_key.get((slow, batch))
        if model != fast or other is None:
            continue
        row = {"batch": batch, "fast": fast, "slow": slow}
        for fw in ("freqjax", "torch"):
            a, b = r[f"{fw}_ms_per_image"], other[f"{fw}_ms_per_image"]
            row[fw] = round(b / a, 2) if a and b else None
        yield row


def _fmt(v: float | None, spec: str) -> str:
    width = spec.split(".", maxsplit=1)[0]
    if v is None:
        return "-".rjust(int(width)) if width else "-"
    return format(v, spec)


def run_latency(
    models: list[str],
    batches: list[int],
    *,
    repeats: int | None = None,
    warmup: int = 2,
    impl: str | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    torch: bool = True,
    as_json: bool = False,
) -> list[dict]:
    """Benchmark every model at every batch size, printing a table (or JSON lines) as it goes."""
    import json

    import jax

    from freqjax.ops import resolve_conv_impl

    threads = threads or available_cpus()
    note = torch_missing() if torch else "--no-torch"
    if not as_json:
        print(
            f"forward latency, eval mode, {dtype}, conv impl {resolve_conv_impl(impl)}, "
            f"{threads} threads on {available_cpus()} of {os.cpu_count()} CPUs ({jax.devices()[0].platform}), "
            f"load avg {os.getloadavg()[0]:.2f}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES') or '(unset)'}"
        )
        if note:
            print(f"note: {note}")
        if malloc_note():
            print(f"note: {malloc_note()}")
        head = ("model", "batch", "freqjax ms/img", "torch ms/img", "torch/fj", "compile s", "other load")
        print(f"{head[0]:24s} {head[1]:>5s} {head[2]:>14s} {head[3]:>12s} {head[4]:>8s} {head[5]:>9s} {head[6]:>10s}")
    results = []
    for name in models:
        for batch in batches:
            r = bench_latency(
                name,
                batch,
                repeats=repeats,
                warmup=warmup,
                impl=impl,
                dtype=dtype,
                threads=threads,
                torch=torch,
            )
            results.append(r)
            if as_json:
                print(json.dumps({"type": "latency", **r}), flush=True)
            else:
                print(
                    f"{name:24s} {batch:5d} {_fmt(r['freqjax_ms_per_image'], '14.2f')} "
                    f"{_fmt(r['torch_ms_per_image'], '12.2f')} {_fmt(r['ratio'], '8.2f')} "
                    f"{r['freqjax_compile_s']:9.2f} {_fmt(r['other_cpu_load'], '10.2f')}",
                    flush=True,
                )
    busy = [r["model"] for r in results if (r["other_cpu_load"] or 0) > 0.25]
    if busy and not as_json:
        print(
            f"warning: other processes kept > 0.25 CPUs busy while timing {', '.join(busy)}; figures are unreliable "
            "(torch's OpenMP threads slow down many-fold when one of their cores is taken)"
        )
    for row in speed_ratios(results):
        if as_json:
            print(json.dumps({"type": "speed_ratio", **row}))
        else:
            print(
                f"{row['fast']} / {row['slow']} speed (ms {row['slow']} / ms {row['fast']}) at batch {row['batch']}: "
                f"freqjax {_fmt(row['freqjax'], '.2f')}x, torch {_fmt(row['torch'], '.2f')}x"
            )
    return results
