"""The compression fine-tune's pure parts: trainable and frozen halves of a compressed tree, one step.

:func:`halves` splits a compressed variables tree into plain nested dicts (what orbax checkpoints
and optax updates): the trainable half holds each compressed kernel's kept values (coefficients)
as an ordinary array, and with ``finetune='all'`` every other parameter too; the frozen half holds
the rest; the orderings go in a separate ``{'/'-path: index}`` dict. :func:`assemble` merges them
and decodes every compressed kernel in the forward pass, so gradients reach the kept values
through the inverse DCT and the un-permutation. Used by :mod:`freqjax.studies.compression`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from freqjax.compress.tree import CompressedTensor
from freqjax.train import steps

__all__ = ["assemble", "compressed_tree", "finetune_step", "flat_leaves", "halves", "nest", "static_layers"]


def flat_leaves(tree: Any) -> dict[tuple[str, ...], Any]:
    return {
        tuple(str(k.key) for k in kp): x
        for kp, x in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, CompressedTensor))[0]
    }


def nest(flat: dict[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for path, x in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = x
    return out


def static_layers(ctree: dict) -> tuple:
    """((path, ref_shape, flax_shape, r, kind), ...) of the compressed leaves: static for jit."""
    return tuple(
        (p, x.ref_shape, x.flax_shape, x.r, x.kind)
        for p, x in flat_leaves(ctree["params"]).items()
        if isinstance(x, CompressedTensor)
    )


def halves(ctree: dict, finetune: str) -> tuple[dict, dict, dict]:
    """(trainable params, frozen params, {'/'-path: index}); compressed leaves appear as their values."""
    flat = flat_leaves(ctree["params"])
    values = {p: (x.coef if isinstance(x, CompressedTensor) else x) for p, x in flat.items()}
    index = {"/".join(p): x.index for p, x in flat.items() if isinstance(x, CompressedTensor)}
    train = {p for p, x in flat.items() if finetune == "all" or isinstance(x, CompressedTensor)}
    return (
        nest({p: v for p, v in values.items() if p in train}),
        nest({p: v for p, v in values.items() if p not in train}),
        index,
    )


def assemble(trainable: dict, frozen: dict, index: dict, layers: tuple) -> dict:
    """The model's params: both halves merged, each compressed leaf decoded (jit-able, differentiable)."""
    flat = {**flat_leaves(frozen), **flat_leaves(trainable)}
    for path, ref_shape, flax_shape, r, kind in layers:
        flat[path] = CompressedTensor(flat[path], index["/".join(path)], ref_shape, flax_shape, r, kind).weight()
    return nest(flat)


def compressed_tree(trainable: dict, frozen: dict, index: dict, layers: tuple, batch_stats: Any) -> dict:
    flat = {**flat_leaves(frozen), **flat_leaves(trainable)}
    for path, ref_shape, flax_shape, r, kind in layers:
        flat[path] = CompressedTensor(
            np.asarray(flat[path]), np.asarray(index["/".join(path)]), ref_shape, flax_shape, r, kind
        )
    return {"params": nest(flat), "batch_stats": jax.device_get(batch_stats)}


def finetune_step(
    state: steps.TrainState,
    batch: dict,
    frozen: dict,
    index: dict,
    *,
    model: Any,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    layers: tuple,
    input_kind: str,
    seed: int,
    label_smoothing: float = 0.0,
    dtype: Any = jnp.float32,
) -> tuple[steps.TrainState, dict]:
    """One optimiser step on the trainable half (``state.params``); the kernels are rebuilt in the forward pass.

    BatchNorm runs in training mode (batch statistics, running averages updated), as in the
    reference's fine-tuning script. Returns the new state and the trainer's scalar metrics.
    """
    x = steps.to_model_input(batch["image"], input_kind, dtype)
    labels = batch["label"]
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)

    def loss_fn(trainable):
        params = assemble(trainable, frozen, index, layers)
        return steps.training_loss(
            model, params, state.batch_stats, x, labels, rng=rng, label_smoothing=label_smoothing
        )

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "learning_rate": schedule(state.step),
        "grad_norm": optax.tree.norm(grads),
        "skipped": jnp.sum(batch["skipped"]),
    }
    return new, metrics
