"""The native kernels as JAX functions (``jax.ffi.ffi_call``), with their argument checks.

Register-blocked direct convolutions for NHWC float32: dense and depthwise, each a forward
(which also serves the input gradient, one stride phase at a time; :func:`conv_input_grad` runs
all phases of a strided dense conv in one call) and a weight gradient; for stride-1 3x3 dense
convs, Winograd's F(4x4, 3x3) / F(2x2, 3x3) forward and F(3x3, 2x2) weight gradient
(:func:`winograd_forward`, :func:`winograd_weight_grad`); BatchNorm's per-channel sums
(:func:`channel_sums`). Call them only when :func:`freqjax.ops.native.available` is true;
:mod:`freqjax.ops.conv` and :mod:`freqjax.ops.batchnorm` decide where they apply.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LANES",
    "channel_sums",
    "conv_forward",
    "conv_input_grad",
    "conv_weight_grad",
    "depthwise_forward",
    "depthwise_weight_grad",
    "packed",
    "packs",
    "repeat_vector",
    "winograd_forward",
    "winograd_weight_grad",
]

# The output-channel vector of the kernels: C_out must be a multiple of it.
LANES = 16
# Whether packed() packs: off only in benchmarks (cpu_conv_ops.py ablation, kernel_ab.py --unpacked).
_PACK = True


Pair = tuple[int, int]


def _attrs(strides: Pair, pad_top_left: Pair) -> dict[str, np.int64]:
    return {
        "stride_h": np.int64(strides[0]),
        "stride_w": np.int64(strides[1]),
        "pad_top": np.int64(pad_top_left[0]),
        "pad_left": np.int64(pad_top_left[1]),
    }


def _expect(ok: bool, fn: str, arg: str, value, valid: str) -> None:
    """Raise a ValueError naming the function, the argument, its value and what would be valid:
    the kernels trust their shapes, so a mismatch must never reach them."""
    if not ok:
        raise ValueError(f"freqjax.ops.native.{fn}: {arg} = {value} is not valid; {valid}")


def _check_arrays(fn: str, ndims: dict[str, int], **arrays: jax.Array) -> None:
    for name, a in arrays.items():
        _expect(a.dtype == np.float32, fn, f"{name}.dtype", a.dtype, "the kernels take float32")
        _expect(a.ndim == ndims[name], fn, f"{name}.shape", a.shape, f"expected {ndims[name]} dimensions")


def _check_lanes(fn: str, arg: str, shape: tuple[int, ...]) -> None:
    _expect(shape[-1] % LANES == 0, fn, arg, shape, f"its channels (last axis) must be a multiple of {LANES}")


def _check_dense(fn: str, x: jax.Array, w: jax.Array, winograd: bool = False) -> None:
    _check_arrays(fn, {"x": 4, "w": 4}, x=x, w=w)
    _expect(w.shape[2] == x.shape[3], fn, "w.shape", w.shape, f"w[2] must be x's {x.shape[3]} channels")
    _check_lanes(fn, "w.shape", w.shape)
    if winograd:
        _expect(w.shape[:2] == (3, 3), fn, "w.shape", w.shape, "Winograd takes 3x3 kernels")
        _check_lanes(fn, "x.shape", x.shape)


def _check_grad(fn: str, x: jax.Array, dy: jax.Array, depthwise: bool = False, winograd: bool = False) -> None:
    _check_arrays(fn, {"x": 4, "dy": 4}, x=x, dy=dy)
    _expect(dy.shape[0] == x.shape[0], fn, "dy.shape", dy.shape, f"dy[0] must be x's batch {x.shape[0]}")
    _check_lanes(fn, "dy.shape", dy.shape)
    if depthwise:
        _expect(dy.shape[3] == x.shape[3], fn, "dy.shape", dy.shape, f"dy[3] must be x's {x.shape[3]} channels")
    if winograd:
        _check_lanes(fn, "x.shape", x.shape)


def packs(shape: tuple[int, ...]) -> bool:
    """Whether :func:`packed` packs an activation of this shape: NHWC, 16 channels, even width."""
    return _PACK and len(shape) == 4 and shape[3] == LANES and shape[2] % 2 == 0


def packed(a: jax.Array) -> jax.Array:
    """A 16-channel NHWC activation as (N, H, W / 2, 32), pixel pairs in one row (the same bytes),
    anything else unchanged; the kernels take their channel counts from the weights or the result.

    XLA's CPU loop fusions run 2-3x slower when their output's last axis is 16 floats than when it
    is 32 (``python benchmarks/cpu_conv_ops.py elementwise``). A fusion that feeds a kernel writes
    that kernel's operand, so the kernels take 16-channel activations and gradients packed, and
    BatchNorm (:mod:`freqjax.ops.batchnorm`) computes on the packed view with its per-channel
    vectors tiled by :func:`repeat_vector`: the BatchNorm, ReLU and residual passes between
    16-channel convs then run in the faster shape.
    """
    if not packs(a.shape):
        return a
    n, h, w, c = a.shape
    return a.reshape(n, h, w // 2, 2 * c)


def repeat_vector(v: jax.Array, times: int) -> jax.Array:
    """``jnp.tile(v, times)`` of a float32 vector, computed by a native copy: XLA fuses its own tile
    into every consumer, recomputing each element's index, where this leaves a materialised vector
    (see :func:`packed`). Differentiable: the gradient sums the copies."""
    _expect(
        v.ndim == 1 and v.dtype == jnp.float32, "repeat_vector", "v", f"{v.dtype}{list(v.shape)}", "a float32 vector"
    )
    _expect(isinstance(times, int) and times >= 1, "repeat_vector", "times", times, "an int >= 1")
    return _repeat(v, times)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _repeat(v: jax.Array, times: int) -> jax.Array:
    out = jax.ShapeDtypeStruct((times * v.shape[0],), v.dtype)
    return jax.ffi.ffi_call("freqjax_repeat_vector", out, vmap_method="sequential")(v)


def _repeat_fwd(v, times):
    return _repeat(v, times), None


def _repeat_bwd(times, _, g):
    return (g.reshape(times, -1).sum(0),)


_repeat.defvjp(_repeat_fwd, _repeat_bwd)


def conv_forward(x: jax.Array, w: jax.Array, strides: Pair, pad_top_left: Pair, out_hw: Pair) -> jax.Array:
    """Direct conv of NHWC float32 ``x`` with HWIO ``w`` (C_out a multiple of 16) into (N, *out_hw, C_out).

    Zero padding: ``pad_top_left`` rows and columns before the image; rows and columns that
    ``out_hw`` needs past its end read as zeros. Call only when :func:`available`.
    """
    _check_dense("conv_forward", x, w)
    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, w.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("freqjax_conv_forward", out, vmap_method="sequential")
    return call(packed(x), w, **_attrs(strides, pad_top_left))


def winograd_forward(x: jax.Array, w: jax.Array, pad_top_left: Pair, out_hw: Pair) -> jax.Array:
    """:func:`conv_forward` of a stride-1 3x3 conv by Winograd's minimal filtering: F(4x4, 3x3)
    (36 products per channel pair and 4x4 output tile instead of 144) for C_in <= 32, F(2x2, 3x3)
    (16 instead of 36) above. C_in and C_out must be multiples of 16."""
    _check_dense("winograd_forward", x, w, winograd=True)
    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, w.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("freqjax_winograd_forward", out, vmap_method="sequential")
    return call(packed(x), w, **_attrs((1, 1), pad_top_left))


def conv_weight_grad(x: jax.Array, dy: jax.Array, kernel: Pair, strides: Pair, pad_top_left: Pair) -> jax.Array:
    """Weight gradient (kh, kw, C_in, C_out) of :func:`conv_forward` given its output gradient ``dy``."""
    _check_grad("conv_weight_grad", x, dy)
    out = jax.ShapeDtypeStruct((*kernel, x.shape[-1], dy.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("freqjax_conv_weight_grad", out, vmap_method="sequential")
    return call(packed(x), packed(dy), **_attrs(strides, pad_top_left))


def conv_input_grad(
    dy: jax.Array, w: jax.Array, x_shape: tuple[int, ...], strides: Pair, pad_top_left: Pair
) -> jax.Array:
    """Input gradient (``x_shape``, C_in a multiple of 16) of :func:`conv_forward` given its output
    gradient ``dy``, in one call: per stride phase, the forward kernel with the flipped sub-kernel,
    writing straight into its pixels of dx."""
    fn = "conv_input_grad"
    _check_arrays(fn, {"dy": 4, "w": 4}, dy=dy, w=w)
    _expect(len(x_shape) == 4, fn, "x_shape", x_shape, "expected (N, H, W, C_in)")
    _expect(w.shape[2] == x_shape[3], fn, "w.shape", w.shape, f"w[2] must be x_shape's {x_shape[3]} channels")
    _expect(w.shape[3] == dy.shape[3], fn, "w.shape", w.shape, f"w[3] must be dy's {dy.shape[3]} channels")
    _expect(dy.shape[0] == x_shape[0], fn, "dy.shape", dy.shape, f"dy[0] must be x_shape's batch {x_shape[0]}")
    _check_lanes(fn, "x_shape", tuple(x_shape))
    out = jax.ShapeDtypeStruct(tuple(x_shape), dy.dtype)
    call = jax.ffi.ffi_call("freqjax_conv_input_grad", out, vmap_method="sequential")
    return call(packed(dy), w, **_attrs(strides, pad_top_left))


def winograd_weight_grad(x: jax.Array, dy: jax.Array, pad_top_left: Pair) -> jax.Array:
    """:func:`conv_weight_grad` of a stride-1 3x3 conv by Winograd's F(3x3, 2x2) (16 products per
    channel pair and 2x2 tile of ``dy`` instead of 36). C_in and C_out must be multiples of 16."""
    _check_grad("winograd_weight_grad", x, dy, winograd=True)
    out = jax.ShapeDtypeStruct((3, 3, x.shape[-1], dy.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("freqjax_winograd_weight_grad", out, vmap_method="sequential")
    return call(packed(x), packed(dy), **_attrs((1, 1), pad_top_left))


def depthwise_forward(x: jax.Array, w: jax.Array, strides: Pair, pad_top_left: Pair, out_hw: Pair) -> jax.Array:
    """Depthwise conv of NHWC float32 ``x`` (C a multiple of 16) with ``w`` (kh, kw, C); padding as
    :func:`conv_forward`."""
    fn = "depthwise_forward"
    _check_arrays(fn, {"x": 4, "w": 3}, x=x, w=w)
    _expect(w.shape[2] == x.shape[3], fn, "w.shape", w.shape, f"w[2] must be x's {x.shape[3]} channels")
    _check_lanes(fn, "x.shape", x.shape)
    out = jax.ShapeDtypeStruct((x.shape[0], *out_hw, x.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("freqjax_depthwise_forward", out, vmap_method="sequential")
    return call(x, w, **_attrs(strides, pad_top_left))


def depthwise_weight_grad(x: jax.Array, dy: jax.Array, kernel: Pair, strides: Pair, pad_top_left: Pair) -> jax.Array:
    """Weight gradient (kh, kw, C) of :func:`depthwise_forward` given its output gradient ``dy``."""
    _check_grad("depthwise_weight_grad", x, dy, depthwise=True)
    out = jax.ShapeDtypeStruct((*kernel, x.shape[-1]), x.dtype)
    call = jax.ffi.ffi_call("freqjax_depthwise_weight_grad", out, vmap_method="sequential")
    return call(x, dy, **_attrs(strides, pad_top_left))


def channel_sums(a: jax.Array, b: jax.Array) -> jax.Array:
    """(2, C): per-channel sums of ``a`` and of ``a * b`` over all leading axes, float32, C a
    multiple of 16, in one pass (BatchNorm's statistics and their gradients)."""
    _check_arrays("channel_sums", {"a": a.ndim, "b": a.ndim}, a=a, b=b)
    _expect(b.shape == a.shape, "channel_sums", "b.shape", b.shape, f"must equal a.shape {a.shape}")
    _check_lanes("channel_sums", "a.shape", a.shape)
    out = jax.ShapeDtypeStruct((2, a.shape[-1]), a.dtype)
    return jax.ffi.ffi_call("freqjax_channel_sums", out, vmap_method="sequential")(a, b)
