"""Block specifications and the blocks of inverted-residual networks: DS, IR (MBConv), ConvBnAct, ReXNet.

A network is a table of stages; each stage is a list of block strings in timm's notation, e.g.
``'ir_r2_k3_s2_e6_c24_se0.25'`` = 2 inverted-residual blocks, 3x3 depthwise, first stride 2,
expansion 6, 24 output channels, squeeze-excite ratio 0.25. Options: ``nre`` (ReLU instead of
the network's activation), ``noskip``, ``xs`` (the k x k depthwise conv -> BN -> act becomes an
:class:`~freqjax.models.xsepconv.XSepConv` of kernel k; stride 2 gives its downsampling form).
Kind ``rx`` is ReXNet's linear bottleneck (:class:`ReXNetBottleneck`). :func:`decode_stages` turns the table into
:class:`BlockArgs`, one per block, which the builder (:mod:`freqjax.models.builder`) instantiates.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import (
    BatchNorm,
    DepthwiseConv,
    DropPath,
    SqueezeExcite,
    batch_norm,
    conv2d,
    get_activation,
    make_divisible,
)
from freqjax.models.xsepconv import XSepConv

__all__ = [
    "BLOCK_KINDS",
    "BlockArgs",
    "ConvBnAct",
    "ConvNorm",
    "DepthwiseSeparable",
    "InvertedResidual",
    "ReXNetBottleneck",
    "SEConfig",
    "SEWithNorm",
    "decode_block",
    "decode_stages",
    "make_block",
]

BLOCK_KINDS = ("ds", "ir", "cn", "rx")
Dtype = Any


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One block: kind 'ds' | 'ir' | 'cn' | 'rx', kernel, stride, expansion, output channels, SE ratio.

    ``act=None`` means the network's activation. ``skip=None`` means the usual rule (residual iff
    stride 1 and in == out); ``False`` forbids the residual. ``xsep=True`` replaces the depthwise
    conv of a 'ds' / 'ir' block by XSepConv.
    """

    kind: str
    kernel: int
    stride: int
    out: int
    exp: float = 1.0
    se: float = 0.0
    act: str | None = None
    skip: bool | None = None
    xsep: bool = False

    def __post_init__(self):
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"block kind must be one of {BLOCK_KINDS}, got {self.kind!r}")
        for field in ("kernel", "stride", "out"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"block {field} must be a positive int, got {value!r}")
        if self.exp <= 0 or not 0 <= self.se < 1:
            raise ValueError(f"block needs exp > 0 and 0 <= se < 1, got exp={self.exp}, se={self.se}")
        if self.xsep and (self.kind not in ("ds", "ir") or self.kernel % 2 == 0):
            raise ValueError(f"xs (XSepConv) needs a 'ds' or 'ir' block with an odd kernel, got {self}")


@dataclasses.dataclass(frozen=True)
class SEConfig:
    """How a network sizes and gates its squeeze-excite layers.

    ``from_exp=False`` (EfficientNet, eFUN): reduce from the block input; ``True`` (MobileNetV3):
    from the expanded width. ``divisor=1`` rounds to the nearest int, 8 applies make_divisible.
    ``act=None`` uses the block's activation.
    """

    gate: str = "sigmoid"
    act: str | None = None
    from_exp: bool = False
    divisor: int = 1

    def reduced(self, mid: int, ratio: float, exp: float) -> int:
        # timm computes both cases from the expanded width: ratio / exp undoes the expansion.
        v = mid * ratio if self.from_exp else mid * (ratio / exp)
        return round(v) if self.divisor == 1 else make_divisible(v, self.divisor)


_TOKEN = re.compile(r"^([a-z]+)([0-9.]*)$")


def decode_block(spec: str) -> tuple[int, BlockArgs]:
    """Parse one timm block string into (repeats, :class:`BlockArgs`)."""
    if not isinstance(spec, str):
        raise TypeError(f"block spec must be a string like 'ir_r2_k3_s2_e6_c24', got {spec!r}")
    kind, *ops = spec.split("_")
    fields: dict[str, Any] = {"kind": kind}
    repeats = 1
    names = {"k": "kernel", "s": "stride", "e": "exp", "c": "out", "se": "se"}
    for op in ops:
        m = _TOKEN.match(op)
        if op == "nre":
            fields["act"] = "relu"
        elif op == "noskip":
            fields["skip"] = False
        elif op == "xs":
            fields["xsep"] = True
        elif m and m.group(1) == "r" and m.group(2):
            repeats = int(m.group(2))
        elif m and m.group(1) in names and m.group(2):
            key = names[m.group(1)]
            fields[key] = float(m.group(2)) if key in ("exp", "se") else int(m.group(2))
        else:
            raise ValueError(f"unknown option {op!r} in block spec {spec!r}; known: r k s e c se nre noskip xs")
    missing = {"kernel", "stride", "out"} - fields.keys()
    if missing:
        raise ValueError(f"block spec {spec!r} lacks {sorted(missing)} (k, s and c are required)")
    return repeats, BlockArgs(**fields)


