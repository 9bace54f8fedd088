"""Convolutions formulated for XLA's CPU backend, with hand-written backward passes.

XLA's CPU backend runs large GEMMs and fused elementwise loops well, but two things in a conv
net's training step badly: the grouped (depthwise) convolution, ~10x slower than a sum of
shifted multiplies, and the weight gradient of a dense convolution, which XLA lowers to a
convolution over transposed copies of the activations and the output gradient (a batch-minor
transpose of every activation, each a third of the quick CIFAR ResNet's step). This module
gives both a ``jax.custom_vjp``:

- dense conv (:func:`conv`): the forward is XLA's convolution (one GEMM over explicit patches
  for 3x3 RGB stems, where XLA's is slow); the stride-1 input gradient is XLA's transposed
  convolution; the weight gradient is one plain GEMM per kernel tap, (C_out, pixels) x
  (pixels, C_in), with the output gradient transposed once; the strided input gradient is one
  GEMM per tap, scattered back by a strided pad that XLA fuses into one loop (XLA would dilate
  the output gradient and convolve 4x the zeros).
- depthwise conv (:func:`depthwise`): the forward is the shift-sum; the input gradient is the
  same shift-sum over the padded, stride-dilated output gradient with the flipped kernel (one
  fused loop instead of autodiff's pad per tap); the weight gradient is one reduction per tap.

Both weight gradients run over cache-sized chunks of the batch (``lax.scan``), since XLA
materialises every shifted tap before its GEMM or reduction.

On top of these, the native C++ kernels of :mod:`freqjax.ops.native` (called through the XLA FFI)
replace dense convs with whole 16-channel vectors of output channels and depthwise convs with
whole vectors of channels, float32: forward, weight gradient, and the input gradient as one
stride-1 native conv per stride phase (:func:`_native_input_grad`). Stride-1 3x3 convs whose
input channels are whole vectors too run by Winograd's minimal filtering instead (F(4x4, 3x3)
at up to 32 input channels, F(2x2, 3x3) above: 2.25 or 4 products per output where the direct
conv takes 9): the forward and the stride-1 input gradient always, the weight gradient
(F(3x3, 2x2)) where it is faster (:func:`_native_weight_grad`).

Which of them runs is chosen by the one backend switch, :mod:`freqjax.ops.backend`
(``conv_impl('native' | 'cpu' | 'xla')``); :func:`conv` and :func:`depthwise` dispatch on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax import lax

from freqjax.ops import native
from freqjax.ops.backend import resolve_conv_impl

__all__ = ["conv", "depthwise", "xla_conv"]

Padding = tuple[tuple[int, int], tuple[int, int]]
Strides = tuple[int, int]


def xla_conv(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding, groups: int = 1) -> jax.Array:
    """XLA's convolution of NHWC ``x`` with HWIO ``w``."""
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
    )


def _out_size(size: int, pad: tuple[int, int], kernel: int, stride: int) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _out_hw(x_shape: tuple[int, ...], kernel: tuple[int, int], strides: Strides, padding: Padding) -> tuple[int, int]:
    (kh, kw), (sh, sw) = kernel, strides
    out_hw = (_out_size(x_shape[1], padding[0], kh, sh), _out_size(x_shape[2], padding[1], kw, sw))
    if min(out_hw) < 1:
        raise ValueError(f"input {tuple(x_shape[1:3])} with padding {padding} is smaller than the kernel {kernel}")
    return out_hw


def _taps(
    x: jax.Array, kernel: tuple[int, int], strides: Strides, padding: Padding
) -> Iterator[tuple[int, int, jax.Array]]:
    """(i, j, tap): the padded input sampled where kernel tap (i, j) reads it, shape (N, Ho, Wo, C)."""
    (kh, kw), (sh, sw) = kernel, strides
    n, _, _, c = x.shape
    ho, wo = _out_hw(x.shape, kernel, strides, padding)
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    for i in range(kh):
        for j in range(kw):
            yield (
                i,
                j,
                lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)),
            )


