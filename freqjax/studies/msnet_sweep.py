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
    """The ``msnet_sweep`` job: sweep a trained MSNet run's newest checkpoint over its evaluation split.

    ``python -m freqjax.main --config configs/msnet.py:msnet_resnet18 --workdir RUN --mode msnet_sweep``
    (the config and overrides the run was trained with). Thresholds 0, 0.1, ..., 1; the model's
    own weights (not the EMA copy); one process (the predictions are gathered on the host).
    Writes ``RUN/msnet_sweep/sweep.{csv,md,png}`` and returns the rows.
    """
    from freqjax.train import steps
    from freqjax.train.loop import Setup

    if jax.process_count() > 1:
        raise ValueError(f"--mode msnet_sweep runs on one process, got {jax.process_count()}")
    setup = Setup(config, workdir)  # validates the config; the model is built, nothing compiled yet
    check_model(setup.model)
    state, step = setup.restore_newest()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    outputs, labels = [], []
    for batch in setup.eval_batches():
        real = np.asarray(batch["mask"]) > 0
        images = steps.to_model_input(jnp.asarray(batch["image"]), setup.input_kind)
        outputs.append([a[real] for a in two_exit_predictions(setup.model, variables, images)])
        labels.append(np.asarray(batch["label"])[real])
    conf, pred_low, pred_high = (np.concatenate(p) for p in zip(*outputs, strict=True))
    side = config.image_size
    rows = threshold_rows(
        setup.model,
        (side, side, 3),
        (conf, pred_low, pred_high),
        np.concatenate(labels),
        DEFAULT_THRESHOLDS,
        name=config.model,
    )
    table = _markdown(rows)
    print(table, flush=True)
    paths = _write(rows, table, str(Path(workdir) / "msnet_sweep"), config.model)
    return {"step": step, "images": int(conf.shape[0]), "rows": rows, "paths": paths}


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
