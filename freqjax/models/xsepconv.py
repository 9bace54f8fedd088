"""XSepConv: 2x2 depthwise -> 1xk depthwise -> kx1 depthwise, each BN + activation.

From "XSepConv: Extremely Separated Convolution".

A k x k depthwise conv costs k^2 weights and MACs per channel and pixel; XSepConv costs 4 + 2k
(k=5: 0.56x, k=7: 0.37x). The 2x2 layer needs one pixel of zero padding on two sides; which two
is the *padding strategy*:

- ``'improved'`` (the paper's): the network numbers its N 2x2 layers i = 0..N-1 and pads layer i
  towards ``DIRECTIONS[i % 4]`` = right-bottom, left-top, left-bottom, right-top, so every four
  consecutive layers cancel their half-pixel shifts; with N % 4 == 1 the last layer uses the
  original symmetric padding instead (N % 4 == 2 ends on an opposite pair by this order).
- ``'original'`` (C2sp, Wu et al. 2019): four near-equal channel groups padded four ways.
- ``'right_bottom'``: every layer padded right and bottom (the naive choice; features drift
  half a pixel to the top-left per layer).

Forms (paper Fig. 1 and 6): ``'standard'``, ``'no_2x2'``, ``'behind'`` (2x2 after the separated
pair, XSepConv-B) and ``'parallel'`` (2x2 beside it, summed, XSepConv-P). With ``stride=2`` the
separated pair downsamples in two steps, 1xk stride (1, 2) then kx1 stride (2, 1).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import DepthwiseConv, batch_norm, depthwise_conv, depthwise_init, get_activation

__all__ = [
    "DIRECTIONS",
    "ORIGINAL_GROUP_PADDING",
    "PADDING_STRATEGIES",
    "XSEP_FORMS",
    "TwoByTwoDepthwise",
    "XSepConv",
    "original_groups",
    "two_by_two_padding",
    "xsep_weight_count",
]

PADDING_STRATEGIES = ("improved", "original", "right_bottom")
XSEP_FORMS = ("standard", "no_2x2", "behind", "parallel")
Pad = tuple[tuple[int, int], tuple[int, int]]
# ((top, bottom), (left, right)) zeros added before a VALID 2x2 conv.
DIRECTIONS: dict[str, Pad] = {
    "right_bottom": ((0, 1), (0, 1)),
    "left_top": ((1, 0), (1, 0)),
    "left_bottom": ((0, 1), (1, 0)),
    "right_top": ((1, 0), (0, 1)),
}
_CYCLE = ("right_bottom", "left_top", "left_bottom", "right_top")
# C2sp's four channel groups, as (top, bottom, left, right) = docs/reference.md section 7.
ORIGINAL_GROUP_PADDING: tuple[Pad, ...] = (((0, 1), (0, 1)), ((1, 0), (1, 0)), ((0, 1), (1, 0)), ((1, 0), (0, 1)))
Dtype = Any


def two_by_two_padding(strategy: str, index: int, total: int) -> str:
    """The padding mode of 2x2 layer ``index`` of ``total`` in a network: a DIRECTIONS key or 'original'.

    Args:
        strategy: one of :data:`PADDING_STRATEGIES`.
        index: 0-based position of the layer among the network's 2x2 layers (the builder counts).
        total: number N of 2x2 layers in the network.
    """
    if strategy not in PADDING_STRATEGIES:
        raise ValueError(f"padding strategy must be one of {PADDING_STRATEGIES}, got {strategy!r}")
    if not (isinstance(total, int) and isinstance(index, int) and 0 <= index < total):
        raise ValueError(f"2x2 layer index must satisfy 0 <= index < total, got index={index!r}, total={total!r}")
    if strategy in ("original", "right_bottom"):
        return strategy
    # N % 4 == 1: the one layer left over after the last complete cycle cannot be cancelled by a
    # partner, so it splits its shift over channel groups (paper section 3.2).
    if total % 4 == 1 and index == total - 1:
        return "original"
    return _CYCLE[index % 4]


def original_groups(channels: int) -> tuple[int, int, int, int]:
    """C2sp's channel group sizes: four near-equal groups, the first ``channels % 4`` one larger."""
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    q, r = divmod(channels, 4)
    return tuple(q + (g < r) for g in range(4))


