"""Convolution and BatchNorm implementations behind one switch (:mod:`freqjax.ops.backend`).

- :mod:`freqjax.ops.backend`: ``conv_impl`` / ``resolve_conv_impl``, and how the backend is chosen.
- :mod:`freqjax.ops.conv`: dense and depthwise convolutions (XLA formulations, native dispatch).
- :mod:`freqjax.ops.batchnorm`: BatchNorm's per-channel sums by the native kernel.
- :mod:`freqjax.ops.native`: the C++ kernels (build, FFI calls).
"""

from freqjax.ops.backend import CONV_IMPLS, conv_impl, resolve_conv_impl

__all__ = ["CONV_IMPLS", "conv_impl", "resolve_conv_impl"]
