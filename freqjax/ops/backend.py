"""The one convolution-backend switch: which implementation every conv and BatchNorm traces to.

Three implementations give the same values and gradients (float32, relative error <= 1e-5;
``tests/ops/``):

- ``'native'``: freqjax's C++ kernels (:mod:`freqjax.ops.native`, called through the XLA FFI) for
  every dense, depthwise and Winograd-able conv and BatchNorm's per-channel sums where they apply
  (float32, channel counts a multiple of 16); the ``'cpu'`` formulations elsewhere.
- ``'cpu'``: XLA ops shaped for XLA's CPU backend (:mod:`freqjax.ops.conv`): 1x1 convs as GEMMs,
  depthwise convs as a sum of shifted multiplies, hand-written backward passes.
- ``'xla'``: XLA's own convolutions everywhere (``lax.conv_general_dilated``; grouped convs for
  depthwise layers), flax's BatchNorm formulation.

How the implementation is chosen, in order:

1. ``with conv_impl('xla'):`` (or 'cpu', 'native') around the code that traces a model. The value
   is part of ``jax.jit``'s cache key, so a jitted function retraces rather than reusing a trace
   of another implementation.
2. Otherwise the backend's default: ``'xla'`` on GPU and TPU; on the CPU ``'native'`` with one
   device on a CPU with AVX-512 or AVX2 + FMA (the kinds the kernels' register tiles are timed on,
   :func:`freqjax.ops.native.tuned_for_this_cpu`; figures in docs/native_kernels.md), and ``'cpu'``
   on other CPUs (Arm builds and is tested, but is not timed) and with several devices (XLA's SPMD
   partitioner cannot split an FFI call's batch, so a sharded batch would be gathered and every
   device would compute all of it).
3. ``'native'`` needs the kernels: they are compiled on first use with the system's C++ compiler;
   without one, or with ``FREQJAX_NATIVE=0`` in the environment, ``'native'`` runs as ``'cpu'``
   (with one warning when the build fails).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from freqjax.ops.native.build import tuned_for_this_cpu

__all__ = ["CONV_IMPLS", "conv_impl", "resolve_conv_impl"]

CONV_IMPLS = ("native", "cpu", "xla")

# Part of jit's cache key: changing it retraces instead of reusing a trace of the other impl.
_IMPL_CONTEXT = jax.make_user_context(None)


def _check_impl(impl: str | None) -> None:
    if impl is not None and impl not in CONV_IMPLS:
        raise ValueError(f"conv impl must be one of {CONV_IMPLS} or None (backend default), got {impl!r}")


@contextlib.contextmanager
def conv_impl(impl: str | None) -> Iterator[None]:
    """Use conv implementation ``impl`` ('native', 'cpu', 'xla' or None: backend default) for models traced inside.

    Example: ``with conv_impl('xla'): loss = jax.jit(step)(...)`` runs XLA's own convolutions on
    the CPU (for comparison).
    """
    _check_impl(impl)
    with _IMPL_CONTEXT(impl):
        yield


def resolve_conv_impl(impl: str | None = None) -> str:
    """``impl`` if given, else the active :func:`conv_impl`, else the backend's default (module docstring)."""
    _check_impl(impl)
    if impl is None:
        impl = _IMPL_CONTEXT.value
    if impl is None and jax.default_backend() != "cpu":
        impl = "xla"
    if impl is None:
        impl = "native" if jax.device_count() == 1 and tuned_for_this_cpu() else "cpu"
    return impl
