"""MSNet's threshold sweep: top-1 against average MACs over calibration thresholds (paper Figure 5).

From "High Frequency Residual Learning for Multi-Scale Image Classification" (Cheng et al.):
both networks run once on every image (:func:`freqjax.models.msnet_infer.two_exit_predictions`);
each threshold then selects per image what :func:`freqjax.models.msnet_infer.calibrated_predict`
computes, so the sweep costs one two-network pass however many thresholds it has. The plain base
network at several input sizes gives the single-scale points to compare against.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.models.counting import count_macs
from freqjax.models.msnet import MSNet
from freqjax.models.msnet_infer import check_images, check_model, check_threshold, exit_macs, two_exit_predictions
from freqjax.studies.eval_split import evaluation_images, load_plain_run, predict_eval_split, top1_of, write_csv
from freqjax.studies.msnet_calibration import ExitOutputs, Point, calibrate, split_indices, threshold_points

__all__ = ["DEFAULT_THRESHOLDS", "SweepResult", "run_msnet_sweep", "sweep", "threshold_rows"]


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`sweep` measured and wrote.

    Attributes:
        rows: one dict per point: network, setting, threshold (None for the base network),
            side, macs (average per image), top1 (fraction), fraction_low (None for the base).
        table: the rows as a Markdown table.
        paths: files written ('csv', 'table', 'plot'), empty without ``out_dir``.
    """

    rows: tuple[dict, ...]
    table: str
    paths: dict[str, str]


def _batches(images: Any, batch_size: int):
    """Fixed-size batches (the last padded by repeating its first row) and the real row counts."""
    n = images.shape[0]
    for start in range(0, n, batch_size):
        chunk = np.asarray(images[start : start + batch_size], np.float32)
        real = chunk.shape[0]
        if real < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
        yield jnp.asarray(chunk), real


@functools.partial(jax.jit, static_argnums=(0, 3))
def _base_predict(model: Any, variables: Any, images: jax.Array, side: int) -> jax.Array:
    resized = jax.image.resize(images, (images.shape[0], side, side, images.shape[-1]), "linear")
    return jnp.argmax(model.apply(variables, resized), axis=-1)


