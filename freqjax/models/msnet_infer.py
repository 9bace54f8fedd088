"""MSNet inference with classifier calibration (paper section 3.3, Figure 4b) and the threshold sweep.

:func:`calibrated_predict` runs Network-L on the whole batch, keeps its prediction where its
maximum softmax probability is above the threshold ("larger than", as the paper's text says),
and runs Network-H, reusing L's feature maps, only on the other images. That sub-batch is padded
to one of a few bucket sizes (powers of two up to the batch size) so XLA compiles each bucket
once, not every count; the padding rows repeat a real image and are dropped. The saving is real
compute: images that exit at L never enter H.

Threshold 0 sends every image out at L (a maximum probability is at least 1/classes > 0);
threshold 1 sends every image through H. Costs are MACs per image (conv and dense layers, the
papers' convention, :func:`freqjax.profile.count_macs`): MACs(L) for an early exit,
MACs(L) + MACs(H) otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.counting import count_macs
from freqjax.models.msnet import MSNet

__all__ = [
    "EXIT_HIGH",
    "EXIT_LOW",
    "CalibratedOutput",
    "SweepResult",
    "bucket_sizes",
    "calibrated_predict",
    "check_threshold",
    "exit_macs",
    "sweep",
    "two_exit_predictions",
]

EXIT_LOW, EXIT_HIGH = 0, 1


@dataclasses.dataclass(frozen=True)
class CalibratedOutput:
    """Per-image results of :func:`calibrated_predict`.

    Attributes:
        predictions: (N,) predicted class.
        exits: (N,) :data:`EXIT_LOW` (0, Network-L) or :data:`EXIT_HIGH` (1, Network-H).
        macs: (N,) multiply-accumulates the image cost.
        confidence: (N,) Network-L's maximum softmax probability.
    """

    predictions: np.ndarray
    exits: np.ndarray
    macs: np.ndarray
    confidence: np.ndarray

    @property
    def mean_macs(self) -> float:
        """Average MACs per image."""
        return float(self.macs.mean())

    @property
    def fraction_low(self) -> float:
        """Fraction of images that exited at Network-L."""
        return float(np.mean(self.exits == EXIT_LOW))


def check_threshold(threshold: object) -> float:
    """A real number in [0, 1], or ValueError naming the value."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1] (0: all exit at L, 1: all go to H), got {threshold!r}")
    return float(threshold)


def _check_model(model: object) -> MSNet:
    if not isinstance(model, MSNet):
        raise TypeError(f"model must be an MSNet (create_model('msnet_...')), got {type(model).__name__}")
    return model


def _check_images(images: object) -> np.ndarray | jax.Array:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3 or shape[0] < 1:
        raise ValueError(f"images must be a non-empty NHWC batch of RGB images (N, H, W, 3), got shape {shape}")
    if not jnp.issubdtype(images.dtype, jnp.number):
        raise TypeError(f"images must hold numbers, got dtype {images.dtype}")
    if shape[1] % 2 or shape[2] % 2:
        raise ValueError(f"image height and width must be even (Network-L sees them halved), got {shape[1]}x{shape[2]}")
    return images


def bucket_sizes(batch: int) -> tuple[int, ...]:
    """Sub-batch sizes Network-H is compiled for: 1, 2, 4, ... below ``batch``, then ``batch``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    sizes, b = [], 1
    while b < batch:
        sizes.append(b)
        b *= 2
    return (*sizes, batch)


@functools.cache
def exit_macs(model: MSNet, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(MACs of Network-L, MACs Network-H adds) per image of ``image_shape`` (H, W, 3)."""
    model = _check_model(model)
    total = count_macs(model, image_shape)
    low = count_macs(model, image_shape, method=MSNet.low_logits)
    return low, total - low


@functools.partial(jax.jit, static_argnums=0)
def _low_pass(model: MSNet, variables: Any, images: jax.Array):
    logits, feats = model.apply(variables, images, method=MSNet.forward_low)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.max(probs, axis=-1), jnp.argmax(logits, axis=-1), feats


