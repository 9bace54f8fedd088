"""MobileNetV1 at widths 0.25 / 0.5 / 0.75 / 1.0 (Howard et al. 2017; timm's ``mobilenetv1_100``).

timm builds it as stem 3x3/2 (32 x width) -> 13 depthwise-separable blocks with an activation
after the pointwise conv too ('dsa' blocks, no residuals) -> pool -> classifier, ReLU6 throughout
and channels ``make_divisible(c x width, 8)``. Module names are timm's (``conv_stem``, ``bn1``,
``blocks_{stage}_{block}/conv_dw, bn1, conv_pw, bn2``, ``classifier``).

The shared MBNet builder's 'ds' block has no activation after its pointwise conv, so this
network is its own small module rather than a builder table.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import DepthwiseConv, batch_norm, conv2d, make_divisible
from freqjax.models.registry import ModelInfo, register
from freqjax.models.staged import StagedNet, setup_bn, setup_conv

__all__ = ["MOBILENETV1", "MobileNetV1", "SeparableBlock"]

Dtype = Any
TIMM = "timm (pytorch-image-models 1.0) MobileNetV1; Howard et al. 2017"

# Stages of timm's _gen_mobilenet_v1: (repeats, first stride, output channels), all 3x3 depthwise.
MOBILENETV1 = ((1, 1, 64), (2, 2, 128), (2, 2, 256), (6, 2, 512), (2, 2, 1024))


class SeparableBlock(nn.Module):
    """3x3 depthwise (stride) -> BN -> ReLU6 -> 1x1 -> BN -> ReLU6 (timm's 'dsa' block, no skip)."""

    out: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = DepthwiseConv(3, self.stride, dtype=self.dtype, name="conv_dw")(x)
        x = jax.nn.relu6(batch_norm(train, name="bn1", dtype=self.dtype)(x))
        x = conv2d(self.out, 1, name="conv_pw", dtype=self.dtype)(x)
        return jax.nn.relu6(batch_norm(train, name="bn2", dtype=self.dtype)(x))


class MobileNetV1(StagedNet):
    """MobileNetV1 with channel multiplier ``width``; stages are timm's five block stages.

    ``drop_path_rate`` has nothing to act on (no residual branches; timm ignores it as well): a
    non-zero value warns.
    """

    width: float = 1.0

    @property
    def num_stages(self) -> int:
        return len(MOBILENETV1)

    def setup(self):
        if isinstance(self.width, bool) or not isinstance(self.width, int | float) or self.width <= 0:
            raise ValueError(f"width must be a number > 0, got {self.width!r}")
        if self.drop_path_rate:
            warnings.warn("MobileNetV1 has no residual branches: drop_path_rate has no effect", stacklevel=2)
        self.conv_stem = setup_conv(make_divisible(32 * self.width), 3, 2, self.dtype)
        self.bn1 = setup_bn(self.dtype)
        self.blocks = [
            [SeparableBlock(make_divisible(c * self.width), s if j == 0 else 1, self.dtype) for j in range(n)]
            for n, s, c in MOBILENETV1
        ]
        self.setup_head("classifier")

    def forward_stem(self, x: jax.Array, train: bool = False) -> jax.Array:
        """conv_stem (3x3/2) -> bn1 -> ReLU6."""
        return jax.nn.relu6(self.bn1(self.conv_stem(x), use_running_average=not train))

    def forward_stage(self, index: int, x: jax.Array, train: bool = False) -> jax.Array:
        """The separable blocks of stage ``index``."""
        for block in self.blocks[index]:
            x = block(x, train)
        return x


for _w in ("025", "050", "075", "100"):
    _name = f"mobilenetv1_{_w}"
    register(
        ModelInfo(
            _name,
            "rgb",
            224,
            TIMM,
            "docs/reference.md §4; MSNet Table 2",
            _name if _w == "100" else None,
            0.0,
            variant_of=None if _w == "100" else "mobilenetv1_100",
        ),
        functools.partial(MobileNetV1, width=int(_w) / 100),
    )
