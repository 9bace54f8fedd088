"""A model's variables without running its initialisers: abstract shapes and random He-normal values.

``model.init`` compiles (or executes op by op) every initialiser, which takes longer than a
benchmark or a weight conversion needs; shapes come from ``jax.eval_shape`` for free, and
:func:`random_variables` fills them with realistic values in numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["abstract_variables", "random_variables"]


def abstract_variables(model: nn.Module, input_shape: Sequence[int], **call_kwargs) -> dict[str, Any]:
    """``jax.ShapeDtypeStruct`` leaves of ``model.init(key, x, train=False)`` for a float32 ``x``.

    ``input_shape`` is per example (H, W, C) or a whole batch (N, H, W, C).
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False, **call_kwargs), x)


def random_variables(shapes: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Numpy arrays for every leaf of ``shapes`` (e.g. :func:`abstract_variables`): conv kernels
    He-normal with fan-out (torchvision's ResNet and timm's EfficientNet initialisation), dense
    kernels normal with variance 1 / fan-in (logits of unit scale), BatchNorm scales and variances
    1, everything else 0."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            if len(leaf.shape) == 2:
                std = np.sqrt(1.0 / leaf.shape[0])
            else:
                std = np.sqrt(2.0 / (leaf.shape[-1] * int(np.prod(leaf.shape[:-2]))))
            return (rng.standard_normal(leaf.shape, np.float32) * std).astype(leaf.dtype)
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
