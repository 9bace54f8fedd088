"""Benchmarks: ``python -m freqjax.profile <command> ...``.

Commands:
    dct      images/s of :func:`freqjax.dct.rgb_to_dct` (jitted, on the default jax device) side by
             side with the FUN reference's per-image path (encode a quality-100 JPEG with Pillow,
             read its coefficients back with libjpeg, repeat the chroma), in the same run.
    latency  forward ms/image of freqjax models (jit, eval mode) and of the same architectures in
             PyTorch/timm (eval, inference_mode) on the same CPU and thread count, with the ratio
             torch / freqjax (> 1: freqjax faster) and the eFUN / EfficientNet-B0 speed ratio.
    compress DCT weight compression of a whole network (freqjax.compress): time per layer,
             counts, nSSE; optional compressed checkpoint and report (freqjax/compress/cli.py).
    train-step
             training-step images/s of freqjax (default CPU path), freqjax with XLA's own
             convolutions and the same architecture in PyTorch, in one run (freqjax/train_bench.py).

Example::

    python -m freqjax.profile dct --batch 256 --size 224
    python -m freqjax.profile latency --models efun,efficientnet_b0 --batch 1,64
    python -m freqjax.profile train-step --models cifar_resnet8,mobilenetv2_100,efun_s_plus
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from freqjax.counting import count_macs, count_params

__all__ = ["bench_dct", "count_macs", "count_params", "main", "reference_dct", "time_call", "time_calls_interleaved"]


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


def reference_dct(image: np.ndarray) -> np.ndarray:
    """The FUN reference's per-image DCT: quality-100 4:2:0 JPEG via Pillow, coefficients via libjpeg."""
    from PIL import Image

    from freqjax.dct import dct_from_jpeg

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=100, subsampling=2)
    return dct_from_jpeg(buf.getvalue())


def _reference_chunk(images: np.ndarray) -> int:
    for img in images:
        reference_dct(img)
    return len(images)


