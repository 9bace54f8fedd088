"""Pure train and eval steps (jit, shardings and donation are applied by the caller, :mod:`freqjax.train`).

The input transform runs here, on the device, chosen by ``model_info(name).input_kind``:
'dct' -> :func:`freqjax.dct.rgb_to_dct` (+ optional zigzag keep), 'rgb' -> ImageNet mean/std
normalisation, 'ycbcr' -> JFIF YCbCr - 128 (LeFUN). Batches arrive as uint8 images.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax import dct
from freqjax.train.optim import cross_entropy, ema_update

__all__ = ["TrainState", "eval_step", "frozen_batch_norm", "init_state", "to_model_input", "train_step"]

_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data iterator (whose state orbax saves beside it).

    The dropout/drop-path key of step ``s`` is ``fold_in(PRNGKey(seed), s)``, so ``step`` is the
    whole RNG state. ``ema_params``/``ema_batch_stats`` are empty dicts when EMA is off.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any


def to_model_input(images: jax.Array, input_kind: str, dtype=jnp.float32, dct_keep=(64, 64, 64)) -> jax.Array:
    """uint8 NHWC RGB -> what the model takes (see the module docstring)."""
    if input_kind == "dct":
        x = dct.rgb_to_dct(images, dtype=jnp.float32)
        if tuple(dct_keep) != (64, 64, 64):
            x = dct.keep_lowest(x, *dct_keep)
        return x.astype(dtype)
    if input_kind == "rgb":
        return ((images.astype(jnp.float32) - _MEAN) / _STD).astype(dtype)
    if input_kind == "ycbcr":
        return (dct.rgb_to_ycbcr(images) - 128.0).astype(dtype)
    raise ValueError(f"input_kind must be 'dct', 'rgb' or 'ycbcr', got {input_kind!r}")


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, sample: jax.Array, seed: int, ema: bool
) -> TrainState:
    """Initialise parameters (from ``seed``), optimiser state and EMA copies for model input ``sample``."""
    variables = model.init({"params": jax.random.PRNGKey(seed)}, sample, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else {},
        ema_batch_stats=jax.tree_util.tree_map(jnp.copy, batch_stats) if ema else {},
    )


def frozen_batch_norm(trainable: str):
    """A context in which BatchNorm layers whose ``scale`` (else ``bias``) path ``trainable`` does not
    match run with ``use_running_average=True`` even in training: frozen parts of a network
    (LeFUN's eFUN behind its learned front) keep their statistics bitwise and normalise as at test
    time. ``trainable=''`` (everything trains) changes nothing.

    A flax method interceptor, so every model's BatchNorm is covered, whether it gets
    ``use_running_average`` as a field (the inverted-residual builder) or at call time (``setup``
    models).
    """
    if not trainable:
        return contextlib.nullcontext()
    regex = re.compile(trainable)

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.BatchNorm):
            return next_fun(*args, **kwargs)
        leaf = "scale" if module.use_scale else "bias"
        if regex.search("/".join(module.path) + f"/{leaf}"):
            return next_fun(*args, **kwargs)
        if module.use_running_average is None:  # given at call time: replace it
            kwargs = {k: v for k, v in kwargs.items() if k != "use_running_average"}
            return next_fun(args[0], use_running_average=True, **kwargs)
        # given as a field: flax forbids passing it again, so set it on this call's module instance
        # (modules are frozen dataclasses, rebuilt on every apply) and put it back afterwards
        previous = module.use_running_average
        object.__setattr__(module, "use_running_average", True)
        try:
            return next_fun(*args, **kwargs)
        finally:
            object.__setattr__(module, "use_running_average", previous)

    return nn.intercept_methods(intercept)


def _keep_frozen(ema, current, trainable: str, collection: str):
    """``ema`` with ``current``'s leaf wherever ``trainable`` freezes it (a BatchNorm's statistics
    are frozen with its ``scale``)."""
    regex = re.compile(trainable)

    def pick(path, e, c):
        names = [str(getattr(k, "key", k)) for k in path]
        if collection == "batch_stats":
            names[-1] = "scale"
        return e if regex.search("/".join(names)) else c

    return jax.tree_util.tree_map_with_path(pick, ema, current)


def training_loss(
    model: nn.Module, params, batch_stats, x: jax.Array, labels: jax.Array, *, rng: jax.Array, label_smoothing: float
) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """The training-mode forward pass and its loss: (loss, (last exit's logits, new batch_stats)).

    Multi-exit models (MSNet: low- and high-resolution classifiers) train on the sum of their
    exits' cross-entropies. Shared by :func:`train_step` and the compression fine-tune.
    """
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
    outputs = logits if isinstance(logits, tuple | list) else (logits,)
    loss = sum(cross_entropy(out, labels, label_smoothing).mean() for out in outputs)
    return loss, (outputs[-1], updates.get("batch_stats", {}))


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    input_kind: str,
    seed: int,
    label_smoothing: float = 0.0,
    ema_decay: float = 0.0,
    dtype=jnp.float32,
    dct_keep=(64, 64, 64),
    inject_nan_at_step: int = -1,
    trainable: str = "",
) -> tuple[TrainState, dict]:
    """One optimiser step on a global batch ``{'image': uint8, 'label': int32, 'skipped': int32}``.

    ``trainable`` (``config.trainable``, a regex over parameter paths; '' = all) also freezes the
    BatchNorm layers whose parameters it does not match: they normalise with their running
    statistics and leave them unchanged (:func:`frozen_batch_norm`), as in evaluation.

    Returns the new state and scalar metrics: loss, accuracy, learning_rate, grad_norm, skipped
    (corrupt records replaced in this batch).
    """
    x = to_model_input(batch["image"], input_kind, dtype, dct_keep)
    labels = batch["label"]
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)

    def loss_fn(params):
        with frozen_batch_norm(trainable):
            return training_loss(model, params, state.batch_stats, x, labels, rng=rng, label_smoothing=label_smoothing)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if inject_nan_at_step >= 0:  # fault-test hook (config.inject_nan_at_step)
        loss = jnp.where(state.step + 1 == inject_nan_at_step, jnp.nan, loss)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    if ema_decay > 0:
        new = new.replace(
            ema_params=ema_update(state.ema_params, params, ema_decay),
            ema_batch_stats=ema_update(state.ema_batch_stats, batch_stats, ema_decay),
        )
        if trainable:  # d * x + (1 - d) * x is not always x in floating point: frozen copies stay exact
            new = new.replace(
                ema_params=_keep_frozen(new.ema_params, params, trainable, "params"),
                ema_batch_stats=_keep_frozen(new.ema_batch_stats, batch_stats, trainable, "batch_stats"),
            )
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "learning_rate": schedule(state.step),
        "grad_norm": optax.tree.norm(grads),
        "skipped": jnp.sum(batch["skipped"]),
    }
    return new, metrics


def eval_step(
    params, batch_stats, batch: dict, *, model: nn.Module, input_kind: str, dtype=jnp.float32, dct_keep=(64, 64, 64)
) -> dict:
    """Masked sums over a batch with ``mask``: loss, top-1 and top-5 correct, and the example count.

    For multi-exit models (a tuple of logits, e.g. MSNet's low/high networks) the metrics are the
    last exit's, plus ``top1_exit{i}`` for the earlier ones.
    """
    x = to_model_input(batch["image"], input_kind, dtype, dct_keep)
    outputs = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    labels, mask = batch["label"], batch["mask"]
    sums = _eval_sums(outputs[-1].astype(jnp.float32), labels, mask)
    for i, out in enumerate(outputs[:-1]):  # earlier exits of multi-exit models: top-1 only
        sums[f"top1_exit{i}"] = _eval_sums(out.astype(jnp.float32), labels, mask)["top1"]
    return sums


def _eval_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict:
    k = min(5, logits.shape[-1])
    topk = jax.lax.top_k(logits, k)[1]
    return {
        "loss": jnp.sum(cross_entropy(logits, labels) * mask),
        "top1": jnp.sum((topk[:, 0] == labels) * mask),
        "top5": jnp.sum(jnp.any(topk == labels[:, None], axis=-1) * mask),
        "count": jnp.sum(mask),
    }