@functools.partial(jax.jit, static_argnums=0)
def _high_pass(model: MSNet, variables: Any, images: jax.Array, feats: tuple, index: jax.Array):
    sub = tuple(f[index] for f in feats)
    logits = model.apply(variables, images[index], sub, method=MSNet.forward_high)
    return jnp.argmax(logits, axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _both_pass(model: MSNet, variables: Any, images: jax.Array):
    logits_low, logits_high = model.apply(variables, images)
    probs = jax.nn.softmax(logits_low.astype(jnp.float32), axis=-1)
    return jnp.max(probs, axis=-1), jnp.argmax(logits_low, axis=-1), jnp.argmax(logits_high, axis=-1)


def calibrated_predict(
    model: MSNet,
    variables: Any,
    images: np.ndarray | jax.Array,
    threshold: float,
    *,
    buckets: Sequence[int] | None = None,
) -> CalibratedOutput:
    """Early-exit predictions of an MSNet: Network-H runs only where Network-L is unsure.

    Args:
        model: an :class:`~freqjax.models.msnet.MSNet` (``create_model('msnet_resnet18', ...)``).
        variables: its variables (``{'params', 'batch_stats'}``).
        images: (N, H, W, 3) model input (normalised RGB), H and W even.
        threshold: in [0, 1]; an image exits at L when L's maximum softmax probability exceeds it.
        buckets: sub-batch sizes to pad Network-H's batch to (default :func:`bucket_sizes`);
            must include one >= N.

    Returns:
        A :class:`CalibratedOutput` with per-image predictions, exits and MACs.
    """
    model = _check_model(model)
    images = _check_images(images)
    threshold = check_threshold(threshold)
    n = images.shape[0]
    sizes = tuple(sorted(bucket_sizes(n) if buckets is None else buckets))
    if not sizes or sizes[-1] < n or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"buckets must be positive ints, the largest >= the batch size {n}, got {buckets!r}")
    images = jnp.asarray(images, jnp.float32)
    conf, pred_low, feats = _low_pass(model, variables, images)
    conf, predictions = np.asarray(conf), np.array(pred_low)
    exits = np.where(conf > threshold, EXIT_LOW, EXIT_HIGH)
    unsure = np.flatnonzero(exits == EXIT_HIGH)
    if unsure.size:
        size = next(b for b in sizes if b >= unsure.size)
        # Padding rows repeat the first unsure image; their predictions are dropped.
        index = np.concatenate([unsure, np.full(size - unsure.size, unsure[0])]).astype(np.int32)
        pred_high = np.asarray(_high_pass(model, variables, images, feats, jnp.asarray(index)))
        predictions[unsure] = pred_high[: unsure.size]
    low, high = exit_macs(model, tuple(int(d) for d in images.shape[1:]))
    macs = np.where(exits == EXIT_LOW, low, low + high).astype(np.int64)
    return CalibratedOutput(predictions, exits, macs, conf)


def two_exit_predictions(model: MSNet, variables: Any, images: np.ndarray | jax.Array) -> tuple[np.ndarray, ...]:
    """Both networks on every image: (L's max probability, L's prediction, H's prediction).

    The reference :func:`calibrated_predict` must agree with, and what the sweep selects from.
    """
    model = _check_model(model)
    images = jnp.asarray(_check_images(images), jnp.float32)
    return tuple(np.asarray(a) for a in _both_pass(model, variables, images))


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
    model = _check_model(model)
    images = _check_images(images)
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
    side = int(images.shape[1])
    low, high = exit_macs(model, tuple(int(d) for d in images.shape[1:]))
    rows = []
    for t in thresholds:
        exit_low = conf > t
        top1 = float(np.mean(np.where(exit_low, pred_low, pred_high) == labels))
        frac = float(exit_low.mean())
        rows.append(dict(network=name, setting=f"threshold {t:.2f}", threshold=t, side=side,
                         macs=low + (1.0 - frac) * high, top1=top1, fraction_low=frac))  # fmt: skip
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
