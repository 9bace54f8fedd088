"""freqjax's native CPU convolution kernels (C++, called through the XLA FFI), compiled on first use.

- :mod:`freqjax.ops.native.build`: compile ``kernels/`` for this CPU (vector width and register
  tiles from the compile target, ``kernels/simd.h``), cache, register.
- :mod:`freqjax.ops.native.ffi`: the kernels as JAX functions.

:mod:`freqjax.ops.conv` uses them under the 'native' backend (:mod:`freqjax.ops.backend`) when
:func:`available` is true and falls back to its XLA formulations otherwise, so nothing breaks on
a machine without a compiler. ``FREQJAX_NATIVE=0`` turns them off.
"""

from freqjax.ops.native.build import (
    SOURCE,
    TARGETS,
    available,
    build,
    included_files,
    register_library,
    simd,
    tuned_for_this_cpu,
)
from freqjax.ops.native.ffi import (
    LANES,
    channel_sums,
    conv_forward,
    conv_input_grad,
    conv_weight_grad,
    depthwise_forward,
    depthwise_weight_grad,
    packed,
    packs,
    repeat_vector,
    winograd_forward,
    winograd_weight_grad,
)

__all__ = [
    "LANES",
    "SOURCE",
    "TARGETS",
    "available",
    "build",
    "channel_sums",
    "conv_forward",
    "conv_input_grad",
    "conv_weight_grad",
    "depthwise_forward",
    "depthwise_weight_grad",
    "included_files",
    "packed",
    "packs",
    "register_library",
    "repeat_vector",
    "simd",
    "tuned_for_this_cpu",
    "winograd_forward",
    "winograd_weight_grad",
]
