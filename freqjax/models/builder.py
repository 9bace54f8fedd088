"""The one builder of inverted-residual networks: a :class:`NetSpec` table in, a Flax module out.

EfficientNet, eFUN, LeFUN, MobileNetV2/V3, ReXNet (and lite) and MobileNetV3-Small-XSep are all
``MBNet(spec)``; they differ only in their :class:`NetSpec`. Layout (timm names)::

    [dct_front | conv_stem -> bn1 -> act] -> blocks_{stage}_{block} ...
    -> conv_head -> [bn2] -> act -> pool -> dropout -> classifier        (EfficientNet style)
    -> pool -> conv_head (bias) -> act -> dropout -> classifier           (head_after_pool, MobileNetV3)
    -> conv_head -> bn2 -> act -> pool -> pre_logits_conv (bias) -> pre_logits_bn -> act
       -> dropout -> classifier                                          (head_hidden, ReXNet-lite)

The builder numbers the network's XSepConv 2x2 layers (in block order) and gives each its padding
mode under ``spec.xsep_padding``; users choose the strategy, never layer indices.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from freqjax.dct import dct_matrix
from freqjax.models.blocks import BlockArgs, SEConfig, make_block
from freqjax.models.layers import batch_norm, conv2d, conv_init, dense_init, get_activation
from freqjax.models.xsepconv import PADDING_STRATEGIES, XSEP_FORMS, two_by_two_padding

__all__ = ["FRONTS", "FRONT_INITS", "MBNet", "NetSpec", "dct_front_init"]

FRONTS = ("grouped", "full")
FRONT_INITS = ("dct", "random")  # LeFUN's front: the exact block DCT, or timm's He fan-out normal
Dtype = Any


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """Everything that distinguishes one inverted-residual network from another.

    Attributes:
        stages: per stage, the :class:`BlockArgs` of its blocks (from ``decode_stages``).
        in_channels: channels the network expects (3 for RGB/YCbCr, 192 for DCT input).
        stem: stem conv width (3x3, stride ``stem_stride``), or None for no stem (DCT input).
        stem_stride: 2, or 1 for small inputs (XSepConv's CIFAR / Tiny-ImageNet settings).
        front: LeFUN's learnable 8x8 stride-8 front, 'grouped' (per colour plane, 64 filters
            each) or 'full' (192 filters over all planes); None for none.
        front_init: how that front starts, one of :data:`FRONT_INITS`: 'dct' (equal to the fixed
            8x8 block DCT, :func:`dct_front_init`) or 'random' (He normal over fan-out, as
            every other conv).
        head: width of the 1x1 head conv, or None for none.
        head_norm / head_bias: BN after the head conv / a bias on it.
        head_after_pool: pool before the head conv (MobileNetV3's efficient head).
        head_hidden: width of a pooled 1x1 conv (bias) -> BN -> act before the classifier
            (ReXNet-lite's 1024), or None.
        act: the default activation; blocks may override it ('nre' -> ReLU).
        se: how squeeze-excite layers are sized and gated.
        xsep_form / xsep_padding: XSepConv form and 2x2 padding strategy of the ``xs`` blocks.
    """

    stages: tuple[tuple[BlockArgs, ...], ...]
    in_channels: int = 3
    stem: int | None = 32
    stem_stride: int = 2
    front: str | None = None
    front_init: str = "dct"
    head: int | None = 1280
    head_norm: bool = True
    head_bias: bool = False
    head_after_pool: bool = False
    head_hidden: int | None = None
    act: str = "silu"
    se: SEConfig = dataclasses.field(default_factory=SEConfig)
    xsep_form: str = "standard"
    xsep_padding: str = "improved"

    def __post_init__(self):
        if self.front is not None and self.front not in FRONTS:
            raise ValueError(f"front must be one of {FRONTS} or None, got {self.front!r}")
        if self.front_init not in FRONT_INITS:
            raise ValueError(f"front_init must be one of {FRONT_INITS}, got {self.front_init!r}")
        get_activation(self.act)
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if self.xsep_form not in XSEP_FORMS:
            raise ValueError(f"xsep_form must be one of {XSEP_FORMS}, got {self.xsep_form!r}")
        if self.xsep_padding not in PADDING_STRATEGIES:
            raise ValueError(f"xsep_padding must be one of {PADDING_STRATEGIES}, got {self.xsep_padding!r}")

    @property
    def num_blocks(self) -> int:
        return sum(len(s) for s in self.stages)

    def two_by_two_paddings(self) -> tuple[str | None, ...]:
        """Per block (in order), the padding mode of its XSepConv 2x2 layer; None where it has none."""
        has = [b.xsep and self.xsep_form != "no_2x2" for s in self.stages for b in s]
        total, out, i = sum(has), [], 0
        for h in has:
            out.append(two_by_two_padding(self.xsep_padding, i, total) if h else None)
            i += h
        return tuple(out)


def dct_front_init(front: str):
    """Initialiser that makes LeFUN's front equal the fixed 8x8 block DCT of each plane.

    Filter ``64 * plane + 8 * v + u`` is the DCT basis function (v, u) applied to ``plane``: the
    channel layout of :func:`freqjax.dct.rgb_to_dct` with 4:4:4 chroma.
    """
    basis = np.einsum("vy,ux->yxvu", np.asarray(dct_matrix(8)), np.asarray(dct_matrix(8))).reshape(8, 8, 64)

    def init(key, shape, dtype=jnp.float32):
        del key
        if front == "grouped":  # (8, 8, 1, 192): group p sees plane p only
            kernel = np.concatenate([basis] * 3, axis=-1)[:, :, None, :]
        else:  # (8, 8, 3, 192)
            kernel = np.zeros((8, 8, 3, 192), np.float32)
            for p in range(3):
                kernel[:, :, p, 64 * p : 64 * (p + 1)] = basis
        if kernel.shape != tuple(shape):
            raise ValueError(f"DCT front init expects shape {kernel.shape}, got {shape}")
        return jnp.asarray(kernel, dtype)

    return init


class MBNet(nn.Module):
    """An inverted-residual network built from a :class:`NetSpec`.

    Call as ``model.apply(variables, x, train=...)`` with NHWC ``x`` of ``spec.in_channels``
    channels. ``train=True`` needs a 'dropout' rng when dropout or drop-path is on, and
    ``mutable=['batch_stats']``. ``num_classes=0`` returns the pooled features.
    """

    spec: NetSpec
    num_classes: int = 1000
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        spec = self.spec
        if getattr(x, "ndim", None) != 4 or x.shape[-1] != spec.in_channels:
            raise ValueError(
                f"x must be NHWC with {spec.in_channels} channels, got shape {getattr(x, 'shape', type(x))}"
            )
        act = get_activation(spec.act)
        x = x.astype(self.dtype)
        if spec.front is not None:
            x = self._front(x)
        if spec.stem is not None:
            x = conv2d(spec.stem, 3, spec.stem_stride, name="conv_stem", dtype=self.dtype)(x)
            x = act(batch_norm(train, name="bn1", dtype=self.dtype)(x))
        index = 0
        paddings = spec.two_by_two_paddings()
        for i, stage in enumerate(spec.stages):
            for j, args in enumerate(stage):
                block = make_block(
                    args,
                    act=spec.act,
                    se_config=spec.se,
                    drop_path=self.drop_path_rate * index / spec.num_blocks,
                    dtype=self.dtype,
                    xsep_form=spec.xsep_form,
                    xsep_padding=paddings[index],
                    name=f"blocks_{i}_{j}",
                )
                x = block(x, train)
                index += 1
        if spec.head_after_pool:
            x = jnp.mean(x, axis=(1, 2), keepdims=True)
        if spec.head is not None:
            x = conv2d(spec.head, 1, name="conv_head", dtype=self.dtype, use_bias=spec.head_bias)(x)
            if spec.head_norm:
                x = batch_norm(train, name="bn2", dtype=self.dtype)(x)
            x = act(x)
        if spec.head_hidden is not None:
            x = jnp.mean(x, axis=(1, 2), keepdims=True)
            x = conv2d(spec.head_hidden, 1, name="pre_logits_conv", dtype=self.dtype, use_bias=True)(x)
            x = act(batch_norm(train, name="pre_logits_bn", dtype=self.dtype)(x))
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="classifier")(x)
        return x.astype(jnp.float32)

    def _front(self, x: jax.Array) -> jax.Array:
        grouped = self.spec.front == "grouped"
        return nn.Conv(
            192,
            (8, 8),
            strides=(8, 8),
            padding="VALID",
            feature_group_count=3 if grouped else 1,
            use_bias=False,
            kernel_init=dct_front_init(self.spec.front) if self.spec.front_init == "dct" else conv_init,
            dtype=self.dtype,
            name="dct_front",
        )(x)