def _scale_repeats(repeats: list[int], multiplier: float) -> list[int]:
    """timm's ``_scale_stage_depth`` with 'ceil': scale a stage's total, hand it out in reverse."""
    total = sum(repeats)
    scaled_total = math.ceil(total * multiplier)
    out = []
    left = scaled_total
    for r in reversed(repeats):
        share = max(1, round(r / total * scaled_total))
        out.append(share)
        left -= share
        total -= r
        scaled_total = left
    return out[::-1]


def decode_stages(
    table: Sequence[Sequence[str]],
    width: float = 1.0,
    depth: float = 1.0,
    round_width: bool = True,
) -> tuple[tuple[BlockArgs, ...], ...]:
    """Expand a stage table into per-block arguments, scaled like timm's builder.

    Output channels become ``make_divisible(c * width)`` (when ``round_width``); repeats of each
    stage are scaled by ``depth`` with ceil. Only the first block of a string keeps its stride.
    """
    if width <= 0 or depth <= 0:
        raise ValueError(f"width and depth multipliers must be > 0, got width={width}, depth={depth}")
    stages = []
    for stage in table:
        decoded = [decode_block(s) for s in stage]
        repeats = [r for r, _ in decoded]
        if depth != 1.0:
            repeats = _scale_repeats(repeats, depth)
        blocks = []
        for r, (_, args) in zip(repeats, decoded, strict=True):
            out = make_divisible(args.out * width) if round_width else args.out
            first = dataclasses.replace(args, out=out)
            blocks.append(first)
            blocks.extend([dataclasses.replace(first, stride=1)] * (r - 1))
        stages.append(tuple(blocks))
    return tuple(stages)


