"""``python -m freqjax.compress``: compress a whole network, time it, report it.

Example::

    python -m freqjax.compress --model resnet50 --g 4 --strategy progressive_r --r-prime 1 \\
        --weights resnet50.pth --out r50_g4_rp1.npz --report runs/compress_r50

Weights come from a PyTorch state_dict (``--weights *.pth``, converted strictly), a freqjax
variables dict saved with :func:`freqjax.compress.save` (``--weights *.npz``) or, without
``--weights``, from random He-normal weights (the timing is the same; nSSE then
describes random filters). Prints one line per layer as it finishes (g, r, t, nSSE, seconds), the
totals (:func:`freqjax.compress.count`) and the wall time; ``--out`` writes the compressed
checkpoint, ``--report`` a folder with report.json and the nSSE-vs-kept-fraction curves (CSV and
SVG) of one layer for no reordering and reordering at g = 64, 16, 4 (the paper's section 4.1).
Arguments are checked and output paths validated before any work; files are written only at the
end, each complete or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from freqjax.compress.ordering import DISTANCES, STARTS
from freqjax.compress.plan import STRATEGIES
from freqjax.runtime import atomic_path

__all__ = ["add_arguments", "main", "nsse_curves", "run"]

_FRACTIONS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0)
_CURVE_GROUPS = (64, 16, 4)


def _positive_int(v: str) -> int:
    i = int(v)
    if i < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return i


def add_arguments(c: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the compress command's arguments to ``c`` (its own parser, or ``python -m freqjax.bench compress``'s)."""
    c.add_argument("--model", required=True, help="registered model name, e.g. resnet50, mobilenetv2_100")
    c.add_argument(
        "--weights",
        default=None,
        help="PyTorch state_dict (.pth/.pt) or freqjax variables saved by freqjax.compress.save (.npz); "
        "default: random init",
    )
    c.add_argument("--rule", default=None, help="preset or comma-separated glob patterns (default: the model's preset)")
    c.add_argument("--strategy", choices=list(STRATEGIES), default="uniform")
    c.add_argument("--g", type=_positive_int, default=None, help="rows of the (g, N/g) view (default 4)")
    c.add_argument("--r", type=float, default=None, help="compression rate >= 1 (uniform, progressive_g)")
    c.add_argument("--r-prime", type=float, default=None, help="the paper's r' > 0 (progressive_r)")
    c.add_argument("--distance", choices=list(DISTANCES), default="euclidean")
    c.add_argument("--start", choices=list(STARTS), default="l2")
    c.add_argument("--workers", type=_positive_int, default=None, help="threads (default: all CPUs)")
    c.add_argument("--out", default=None, help="write the compressed checkpoint here (.npz)")
    c.add_argument("--report", default=None, help="write report.json and the nSSE curves into this folder")
    c.add_argument("--curve-layer", default=None, help="layer of the nSSE curves (default: a mid-size 1x1 conv)")
    c.add_argument(
        "--verify-columns",
        type=int,
        default=0,
        help="re-order every layer with at most this many columns by brute force and compare (0: off)",
    )
    c.add_argument("--seed", type=int, default=0, help="random-init seed when no --weights")
    c.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")
    c.set_defaults(func=run)
    return c


def _check_paths(args: argparse.Namespace) -> None:
    if args.out is not None:
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out) or not os.path.isdir(folder):
            raise ValueError(f"--out {args.out!r} must be a file path in an existing folder")
    if args.report is not None and os.path.exists(args.report) and not os.path.isdir(args.report):
        raise ValueError(f"--report {args.report!r} exists and is not a folder")
    if args.weights is not None and not os.path.isfile(args.weights):
        raise ValueError(f"--weights {args.weights!r} is not a file")
    if args.verify_columns < 0:
        raise ValueError(f"--verify-columns must be >= 0, got {args.verify_columns}")


def _variables(args: argparse.Namespace) -> dict:
    import jax

    from freqjax.models import abstract_variables, create_model, model_info, random_variables

    info = model_info(args.model)
    if args.weights is not None and args.weights.endswith(".npz"):
        from freqjax.compress.storage import load
        from freqjax.compress.tree import CompressedTensor

        variables = load(args.weights)  # a freqjax variables dict written by freqjax.compress.save
        if any(
            isinstance(x, CompressedTensor)
            for x in jax.tree.leaves(variables, is_leaf=lambda x: isinstance(x, CompressedTensor))
        ):
            raise ValueError(f"--weights {args.weights!r} is already compressed")
        return variables
    if args.weights is not None:
        from freqjax.interop.torch_weights import load_torch_checkpoint

        return load_torch_checkpoint(args.weights, args.model)
    # random He-normal weights (torchvision's ResNet init) in numpy: much faster than compiling
    # model.init for a large network, and the ordering takes the same time
    shapes = abstract_variables(create_model(args.model), (32, 32, info.input_shape[-1]))
    return random_variables(shapes, args.seed)


