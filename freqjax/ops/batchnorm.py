"""BatchNorm's per-channel sums by the native kernel (:func:`freqjax.ops.native.channel_sums`), with custom VJPs.

A training-mode BatchNorm needs two per-channel reductions over (N, H, W) in the forward pass
(sum x, sum x^2 for the statistics) and two in the backward pass (sum dz, sum dz * x for the
gradients of the normalisation's per-channel scale and shift). XLA's CPU backend runs each as a
reduction fusion of its own; the native kernel does both sums of a pair in one pass
(``python benchmarks/cpu_conv_ops.py ablation``, benchmarks/README.md).
:class:`freqjax.models.layers.BatchNorm` uses these functions where the native kernels run
(:func:`applies`), flax's formulation elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from freqjax.ops import native
from freqjax.ops.backend import resolve_conv_impl

__all__ = ["applies", "batch_moments", "scale_and_shift"]


def applies(x: jax.Array) -> bool:
    """Native sums for ``x``: float32, channels a multiple of 16, under the 'native' conv implementation."""
    return (
        x.dtype == jnp.float32
        and x.ndim >= 2
        and x.shape[-1] % native.LANES == 0
        and resolve_conv_impl() == "native"
        and native.available()
    )


def _fold(sums: jax.Array, channels: int) -> jax.Array:
    """Sums over a packed view's (2, k * C) channels folded to (2, C)."""
    return sums if sums.shape[-1] == channels else sums.reshape(2, -1, channels).sum(1)


def _tiled(v: jax.Array, view: jax.Array) -> jax.Array:
    """Per-channel ``v`` for ``view`` (``x`` or its packed view, :func:`freqjax.ops.native.packed`):
    tiled by the native copy, so XLA's loop fusions read it rather than recompute it per element."""
    times = view.shape[-1] // v.shape[0]
    return v if times == 1 else native.repeat_vector(v, times)


# 16-channel activations are taken in the packed view (freqjax.ops.native.packed: (N, H, W / 2, 32)),
# whose loop fusions XLA compiles 2-3x faster; every function returns the shape it was given.


@jax.custom_vjp
def _moment_sums(x: jax.Array) -> jax.Array:
    """(2, C): sum x and sum x^2 over all but the last axis."""
    xp = native.packed(x)
    return _fold(native.channel_sums(xp, xp), x.shape[-1])


def _moment_sums_fwd(x):
    return _moment_sums(x), x


def _moment_sums_bwd(x, g):
    xp = native.packed(x)
    return ((_tiled(g[0], xp) + 2.0 * _tiled(g[1], xp) * xp).reshape(x.shape),)


_moment_sums.defvjp(_moment_sums_fwd, _moment_sums_bwd)


def batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and variance over all but the last axis, as flax's fast variance:
    ``max(0, mean(x^2) - mean(x)^2)``."""
    count = x.size // x.shape[-1]
    sums = _moment_sums(x) / count
    mean = sums[0]
    return mean, jnp.maximum(0.0, sums[1] - mean * mean)


def _apply(x: jax.Array, scale: jax.Array, shift: jax.Array) -> tuple[jax.Array, jax.Array]:
    xp = native.packed(x)
    tiled_scale = _tiled(scale, xp)
    return (xp * tiled_scale + _tiled(shift, xp)).reshape(x.shape), tiled_scale


@jax.custom_vjp
def scale_and_shift(x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """``x * scale + shift`` with per-channel ``scale``, ``shift``; the backward's two per-channel
    sums (sum dz * x, sum dz) come from one native pass."""
    return _apply(x, scale, shift)[0]


def _scale_and_shift_fwd(x, scale, shift):
    z, tiled_scale = _apply(x, scale, shift)
    return z, (x, tiled_scale)


def _scale_and_shift_bwd(residuals, dz):
    x, tiled_scale = residuals
    dzp = native.packed(dz)
    sums = _fold(native.channel_sums(dzp, native.packed(x)), x.shape[-1])
    return (dzp * tiled_scale).reshape(x.shape), sums[1], sums[0]


scale_and_shift.defvjp(_scale_and_shift_fwd, _scale_and_shift_bwd)
