"""Which 8x8 block DCT is faster on this device: jax.scipy.fft.dctn or a 64x64 basis GEMM?

    python benchmarks/dct_fft_vs_matmul.py [--blocks 200704]

Times both on the same (blocks, 8, 8) float32 input, alternating, in one run; prints medians.
The default block count is one batch of 256 luma planes at 224x224.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import dct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=256 * 28 * 28)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    x = jnp.asarray(np.random.default_rng(0).uniform(-128, 128, (args.blocks, 8, 8)).astype(np.float32))
    basis = jnp.asarray(np.kron(dct.dct_matrix(), dct.dct_matrix()).T.astype(np.float32))
    fft = jax.jit(lambda b: jax.scipy.fft.dctn(b, type=2, axes=(1, 2), norm="ortho").reshape(-1, 64))
    gemm = jax.jit(lambda b: jnp.matmul(b.reshape(-1, 64), basis, precision=jax.lax.Precision.HIGHEST))
    err = float(jnp.abs(fft(x) - gemm(x)).max())
    times = {"jax.scipy.fft.dctn": [], "64x64 GEMM": []}
    for f in (fft, gemm):
        jax.block_until_ready(f(x))
    for _ in range(args.repeats):
        for name, f in (("jax.scipy.fft.dctn", fft), ("64x64 GEMM", gemm)):
            start = time.perf_counter()
            jax.block_until_ready(f(x))
            times[name].append(time.perf_counter() - start)
    print(f"{args.blocks} blocks on {jax.devices()[0]}, max |difference| {err:.2e}")
    for name, ts in times.items():
        print(f"  {name:20s}: {1e3 * statistics.median(ts):8.1f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
