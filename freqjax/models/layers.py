"""Shared layers: activations, ``make_divisible``, conv/BN helpers, depthwise conv, SE, drop-path.

Parameter names and layouts follow Flax (conv kernels (kh, kw, in/groups, out), BatchNorm
``scale``/``bias`` with ``mean``/``var`` in ``batch_stats``); module names follow timm so that
:mod:`freqjax.interop.torch_weights` maps a PyTorch ``state_dict`` by rule rather than by table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.ops import batchnorm as native_bn
from freqjax.ops import conv as ops_conv
from freqjax.ops.backend import resolve_conv_impl

__all__ = [
    "ACTIVATIONS",
    "Conv",
    "DepthwiseConv",
    "DropPath",
    "SqueezeExcite",
    "batch_norm",
    "conv2d",
    "depthwise_conv",
    "get_activation",
    "make_divisible",
    "pointwise_conv",
    "symmetric_padding",
]

Dtype = Any


def _hard_sigmoid(x: jax.Array) -> jax.Array:
    return jax.nn.relu6(x + 3.0) / 6.0


def _hard_swish(x: jax.Array) -> jax.Array:
    return x * jax.nn.relu6(x + 3.0) / 6.0


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_swish": _hard_swish,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
}

# Initialisers of timm's EfficientNet/MobileNet family (``_init_weight_goog``): conv weights
# normal with std sqrt(2 / fan_out), fan_out = k*k*out/groups; dense uniform +-1/sqrt(out).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# A depthwise kernel (kh, kw, 1, C) has fan_out k*k (one output per group), which is Flax's fan_in.
depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
dense_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` (timm / TF-slim rule).

    Rounds to the nearest multiple, never below ``min_value`` (default ``divisor``), and adds one
    ``divisor`` when rounding lost more than ``1 - round_limit`` of ``v``. Applied even at width
    1.0, so 180 becomes 184 and 140 becomes 144.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def symmetric_padding(kernel: int, stride: int = 1, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style static padding of timm's non-``tf_`` models: ((s-1) + d(k-1)) // 2 each side."""
    p = ((stride - 1) + dilation * (kernel - 1)) // 2
    return ((p, p), (p, p))


def depthwise_conv(
    x: jax.Array,
    kernel: jax.Array,
    stride: int | tuple[int, int] = 1,
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
    impl: str | None = None,
) -> jax.Array:
    """Depthwise 2-D convolution of NHWC ``x`` with ``kernel`` of shape (kh, kw, 1, C).

    ``impl`` is the conv implementation (:mod:`freqjax.ops.backend`; None: the active
    ``conv_impl`` or the backend's default): 'xla' is XLA's grouped convolution; 'cpu' a sum of
    kh*kw strided slices of the padded input times a per-channel weight, which XLA fuses into one
    elementwise loop, with a hand-written backward; 'native' the native depthwise kernels where
    they apply (:func:`freqjax.ops.conv.depthwise`). All give the same values and gradients.
    """
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    _, _, one, c = kernel.shape
    if one != 1 or x.shape[-1] != c:
        raise ValueError(f"depthwise kernel must be (kh, kw, 1, {x.shape[-1]}) for that input, got {kernel.shape}")
    return ops_conv.depthwise(x, kernel.astype(x.dtype), (sh, sw), padding, impl)


class DepthwiseConv(nn.Module):
    """Depthwise conv layer; parameter ``kernel`` (kh, kw, 1, C) like ``nn.Conv(feature_group_count=C)``."""

    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: tuple[tuple[int, int], tuple[int, int]] | None = None  # None: symmetric, timm style
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else self.kernel_size
        stride = self.strides if isinstance(self.strides, int) else self.strides[0]
        padding = self.padding
        if padding is None:
            padding = (symmetric_padding(kh, stride)[0], symmetric_padding(kw, stride)[1])
        c = x.shape[-1]
        kernel = self.param("kernel", depthwise_init, (kh, kw, 1, c), jnp.float32)
        y = depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,), jnp.float32).astype(self.dtype)
        return y


def pointwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """1x1 convolution of NHWC ``x`` with ``kernel`` (1, 1, C_in, C_out) as one 2-D matrix product.

    Equal to the convolution (a strided 1x1 conv only reads every ``stride``-th pixel), but XLA's
    CPU backend runs a (N*H*W, C_in) x (C_in, C_out) GEMM much faster than the same 1x1
    convolution, and 1x1 convs are most of the work of inverted-residual networks.
    """
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    n, h, w, c = x.shape
    y = jnp.dot(x.reshape(n * h * w, c), kernel.reshape(c, kernel.shape[-1]))
    return y.reshape(n, h, w, kernel.shape[-1])


