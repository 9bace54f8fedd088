"""ResNet-18/34/50 (torchvision / timm definitions, ResNet-50 v1.5) and ResFUN ("Rethinking FUN").

Module names are torchvision's (``conv1``, ``bn1``, ``layer1_0/conv1``, ``downsample_0/1``,
``fc``), so :mod:`freqjax.interop.torch_weights` loads torchvision and timm checkpoints by its one rule.
ResNet-50 is v1.5: the stride of a bottleneck sits on its 3x3 conv, not on the first 1x1.

ResFUN (docs/reference.md section 3) is ResNet-50 without stem, max-pool and conv2_x: the 28x28x192
DCT input enters conv3_x (4 bottlenecks, now stride 1), then conv4_x (6, stride 2) and conv5_x
(3, stride 2) with outputs 512, 768, 1024 and bottleneck widths 128, 192, 256 (10,397,672
parameters at 1000 classes, the paper's 10.4M). Its stages are named ``layer1..layer3``, the
names of timm's ``ResNet(channels=(128, 192, 256), layers=(4, 6, 3))`` with the stem removed.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import BatchNorm, DropPath, conv2d
from freqjax.models.registry import ModelInfo, register
from freqjax.models.staged import StagedNet, setup_bn, setup_conv

__all__ = ["BLOCKS", "BasicBlock", "Bottleneck", "ResNet"]

Dtype = Any
TORCHVISION = "torchvision / timm ResNet (He et al. 2016; v1.5 for ResNet-50)"
FUN = "Rethinking FUN: Frequency-Domain Utilization Networks (Goldberg et al.)"


def _bn(train: bool, name: str, dtype: Dtype, zero: bool = False) -> BatchNorm:
    # zero=True: timm's zero_init_last, the last BN of a residual branch starts at scale 0.
    scale_init = nn.initializers.zeros if zero else nn.initializers.ones
    return BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, scale_init=scale_init, name=name
    )


class _ResBlock(nn.Module):
    planes: int
    stride: int = 1
    downsample: bool = False
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32
    zero_init_last: bool = True  # timm's default; torchvision's (and the CIFAR ResNets') is False

    def _shortcut(self, x: jax.Array, out: int, train: bool) -> jax.Array:
        if not self.downsample:
            return x
        x = conv2d(out, 1, self.stride, name="downsample_0", dtype=self.dtype)(x)
        return _bn(train, "downsample_1", self.dtype)(x)

    def _finish(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
        y = DropPath(self.drop_path, name="drop_path")(y, train)
        return jax.nn.relu(self._shortcut(x, y.shape[-1], train) + y)


class BasicBlock(_ResBlock):
    """3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut, -> ReLU."""

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = conv2d(self.planes, 3, self.stride, name="conv1", dtype=self.dtype)(x)
        y = jax.nn.relu(_bn(train, "bn1", self.dtype)(y))
        y = conv2d(self.planes, 3, 1, name="conv2", dtype=self.dtype)(y)
        y = _bn(train, "bn2", self.dtype, zero=self.zero_init_last)(y)
        return self._finish(x, y, train)


class Bottleneck(_ResBlock):
    """1x1 -> BN -> ReLU -> 3x3 (stride, v1.5) -> BN -> ReLU -> 1x1 (4x planes) -> BN, + shortcut, ReLU."""

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = conv2d(self.planes, 1, 1, name="conv1", dtype=self.dtype)(x)
        y = jax.nn.relu(_bn(train, "bn1", self.dtype)(y))
        y = conv2d(self.planes, 3, self.stride, name="conv2", dtype=self.dtype)(y)
        y = jax.nn.relu(_bn(train, "bn2", self.dtype)(y))
        y = conv2d(self.planes * self.expansion, 1, 1, name="conv3", dtype=self.dtype)(y)
        y = _bn(train, "bn3", self.dtype, zero=self.zero_init_last)(y)
        return self._finish(x, y, train)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(StagedNet):
    """A torchvision-style ResNet; ``stem=False`` drops conv1/bn1/max-pool (ResFUN on DCT input).

    Attributes:
        block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50, ResFUN).
        layers: blocks per stage.
        channels: bottleneck/basic width per stage (output = width x expansion).
        strides: stride of each stage's first block.
        stem: keep the 7x7 stride-2 conv, BN, ReLU and 3x3 stride-2 max-pool.
        in_channels: 3 for RGB, 192 for the DCT input.
        stem_width: channels after the stem (the first stage's input when there is a stem).

    Drop-path grows linearly from 0 at the first block to ``drop_path_rate`` at the last (timm).
    """

    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    channels: tuple[int, ...] = (64, 128, 256, 512)
    strides: tuple[int, ...] = (1, 2, 2, 2)
    stem: bool = True
    stem_width: int = 64

    @property
    def num_stages(self) -> int:
        return len(self.layers)

    def setup(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if not len(self.layers) == len(self.channels) == len(self.strides):
            raise ValueError(f"layers, channels and strides need one entry per stage, got {self}")
        cls = BLOCKS[self.block]
        if self.stem:
            self.conv1 = setup_conv(self.stem_width, 7, 2, self.dtype)
            self.bn1 = setup_bn(self.dtype)
        in_ch = self.stem_width if self.stem else self.in_channels
        total, index = sum(self.layers), 0
        for i, (n, planes, stride) in enumerate(zip(self.layers, self.channels, self.strides, strict=True)):
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                out = planes * cls.expansion
                rate = self.drop_path_rate * index / max(total - 1, 1)
                blocks.append(cls(planes, s, j == 0 and (s != 1 or in_ch != out), rate, self.dtype))
                in_ch, index = out, index + 1
            setattr(self, f"layer{i + 1}", blocks)
        self.setup_head("fc")

    def forward_stem(self, x: jax.Array, train: bool = False) -> jax.Array:
        """conv1 -> bn1 -> ReLU -> 3x3/2 max-pool (identity without a stem)."""
        if not self.stem:
            return x
        x = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    def forward_stage(self, index: int, x: jax.Array, train: bool = False) -> jax.Array:
        """The blocks of ``layer{index + 1}``."""
        for block in getattr(self, f"layer{index + 1}"):
            x = block(x, train)
        return x


def _resnet(block: str, layers: tuple[int, ...], **kw) -> ResNet:
    return ResNet(block=block, layers=layers, **kw)


for _name, _block, _layers, _table in (
    ("resnet18", "basic", (2, 2, 2, 2), "docs/reference.md §4; MSNet Table 1"),
    ("resnet34", "basic", (3, 4, 6, 3), "docs/reference.md §4; FUN Table 1"),
    ("resnet50", "bottleneck", (3, 4, 6, 3), "docs/reference.md §4 and 6; compression paper"),
):
    register(
        ModelInfo(
            _name,
            "rgb",
            224,
            TORCHVISION,
            _table,
            _name,
            default_drop_rate=0.0,
            variant_of="resnet18" if _name == "resnet34" else None,
        ),
        functools.partial(_resnet, _block, _layers),
    )

register(
    ModelInfo("resfun", "dct", 224, FUN, "Table 1; docs/reference.md §3", default_drop_rate=0.0),
    functools.partial(
        ResNet,
        block="bottleneck",
        layers=(4, 6, 3),
        channels=(128, 192, 256),
        strides=(1, 2, 2),
        stem=False,
        in_channels=192,
    ),
)
