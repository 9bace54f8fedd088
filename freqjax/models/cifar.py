"""Small CIFAR ResNets (He et al. 2016, section 4.2) for 32x32 inputs: quick CPU training and tests.

``cifar_resnet{8,14,20}``: 3x3 stem with ``width`` channels, three stages of ``n`` basic blocks
(``width``, 2 ``width``, 4 ``width`` channels; strides 1, 2, 2; a 1x1 conv + BN shortcut where the
shape changes), global average pool, dropout, dense. Depth = 6n + 2. Names follow torchvision's
ResNet (``conv1``, ``bn1``, ``layer{1,2,3}_{i}``, ``fc``).
"""

from __future__ import annotations

import functools

import jax

from freqjax.models.registry import ModelInfo, register
from freqjax.models.resnet import BasicBlock
from freqjax.models.staged import StagedNet, setup_bn, setup_conv

__all__ = ["CifarResNet"]


class CifarResNet(StagedNet):
    """A 3-stage ResNet for 32x32 RGB input; ``num_classes=0`` returns pooled features.

    A :class:`StagedNet` (stem, three stages, head), so MSNet can pair two of them
    (``msnet_cifar_resnet{8,20}``: Network-L on 16x16, Network-H on 32x32).
    """

    blocks_per_stage: int = 3
    width: int = 16
    num_classes: int = 10

    @property
    def num_stages(self) -> int:
        return 3

    def setup(self):
        self.conv1 = setup_conv(self.width, 3, 1, self.dtype)
        self.bn1 = setup_bn(self.dtype)
        index, num_blocks, in_ch = 0, 3 * self.blocks_per_stage, self.width
        for stage in range(3):
            blocks, features = [], self.width * 2**stage
            for i in range(self.blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                rate = self.drop_path_rate * index / num_blocks
                blocks.append(BasicBlock(features, stride, stride != 1 or in_ch != features, rate, self.dtype, False))
                in_ch, index = features, index + 1
            setattr(self, f"layer{stage + 1}", blocks)  # flax names them layer{stage + 1}_{i}
        self.setup_head("fc")

    def forward_stem(self, x: jax.Array, train: bool = False) -> jax.Array:
        """3x3 conv (stride 1) -> BN -> ReLU: no down-sampling, CIFAR images are small."""
        return jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))

    def forward_stage(self, index: int, x: jax.Array, train: bool = False) -> jax.Array:
        """The blocks of ``layer{index + 1}``."""
        for block in getattr(self, f"layer{index + 1}"):
            x = block(x, train)
        return x


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
        functools.partial(CifarResNet, blocks_per_stage=(_depth - 2) // 6),
    )
