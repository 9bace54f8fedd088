"""1x1 convolutions as XLA convolutions vs as one GEMM (``pointwise_conv``), whole-model forwards.

    python benchmarks/pointwise_gemm_vs_conv.py --batch 64 --models efun,efun_s_plus,efficientnet_b0

Builds each model twice in one process, once with ``freqjax.models.layers.pointwise_conv`` (the
library's path) and once with it swapped for ``lax.conv_general_dilated``, then times the jitted
eval-mode forwards alternately (warm medians of 5, ms per image). Run it on an otherwise idle
machine and with the entry points' malloc tuning exported (see docs/native_kernels.md, CPU memory allocation).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.models import abstract_variables, create_model, layers, model_info, random_variables


def conv_pointwise(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """The 1x1 convolution as XLA's convolution (what ``nn.Conv`` does)."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--models", default="efun,efun_s_plus,efficientnet_b0")
    args = parser.parse_args()
    gemm_pointwise = layers.pointwise_conv
    for name in args.models.split(","):
        model = create_model(name)
        x = jnp.asarray(np.random.default_rng(0).normal(size=(args.batch, *model_info(name).input_shape)), jnp.float32)
        variables = jax.device_put(random_variables(abstract_variables(model, x.shape), seed=1))
        forwards = {}
        for label, pointwise in (("conv", conv_pointwise), ("gemm", gemm_pointwise)):
            layers.pointwise_conv = pointwise  # read by layers.Conv at trace time
            forward = jax.jit(functools.partial(model.apply, train=False))  # a new trace per swap
            for _ in range(3):  # compile + warm-up
                jax.block_until_ready(forward(variables, x))
            forwards[label] = forward
        layers.pointwise_conv = gemm_pointwise
        times: dict[str, list[float]] = {label: [] for label in forwards}
        for _ in range(5):
            for label, forward in forwards.items():
                start = time.perf_counter()
                jax.block_until_ready(forward(variables, x))
                times[label].append(time.perf_counter() - start)
        ms = {label: statistics.median(t) * 1e3 / args.batch for label, t in times.items()}
        print(
            f"{name:20s} batch {args.batch}: 1x1 as conv {ms['conv']:.2f} ms/img, as GEMM {ms['gemm']:.2f} ms/img, "
            f"speed-up {ms['conv'] / ms['gemm']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
