"""Optimisers, schedules and losses of the papers' recipes, as optax transformations.

**TF-style RMSProp** (EfficientNet / eFUN; timm's ``rmsproptf``). TensorFlow's ``ApplyRMSProp``::

    ms  <- decay * ms + (1 - decay) * g^2          # ms starts at 1.0, not 0
    mom <- momentum * mom + lr_t * g / sqrt(ms + eps)
    w   <- w - mom

How ``optax.rmsprop(lr, decay, eps, momentum=...)`` relates (checked in tests/train/test_optim.py):

1. Accumulator start: optax's default ``initial_scale=0.0`` starts ``ms`` at 0, so the first
   steps divide by ``sqrt((1 - decay) g^2 + eps)``: updates ~3x larger than TF's. TF (and timm's
   RMSpropTF, which the FUN code trains with) start at 1.0: we pass ``initial_scale=1.0``.
2. Epsilon: TF adds it *inside* the square root (``sqrt(ms + eps)``), as optax's default
   ``eps_in_sqrt=True`` does. (The training issue's text says "outside"; TF's kernel and timm's
   RMSpropTF both put it inside, so we follow the code the recipe was tuned with.) optax's
   default eps is 1e-8; the recipe's is 1e-3, which caps the step of near-zero-gradient weights.
3. Learning rate: optax scales by it *before* the momentum trace, like TF, so the momentum buffer
   holds past steps at the rates they were taken with. (PyTorch's ``RMSprop`` -- timm's plain
   ``rmsprop`` -- does it after the trace, puts eps outside the root and starts ``ms`` at 0; it
   agrees with TF only for a constant rate and a large accumulator.)

So ``optax.rmsprop(lr, decay, eps, initial_scale=1.0, eps_in_sqrt=True, momentum=m)`` *is* TF's
RMSProp; :func:`rmsprop_tf` is that call with the recipe's defaults.

Weight decay is L2 added to the gradient before the optimiser (TF's loss term, torch's
``weight_decay``), only on conv/dense kernels: never BatchNorm scales/offsets nor biases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

__all__ = [
    "DECOUPLED_DECAY",
    "OPTIMIZERS",
    "SCHEDULES",
    "cross_entropy",
    "ema_update",
    "make_optimizer",
    "make_schedule",
    "rmsprop_tf",
    "trainable_labels",
    "weight_decay_mask",
]


def rmsprop_tf(
    learning_rate: float | optax.Schedule, decay: float = 0.9, momentum: float = 0.9, eps: float = 1e-3
) -> optax.GradientTransformation:
    """TensorFlow's RMSProp (see the module docstring): ms starts at 1, eps in the sqrt, lr inside momentum."""
    return optax.rmsprop(
        learning_rate, decay=decay, eps=eps, initial_scale=1.0, eps_in_sqrt=True, momentum=momentum or None
    )