def sweep(
    model: MSNet,
    variables: Any,
    images: np.ndarray,
    labels: np.ndarray,
    thresholds: Sequence[float],
    *,
    base: tuple[Any, Any] | None = None,
    base_sizes: Sequence[int] = (),
    batch_size: int = 64,
    out_dir: str | None = None,
    name: str = "MSNet",
) -> SweepResult:
    """Top-1 against average MACs per image over calibration thresholds (paper Figure 5).

    Both networks run once on every image (:func:`two_exit_predictions`); each threshold then
    selects per image exactly what :func:`calibrated_predict` computes (tested equal), so the
    sweep costs one two-network pass however many thresholds it has. With ``base=(model,
    variables)`` the plain base network is evaluated on the images resized (bilinear) to each of
    ``base_sizes``, the paper's single-scale points.

    Args:
        model, variables: the MSNet and its variables.
        images: (N, H, W, 3) model input, H and W even; labels: (N,) int classes.
        thresholds: values in [0, 1].
        base: (plain base network, its variables), e.g. ``create_model('resnet18')``.
        base_sizes: square sides to evaluate the base network at.
        batch_size: images per forward pass.
        out_dir: where to write ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (None: nothing).
        name: the MSNet's label in the table and plot.

    Returns:
        A :class:`SweepResult`.
    """
    model = check_model(model)
    images = check_images(images)
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be ({images.shape[0]},) ints, got shape {labels.shape}, dtype {labels.dtype}")
    thresholds = [check_threshold(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds must hold at least one value in [0, 1]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if base_sizes and base is None:
        raise ValueError(f"base_sizes {tuple(base_sizes)} given without base=(model, variables)")

    parts = [
        [a[:real] for a in two_exit_predictions(model, variables, chunk)]
        for chunk, real in _batches(images, batch_size)
    ]
    conf, pred_low, pred_high = (np.concatenate(p) for p in zip(*parts, strict=True))
    shape = tuple(int(d) for d in images.shape[1:])
    rows = threshold_rows(model, shape, (conf, pred_low, pred_high), labels, thresholds, name=name)
    if base is not None:
        base_model, base_variables = base
        for s in base_sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s < 1:
                raise ValueError(f"base_sizes must be positive ints, got {s!r}")
            preds = np.concatenate(
                [
                    np.asarray(_base_predict(base_model, base_variables, c, s))[:r]
                    for c, r in _batches(images, batch_size)
                ]
            )
            rows.append(dict(network=type(base_model).__name__, setting=f"{s} px", threshold=None, side=s,
                             macs=float(count_macs(base_model, (s, s, images.shape[-1]))),
                             top1=float(np.mean(preds == labels)), fraction_low=None))  # fmt: skip
    table = _markdown(rows)
    paths = {} if out_dir is None else _write(rows, table, out_dir, name)
    return SweepResult(tuple(rows), table, paths)


def threshold_rows(
    model: MSNet,
    image_shape: tuple[int, int, int],
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
    labels: np.ndarray,
    thresholds: Sequence[float],
    *,
    name: str = "MSNet",
) -> list[dict]:
    """One row per threshold (see :func:`sweep`'s rows) from ``outputs``, what
    :func:`two_exit_predictions` gives for every image: (L's confidence, L's and H's predictions)."""
    conf, pred_low, pred_high = outputs
    low, high = exit_macs(model, image_shape)
    rows = []
    for t in thresholds:
        exit_low = conf > t
        top1 = float(np.mean(np.where(exit_low, pred_low, pred_high) == labels))
        frac = float(exit_low.mean())
        rows.append(dict(network=name, setting=f"threshold {t:.2f}", threshold=t, side=image_shape[0],
                         macs=low + (1.0 - frac) * high, top1=top1, fraction_low=frac))  # fmt: skip
    return rows


DEFAULT_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(11))


def run_msnet_sweep(config: Any, workdir: str) -> dict:
    """The ``msnet_sweep`` job: a trained MSNet run's newest checkpoint against its plain base network.

    ``python -m freqjax.studies.msnet_sweep --config configs/msnet.py:VARIANT --workdir RUN
    --config.msnet_sweep.base_from=BASE_RUN`` (the config and overrides the run was trained with).
    On the run's evaluation split (``config.eval_steps`` batches at most), sharded over the devices:

    - the MSNet at thresholds 0, ``threshold_step``, ..., 1 (the paper's Figure 5 curve);
    - the plain base network of ``BASE_RUN`` (its ``run_config.json`` names the model) at each of
      ``base_sizes``, through the run's evaluation transform (resize, then the centre crop of
      ``eval_augment`` / ``crop_pct``: the paper's resize -> crop), and the paper's multi-scale
      test (the softmax probabilities at half and full size averaged; the MACs of both);
    - calibrated thresholds: on a seeded ``calibration_fraction`` of the images, the threshold that
      matches each base point's accuracy at the fewest MACs and the one most accurate within its
      MACs (:func:`freqjax.studies.msnet_calibration.calibrate`); every reported number comes
      from the other images.

    The model's own weights (not the EMA copy). Writes ``RUN/msnet_sweep/sweep.{md,csv,png}`` and
    ``calibrated.csv``; returns the rows.

    Raises:
        ValueError: before anything compiles: not an MSNet, a bad ``msnet_sweep`` field, a base run
            that is missing, of another class count or not an RGB network.
    """
    from freqjax.train.loop import Setup

    options = _sweep_options(config)
    setup = Setup(config, workdir)  # validates the config; the model is built, nothing compiled yet
    check_model(setup.model)
    side = int(config.image_size)
    sizes = options["base_sizes"] or (side // 2, (3 * side) // 4, side)
    base = (
        load_plain_run(options["base_from"], setup.num_classes, "msnet_sweep.base_from")
        if options["base_from"]
        else None
    )
    n = evaluation_images(setup)
    calibration, report = split_indices(n, options["calibration_fraction"] if base else 0.0, config.seed)
    state, step = setup.restore_newest()

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    (conf, pred_low, pred_high), labels = predict_eval_split(
        setup, _exit_outputs(setup.model, setup.input_kind), variables, side
    )
    macs_low, macs_high = exit_macs(setup.model, (side, side, 3))
    outputs = ExitOutputs(conf, pred_low, pred_high, labels, float(macs_low), float(macs_high))
    step_size = options["threshold_step"]
    thresholds = sorted({round(min(1.0, k * step_size), 6) for k in range(int(np.ceil(1 / step_size)) + 1)})
    points = threshold_points(outputs, thresholds, report, config.model)
    calibrated, targets = [], []
    if base is not None:
        model, variables, name = base
        probs = {}
        for s in sorted({*sizes, side // 2, side}):
            (probs[s],), _ = predict_eval_split(setup, _probabilities(model), variables, s)
        for s in sorted(probs):
            macs = float(count_macs(model, (s, s, 3)))
            targets.append(
                tuple(Point(name, f"{s} px", macs, top1_of(probs[s], labels, i)) for i in (calibration, report))
            )
        mean = (probs[side // 2] + probs[side]) / 2  # the paper's multi-scale test
        macs = float(count_macs(model, (side // 2, side // 2, 3)) + count_macs(model, (side, side, 3)))
        setting = f"multi-scale test ({side // 2} + {side} px)"
        targets.append(tuple(Point(name, setting, macs, top1_of(mean, labels, i)) for i in (calibration, report)))
        points += [on_report for _, on_report in targets]
        fine = [round(0.01 * k, 2) for k in range(101)]  # calibration grid
        calibrated = calibrate(outputs, fine, calibration, report, targets)
    out_dir = Path(workdir) / "msnet_sweep"
    table = _job_markdown(points, calibrated, len(report), len(calibration))
    print(table, flush=True)
    rows = [dataclasses.asdict(p) for p in points]
    paths = _write(rows, table, str(out_dir), config.model) if jax.process_index() == 0 else {}
    if calibrated and jax.process_index() == 0:
        paths["calibrated"] = write_csv(calibrated, out_dir / "calibrated.csv")
    return {"step": step, "images": len(report), "calibration_images": len(calibration), "rows": rows,
            "calibrated": calibrated, "paths": paths}  # fmt: skip


def _sweep_options(config: Any) -> dict:
    """``config.msnet_sweep`` checked (one line per bad field), with defaults where absent."""
    given = dict(config.get("msnet_sweep") or {})
    options = dict(base_from="", base_sizes=(), calibration_fraction=0.5, threshold_step=0.05) | given
    step = options["threshold_step"]
    if isinstance(step, bool) or not isinstance(step, int | float) or not 0.0 < step <= 1.0:
        raise ValueError(f"msnet_sweep.threshold_step must be a number in (0, 1], got {step!r}")
    sizes = options["base_sizes"]
    if isinstance(sizes, int | str) or any(isinstance(s, bool) or not isinstance(s, int) or s < 8 for s in sizes):
        raise ValueError(f"msnet_sweep.base_sizes must be a tuple of ints >= 8 (image sides), got {sizes!r}")
    options["base_sizes"] = tuple(sizes)
    split_indices(10, options["calibration_fraction"], 0)  # the range check
    return options


def _exit_outputs(model: MSNet, input_kind: str):
    from freqjax.train.steps import to_model_input

    def outputs(variables, images):
        logits_low, logits_high = model.apply(variables, to_model_input(images, input_kind))
        conf = jnp.max(jax.nn.softmax(logits_low.astype(jnp.float32), axis=-1), axis=-1)
        return conf, jnp.argmax(logits_low, axis=-1), jnp.argmax(logits_high, axis=-1)

    return outputs


def _probabilities(model: Any):
    from freqjax.train.steps import to_model_input

    def probabilities(variables, images):
        return (jax.nn.softmax(model.apply(variables, to_model_input(images, "rgb")).astype(jnp.float32), axis=-1),)

    return probabilities


def _job_markdown(points: list[Point], calibrated: list[dict], n_report: int, n_calibration: int) -> str:
    lines = [f"Top-1 on {n_report} evaluation images"]
    if n_calibration:
        lines[0] += f" (thresholds below calibrated on {n_calibration} other images)"
    lines += ["", "| network | setting | MMACs / image | top-1 % | exit at L % |", "|---|---|---|---|---|"]
    for p in points:
        frac = "" if p.fraction_low is None else f"{100 * p.fraction_low:.1f}"
        lines.append(f"| {p.network} | {p.setting} | {p.macs / 1e6:.2f} | {100 * p.top1:.2f} | {frac} |")
    if calibrated:
        lines += ["", "| compared with | calibrated for | threshold | MSNet top-1 % | its top-1 % | gain (points) "
                  "| MSNet MMACs | its MMACs | MACs ratio |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in calibrated:
            if r["threshold"] is None:
                lines.append(f"| {r['target']} | {r['criterion']} | none meets it | | {100 * r['target_top1']:.2f} "
                             f"| | | {r['target_macs'] / 1e6:.2f} | |")  # fmt: skip
                continue
            lines.append(
                f"| {r['target']} | {r['criterion']} | {r['threshold']:.2f} | {100 * r['top1']:.2f} "
                f"| {100 * r['target_top1']:.2f} | {100 * r['top1_gain']:+.2f} | {r['macs'] / 1e6:.2f} "
                f"| {r['target_macs'] / 1e6:.2f} | {r['macs_ratio']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def _markdown(rows: list[dict]) -> str:
    lines = ["| network | setting | MMACs / image | top-1 % | exit at L % |", "|---|---|---|---|---|"]
    for r in rows:
        frac = "" if r["fraction_low"] is None else f"{100 * r['fraction_low']:.1f}"
        lines.append(f"| {r['network']} | {r['setting']} | {r['macs'] / 1e6:.1f} | {100 * r['top1']:.2f} | {frac} |")
    return "\n".join(lines) + "\n"


def _write(rows: list[dict], table: str, out_dir: str, name: str) -> dict[str, str]:
    import csv
    import os

    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in threads and tests

    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"sweep.{ext}") for k, ext in (("csv", "csv"), ("table", "md"), ("plot", "png"))}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["table"], "w") as f:
        f.write(table)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ms = sorted((r for r in rows if r["threshold"] is not None), key=lambda r: r["macs"])
    ax.plot([r["macs"] / 1e6 for r in ms], [100 * r["top1"] for r in ms], "k.-", label=f"{name} (thresholds)")
    plain = sorted((r for r in rows if r["threshold"] is None), key=lambda r: r["macs"])
    if plain:
        ax.plot([r["macs"] / 1e6 for r in plain], [100 * r["top1"] for r in plain], "o--", label=plain[0]["network"])
        for r in plain:
            ax.annotate(r["setting"], (r["macs"] / 1e6, 100 * r["top1"]), fontsize=8)
    ax.set_xlabel("average MMACs per image")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(paths["plot"], dpi=100, bbox_inches="tight")
    return paths


if __name__ == "__main__":  # python -m freqjax.studies.msnet_sweep --config configs/msnet.py:VARIANT --workdir RUN
    from freqjax.main import run

    run(forced_mode="msnet_sweep")