class Conv(nn.Module):
    """2-D convolution with ``nn.Conv``'s parameters (``kernel`` (kh, kw, in/groups, out), ``bias``).

    Under the 'native' and 'cpu' conv implementations (:mod:`freqjax.ops.backend`; 'native' is the
    CPU backend's default) ungrouped unpadded 1x1 convs run as :func:`pointwise_conv` and other
    ungrouped convs as :func:`freqjax.ops.conv.conv`; grouped convs, and every conv under 'xla',
    are XLA's own. Parameters are float32; inputs and
    kernels are cast to ``dtype`` for the computation.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    groups: int = 1
    use_bias: bool = False
    kernel_init: Callable = conv_init
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        if c % self.groups or self.features % self.groups:
            raise ValueError(f"groups={self.groups} must divide input channels {c} and features {self.features}")
        shape = (*self.kernel_size, c // self.groups, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        strides = (self.strides, self.strides)
        impl = resolve_conv_impl()
        if self.groups > 1 or impl == "xla":
            y = ops_conv.xla_conv(x, kernel, strides, self.padding, self.groups)
        elif self.kernel_size == (1, 1) and self.padding == ((0, 0), (0, 0)):
            y = pointwise_conv(x, kernel, self.strides)
        else:
            y = ops_conv.conv(x, kernel, strides, self.padding, impl)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        return y


def conv2d(
    features: int,
    kernel: int,
    stride: int = 1,
    *,
    name: str,
    dtype: Dtype,
    use_bias: bool = False,
    groups: int = 1,
) -> Conv:
    """A :class:`Conv` with timm's symmetric padding and initialiser."""
    return Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding=symmetric_padding(kernel, stride),
        groups=groups,
        use_bias=use_bias,
        dtype=dtype,
        name=name,
    )


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` (same fields, variables and statistics) normalising as ``x * a + b``.

    Flax computes ``(x - mean) * (rsqrt(var + eps) * scale) + bias``; under autodiff XLA keeps
    ``x - mean`` as a residual for the backward pass, one extra tensor written and read per
    layer (on a 2-core CPU ~10 % of a small CIFAR ResNet's training step). Folding the mean into a
    per-channel shift, ``a = rsqrt(var + eps) * scale`` and ``b = bias - mean * a``, leaves the
    layer's input as the only residual, and XLA fuses the multiply-add with the following
    activation. Statistics, running averages and parameters are flax's (``_compute_stats``,
    fast variance by default). Where the native kernels run (float32, channels a multiple of 16,
    the 'native' conv implementation: :func:`freqjax.ops.batchnorm.applies`) the per-channel
    sums of the statistics and of the backward pass come from one native pass each
    (:mod:`freqjax.ops.batchnorm`); the values are the same to float32 rounding.
    """

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        from flax.linen.normalization import _canonicalize_axes, _compute_stats

        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        feature_axes = _canonicalize_axes(x.ndim, self.axis)
        if feature_axes != (x.ndim - 1,) or self.axis_name is not None or mask is not None:
            raise ValueError("freqjax BatchNorm normalises over the last axis only, without axis_name or mask")
        feature_shape = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), feature_shape)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), feature_shape)
        dtype = self.dtype or jnp.result_type(x)
        native = native_bn.applies(x) and dtype == jnp.float32 and self.use_fast_variance
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            if native:  # the same statistics from one native pass (native_bn)
                mean, var = native_bn.batch_moments(x)
            else:
                axes = tuple(range(x.ndim - 1))
                mean, var = _compute_stats(x, axes, dtype=self.dtype, use_fast_variance=self.use_fast_variance)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        mul = jax.lax.rsqrt(var.astype(jnp.float32) + self.epsilon)
        if self.use_scale:
            mul = mul * self.param("scale", self.scale_init, feature_shape, self.param_dtype)
        shift = -mean.astype(jnp.float32) * mul
        if self.use_bias:
            shift = shift + self.param("bias", self.bias_init, feature_shape, self.param_dtype)
        if native:
            return native_bn.scale_and_shift(x, mul, shift)
        return (x.astype(dtype) * mul.astype(dtype) + shift.astype(dtype)).astype(dtype)


def batch_norm(train: bool, *, name: str, dtype: Dtype, eps: float = 1e-5, momentum: float = 0.1) -> BatchNorm:
    """BatchNorm with PyTorch's defaults: ``momentum`` is PyTorch's (new-statistics weight)."""
    return BatchNorm(use_running_average=not train, momentum=1.0 - momentum, epsilon=eps, dtype=dtype, name=name)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: mean-pool -> 1x1 conv (bias) -> act -> 1x1 conv (bias) -> gate -> scale.

    Submodules ``conv_reduce`` / ``conv_expand`` as in timm. ``reduced`` is the bottleneck width;
    the caller decides whether it comes from the block input (EfficientNet, eFUN) or the expanded
    width (MobileNetV3).
    """

    reduced: int
    act: str = "relu"
    gate: str = "sigmoid"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = conv2d(self.reduced, 1, name="conv_reduce", dtype=self.dtype, use_bias=True)(s)
        s = get_activation(self.act)(s)
        s = conv2d(c, 1, name="conv_expand", dtype=self.dtype, use_bias=True)(s)
        return x * get_activation(self.gate)(s)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability ``rate`` (rng 'dropout')."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
