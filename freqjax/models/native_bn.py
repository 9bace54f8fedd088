"""BatchNorm's per-channel sums by the native kernel (:func:`freqjax.native.channel_sums`), with custom VJPs.

A training-mode BatchNorm needs two per-channel reductions over (N, H, W) in the forward pass
(sum x, sum x^2 for the statistics) and two in the backward pass (sum dz, sum dz * x for the
gradients of the normalisation's per-channel scale and shift). XLA's CPU backend runs each as a
reduction fusion of its own at 0.2-0.5 ms per CIFAR-sized activation; the native kernel does both
sums of a pair in one pass, 3-6x faster (README, Benchmarks). :class:`freqjax.models.layers.BatchNorm`
uses these functions where the native kernels run (:func:`applies`), flax's formulation elsewhere.

In training, a BatchNorm followed by a ReLU (or nothing), optionally with a residual added before
it, runs whole as :func:`normalize_act`: one custom VJP whose forward is the statistics' sums and
one pass for ``act(x * a + b [+ r])``, and whose backward is one pass for the sums of the
gradient (through the ReLU, read off the output) and one for the input gradient. XLA's CPU loop
fusions for the same passes are 2-3x slower than the memory allows at 16 channels (per-channel
broadcasts over one-vector pixels), and its backward takes a third pass for the mask.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from freqjax import native
from freqjax.models import cpu_conv

__all__ = ["applies", "batch_moments", "normalize_act", "scale_and_shift"]


def applies(x: jax.Array) -> bool:
    """Native sums for ``x``: float32, channels a multiple of 16, under the 'native' conv implementation."""
    return (
        x.dtype == jnp.float32
        and x.ndim >= 2
        and x.shape[-1] % native.LANES == 0
        and cpu_conv.resolve_conv_impl() == "native"
        and native.available()
    )


@jax.custom_vjp
def _moment_sums(x: jax.Array) -> jax.Array:
    """(2, C): sum x and sum x^2 over all but the last axis."""
    return native.channel_sums(x, x)


def _moment_sums_fwd(x):
    return native.channel_sums(x, x), x


def _moment_sums_bwd(x, g):
    return (g[0] + 2.0 * g[1] * x,)


_moment_sums.defvjp(_moment_sums_fwd, _moment_sums_bwd)


def batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and variance over all but the last axis, as flax's fast variance:
    ``max(0, mean(x^2) - mean(x)^2)``."""
    count = x.size // x.shape[-1]
    sums = _moment_sums(x) / count
    mean = sums[0]
    return mean, jnp.maximum(0.0, sums[1] - mean * mean)


@jax.custom_vjp
def scale_and_shift(x: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """``x * scale + shift`` with per-channel ``scale``, ``shift``; the backward's two per-channel
    sums (sum dz * x, sum dz) come from one native pass."""
    return x * scale + shift


def _scale_and_shift_fwd(x, scale, shift):
    return x * scale + shift, (x, scale)


def _scale_and_shift_bwd(residuals, dz):
    x, scale = residuals
    sums = native.channel_sums(dz, x)
    return dz * scale, sums[1], sums[0]


scale_and_shift.defvjp(_scale_and_shift_fwd, _scale_and_shift_bwd)


@functools.cache
def _normalize_act_fn(relu: bool, residual: bool, eps: float):
    """The custom-VJP ``(x, scale, bias[, r]) -> (y, mean, var)`` of :func:`normalize_act`."""

    def stats(x, scale, bias):
        count = x.size // x.shape[-1]
        sums = native.channel_sums(x, x) / count
        mean = sums[0]
        var = jnp.maximum(0.0, sums[1] - mean * mean)
        rstd = jax.lax.rsqrt(var + eps)
        a = scale * rstd
        return mean, var, rstd, a, bias - mean * a

    def forward(x, scale, bias, *r):
        mean, var, rstd, a, b = stats(x, scale, bias)
        y = native.scale_shift_act(x, a, b, *r, relu=relu)
        return (y, mean, var), (x, y, mean, rstd, a)

    def backward(saved, cotangents):
        x, y, mean, rstd, a = saved
        gy, gmean, gvar = cotangents
        n = x.size // x.shape[-1]
        s0, s1 = native.act_grad_sums(gy, y, x, relu=relu)  # sum dz, sum dz * x
        centred = s1 - mean * s0  # sum dz * (x - mean)
        # dx = a dz - (a / n) (s0 + xhat rstd sum dz (x - mean)) + gmean / n + 2 gvar (x - mean) / n,
        # xhat = (x - mean) rstd: per channel, a * dz + c0 + c1 * x.
        c1 = (2.0 * gvar - a * rstd * rstd * centred) / n
        c0 = (gmean - a * s0) / n - c1 * mean
        grads = native.norm_input_grad(gy, y, x, jnp.stack([a, c0, c1]), relu=relu, with_dz=residual)
        dx, dr = grads if residual else (grads, None)
        d_scale, d_bias = rstd * centred, s0
        return (dx, d_scale, d_bias, dr) if residual else (dx, d_scale, d_bias)

    def primal(x, scale, bias, *r):
        return forward(x, scale, bias, *r)[0]

    fn = jax.custom_vjp(primal)
    fn.defvjp(forward, backward)
    return fn


def normalize_act(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    residual: jax.Array | None = None,
    *,
    eps: float,
    relu: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BatchNorm with batch statistics, then ``+ residual`` and ReLU (or identity),
    natively: returns ``(y, mean, var)``, ``y = act((x - mean) * rsqrt(var + eps) * scale + bias [+
    residual])``, ``mean``/``var`` the per-channel statistics (flax's fast variance) for the
    running averages. Call only where :func:`applies` to ``x``; ``scale``, ``bias`` float32 (C,)."""
    args = (x, scale, bias) if residual is None else (x, scale, bias, residual)
    return _normalize_act_fn(bool(relu), residual is not None, float(eps))(*args)