def _scatter_taps(
    taps: dict[tuple[int, int], jax.Array], x_shape: tuple[int, ...], strides: Strides, padding: Padding
) -> jax.Array:
    """Transpose of :func:`_taps`: add each tap's gradient back where it was read, unpadded.

    Each is placed by one ``lax.pad`` (low = tap offset, interior = stride - 1); XLA fuses the
    pads and the sum into one loop over the padded input.
    """
    (sh, sw) = strides
    (pt, pb), (pl, pr) = padding
    _, h, w, _ = x_shape
    hp, wp = h + pt + pb, w + pl + pr
    total = None
    for (i, j), g in taps.items():
        _, ho, wo, _ = g.shape
        zero = jnp.zeros((), g.dtype)
        config = (
            (0, 0, 0),
            (i, hp - i - sh * (ho - 1) - 1, sh - 1),
            (j, wp - j - sw * (wo - 1) - 1, sw - 1),
            (0, 0, 0),
        )
        placed = lax.pad(g, zero, config)
        total = placed if total is None else total + placed
    return total[:, pt : pt + h, pl : pl + w, :]


def _tap_weight_grads(x: jax.Array, dy: jax.Array, kernel: tuple[int, int], strides: Strides, padding: Padding):
    """Dense weight gradient (kh * kw, C_in, C_out): per tap, the output gradient transposed once to
    (C_out, pixels) times the tap as (pixels, C_in), a plain GEMM; float32 accumulation."""
    dy_t = dy.reshape(-1, dy.shape[-1]).T
    grads = [
        jnp.dot(dy_t, t.reshape(-1, t.shape[-1]), preferred_element_type=jnp.float32).T
        for _, _, t in _taps(x, kernel, strides, padding)
    ]
    return jnp.stack(grads)


# Weight gradients are sums over the batch of per-tap products; XLA materialises every tap (a
# shifted slice) before it can multiply and reduce it, so they run over chunks of images whose
# taps stay in cache; on a 2-core EPYC the fastest chunks held about 256-512 KiB of input for
# dense and 0.6-0.8 MiB for depthwise layers.
_CHUNK_BYTES = {"dense": 1 << 19, "depthwise": 1 << 20}