def nsse_curves(w_ref, fractions=_FRACTIONS, groups=_CURVE_GROUPS, distance: str = "euclidean") -> dict:
    """nSSE against the kept fraction for one reference-layout tensor (the paper's section 4.1).

    'none' is the layer's own (out, rest) matrix without reordering; 'g=K' reorders a (K, N/K)
    view. Returns {curve name: [nSSE per fraction]} (fractions of the coefficients kept).
    """
    import numpy as np

    from freqjax.compress.codec import dct_ortho, idct_ortho, nsse
    from freqjax.compress.ordering import greedy_order

    w = np.asarray(w_ref, np.float64)
    curves = {}
    settings = [("none", w.shape[0], False)] + [(f"g={g}", g, True) for g in groups if w.size % g == 0]
    for name, g, reorder in settings:
        view = w.reshape(g, -1)
        m = view.shape[1]
        order = greedy_order(view, distance) if reorder else np.arange(m)
        coef = dct_ortho(view[:, order])
        values = []
        for f in fractions:
            t = max(1, int(m * f))
            kept = np.zeros_like(coef)
            kept[:, :t] = coef[:, :t]
            rows = np.empty_like(view)
            rows[:, order] = idct_ortho(kept)
            values.append(nsse(view, rows))
        curves[name] = values
    return curves


