"""Accuracy against compression ratio: the paper's reordered DCT and its two baselines, before and after fine-tuning.

    python -m freqjax.studies.compression_curve --from runs/cifar --ratios 2,4,8 --out runs/curve

For every ratio r and method (``dct``, ``dct_no_reorder``, ``l1``: the same kept values per
layer) one compression job (:mod:`freqjax.studies.compression`) runs in ``OUT/<method>_r<r>/``
with the one-epoch recipe of ``configs/compress.py`` (``--long``: the 20-epoch one) and a
``uniform`` plan of g = 4 and rate r (the paper's Table 1; ``--strategy progressive_g``: rate r
with the paper's per-layer g). The model and data come from the source run's
``run_config.json``; ``--set FIELD=VALUE`` overrides any config field (e.g.
``--set num_train_steps=100``). Writes ``OUT/curve.csv``, ``OUT/curve.md`` and ``OUT/curve.png``
(top-1 against the measured ratio of parameters, index entries included). A finished cell (its
``report.json`` exists) is read, not rerun; an unfinished one resumes from its checkpoints. Every
cell's config, source and plan are checked before the first one runs: a bad ratio or method is
one line and nothing is written.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

from freqjax.runtime import atomic_path

__all__ = ["cell_config", "main", "write_curve"]

_FROM_RUN = ("model", "model_options", "dataset", "data_dir", "image_size", "crop_pct", "num_classes", "decode_cache")


def _ratios(text: str) -> list[float]:
    try:
        ratios = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--ratios must be comma-separated numbers >= 1 such as 2,4,8, got {text!r}") from None
    if not ratios or any(not r >= 1 for r in ratios):
        raise ValueError(f"--ratios must be comma-separated numbers >= 1 such as 2,4,8, got {text!r}")
    return ratios


def _value(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a plain string, e.g. --set dataset=folder:/data/cifar10-jpeg


def cell_config(source: str, method: str, ratio: float, *, strategy: str, g: int, long: bool, overrides: dict):
    """The compression job's config for one cell of the curve."""
    from freqjax.studies.compression import compress_config

    c = compress_config(f"{strategy}_long" if long else strategy)
    run_config = Path(source) / "run_config.json"
    if run_config.is_file():  # the trained run's model and data
        saved = json.loads(run_config.read_text())
        for field in _FROM_RUN:
            if field in saved:
                c[field] = saved[field] if field != "model_options" else type(c.model_options)(saved[field])
    c.init_from = source
    c.compression.method, c.compression.r, c.compression.g = method, float(ratio), g
    for field, value in overrides.items():
        node, *parents = c, *field.split(".")[:-1]
        for p in parents:
            if p not in node:
                raise ValueError(f"--set {field}: the config has no group {p!r}")
            node = node[p]
        if field.split(".")[-1] not in node:
            raise ValueError(f"--set {field}: no such config field; e.g. num_train_steps, eval_steps, dataset")
        node[field.split(".")[-1]] = value
    return c


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def write_curve(rows: list[dict], original: dict | None, out: Path, title: str) -> dict[str, str]:
    """curve.csv, curve.md and curve.png (if matplotlib is installed) in ``out``; returns the paths."""
    fields = ["method", "r", "kept_values", "index_entries", "parameters", "bytes", "param_ratio", "bytes_ratio"]
    fields += ["top1_before", "top1_after"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in fields} for row in rows)
    paths = {"csv": str(out / "curve.csv"), "md": str(out / "curve.md")}
    with atomic_path(paths["csv"]) as tmp:
        Path(tmp).write_text(buf.getvalue())
    lines = [f"# {title}", ""]
    if original is not None:
        lines += [
            f"Original: top-1 {original['top1']:.4f}, {original['total']:,} parameters, {original['bytes']:,} bytes.",
            "",
        ]
    lines += [
        "| method | r | kept values | index entries | parameters | bytes | ratio (params) | ratio (bytes) "
        "| top-1 before | top-1 after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['r']:g} | {row['kept_values']:,} | {row['index_entries']:,} | "
            f"{row['parameters']:,} | {row['bytes']:,} | {_fmt(row['param_ratio'], 2)} | "
            f"{_fmt(row['bytes_ratio'], 2)} | "
            f"{row['top1_before']:.4f} | {row['top1_after']:.4f} |"
        )
    with atomic_path(paths["md"]) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no curve.png (pip install matplotlib)", file=sys.stderr)
        return paths
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["r"])
        x = [r["param_ratio"] or r["r"] for r in mine]
        colour = f"C{i}"
        ax.plot(x, [r["top1_after"] for r in mine], "o-", color=colour, label=f"{method}, fine-tuned")
        ax.plot(x, [r["top1_before"] for r in mine], "s--", color=colour, alpha=0.7, label=f"{method}, compressed")
    if original is not None:
        ax.axhline(original["top1"], color="grey", lw=1, label="original")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression ratio (original / compressed parameters, index entries included)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths["png"] = str(out / "curve.png")
    with atomic_path(paths["png"], ".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return paths


def _row(method: str, ratio: float, report: dict) -> dict:
    c = report["compressed"]
    return {
        "method": method,
        "r": ratio,
        "kept_values": c["coefficients"],
        "index_entries": c["index"],
        "parameters": c["total"],
        "bytes": c["bytes"],
        "param_ratio": report.get("param_ratio"),
        "bytes_ratio": report.get("bytes_ratio"),
        "top1_before": report["before"]["top1"],
        "top1_after": report["finetuned"]["top1"],
    }


def run(args: argparse.Namespace) -> dict:
    """Check every cell, run the unfinished ones, write the curve; returns {'rows', 'paths', 'seconds'}."""
    from freqjax.studies.compression import METHODS, CompressionJob

    start = time.perf_counter()
    ratios = _ratios(args.ratios)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"--methods must be among {list(METHODS)}, got {m!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} is a file; give a directory (created if missing)")
    if not Path(args.source).exists():
        raise ValueError(f"--from {args.source!r} does not exist; give the trained run's workdir or a weights file")
    overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set must be FIELD=VALUE, got {item!r}")
        overrides[field] = _value(value)
    cells = {}
    for ratio in ratios:  # every cell checked (config, source, plan) before anything is written
        for method in methods:
            config = cell_config(
                args.source, method, ratio, strategy=args.strategy, g=args.g, long=args.long, overrides=overrides
            )
            workdir = out / f"{method}_r{ratio:g}"
            cells[(method, ratio)] = (CompressionJob(config, str(workdir)), workdir)
    rows, original = [], None
    for (method, ratio), (job, workdir) in cells.items():
        report_path = workdir / "report.json"
        if not report_path.is_file():
            print(f"== {method}, r = {ratio:g}: {workdir}", flush=True)
            job.run()
        report = json.loads(report_path.read_text())
        original = report.get("original", original)
        rows.append(_row(method, ratio, report))
    model = next(iter(cells.values()))[0].config.model
    title = f"{model} from {args.source}: {args.strategy}" + (f", g={args.g}" if args.strategy == "uniform" else "")
    paths = write_curve(rows, original, out, title)
    seconds = time.perf_counter() - start
    print((out / "curve.md").read_text(), flush=True)
    print(f"wrote {', '.join(paths.values())} in {seconds:.0f} s", flush=True)
    return {"rows": rows, "paths": paths, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    """``python -m freqjax.studies.compression_curve``: bad arguments are one line, nothing written."""
    p = argparse.ArgumentParser(prog="python -m freqjax.studies.compression_curve", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="source", required=True, help="the trained run's workdir (or a weights file)")
    p.add_argument("--ratios", required=True, help="comma-separated compression rates r, e.g. 2,4,8")
    p.add_argument("--out", required=True, help="output directory (one job per cell inside)")
    p.add_argument("--methods", default="dct,dct_no_reorder,l1", help="comma-separated, default all three")
    p.add_argument("--strategy", choices=("uniform", "progressive_g"), default="uniform")
    p.add_argument("--g", type=int, default=4, help="rows of the (g, N/g) view (uniform)")
    p.add_argument("--long", action="store_true", help="the 20-epoch fine-tune instead of one epoch")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    args = p.parse_args(argv)
    try:
        run(args)
    except (ValueError, TypeError, OSError, KeyError) as err:
        if os.environ.get("FREQJAX_DEBUG") == "1":
            raise
        p.error(" ".join(str(err).split()))


if __name__ == "__main__":
    from freqjax.runtime import reexec_with_malloc_tuning

    reexec_with_malloc_tuning()  # the CPU's allocator settings, as python -m freqjax.main has them
    main()
