"""Shared by the MSNet tests (tests/models/test_msnet.py, tests/studies/test_msnet_sweep.py)."""

import math

import jax
import numpy as np

from freqjax.models import abstract_variables


def spread_variables(model, shape, seed=0, logit_scale=3.0):
    """Variables without compiling ``init``: He-scaled kernels, non-trivial BN and spread logits,
    so the networks' confidences differ between images."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            gain = logit_scale if any(getattr(p, "key", "") in ("fc", "classifier") for p in path) else math.sqrt(2)
            return (rng.normal(size=leaf.shape) * gain / math.sqrt(fan_in)).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract_variables(model, shape))
