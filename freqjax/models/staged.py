"""Networks as stem -> stages -> head, the shape MSNet wraps (ResNet, DenseNet, MobileNetV1).

A :class:`StagedNet` exposes its parts as methods (``forward_stem``, ``forward_stage(i, ...)``,
``forward_head``) so that :mod:`freqjax.models.msnet` can run two copies of a network stage by
stage and fuse them, while ``__call__`` is the plain network. Submodules are defined in ``setup``
(so each part can be called on its own) with the PyTorch reference's attribute names.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from freqjax.models.layers import BatchNorm, Conv, dense_init, symmetric_padding

__all__ = ["StagedNet", "setup_bn", "setup_conv", "setup_dense"]

Dtype = Any


def setup_bn(dtype: Dtype, *, scale_init=nn.initializers.ones) -> BatchNorm:
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1) for use in ``setup``.

    ``use_running_average`` is given at call time (``bn(x, use_running_average=not train)``).
    """
    return BatchNorm(momentum=0.9, epsilon=1e-5, dtype=dtype, scale_init=scale_init)


def setup_conv(features: int, kernel: int, stride: int, dtype: Dtype) -> Conv:
    """A bias-free :class:`Conv` with PyTorch's symmetric padding and the He fan-out init, for ``setup``."""
    return Conv(features, (kernel, kernel), strides=stride, padding=symmetric_padding(kernel, stride), dtype=dtype)


def setup_dense(features: int, dtype: Dtype) -> nn.Dense:
    """The classifier layer (uniform +-1/sqrt(fan_out) init, as the rest of freqjax)."""
    return nn.Dense(features, kernel_init=dense_init, dtype=dtype)


class StagedNet(nn.Module):
    """Base class: ``__call__(x, train)`` = head(stage_{n-1}(... stage_0(stem(x)))).

    Subclasses define ``setup`` (calling :meth:`setup_head`), ``in_channels``, ``num_stages``,
    ``forward_stem``, ``forward_stage`` and ``features_head`` (what happens to the last stage's
    output before global pooling; identity by default).
    """

    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    in_channels: int = 3

    @property
    def num_stages(self) -> int:
        raise NotImplementedError

    def setup_head(self, classifier_name: str) -> None:
        """Create the dropout and, unless ``num_classes == 0``, the classifier ``classifier_name``."""
        self.head_drop = nn.Dropout(self.drop_rate)
        if self.num_classes:
            setattr(self, classifier_name, setup_dense(self.num_classes, self.dtype))
        self._classifier_name = classifier_name

    def check_input(self, x: jax.Array) -> jax.Array:
        """Reject anything but NHWC input with ``in_channels`` channels; cast to ``dtype``."""
        if getattr(x, "ndim", None) != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"x must be NHWC with {self.in_channels} channels, got shape {getattr(x, 'shape', type(x))}"
            )
        return jnp.asarray(x).astype(self.dtype)

    def forward_stem(self, x: jax.Array, train: bool = False) -> jax.Array:
        raise NotImplementedError

    def forward_stage(self, index: int, x: jax.Array, train: bool = False) -> jax.Array:
        raise NotImplementedError

    def features_head(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Work between the last stage and global pooling (DenseNet's final BN + ReLU)."""
        del train
        return x

    def forward_head(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Final features -> global average pool -> dropout -> classifier (float32 logits)."""
        x = jnp.mean(self.features_head(x, train), axis=(1, 2))
        if self.num_classes == 0:
            return x
        x = self.head_drop(x, deterministic=not train)
        return getattr(self, self._classifier_name)(x).astype(jnp.float32)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.forward_stem(self.check_input(x), train)
        for i in range(self.num_stages):
            x = self.forward_stage(i, x, train)
        return self.forward_head(x, train)
