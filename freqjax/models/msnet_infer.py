"""MSNet inference with classifier calibration (paper section 3.3, Figure 4b).

:func:`calibrated_predict` runs Network-L on the whole batch, keeps its prediction where its
maximum softmax probability is above the threshold ("larger than", as the paper's text says),
and runs Network-H, reusing L's feature maps, only on the other images. That sub-batch is padded
to one of a few bucket sizes (powers of two up to the batch size) so XLA compiles each bucket
once, not every count; the padding rows repeat a real image and are dropped. The saving is real
compute: images that exit at L never enter H.

Threshold 0 sends every image out at L (a maximum probability is at least 1/classes > 0);
threshold 1 sends every image through H. Costs are MACs per image (conv and dense layers, the
papers' convention, :func:`freqjax.models.counting.count_macs`): MACs(L) for an early exit,
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

from freqjax.models.counting import count_macs
from freqjax.models.msnet import MSNet

__all__ = [
    "EXIT_HIGH",
    "EXIT_LOW",
    "CalibratedOutput",
    "bucket_sizes",
    "calibrated_predict",
    "check_images",
    "check_model",
    "check_threshold",
    "exit_macs",
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


def check_model(model: object) -> MSNet:
    if not isinstance(model, MSNet):
        raise TypeError(f"model must be an MSNet (create_model('msnet_...')), got {type(model).__name__}")
    return model


def check_images(images: object) -> np.ndarray | jax.Array:
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
    model = check_model(model)
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
    model = check_model(model)
    images = check_images(images)
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

    The reference :func:`calibrated_predict` must agree with, and what
    :func:`freqjax.studies.msnet_sweep.sweep` selects from.
    """
    model = check_model(model)
    images = jnp.asarray(check_images(images), jnp.float32)
    return tuple(np.asarray(a) for a in _both_pass(model, variables, images))
