"""MSNet: high-frequency residual multi-scale networks (no public code).

From "High Frequency Residual Learning for Multi-Scale Image Classification" (Cheng et al.).

Two copies of a base network's stem and stages (docs/reference.md section 5): Network-L sees the image
box-downsampled 2x, Network-H the full image, and after the stem and after every stage
``x_H <- H_stage(x_H) + u(x_L)``, ``u`` = 2x nearest-neighbour upsampling (the paper's example),
cropped or zero-padded (bottom/right) to H's size where the sides do not divide (DenseNet at
112/224). Each network keeps its own pooled classifier; ``model.apply`` returns
``(logits_low, logits_high)`` in train and eval mode, and training adds the two cross-entropies.

Calibrated early-exit inference (run L, run H only for the images L is unsure of) lives in
:mod:`freqjax.models.msnet_infer`. Parameters are ``{'low': <base>, 'high': <base>}``, each with
the base network's (torchvision/timm) names.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.registry import ModelInfo, create_model, register
from freqjax.models.staged import StagedNet

__all__ = ["BASES", "MSNet", "downsample2", "upsample_to"]

Dtype = Any
PAPER = "High Frequency Residual Learning for Multi-Scale Image Classification (Cheng et al., MSNet)"
# msnet name -> (base model, full image side of the paper's experiments).
BASES = {
    "msnet_resnet18": ("resnet18", 256),
    "msnet_mobilenetv1_025": ("mobilenetv1_025", 256),
    "msnet_mobilenetv1_050": ("mobilenetv1_050", 256),
    "msnet_mobilenetv1_075": ("mobilenetv1_075", 256),
    "msnet_mobilenetv1_100": ("mobilenetv1_100", 256),
    "msnet_densenet121": ("densenet121", 224),
    # not in the paper: MS-versions of the small CIFAR ResNets (Network-L on 16x16, Network-H on
    # 32x32) for studies on CIFAR-10 that fit a CPU
    "msnet_cifar_resnet8": ("cifar_resnet8", 32),
    "msnet_cifar_resnet20": ("cifar_resnet20", 32),
}


def downsample2(x: jax.Array) -> jax.Array:
    """Box (area) 2x downsampling of an NHWC batch with even sides: the mean of each 2x2 block."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_to(x: jax.Array, height: int, width: int) -> jax.Array:
    """2x nearest-neighbour upsampling, then crop or zero-pad (bottom/right) to ``height x width``."""
    u = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)[:, :height, :width]
    return jnp.pad(u, ((0, 0), (0, height - u.shape[1]), (0, width - u.shape[2]), (0, 0)))


class MSNet(nn.Module):
    """Network-L and Network-H over the registered staged model ``base`` (ResNet, MobileNetV1, DenseNet).

    Call as ``model.apply(variables, images, train=...)`` with NHWC RGB images of even height and
    width; returns ``(logits_low, logits_high)``. ``forward_low`` / ``forward_high`` are the two
    halves that :mod:`freqjax.models.msnet_infer` runs separately.
    """

    base: str = "resnet18"
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    def setup(self):
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"MSNet needs num_classes >= 1 (its exits are classifiers), got {self.num_classes!r}")
        kw = dict(
            num_classes=self.num_classes,
            drop_rate=self.drop_rate,
            drop_path_rate=self.drop_path_rate,
            dtype=self.dtype,
        )
        self.low = create_model(self.base, **kw)
        self.high = create_model(self.base, **kw)
        if not isinstance(self.low, StagedNet) or self.low.in_channels != 3:
            valid = sorted({b for b, _ in BASES.values()})
            raise ValueError(f"MSNet base must be an RGB staged network such as {valid}, got {self.base!r}")

    def check_images(self, x: jax.Array) -> jax.Array:
        """Reject anything but an NHWC RGB batch with even sides (L sees it downsampled 2x)."""
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"images must be an NHWC batch of RGB images (N, H, W, 3), got shape {shape}")
        if shape[1] % 2 or shape[2] % 2 or min(shape[1:3]) < 2:
            raise ValueError(
                f"image height and width must be even (Network-L sees them halved), got {shape[1]}x{shape[2]}"
            )
        return jnp.asarray(x).astype(self.dtype)

    def forward_low(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Network-L on the 2x-downsampled images: (logits_low, its stem and stage outputs)."""
        f = self.low.forward_stem(self.low.check_input(downsample2(self.check_images(x))), train)
        feats = [f]
        for i in range(self.low.num_stages):
            f = self.low.forward_stage(i, f, train)
            feats.append(f)
        return self.low.forward_head(f, train), tuple(feats)

    def forward_high(self, x: jax.Array, feats: tuple[jax.Array, ...], train: bool = False) -> jax.Array:
        """Network-H on the full images, adding L's upsampled stem and stage outputs ``feats``."""
        x = self.check_images(x)
        if len(feats) != self.high.num_stages + 1:
            raise ValueError(f"feats must hold {self.high.num_stages + 1} feature maps of Network-L, got {len(feats)}")
        h = self.high.forward_stem(self.high.check_input(x), train)
        for i in range(self.high.num_stages + 1):
            if i:
                h = self.high.forward_stage(i - 1, h, train)
            h = h + upsample_to(feats[i].astype(h.dtype), h.shape[1], h.shape[2])
        return self.high.forward_head(h, train)

    def low_logits(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Network-L's logits alone (what an image that exits early costs)."""
        return self.forward_low(x, train)[0]

    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        logits_low, feats = self.forward_low(x, train)
        return logits_low, self.forward_high(x, feats, train)


def _msnet(base: str, **kw) -> MSNet:
    return MSNet(base=base, **kw)


for _name, (_base, _side) in BASES.items():
    _table = {"resnet18": "Table 1", "densenet121": "Table 3"}.get(_base, "Table 2")
    if _base.startswith("cifar"):
        _table = "not in the paper: the MSNet construction over a CIFAR ResNet"
    # MobileNetV1 widths share every code path with msnet_mobilenetv1_100; MS-DenseNet-121 combines
    # the MSNet wrapper of msnet_resnet18 with densenet121's stages, both trained on their own in
    # the train-mode test (its forward is compared with PyTorch in tests/models/test_msnet.py);
    # the CIFAR MSNets likewise combine msnet_resnet18's wrapper with a CIFAR ResNet's stages
    _variant_of = {
        "mobilenetv1_100": None,
        "resnet18": None,
        "densenet121": "msnet_resnet18",
        "cifar_resnet8": "msnet_resnet18",
        "cifar_resnet20": "msnet_resnet18",
    }.get(_base, "msnet_mobilenetv1_100")
    register(
        ModelInfo(_name, "rgb", _side, PAPER, _table, default_drop_rate=0.0, variant_of=_variant_of),
        functools.partial(_msnet, _base),
    )
