"""Benchmarks: ``python -m freqjax.bench <command> ...``.

Commands:
    dct      images/s of :func:`freqjax.dct.rgb_to_dct` (jitted, on the default jax device) side by
             side with the FUN reference's per-image path (encode a quality-100 JPEG with Pillow,
             read its coefficients back with libjpeg, repeat the chroma), in the same run
             (:mod:`freqjax.bench.dct_speed`).
    latency  forward ms/image of freqjax models (jit, eval mode) and of the same architectures in
             PyTorch/timm (eval, inference_mode) on the same CPU and thread count, with the ratio
             torch / freqjax (> 1: freqjax faster) and the eFUN / EfficientNet-B0 speed ratio
             (:mod:`freqjax.bench.latency`).
    train-step
             training-step images/s of freqjax (default CPU path), freqjax with XLA's own
             convolutions and the same architecture in PyTorch, in one run
             (:mod:`freqjax.bench.train_step`).
    compress DCT weight compression of a whole network: time per layer, counts, nSSE; the same
             command as ``python -m freqjax.compress`` (:mod:`freqjax.compress.cli`).

Example::

    python -m freqjax.bench dct --batch 256 --size 224
    python -m freqjax.bench latency --models efun,efficientnet_b0 --batch 1,64
    python -m freqjax.bench train-step --models cifar_resnet8,mobilenetv2_100,efun_s_plus

Methods and current figures: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence


def _cmd_dct(args: argparse.Namespace) -> None:
    from freqjax.bench.dct_speed import bench_dct

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
    """Pin the process to ``threads`` CPUs before JAX starts (:func:`freqjax.bench.timing.limit_cpus`)."""
    from freqjax.bench.timing import limit_cpus

    warning = limit_cpus(threads)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _cmd_latency(args: argparse.Namespace) -> None:
    from freqjax.bench.latency import run_latency

    _pin_cpus(args.threads)
    run_latency(
        args.models,
        args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        impl=None if args.conv_impl == "default" else args.conv_impl,
        dtype=args.dtype,
        threads=args.threads,
        torch=not args.no_torch,
        as_json=args.json,
    )


def _cmd_train_step(args: argparse.Namespace) -> None:
    from freqjax.bench.train_step import run_train_step

    _pin_cpus(args.threads)
    run_train_step(
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
    from freqjax.ops import CONV_IMPLS

    p = argparse.ArgumentParser(prog="python -m freqjax.bench", description=__doc__.split("\n\n")[0])
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
    lat.add_argument(
        "--conv-impl",
        choices=["default", *CONV_IMPLS],
        default="default",
        help="conv implementation of freqjax (freqjax.ops.backend; default: the backend's)",
    )
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
    from freqjax.bench.train_step import DEFAULT_PATHS, PATHS

    ts.add_argument(
        "--paths",
        type=_names,
        default=list(DEFAULT_PATHS),
        help=f"subset of {','.join(PATHS)} (freqjax_native / _cpu / _xla: that conv_impl; freqjax: the default)",
    )
    ts.add_argument("--repeats", type=_positive, default=5)
    ts.add_argument("--warmup", type=int, default=8, help="untimed steps after compilation (the first ~5 are slow)")
    ts.add_argument("--threads", type=_positive, default=None, help="CPUs for both frameworks (default: all)")
    ts.add_argument("--json", action="store_true", help="one JSON line per model")
    ts.set_defaults(func=_cmd_train_step)
    from freqjax.compress.cli import add_arguments as add_compress_arguments

    add_compress_arguments(sub.add_parser("compress", help="DCT weight compression of a whole network (timed)"))
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
    from freqjax.bench.timing import available_cpus
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
    from freqjax.bench.train_step import PATHS, default_size, input_shape

    bad = [p for p in args.paths if p not in PATHS]
    if bad or not args.paths:
        _parser().error(f"--paths must be a non-empty subset of {','.join(PATHS)}, got {','.join(args.paths)}")
    try:
        for name in args.models:
            input_shape(name, args.size or default_size(name))
    except ValueError as e:
        _parser().error(str(e))


if __name__ == "__main__":
    from freqjax.runtime import reexec_with_malloc_tuning

    reexec_with_malloc_tuning()
    main(sys.argv[1:])