def _svg(curves: dict, fractions, title: str) -> str:
    width, height, pad = 520, 360, 50
    colours = ["#444444", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]

    def xy(f: float, v: float) -> tuple[float, float]:
        return pad + f * (width - 2 * pad), height - pad - min(v, 1.0) * (height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<text x="{width / 2}" y="18" text-anchor="middle">{title}</text>',
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#000"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">fraction of DCT coefficients kept</text>',
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">nSSE</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = xy(tick, tick)
        parts.append(f'<text x="{x}" y="{height - pad + 14}" text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{tick:g}</text>')
    for i, (name, values) in enumerate(curves.items()):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(f, v) for f, v in zip(fractions, values, strict=True)))
        colour = colours[i % len(colours)]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - pad - 70}" y="{pad + 16 + 14 * i}" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _write_atomic(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def _curve_layer(plan, name: str | None):
    if name is not None:
        for layer in plan.layers:
            if name in (layer.name, "/".join(layer.path)):
                return layer
        raise ValueError(f"--curve-layer {name!r} is not a compressed layer; e.g. {plan.layers[0].name!r}")
    ones = sorted((x for x in plan.layers if len(x.ref_shape) == 4 and x.ref_shape[2:] == (1, 1)), key=lambda x: x.size)
    return (ones or sorted(plan.layers, key=lambda x: x.size))[len(ones or plan.layers) // 2]


def run(args: argparse.Namespace) -> dict:  # noqa: PLR0915  (one linear script)
    """Run the compress command; returns the report dict."""
    import numpy as np

    from freqjax.compress import codec, count, make_plan
    from freqjax.compress.ordering import greedy_order
    from freqjax.compress.plan import PRESETS
    from freqjax.compress.storage import save
    from freqjax.compress.tree import compress, to_reference
    from freqjax.models import model_info

    _check_paths(args)
    model_info(args.model)  # unknown model -> ValueError naming the known ones
    rule = args.rule or args.model
    if args.rule is None and rule not in PRESETS:
        raise ValueError(f"model {args.model!r} has no preset rule ({sorted(PRESETS)}); pass --rule PATTERNS")
    if rule not in PRESETS:
        rule = [p.strip() for p in rule.split(",") if p.strip()]
    start_all = time.perf_counter()
    variables = _variables(args)
    plan = make_plan(
        variables, rule, args.strategy, args.g, args.r, args.r_prime, distance=args.distance, start=args.start
    )
    curve_layer = _curve_layer(plan, args.curve_layer) if args.report else None
    load_s = time.perf_counter() - start_all
    rows = {}
    lock = threading.Lock()

    def on_layer(layer, node, seconds):
        coded = codec.CodedTensor(np.asarray(node.coef), np.asarray(node.index), layer.ref_shape)
        w = to_reference(np.asarray(_get_leaf(variables["params"], layer.path), np.float32))
        err = codec.nsse(w, codec.decode_numpy(coded))
        with lock:
            rows[layer.name] = {"g": layer.g, "r": round(layer.r, 4), "t": layer.t, "nsse": err, "seconds": seconds}
            print(
                f"  {layer.name:40s} {'x'.join(map(str, layer.ref_shape)):>16s} g={layer.g:<3d} r={layer.r:<8.3f} "
                f"t={layer.t:<7d} nSSE={err:.4f} {seconds:6.2f} s",
                flush=True,
            )

    print(f"compressing {len(plan.layers)} layers of {args.model} ({args.strategy}, {args.distance}):", flush=True)
    start = time.perf_counter()
    ctree = compress(variables, plan, workers=args.workers, on_layer=on_layer)
    compress_s = time.perf_counter() - start
    counts = count(ctree)
    report = {
        "model": args.model,
        "weights": args.weights or f"random init (seed {args.seed})",
        "strategy": args.strategy,
        "settings": dict(plan.settings),
        "distance": args.distance,
        "start": args.start,
        "counts": counts,
        "original_params": counts["uncompressed"] + counts["bn_affine"] + sum(x.size for x in plan.layers),
        "compress_seconds": round(compress_s, 2),
        "ordering_cpu_seconds_sum": round(sum(r["seconds"] for r in rows.values()), 2),
        "load_seconds": round(load_s, 2),
        "workers": args.workers or os.cpu_count(),
        "layers": {x.name: rows[x.name] for x in plan.layers},
    }
    if args.verify_columns:
        checked = []
        for layer in plan.layers:
            if layer.size // layer.g <= args.verify_columns:
                w = to_reference(np.asarray(_get_leaf(variables["params"], layer.path), np.float32))
                view = w.reshape(layer.g, -1)
                fast = greedy_order(view, args.distance, args.start)
                tick = time.perf_counter()
                brute = greedy_order(view, args.distance, args.start, method="brute")
                if not np.array_equal(fast, brute):
                    raise RuntimeError(f"k-d tree ordering differs from brute force on {layer.name}")
                checked.append(layer.name)
                took = time.perf_counter() - tick
                print(f"  {layer.name}: {view.shape[1]} columns, equal to brute force ({took:.1f} s)", flush=True)
        report["verified_against_brute_force"] = checked
        print(f"orderings equal to brute force on {len(checked)} layers (<= {args.verify_columns} columns)")
    for key in ("coefficients", "index", "uncompressed", "bn_affine", "bn_stats", "total", "trainable"):
        print(f"  {key:13s} {counts[key]:>12,d}")
    print(f"compressed in {compress_s:.1f} s wall ({report['workers']} threads); weights ready in {load_s:.1f} s")
    if curve_layer is not None:
        w = to_reference(np.asarray(_get_leaf(variables["params"], curve_layer.path), np.float32))
        curves = nsse_curves(w, distance=args.distance)
        report["curves"] = {"layer": curve_layer.name, "fractions": list(_FRACTIONS), "nsse": curves}
    if args.out is not None:
        size = save(ctree, args.out)
        report["checkpoint_bytes"] = size
        print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")
    if args.report is not None:
        os.makedirs(args.report, exist_ok=True)
        _write_atomic(os.path.join(args.report, "report.json"), json.dumps(report, indent=1))
        if curve_layer is not None:
            lines = ["fraction," + ",".join(curves)]
            lines += [f"{f}," + ",".join(f"{curves[c][i]:.6f}" for c in curves) for i, f in enumerate(_FRACTIONS)]
            _write_atomic(os.path.join(args.report, "nsse_curves.csv"), "\n".join(lines) + "\n")
            title = f"{args.model} {curve_layer.name} {'x'.join(map(str, curve_layer.ref_shape))}"
            _write_atomic(os.path.join(args.report, "nsse_curves.svg"), _svg(curves, _FRACTIONS, title))
        print(f"wrote report to {args.report}")
    if args.json:
        print(json.dumps(report))
    return report


def _get_leaf(params, path):
    for key in path:
        params = params[key]
    return params


def main(argv: list[str] | None = None) -> None:
    """``python -m freqjax.compress [arguments]``: bad arguments are one usage line, nothing written."""
    p = add_arguments(argparse.ArgumentParser(prog="python -m freqjax.compress", description=__doc__.split("\n")[0]))
    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, OSError) as e:  # bad settings or files: one line, nothing was written
        if os.environ.get("FREQJAX_DEBUG") == "1":
            raise
        p.error(" ".join(str(e).split()))
