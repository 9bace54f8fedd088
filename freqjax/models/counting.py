"""Parameter and multiply-accumulate counts, the papers' conventions.

Both work on abstract shapes (``jax.eval_shape`` / ``jax.make_jaxpr``): nothing is compiled or run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from freqjax.ops.backend import conv_impl

__all__ = ["count_macs", "count_params"]


def count_params(variables: Mapping[str, Any]) -> int:
    """Trainable parameters: the floating leaves of ``variables['params']``.

    BatchNorm running statistics (``batch_stats``) are not counted, the convention of timm and
    the papers. A bare parameter tree (without the 'params' level) is accepted too. Leaves may be
    arrays or ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``).
    """
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a mapping like {{'params': ...}}, got {type(variables)}")
    params = variables.get("params", variables)
    if params is variables and "batch_stats" in variables:
        raise ValueError("variables has 'batch_stats' but no 'params'; pass the whole variables dict")
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)))


def _jaxpr_macs(jaxpr: jex.core.Jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out = eqn.outvars[0].aval
            rhs = eqn.invars[1].aval
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
            window = math.prod(rhs.shape[d] for d in rhs_spec[2:])
            total += math.prod(out.shape) * window * rhs.shape[rhs_spec[1]]
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in lhs_contract)
        repeat = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in _sub_jaxprs(eqn.params):
            total += repeat * _jaxpr_macs(sub)
    return total


def _sub_jaxprs(params: Mapping[str, Any]):
    for value in params.values():
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, jex.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jex.core.Jaxpr):
                yield v


def count_macs(model: nn.Module, input_shape: Sequence[int], **call_kwargs) -> int:
    """Multiply-accumulates of conv and dense layers for one example, in eval mode.

    Traces ``model.apply`` on abstract inputs and sums over every convolution and matrix product
    (including squeeze-excite 1x1 convs); elementwise work, pooling and BN are not counted, the
    papers' "FLOPs" convention. Convs are counted as convolutions whatever the implementation: the
    model is traced under ``conv_impl('xla')`` (no native kernels, whose FFI calls carry no
    count, and XLA's grouped convolution for depthwise layers).

    Args:
        model: a Flax module called as ``model.apply(variables, x, train=False)``.
        input_shape: per-example (H, W, C), or (N, H, W, C) (the count is still per example).
        **call_kwargs: extra keyword arguments for the call.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or not all(isinstance(d, int | np.integer) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be (H, W, C) or (N, H, W, C) of positive ints, got {input_shape!r}")
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False, **call_kwargs), x)
    with conv_impl("xla"):
        closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False, **call_kwargs))(variables, x)
    return _jaxpr_macs(closed.jaxpr) // shape[0]
