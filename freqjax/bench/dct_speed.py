"""Speed of the DCT input: :func:`freqjax.dct.rgb_to_dct` against the FUN reference's per-image path.

``python -m freqjax.bench dct`` is the CLI. The reference encodes each image as a quality-100
JPEG with Pillow and reads its coefficients back with libjpeg (:func:`freqjax.dct.reference_dct`),
in one process and in a pool of processes; freqjax transforms a whole batch on the default jax
device, jitted. Both run in the same process on the same images.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from freqjax.bench.timing import time_call
from freqjax.dct import reference_dct

__all__ = ["bench_dct"]


def _reference_chunk(images: np.ndarray) -> int:
    for img in images:
        reference_dct(img)
    return len(images)


def _test_images(n: int, size: int, folder: str | None) -> np.ndarray:
    if folder:
        from freqjax.data.folder import load_folder_images

        images, _ = load_folder_images(folder, n, size)
        reps = -(-n // len(images))
        return np.concatenate([images] * reps)[:n]
    from freqjax.data.synthetic import grating_images

    # A few distinct natural-looking images, tiled: JPEG encoding speed depends on content, so
    # random noise would make the reference path unrealistically slow.
    distinct = min(n, 32)
    images, _ = grating_images(distinct, size)
    return np.concatenate([images] * (-(-n // distinct)))[:n]


def bench_dct(
    *,
    batch: int = 256,
    size: int = 224,
    chroma: str = "420",
    dtype: str = "float32",
    repeats: int = 5,
    reference_images: int = 128,
    workers: int | None = None,
    folder: str | None = None,
) -> dict:
    """Measure both DCT paths; returns a dict of figures (images/s are medians over repeats)."""
    import jax
    import jax.numpy as jnp

    from freqjax import dct

    workers = workers or os.cpu_count() or 1
    images = _test_images(batch, size, folder)
    device_images = jax.device_put(images)
    fn = jax.jit(lambda x: dct.rgb_to_dct(x, chroma=chroma, dtype=jnp.dtype(dtype)))
    times = time_call(lambda: jax.block_until_ready(fn(device_images)), repeats)
    ours = batch / statistics.median(times)

    ref_imgs = images[: min(reference_images, batch)]
    single = time_call(lambda: _reference_chunk(ref_imgs), 1, warmup=0)[0]
    # spawn, not fork: forking a process that runs JAX's thread pools can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_reference_chunk, np.array_split(ref_imgs[:workers], workers)))  # start workers
        start = time.perf_counter()
        done = sum(pool.map(_reference_chunk, np.array_split(ref_imgs, workers)))
        parallel = time.perf_counter() - start
    return {
        "device": str(jax.devices()[0]),
        "batch": batch,
        "size": size,
        "chroma": chroma,
        "dtype": dtype,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "freqjax_images_per_s": round(ours, 1),
        "freqjax_ms_per_batch": round(1e3 * statistics.median(times), 2),
        "reference_images_per_s_1_process": round(len(ref_imgs) / single, 1),
        "reference_images_per_s_workers": round(done / parallel, 1),
        "workers": workers,
        "speedup_vs_reference_workers": round(ours / (done / parallel), 2),
    }
