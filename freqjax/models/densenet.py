"""DenseNet-121 (Huang et al. 2017; torchvision / timm definition), with torchvision's module names.

``features/conv0, norm0, denseblock{b}/denselayer{l}/norm1, conv1, norm2, conv2,
transition{t}/norm, conv, norm5`` and ``classifier``: :mod:`freqjax.interop.torch_weights` maps torchvision and
timm checkpoints (``features.denseblock1.denselayer1.norm1.weight``) by its one rule.

Stages for MSNet: stem = conv0 -> norm0 -> ReLU -> max-pool; stage 0 = denseblock1; stage i > 0 =
transition{i} -> denseblock{i+1}; head = norm5 -> ReLU -> pool -> classifier.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import DropPath, batch_norm, conv2d
from freqjax.models.registry import ModelInfo, register
from freqjax.models.staged import StagedNet, setup_bn, setup_conv

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition", "halve_by_average"]

Dtype = Any
TORCHVISION = "torchvision / timm DenseNet (Huang et al. 2017)"


def halve_by_average(x: jax.Array) -> jax.Array:
    """2x2 stride-2 average pool (PyTorch's floor for odd sides).

    A side that is already 1 pixel stays 1 (window 1 there): PyTorch raises for that input, and
    MSNet's low-resolution DenseNet reaches it on small images.
    """
    window = (min(2, x.shape[1]), min(2, x.shape[2]))
    return nn.avg_pool(x, window, strides=window, padding="VALID")


class DenseLayer(nn.Module):
    """BN -> ReLU -> 1x1 (bn_size x growth) -> BN -> ReLU -> 3x3 (growth); concatenated to the input.

    ``drop_path`` drops a sample's new features (stochastic depth for dense connectivity; timm's
    DenseNet has none, so it is 0 unless asked for).
    """

    growth: int = 32
    bn_size: int = 4
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = jax.nn.relu(batch_norm(train, name="norm1", dtype=self.dtype)(x))
        y = conv2d(self.bn_size * self.growth, 1, name="conv1", dtype=self.dtype)(y)
        y = jax.nn.relu(batch_norm(train, name="norm2", dtype=self.dtype)(y))
        y = conv2d(self.growth, 3, name="conv2", dtype=self.dtype)(y)
        y = DropPath(self.drop_path, name="drop_path")(y, train)
        return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
    """``len(drop_paths)`` dense layers named denselayer1, denselayer2, ..."""

    drop_paths: tuple[float, ...]
    growth: int = 32
    bn_size: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, rate in enumerate(self.drop_paths):
            x = DenseLayer(self.growth, self.bn_size, rate, self.dtype, name=f"denselayer{i + 1}")(x, train)
        return x


class Transition(nn.Module):
    """BN -> ReLU -> 1x1 conv to ``features`` -> 2x2 average pool."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jax.nn.relu(batch_norm(train, name="norm", dtype=self.dtype)(x))
        return halve_by_average(conv2d(self.features, 1, name="conv", dtype=self.dtype)(x))


class _Features(nn.Module):
    """torchvision's ``features`` Sequential, with its parts callable one by one."""

    block_config: tuple[int, ...]
    growth: int
    bn_size: int
    stem_width: int
    drop_path_rate: float
    dtype: Dtype

    def setup(self):
        self.conv0 = setup_conv(self.stem_width, 7, 2, self.dtype)
        self.norm0 = setup_bn(self.dtype)
        total, index, ch = sum(self.block_config), 0, self.stem_width
        for b, n in enumerate(self.block_config):
            rates = tuple(self.drop_path_rate * (index + j) / max(total - 1, 1) for j in range(n))
            setattr(self, f"denseblock{b + 1}", DenseBlock(rates, self.growth, self.bn_size, self.dtype))
            index, ch = index + n, ch + n * self.growth
            if b < len(self.block_config) - 1:
                ch //= 2
                setattr(self, f"transition{b + 1}", Transition(ch, self.dtype))
        self.norm5 = setup_bn(self.dtype)

    def stem(self, x: jax.Array, train: bool) -> jax.Array:
        x = jax.nn.relu(self.norm0(self.conv0(x), use_running_average=not train))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    def stage(self, index: int, x: jax.Array, train: bool) -> jax.Array:
        if index > 0:
            x = getattr(self, f"transition{index}")(x, train)
        return getattr(self, f"denseblock{index + 1}")(x, train)

    def final(self, x: jax.Array, train: bool) -> jax.Array:
        return jax.nn.relu(self.norm5(x, use_running_average=not train))


class DenseNet(StagedNet):
    """DenseNet-BC: growth 32, bottleneck 4 x growth, compression 0.5 at each transition.

    Attributes:
        block_config: dense layers per block (121: 6, 12, 24, 16).
        growth: channels each dense layer adds.
        bn_size: bottleneck width as a multiple of ``growth``.
        stem_width: channels of conv0.
    """

    block_config: tuple[int, ...] = (6, 12, 24, 16)
    growth: int = 32
    bn_size: int = 4
    stem_width: int = 64

    @property
    def num_stages(self) -> int:
        return len(self.block_config)

    def setup(self):
        self.features = _Features(
            self.block_config, self.growth, self.bn_size, self.stem_width, self.drop_path_rate, self.dtype
        )
        self.setup_head("classifier")

    def forward_stem(self, x: jax.Array, train: bool = False) -> jax.Array:
        """conv0 -> norm0 -> ReLU -> 3x3/2 max-pool."""
        return self.features.stem(x, train)

    def forward_stage(self, index: int, x: jax.Array, train: bool = False) -> jax.Array:
        """[transition{index} ->] denseblock{index + 1}."""
        return self.features.stage(index, x, train)

    def features_head(self, x: jax.Array, train: bool = False) -> jax.Array:
        """norm5 -> ReLU."""
        return self.features.final(x, train)


register(
    ModelInfo("densenet121", "rgb", 224, TORCHVISION, "docs/reference.md §4; MSNet Table 3", "densenet121", 0.0),
    functools.partial(DenseNet, block_config=(6, 12, 24, 16)),
)