def _test_images(n: int, size: int, folder: str | None) -> np.ndarray:
    if folder:
        from freqjax.data.folder import load_folder_images

        images, _ = load_folder_images(folder, n, size)
        reps = -(-n // len(images))
        return np.concatenate([images] * reps)[:n]
    from freqjax.data.synthetic import grating_images

    # A few distinct natural-looking images, tiled: JPEG encoding speed depends on content, so
    # random noise would make the reference path unrealistically slow.
    distinct = min(n, 32)
    images, _ = grating_images(distinct, size)
    return np.concatenate([images] * (-(-n // distinct)))[:n]


def bench_dct(
    *,
    batch: int = 256,
    size: int = 224,
    chroma: str = "420",
    dtype: str = "float32",
    repeats: int = 5,
    reference_images: int = 128,
    workers: int | None = None,
    folder: str | None = None,
) -> dict:
    """Measure both DCT paths; returns a dict of figures (images/s are medians over repeats)."""
    import jax
    import jax.numpy as jnp

    from freqjax import dct

    workers = workers or os.cpu_count() or 1
    images = _test_images(batch, size, folder)
    device_images = jax.device_put(images)
    fn = jax.jit(lambda x: dct.rgb_to_dct(x, chroma=chroma, dtype=jnp.dtype(dtype)))
    times = time_call(lambda: jax.block_until_ready(fn(device_images)), repeats)
    ours = batch / statistics.median(times)

    ref_imgs = images[: min(reference_images, batch)]
    single = time_call(lambda: _reference_chunk(ref_imgs), 1, warmup=0)[0]
    # spawn, not fork: forking a process that runs JAX's thread pools can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_reference_chunk, np.array_split(ref_imgs[:workers], workers)))  # start workers
        start = time.perf_counter()
        done = sum(pool.map(_reference_chunk, np.array_split(ref_imgs, workers)))
        parallel = time.perf_counter() - start
    return {
        "device": str(jax.devices()[0]),
        "batch": batch,
        "size": size,
        "chroma": chroma,
        "dtype": dtype,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "freqjax_images_per_s": round(ours, 1),
        "freqjax_ms_per_batch": round(1e3 * statistics.median(times), 2),
        "reference_images_per_s_1_process": round(len(ref_imgs) / single, 1),
        "reference_images_per_s_workers": round(done / parallel, 1),
        "workers": workers,
        "speedup_vs_reference_workers": round(ours / (done / parallel), 2),
    }


def _cmd_dct(args: argparse.Namespace) -> None:
    result = bench_dct(
        batch=args.batch,
        size=args.size,
        chroma=args.chroma,
        dtype=args.dtype,
        repeats=args.repeats,
        reference_images=args.reference_images,
        workers=args.workers,
        folder=args.folder,
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"rgb_to_dct, {result['batch']} x {result['size']}x{result['size']} uint8, chroma {result['chroma']}, "
        f"out {result['dtype']}, on {result['device']}, GLIBC_TUNABLES={result['glibc_tunables'] or '(unset)'}"
    )
    print(
        f"  freqjax rgb_to_dct (jit)          : {result['freqjax_images_per_s']:10.1f} images/s "
        f"({result['freqjax_ms_per_batch']} ms/batch, median of {args.repeats})"
    )
    print(f"  reference JPEG q100 + libjpeg, 1 process : {result['reference_images_per_s_1_process']:10.1f} images/s")
    print(
        f"  reference, {result['workers']} processes              : {result['reference_images_per_s_workers']:10.1f} "
        f"images/s"
    )
    print(f"  speed-up over the reference on all cores: {result['speedup_vs_reference_workers']}x")


def _pin_cpus(threads: int) -> None:
    """Pin the process to ``threads`` CPUs before JAX starts (:func:`freqjax.latency.limit_cpus`)."""
    from freqjax.latency import limit_cpus

    warning = limit_cpus(threads)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _cmd_latency(args: argparse.Namespace) -> None:
    from freqjax import latency

    _pin_cpus(args.threads)
    latency.run_latency(
        args.models,
        args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        depthwise_impl=None if args.depthwise_impl == "default" else args.depthwise_impl,
        dtype=args.dtype,
        threads=args.threads,
        torch=not args.no_torch,
        as_json=args.json,
    )


def _cmd_train_step(args: argparse.Namespace) -> None:
    from freqjax import train_bench

    _pin_cpus(args.threads)
    train_bench.run_train_step(
        args.models,
        args.batch,
        args.size,
        paths=args.paths,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        as_json=args.json,
    )


def _positive(v: str) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return i


def _positive_list(v: str) -> list[int]:
    return [_positive(x) for x in v.split(",") if x.strip()]


def _names(v: str) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m freqjax.profile", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dct", help="rgb_to_dct images/s vs the per-image JPEG/libjpeg reference")
    d.add_argument("--batch", type=_positive, default=256)
    d.add_argument("--size", type=_positive, default=224, help="image side in pixels (multiple of 16 for 420)")
    d.add_argument("--chroma", choices=["420", "444"], default="420")
    d.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    d.add_argument("--repeats", type=_positive, default=5)
    d.add_argument("--reference-images", type=_positive, default=128, help="images timed on the reference path")
    d.add_argument("--workers", type=_positive, default=None, help="processes for the reference (default: all cores)")
    d.add_argument("--folder", default=None, help="take images from this folder instead of synthetic ones")
    d.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    d.set_defaults(func=_cmd_dct)
    lat = sub.add_parser("latency", help="forward ms/image of freqjax vs PyTorch/timm, same CPU and threads")
    lat.add_argument("--models", type=_names, default=None, help="comma-separated names (default: all)")
    lat.add_argument("--batch", type=_positive_list, default=[1, 64], help="comma-separated batch sizes")
    lat.add_argument("--repeats", type=_positive, default=None, help="timed calls (default: 10 at batch 1, 3 at 64)")
    lat.add_argument("--warmup", type=int, default=2, help="untimed calls after compilation")
    lat.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="CPUs for both frameworks (default: all this process may use); fewer pins the process",
    )
    lat.add_argument("--depthwise-impl", choices=["default", "lax", "shift"], default="default")
    lat.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    lat.add_argument("--no-torch", action="store_true", help="time freqjax only")
    lat.add_argument("--json", action="store_true", help="one JSON line per result")
    lat.set_defaults(func=_cmd_latency)
    ts = sub.add_parser("train-step", help="train-step images/s: freqjax, freqjax with XLA convs, PyTorch")
    ts.add_argument(
        "--models", type=_names, default=["cifar_resnet8", "mobilenetv2_100", "efun_s_plus"], help="comma-separated"
    )
    ts.add_argument("--batch", type=_positive, default=None, help="default: 128 for 32-px models, else 64")
    ts.add_argument("--size", type=_positive, default=None, help="image side in pixels (default: 32 / 64 / 112 DCT)")
    from freqjax.train_bench import DEFAULT_PATHS, PATHS

    ts.add_argument(
        "--paths",
        type=_names,
        default=list(DEFAULT_PATHS),
        help=f"subset of {','.join(PATHS)} (freqjax_cpu: conv_impl('cpu'), no native kernels)",
    )
    ts.add_argument("--repeats", type=_positive, default=5)
    ts.add_argument("--warmup", type=int, default=8, help="untimed steps after compilation (the first ~5 are slow)")
    ts.add_argument("--threads", type=_positive, default=None, help="CPUs for both frameworks (default: all)")
    ts.add_argument("--json", action="store_true", help="one JSON line per model")
    ts.set_defaults(func=_cmd_train_step)
    from freqjax.compress.cli import add_parser as add_compress_parser

    add_compress_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    if args.command == "dct":
        mult = 16 if args.chroma == "420" else 8
        if args.size % mult:
            _parser().error(f"--size must be a multiple of {mult} for --chroma {args.chroma}, got {args.size}")
    if args.command in ("latency", "train-step"):
        _check_latency_args(args)
    if args.command == "train-step":
        _check_train_step_args(args)
    if args.command == "compress":
        try:
            args.func(args)
        except ValueError as e:  # bad settings for this model: a usage error, nothing was written
            _parser().error(str(e))
        return
    args.func(args)


def _check_latency_args(args: argparse.Namespace) -> None:
    from freqjax.latency import available_cpus
    from freqjax.models import list_models, model_info

    args.models = args.models or list_models()
    try:
        for name in args.models:
            model_info(name)
    except ValueError as e:
        _parser().error(str(e))
    if args.command == "latency" and not args.batch:
        _parser().error("--batch needs at least one batch size")
    if args.warmup < 0:
        _parser().error(f"--warmup must be >= 0, got {args.warmup}")
    have = available_cpus()
    args.threads = args.threads or have
    if args.threads > have:
        _parser().error(f"--threads {args.threads} is more than the {have} CPUs this process may use")
    if args.threads < have and not hasattr(os, "sched_setaffinity"):
        _parser().error(f"--threads below {have} needs os.sched_setaffinity (Linux)")


def _check_train_step_args(args: argparse.Namespace) -> None:
    from freqjax.train_bench import PATHS, _input_shape, default_size

    bad = [p for p in args.paths if p not in PATHS]
    if bad or not args.paths:
        _parser().error(f"--paths must be a non-empty subset of {','.join(PATHS)}, got {','.join(args.paths)}")
    try:
        for name in args.models:
            _input_shape(name, args.size or default_size(name))
    except ValueError as e:
        _parser().error(str(e))


if __name__ == "__main__":
    from freqjax.runtime import reexec_with_malloc_tuning

    reexec_with_malloc_tuning()
    main(sys.argv[1:])