class _Block(nn.Module):
    """Fields shared by every block; subclasses implement ``__call__``."""

    args: BlockArgs
    act: str = "silu"
    se_config: SEConfig = SEConfig()
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32
    xsep_form: str = "standard"
    xsep_padding: str | None = None  # this block's 2x2 padding mode; the builder numbers the layers

    def _act(self):
        return get_activation(self.args.act or self.act)

    def _bn(self, train: bool, name: str) -> BatchNorm:
        return batch_norm(train, name=name, dtype=self.dtype)

    def _dw(self, name: str) -> DepthwiseConv:
        a = self.args
        return DepthwiseConv(a.kernel, a.stride, dtype=self.dtype, name=name)

    def _dw_bn_act(self, y: jax.Array, train: bool, bn_name: str) -> jax.Array:
        """The k x k depthwise conv -> BN -> act, or the XSepConv that replaces it (``xs`` blocks)."""
        a = self.args
        if not a.xsep:
            return self._act()(self._bn(train, bn_name)(self._dw("conv_dw")(y)))
        if self.xsep_padding is None and self.xsep_form != "no_2x2":
            raise ValueError("an 'xs' block needs xsep_padding (the network builder assigns it per 2x2 layer)")
        return XSepConv(
            a.kernel,
            a.stride,
            self.xsep_form,
            self.xsep_padding or "right_bottom",
            a.act or self.act,
            self.dtype,
            name="conv_dw",  # in place of the depthwise conv (its BN and act are inside)
        )(y, train)

    def _se(self, x: jax.Array, mid: int) -> jax.Array:
        a = self.args
        if not a.se:
            return x
        reduced = self.se_config.reduced(mid, a.se, a.exp)
        act = self.se_config.act or a.act or self.act
        return SqueezeExcite(reduced, act=act, gate=self.se_config.gate, dtype=self.dtype, name="se")(x)

    def _residual(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
        a = self.args
        has_skip = a.skip is not False and a.stride == 1 and x.shape[-1] == a.out
        if not has_skip:
            return y
        return x + DropPath(self.drop_path, name="drop_path")(y, train)


class DepthwiseSeparable(_Block):
    """kxk depthwise -> BN -> act -> [SE] -> 1x1 -> BN (timm ``DepthwiseSeparableConv``)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self._dw_bn_act(x, train, "bn1")
        y = self._se(y, x.shape[-1])
        y = self._bn(train, "bn2")(conv2d(self.args.out, 1, name="conv_pw", dtype=self.dtype)(y))
        return self._residual(x, y, train)


class InvertedResidual(_Block):
    """1x1 expand -> BN -> act -> kxk depthwise -> BN -> act -> [SE] -> 1x1 project -> BN (MBConv)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = self._act()
        mid = make_divisible(x.shape[-1] * self.args.exp)
        y = act(self._bn(train, "bn1")(conv2d(mid, 1, name="conv_pw", dtype=self.dtype)(x)))
        y = self._dw_bn_act(y, train, "bn2")
        y = self._se(y, mid)
        y = self._bn(train, "bn3")(conv2d(self.args.out, 1, name="conv_pwl", dtype=self.dtype)(y))
        return self._residual(x, y, train)


class ConvBnAct(_Block):
    """kxk conv -> BN -> act (timm ``ConvBnAct``; no residual unless asked with ``skip=True``)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        a = self.args
        y = conv2d(a.out, a.kernel, a.stride, name="conv", dtype=self.dtype)(x)
        y = self._act()(self._bn(train, "bn1")(y))
        if a.skip and a.stride == 1 and x.shape[-1] == a.out:
            return x + DropPath(self.drop_path, name="drop_path")(y, train)
        return y


class ConvNorm(nn.Module):
    """kxk conv (``depthwise=True``: depthwise) -> BN -> [act]; submodules ``conv``, ``bn`` (timm ConvNormAct)."""

    features: int
    kernel: int = 1
    stride: int = 1
    depthwise: bool = False
    act: str | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depthwise:
            y = DepthwiseConv(self.kernel, self.stride, dtype=self.dtype, name="conv")(x)
        else:
            y = conv2d(self.features, self.kernel, self.stride, name="conv", dtype=self.dtype)(x)
        y = batch_norm(train, name="bn", dtype=self.dtype)(y)
        return y if self.act is None else get_activation(self.act)(y)


class SEWithNorm(nn.Module):
    """ReXNet's squeeze-excite: pool -> 1x1 (bias) -> BN -> ReLU -> 1x1 (bias) -> sigmoid; timm names fc1, bn, fc2."""

    reduced: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = conv2d(self.reduced, 1, name="fc1", dtype=self.dtype, use_bias=True)(s)
        s = jax.nn.relu(batch_norm(train, name="bn", dtype=self.dtype)(s))
        s = conv2d(x.shape[-1], 1, name="fc2", dtype=self.dtype, use_bias=True)(s)
        return x * jax.nn.sigmoid(s)


class ReXNetBottleneck(_Block):
    """ReXNet's linear bottleneck (timm ``LinearBottleneck``; names conv_exp, conv_dw, se, conv_pwl).

    [exp != 1: 1x1 expand to round(in * exp) -> BN -> act] -> kxk depthwise -> BN -> [SE with BN,
    reduced to floor(mid * se)] -> ReLU6 -> 1x1 project -> BN. Residual iff stride 1 and in <= out:
    a *partial* one, added to the first ``in`` output channels.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        a, c_in = self.args, x.shape[-1]
        kw = {"dtype": self.dtype}
        y, mid = x, c_in
        if a.exp != 1:
            mid = round(c_in * a.exp)
            y = ConvNorm(mid, act=a.act or self.act, name="conv_exp", **kw)(y, train)
        y = ConvNorm(mid, a.kernel, a.stride, depthwise=True, name="conv_dw", **kw)(y, train)
        if a.se:
            # The reference sizes it channels // 12; int() of mid * (1/12) is the same for every width.
            y = SEWithNorm(max(1, int(mid * a.se)), self.dtype, name="se")(y, train)
        y = jax.nn.relu6(y)
        y = ConvNorm(a.out, name="conv_pwl", **kw)(y, train)
        if a.skip is False or a.stride != 1 or c_in > a.out:
            return y
        y = DropPath(self.drop_path, name="drop_path")(y, train)
        return jnp.concatenate([y[..., :c_in] + x, y[..., c_in:]], axis=-1)


_BLOCKS = {"ds": DepthwiseSeparable, "ir": InvertedResidual, "cn": ConvBnAct, "rx": ReXNetBottleneck}


def make_block(args: BlockArgs, **kw) -> _Block:
    """The block module for ``args.kind`` with the given shared fields (act, se_config, ...)."""
    return _BLOCKS[args.kind](args, **kw)