def weight_decay_mask(params) -> object:
    """True for leaves that get weight decay: conv and dense kernels (ndim >= 2), not BN or biases."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def _warmup(schedule: Callable, base_lr: float, warmup_steps: int, init_lr: float) -> optax.Schedule:
    if warmup_steps <= 0:
        return schedule

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        warm = init_lr + (base_lr - init_lr) * step / warmup_steps
        return jnp.where(step < warmup_steps, warm, schedule(step))

    return lr


def _exponential(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int, warmup: int):
    """``lr * decay_rate ** floor(epoch / decay_epochs)``, epochs counted from step 0 (TF/timm staircase)."""
    lr, rate, decay_steps = float(config.learning_rate), float(config.decay_rate), config.decay_epochs * steps_per_epoch
    return lambda step: lr * rate ** jnp.floor(jnp.asarray(step, jnp.float32) / decay_steps)


def _piecewise(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int, warmup: int):
    """``lr`` times ``decay_rate`` at each epoch in ``boundaries``."""
    boundaries = [round(b * steps_per_epoch) for b in config.boundaries]
    return optax.piecewise_constant_schedule(
        float(config.learning_rate), {b: float(config.decay_rate) for b in boundaries}
    )


def _cosine(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int, warmup: int):
    """``lr`` to ``min_lr`` along a half cosine over the steps after warm-up."""
    lr, min_lr, span = float(config.learning_rate), float(config.min_lr), max(1, total_steps - warmup)

    def sched(step):
        t = jnp.clip((jnp.asarray(step, jnp.float32) - warmup) / span, 0.0, 1.0)
        return min_lr + (lr - min_lr) * 0.5 * (1 + jnp.cos(math.pi * t))

    return sched


def _constant(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int, warmup: int):
    """``lr``."""
    lr = float(config.learning_rate)
    return lambda step: jnp.full((), lr, jnp.float32) + 0.0 * jnp.asarray(step, jnp.float32)


# config.schedule -> (config, steps_per_epoch, total_steps, warmup_steps) -> schedule before warm-up.
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "exponential": _exponential,
    "piecewise": _piecewise,
    "cosine": _cosine,
    "constant": _constant,
}


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step, from ``config`` (epochs converted to steps).

    ``config.schedule`` names one of :data:`SCHEDULES`:
        exponential: ``lr * decay_rate ** floor(epoch / decay_epochs)`` with ``epoch = step /
            steps_per_epoch`` counted from step 0 (TF/timm staircase; eFUN: 0.97 every 2.4 epochs).
        piecewise: ``lr`` multiplied by ``decay_rate`` at each epoch in ``boundaries``
            (ResFUN: [90, 110] with 0.1; MSNet: [30, 60, 90]).
        cosine: ``lr`` to ``min_lr`` along a half cosine over the steps after warm-up.
        constant: ``lr``.
    All start with a linear warm-up from ``warmup_init_lr`` over ``warmup_epochs``.
    """
    if config.schedule not in SCHEDULES:
        raise ValueError(f"config.schedule must be one of {list(SCHEDULES)}, got {config.schedule!r}")
    warmup = round(config.warmup_epochs * steps_per_epoch)
    sched = SCHEDULES[config.schedule](config, steps_per_epoch, total_steps, warmup)
    return _warmup(sched, float(config.learning_rate), warmup, float(config.warmup_init_lr))


def trainable_labels(pattern: str):
    """Label function for ``optax.multi_transform``: 'train' where the '/'-joined path matches ``pattern``."""
    regex = re.compile(pattern)

    def labels(params):
        def label(path, _):
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            return "train" if regex.search(name) else "frozen"

        return jax.tree_util.tree_map_with_path(label, params)

    return labels


def _rmsprop_tf(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return rmsprop_tf(schedule, config.rmsprop_decay, config.momentum, config.rmsprop_eps)


def _sgd(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.sgd(schedule, momentum=config.momentum or None)


def _nesterov(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.sgd(schedule, momentum=config.momentum or None, nesterov=True)


def _adamw(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=weight_decay_mask)


# config.optimizer -> (config, schedule) -> the optimiser. DECOUPLED_DECAY ones apply
# config.weight_decay themselves; the others get L2 added to the gradient first.
OPTIMIZERS: dict[str, Callable[[ml_collections.ConfigDict, optax.Schedule], optax.GradientTransformation]] = {
    "rmsprop_tf": _rmsprop_tf,
    "sgd": _sgd,
    "nesterov": _nesterov,
    "adamw": _adamw,
}
DECOUPLED_DECAY = frozenset({"adamw"})


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Gradient clipping (optional) -> L2 weight decay on kernels -> the configured optimiser.

    ``config.optimizer`` names one of :data:`OPTIMIZERS`: 'rmsprop_tf' (:func:`rmsprop_tf` with
    ``rmsprop_decay``, ``momentum``, ``rmsprop_eps``), 'sgd' / 'nesterov' (momentum SGD,
    torch-style: ``w -= lr * trace``), 'adamw' (decoupled decay: ``weight_decay`` is passed to
    adamw instead). With ``config.trainable`` (a regex over parameter paths) every other
    parameter gets zero updates.
    """
    kind = config.optimizer
    if kind not in OPTIMIZERS:
        raise ValueError(f"config.optimizer must be one of {list(OPTIMIZERS)}, got {kind!r}")
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay > 0 and kind not in DECOUPLED_DECAY:
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask))
    parts.append(OPTIMIZERS[kind](config, schedule))
    tx = optax.chain(*parts)
    if config.trainable:  # e.g. LeFUN: train only the learnable front of a frozen eFUN
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, trainable_labels(config.trainable))
    return tx


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with label smoothing (``(1 - s) * one_hot + s / K``)."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing) if smoothing else None
    logits = logits.astype(jnp.float32)
    if targets is None:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return optax.softmax_cross_entropy(logits, targets)


def ema_update(ema, new, decay: float):
    """Exponential moving average ``decay * ema + (1 - decay) * new`` over matching pytrees."""
    return jax.tree_util.tree_map(lambda e, n: decay * e + (1.0 - decay) * n.astype(e.dtype), ema, new)