def _sum_over_batch_chunks(fn, x: jax.Array, dy: jax.Array, kind: str) -> jax.Array:
    """``sum_k fn(x[k], dy[k])`` over batch chunks of at most ``_CHUNK_BYTES[kind]`` of ``x`` (or one image)."""
    n = x.shape[0]
    per_image = x[0].size * x.dtype.itemsize
    limit = _CHUNK_BYTES[kind]
    chunk = max([c for c in range(1, n + 1) if n % c == 0 and c * per_image <= limit], default=1)
    if chunk == n:
        return fn(x, dy)
    xs = x.reshape(n // chunk, chunk, *x.shape[1:])
    dys = dy.reshape(n // chunk, chunk, *dy.shape[1:])
    # Start from zeros, not from chunk 0: scanning over xs[1:] would copy x.
    out = jax.eval_shape(fn, xs[0], dys[0])
    total, _ = lax.scan(lambda acc, xy: (acc + fn(*xy), None), jnp.zeros(out.shape, out.dtype), (xs, dys))
    return total


# Up to this many values per patch (kh * kw * C_in) the forward is one GEMM over explicit patches
# (im2col): XLA's convolution is slow on 3x3 RGB stems (27 values), while for ResNet's 7x7 stem
# (147) the patches cost more than they save (both measured on a 2-core EPYC).
_IM2COL_MAX_PATCH = 32


def _dense_forward(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding) -> jax.Array:
    kh, kw, c, o = w.shape
    if kh * kw * c > _IM2COL_MAX_PATCH:
        return xla_conv(x, w, strides, padding)
    patches = jnp.concatenate([t for _, _, t in _taps(x, (kh, kw), strides, padding)], axis=-1)
    return jnp.dot(patches, w.reshape(kh * kw * c, o))  # patch order (i, j, c) is w's row-major order


def _with_backward(forward, backward):
    """``forward(x, w, strides, padding)`` as a ``jax.custom_vjp`` whose residuals are (x, w) and
    whose backward is ``backward(strides, padding, (x, w), dy) -> (dx, dw)``."""
    fn = jax.custom_vjp(forward, nondiff_argnums=(2, 3))
    fn.defvjp(lambda x, w, strides, padding: (forward(x, w, strides, padding), (x, w)), backward)
    return fn


def _static(strides: Strides, padding: Padding) -> tuple[Strides, Padding]:
    """Strides and padding as nested tuples of Python ints (hashable, as custom_vjp's static args must be)."""
    strides = (int(strides[0]), int(strides[1]))
    padding = ((int(padding[0][0]), int(padding[0][1])), (int(padding[1][0]), int(padding[1][1])))
    return strides, padding


def _input_grad(w: jax.Array, dy: jax.Array, x_shape: tuple[int, ...], strides: Strides, padding: Padding):
    """Input gradient of a dense conv, in XLA ops."""
    kh, kw, c, o = w.shape
    if strides == (1, 1):
        # XLA's transposed convolution is fast at stride 1 (same shapes as the forward).
        x = jax.ShapeDtypeStruct(x_shape, dy.dtype)
        return jax.linear_transpose(lambda x_: xla_conv(x_, w, strides, padding), x)(dy)[0]
    # At stride > 1 XLA dilates the output gradient and convolves 4x the zeros; per-tap GEMMs don't.
    dy2 = dy.reshape(-1, o)
    taps = {(i, j): (dy2 @ w[i, j].T).reshape(*dy.shape[:3], c) for i in range(kh) for j in range(kw)}
    return _scatter_taps(taps, x_shape, strides, padding)


def _weight_grad(x: jax.Array, dy: jax.Array, kernel: tuple[int, int], strides: Strides, padding: Padding):
    """Weight gradient (kh, kw, C_in, C_out) of a dense conv, in XLA ops."""
    dw = _sum_over_batch_chunks(lambda xc, dyc: _tap_weight_grads(xc, dyc, kernel, strides, padding), x, dy, "dense")
    return dw.reshape(*kernel, x.shape[-1], dy.shape[-1])


def _dense_bwd(strides, padding, residuals, dy):
    x, w = residuals
    dx = _input_grad(w, dy, x.shape, strides, padding)
    dw = _weight_grad(x, dy, w.shape[:2], strides, padding)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_dense = _with_backward(_dense_forward, _dense_bwd)


def _native_usable(x: jax.Array, w: jax.Array) -> bool:
    """The native kernels take float32 with C_out a multiple of :data:`freqjax.ops.native.LANES` (16)."""
    return x.dtype == jnp.float32 and w.dtype == jnp.float32 and w.shape[-1] % native.LANES == 0 and native.available()


def _top_left(padding: Padding) -> tuple[int, int]:
    return padding[0][0], padding[1][0]


def _winograd_applies(kernel: tuple[int, int], strides: Strides, c_in: int) -> bool:
    """Winograd's kernels take stride-1 3x3 convs with C_in (and C_out) a multiple of 16."""
    return kernel == (3, 3) and strides == (1, 1) and c_in % native.LANES == 0


def _native_conv(x: jax.Array, w: jax.Array, strides: Strides, pad_top_left: tuple[int, int], out_hw) -> jax.Array:
    """The native dense conv: Winograd's (F(4x4) or F(2x2)) where it applies, else the direct kernel."""
    if _winograd_applies(w.shape[:2], strides, x.shape[-1]):
        return native.winograd_forward(x, w, pad_top_left, out_hw)
    return native.conv_forward(x, w, strides, pad_top_left, out_hw)


def _native_weight_grad(x: jax.Array, dy: jax.Array, kernel: tuple[int, int], strides: Strides, padding: Padding):
    """The native dense weight gradient: Winograd's F(3x3, 2x2) where it applies, else the direct kernel.

    Winograd's was 1.04-1.9x the direct kernel on every shape of ``python benchmarks/cpu_conv_ops.py
    winograd`` (16-512 channels, 7x7 to 56x56 pixels) on a 2-core EPYC; on the 2-core Xeon CI runs
    on since, 1.03-3.4x but for 128x32x32x16 -> 16 (0.82x) and 16x7x7x512 -> 512 (0.73x)."""
    if _winograd_applies(kernel, strides, x.shape[-1]):
        return native.winograd_weight_grad(x, dy, _top_left(padding))
    return native.conv_weight_grad(x, dy, kernel, strides, _top_left(padding))


def _native_forward(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding) -> jax.Array:
    return _native_conv(x, w, strides, _top_left(padding), _out_hw(x.shape, w.shape[:2], strides, padding))


def _phase(size: int, kernel: int, stride: int, pad: int, a: int):
    """One stride phase of the input gradient along one axis (see :func:`_native_input_grad`).

    Returns (first tap r, tap count T, dy offset L, phase length M): input positions
    ``stride * m + a`` receive ``sum_u dy[m - L + u] * w[r + stride * (T - 1 - u)]``, u < T.
    """
    r, q = (a + pad) % stride, (a + pad) // stride
    taps = len(range(r, kernel, stride))
    length = len(range(a, size, stride))
    return r, taps, taps - 1 - q, length


def _native_input_grad(
    w: jax.Array,
    dy: jax.Array,
    x_shape: tuple[int, ...],
    strides: Strides,
    padding: Padding,
    *,
    depthwise: bool = False,
):
    """Input gradient of a dense (or ``depthwise``) conv as stride-1 native convs, one per stride phase.

    Input pixel ``p = stride * m + a`` gets ``sum_o dy[o] * w[p + pad - stride * o]``: only taps
    ``i = r (mod stride)`` reach phase ``a``, so each phase is a stride-1 correlation of ``dy``
    with the flipped sub-kernel ``w[r::stride]`` (channels swapped if dense), and the phases interleave into
    dx. At stride 1 it is the one transposed conv; at stride 2 no product with a dilation zero is
    computed (XLA's transposed conv computes 4x the products). Strided dense convs use
    :func:`freqjax.ops.native.conv_input_grad` instead, the same algebra in one call.
    """
    n, h, wd, c = x_shape
    (kh, kw), (sh, sw) = w.shape[:2], strides
    phases = []
    for a in range(sh):
        row = []
        for b in range(sw):
            rh, th, lh, mh = _phase(h, kh, sh, padding[0][0], a)
            rw, tw, lw, mw = _phase(wd, kw, sw, padding[1][0], b)
            if min(th, tw, mh, mw) < 1:  # no tap reaches this phase (e.g. 1x1 at stride 2)
                row.append(jnp.zeros((n, mh, mw, c), dy.dtype))
                continue
            sub = w[rh::sh, rw::sw][::-1, ::-1]
            # A negative offset means dy rows/columns before the phase's first read: crop them.
            dyc = dy[:, max(0, -lh) :, max(0, -lw) :]
            pads = (max(0, lh), max(0, lw))
            if depthwise:  # sub (th, tw, 1, C)
                row.append(native.depthwise_forward(dyc, sub[:, :, 0], (1, 1), pads, (mh, mw)))
            else:  # sub (th, tw, C_in, C_out) -> (th, tw, C_out, C_in)
                row.append(_native_conv(dyc, jnp.swapaxes(sub, 2, 3), (1, 1), pads, (mh, mw)))
        phases.append(row)
    if (sh, sw) == (1, 1):
        return phases[0][0]
    # Interleave: dx[sh * m + a, sw * k + b] = phases[a][b][m, k]; pad phases to a common size first.
    mh, mw = -(-h // sh), -(-wd // sw)
    grid = jnp.stack(
        [
            jnp.stack([jnp.pad(p, ((0, 0), (0, mh - p.shape[1]), (0, mw - p.shape[2]), (0, 0))) for p in row])
            for row in phases
        ]
    )  # (sh, sw, N, mh, mw, C)
    dx = grid.transpose(2, 3, 0, 4, 1, 5).reshape(n, mh * sh, mw * sw, c)
    return dx[:, :h, :wd]


def _native_bwd(strides, padding, residuals, dy):
    x, w = residuals
    if x.shape[-1] % native.LANES == 0:
        if strides != (1, 1):
            # every stride phase in one call, written in place: 0.8-0.9x the time of per-phase calls
            # plus an interleaving pass at 16 and 64 input channels, on par at 32 and 128
            dx = native.conv_input_grad(dy, w, x.shape, strides, _top_left(padding))
        else:  # one phase: Winograd's or the direct forward of the flipped kernel
            dx = _native_input_grad(w, dy, x.shape, strides, padding)
    else:  # the input gradient's channels (C_in) are not whole vectors
        dx = _input_grad(w, dy, x.shape, strides, padding)
    dw = _native_weight_grad(x, dy, w.shape[:2], strides, padding)
    return dx, dw


_native_dense = _with_backward(_native_forward, _native_bwd)


def conv(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding, impl: str | None = None) -> jax.Array:
    """Ungrouped 2-D convolution, NHWC ``x`` and HWIO ``w``, static integer ``padding``.

    ``impl``: 'native' (C++ kernels where :func:`_native_usable`, else as 'cpu'), 'cpu' (XLA ops
    with a custom backward, see the module docstring), 'xla' or None (:func:`resolve_conv_impl`).
    """
    strides, padding = _static(strides, padding)
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return xla_conv(x, w, strides, padding)
    if impl == "native" and _native_usable(x, w):
        return _native_dense(x, w, strides, padding)
    return _dense(x, w, strides, padding)


def _shift_sum(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding) -> jax.Array:
    """Depthwise conv as a sum of kh*kw strided slices times per-channel weights (one fused loop)."""
    out = None
    for i, j, tap in _taps(x, w.shape[:2], strides, padding):
        term = tap * w[i, j, 0]
        out = term if out is None else out + term
    return out


def _depthwise_bwd(strides, padding, residuals, dy):
    x, w = residuals
    kh, kw = w.shape[:2]
    (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
    _, h, wd, _ = x.shape
    _, ho, wo, _ = dy.shape
    # dx_padded[a] = sum_i dilated(dy)[a - i] * w[i]: pad the stride-dilated dy by k - 1 in front and
    # to the padded input's size behind, then it is a stride-1 shift-sum with the flipped kernel;
    # the crop keeps the rows and columns that land on x rather than on its padding.
    hi_h, hi_w = h + pt + pb - sh * (ho - 1) - 1, wd + pl + pr - sw * (wo - 1) - 1
    config = ((0, 0, 0), (kh - 1, hi_h, sh - 1), (kw - 1, hi_w, sw - 1), (0, 0, 0))
    dyp = lax.pad(dy, jnp.zeros((), dy.dtype), config)[:, pt : pt + h + kh - 1, pl : pl + wd + kw - 1]
    dx = _shift_sum(dyp, w[::-1, ::-1], (1, 1), ((0, 0), (0, 0)))

    def weight_grad(xc, dyc):
        taps = _taps(xc, (kh, kw), strides, padding)
        return jnp.stack([jnp.sum(t * dyc, axis=(0, 1, 2), dtype=jnp.float32) for _, _, t in taps])

    # The barrier materialises x once; XLA would otherwise recompute its producer (BN + activation)
    # into every tap.
    dw = _sum_over_batch_chunks(weight_grad, lax.optimization_barrier(x), dy, "depthwise")
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_depthwise = _with_backward(_shift_sum, _depthwise_bwd)


def _native_depthwise_forward(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding) -> jax.Array:
    out_hw = _out_hw(x.shape, w.shape[:2], strides, padding)
    return native.depthwise_forward(x, w[:, :, 0], strides, _top_left(padding), out_hw)


def _native_depthwise_bwd(strides, padding, residuals, dy):
    x, w = residuals
    dx = _native_input_grad(w, dy, x.shape, strides, padding, depthwise=True)
    dw = native.depthwise_weight_grad(x, dy, w.shape[:2], strides, _top_left(padding))
    return dx, dw[:, :, None]


_native_depthwise = _with_backward(_native_depthwise_forward, _native_depthwise_bwd)


def depthwise(x: jax.Array, w: jax.Array, strides: Strides, padding: Padding, impl: str | None = None) -> jax.Array:
    """Depthwise conv of NHWC ``x`` with ``w`` (kh, kw, 1, C), static integer ``padding``.

    ``impl`` as :func:`conv`: 'native' (the native depthwise kernels where :func:`_native_usable`,
    else as 'cpu'), 'cpu' (the shift-sum with a custom backward), 'xla' (XLA's grouped
    convolution, ~10x slower on CPUs) or None (:func:`freqjax.ops.backend.resolve_conv_impl`).
    """
    strides, padding = _static(strides, padding)
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return xla_conv(x, w, strides, padding, groups=x.shape[-1])
    if impl == "native" and _native_usable(x, w):
        return _native_depthwise(x, w, strides, padding)
    return _depthwise(x, w, strides, padding)
