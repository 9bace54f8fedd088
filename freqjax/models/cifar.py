"""Small CIFAR ResNets (He et al. 2016, section 4.2) for 32x32 inputs: quick CPU training and tests.

``cifar_resnet{8,14,20}``: 3x3 stem with ``width`` channels, three stages of ``n`` basic blocks
(``width``, 2 ``width``, 4 ``width`` channels; strides 1, 2, 2; a 1x1 conv + BN shortcut where the
shape changes), global average pool, dropout, dense. Depth = 6n + 2. Names follow torchvision's
ResNet (``conv1``, ``bn1``, ``layer{1,2,3}_{i}``, ``fc``).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import batch_norm, conv2d, dense_init
from freqjax.models.registry import ModelInfo, register
from freqjax.models.resnet import BasicBlock

__all__ = ["CifarResNet"]

Dtype = Any


class CifarResNet(nn.Module):
    """A 3-stage ResNet for 32x32 RGB input; ``num_classes=0`` returns pooled features."""

    blocks_per_stage: int = 3
    width: int = 16
    num_classes: int = 10
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if getattr(x, "ndim", None) != 4 or x.shape[-1] != 3:
            raise ValueError(f"x must be NHWC with 3 channels, got shape {getattr(x, 'shape', type(x))}")
        x = conv2d(self.width, 3, 1, name="conv1", dtype=self.dtype)(x.astype(self.dtype))
        x = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(x))
        index, num_blocks = 0, 3 * self.blocks_per_stage
        for stage in range(3):
            for i in range(self.blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                features = self.width * 2**stage
                x = BasicBlock(
                    features,
                    stride,
                    downsample=stride != 1 or x.shape[-1] != features,
                    drop_path=self.drop_path_rate * index / num_blocks,
                    dtype=self.dtype,
                    zero_init_last=False,
                    name=f"layer{stage + 1}_{i}",
                )(x, train)
                index += 1
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="fc")(x)


for _depth in (8, 14, 20):
    register(
        ModelInfo(
            f"cifar_resnet{_depth}",
            "rgb",
            32,
            "Deep Residual Learning for Image Recognition (He et al. 2016)",
            "section 4.2 (CIFAR-10 ResNets, 6n+2 layers)",
            None,
            default_drop_rate=0.0,
            options=(("width", 16),),
            variant_of=None if _depth == 8 else "cifar_resnet8",
        ),
        functools.partial(CifarResNet, (_depth - 2) // 6),
    )