def xsep_weight_count(kernel: int, channels: int, form: str = "standard") -> int:
    """Depthwise weights of one XSepConv layer: (4 + 2k) C, or 2k C without the 2x2 (BN not included)."""
    if form not in XSEP_FORMS:
        raise ValueError(f"form must be one of {XSEP_FORMS}, got {form!r}")
    return (2 * kernel + (0 if form == "no_2x2" else 4)) * channels


class TwoByTwoDepthwise(nn.Module):
    """2x2 depthwise conv, stride 1, output the size of the input; ``padding`` a DIRECTIONS key or 'original'.

    Parameter ``kernel`` (2, 2, 1, C) like :class:`~freqjax.models.layers.DepthwiseConv`.
    """

    padding: str = "right_bottom"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding != "original" and self.padding not in DIRECTIONS:
            raise ValueError(f"2x2 padding must be 'original' or one of {sorted(DIRECTIONS)}, got {self.padding!r}")
        c = x.shape[-1]
        kernel = self.param("kernel", depthwise_init, (2, 2, 1, c), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        if self.padding != "original":
            return depthwise_conv(x, kernel, 1, DIRECTIONS[self.padding])
        outs, start = [], 0
        for size, pad in zip(original_groups(c), ORIGINAL_GROUP_PADDING, strict=True):
            if size:
                sl = slice(start, start + size)
                outs.append(depthwise_conv(x[..., sl], kernel[..., sl], 1, pad))
            start += size
        return jnp.concatenate(outs, axis=-1)


class XSepConv(nn.Module):
    """The XSepConv layer: replaces a k x k depthwise conv -> BN -> act of a block.

    Submodules: ``conv_2x2``/``bn_2x2`` (absent in form 'no_2x2'), ``conv_1xk``/``bn_1xk``,
    ``conv_kx1``/``bn_kx1``. Call as ``layer(x, train)``.

    Attributes:
        kernel: k of the 1xk and kx1 convs (odd).
        stride: 1, or 2 for the downsampling form (1xk stride (1, 2), then kx1 stride (2, 1)).
        form: one of :data:`XSEP_FORMS`.
        padding: this layer's 2x2 padding mode (from :func:`two_by_two_padding`; the network
            assigns it, users choose only the strategy).
        act: activation after every BN.
    """

    kernel: int = 5
    stride: int = 1
    form: str = "standard"
    padding: str = "right_bottom"
    act: str = "relu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        k, s = self.kernel, self.stride
        if not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"XSepConv kernel must be an odd positive int, got {k!r}")
        if s not in (1, 2):
            raise ValueError(f"XSepConv stride must be 1 or 2, got {s!r}")
        if self.form not in XSEP_FORMS:
            raise ValueError(f"XSepConv form must be one of {XSEP_FORMS}, got {self.form!r}")
        if self.form == "parallel" and s != 1:
            raise ValueError("XSepConv form 'parallel' sums a stride-1 2x2 branch: it needs stride 1, got 2")
        act = get_activation(self.act)
        p = (k - 1) // 2

        def bn_act(y, name):
            return act(batch_norm(train, name=f"bn_{name}", dtype=self.dtype)(y))

        def two_by_two(y):
            conv = TwoByTwoDepthwise(self.padding, self.dtype, name="conv_2x2")
            return bn_act(conv(y), "2x2")

        def separated(y):
            row = DepthwiseConv((1, k), (1, s), ((0, 0), (p, p)), dtype=self.dtype, name="conv_1xk")
            y = bn_act(row(y), "1xk")
            col = DepthwiseConv((k, 1), (s, 1), ((p, p), (0, 0)), dtype=self.dtype, name="conv_kx1")
            return bn_act(col(y), "kx1")

        if self.form == "standard":
            return separated(two_by_two(x))
        if self.form == "no_2x2":
            return separated(x)
        if self.form == "behind":
            return two_by_two(separated(x))
        return two_by_two(x) + separated(x)
