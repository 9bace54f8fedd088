"""The DCT demo job (``--config configs/dct_demo.py``): transform real or synthetic images, check
them against libjpeg, measure input compression (paper Table 7) and throughput, write a report.

Outputs in the workdir:
    dct_report.json     agreement with libjpeg, PSNR per Table 7 keep setting, images/s
    keep_lowest.png     the first image reconstructed from each Table 7 keep setting
    y_channels.png      the 64 luma frequency maps of the first image, raster order
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from PIL import Image

from freqjax import dct
from freqjax.dct import reference_dct
from freqjax.train.config import check_choice, check_keys, check_positive_int

__all__ = ["DEMO_FIELDS", "run_dct_demo"]

DEMO_FIELDS = ("mode", "data", "num_images", "image_size", "chroma", "batch_size", "seed", "repeats")


def _validate(config: ml_collections.ConfigDict) -> None:
    check_keys(config, DEMO_FIELDS)
    check_choice("chroma", config.chroma, ("420", "444"))
    for name in ("num_images", "image_size", "batch_size", "repeats"):
        check_positive_int(name, config[name])
    mult = 16 if config.chroma == "420" else 8
    if config.image_size % mult:
        raise ValueError(
            f"config.image_size must be a multiple of {mult} for chroma {config.chroma!r}, got {config.image_size}"
        )
    if not (config.data == "synthetic" or str(config.data).startswith(("folder:", "skimage:"))):
        raise ValueError(f"config.data must be 'synthetic', 'folder:PATH' or 'skimage:NAME', got {config.data!r}")


def _load(config: ml_collections.ConfigDict) -> tuple[np.ndarray, str]:
    if config.data == "synthetic":
        from freqjax.data.synthetic import grating_images

        images, _ = grating_images(config.num_images, config.image_size, seed=config.seed)
        return images, "synthetic gratings"
    if config.data.startswith("skimage:"):
        # scikit-image's bundled sample photos (the [dev] extra), e.g. skimage:astronaut.
        from skimage import data as skdata

        from freqjax.data.folder import resize_centre_crop

        name = config.data.removeprefix("skimage:")
        if name not in skdata.__all__:
            samples = ", ".join(skdata.__all__)
            raise ValueError(f"config.data={config.data!r}: scikit-image has no sample {name!r}; it has {samples}")
        img = getattr(skdata, name)()
        img = np.asarray(resize_centre_crop(Image.fromarray(img).convert("RGB"), config.image_size))
        return np.stack([img] * config.num_images), f"scikit-image sample {name!r}"
    from freqjax.data.folder import list_images, load_folder_images

    root = config.data.removeprefix("folder:")
    stride = max(1, len(list_images(root)) // config.num_images)
    images, _ = load_folder_images(root, config.num_images, config.image_size, stride=stride)
    return images, root


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _mosaic(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (h + 2), cols * (w + 2), *tiles[0].shape[2:]), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        out[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = t
    return out


def run_dct_demo(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Run the demo described in the module docstring; returns the report it writes."""
    _validate(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    images, source = _load(config)
    n = len(images)
    print(f"[dct_demo] {n} images of {config.image_size}x{config.image_size} from {source}", flush=True)

    to_dct = jax.jit(lambda x: dct.rgb_to_dct(x, chroma=config.chroma))
    coeffs = np.concatenate(
        [np.asarray(to_dct(images[i : i + config.batch_size])) for i in range(0, n, config.batch_size)]
    )

    # Agreement with libjpeg (quality-100 JPEG of the same pixels), only meaningful for 4:2:0.
    agreement = None
    if config.chroma == "420":
        diffs = np.abs(np.round(coeffs) - np.stack([reference_dct(img) for img in images]))
        agreement = {
            "max_abs_diff": float(diffs.max()),
            "mean_abs_diff": float(diffs.mean()),
            "fraction_within_1": float(np.mean(diffs <= 1)),
        }
        print(
            f"[dct_demo] vs libjpeg q100: max |diff| {diffs.max():.0f}, mean {diffs.mean():.3f}, "
            f"{100 * np.mean(diffs <= 1):.2f} % within +-1",
            flush=True,
        )

    # Input compression (paper Table 7): PSNR of the image rebuilt from the kept channels.
    keep_rows, pictures = [], []
    for y, cb, cr in dct.TABLE7_KEEP:
        back = np.asarray(dct.dct_to_rgb(dct.keep_lowest(coeffs, y, cb, cr), chroma=config.chroma))
        back = np.clip(np.round(back), 0, 255).astype(np.uint8)
        psnr = float(np.mean([_psnr(b, im) for b, im in zip(back, images, strict=True)]))
        keep_rows.append({"keep": f"{y}/{cb}/{cr}", "channels": y + cb + cr, "mean_psnr_db": round(psnr, 2)})
        pictures.append(back[0])
        print(
            f"[dct_demo] keep {y:2d}/{cb:2d}/{cr:2d} ({y + cb + cr:3d} of 192 channels): mean PSNR {psnr:6.2f} dB",
            flush=True,
        )
    Image.fromarray(_mosaic([images[0], *pictures], cols=len(pictures) + 1)).save(workdir / "keep_lowest.png")
    ymaps = coeffs[0, ..., :64]
    scale = np.abs(ymaps).reshape(-1, 64).max(axis=0) + 1e-6
    tiles = [
        np.kron(np.clip(128 + 127 * ymaps[..., k] / scale[k], 0, 255).astype(np.uint8), np.ones((4, 4), np.uint8))
        for k in range(64)
    ]
    Image.fromarray(_mosaic(tiles, cols=8)).save(workdir / "y_channels.png")

    batch = jax.device_put(np.resize(images, (config.batch_size, *images.shape[1:])))
    jax.block_until_ready(to_dct(batch))
    times = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        jax.block_until_ready(to_dct(batch))
        times.append(time.perf_counter() - start)
    ips = config.batch_size / float(np.median(times))
    print(f"[dct_demo] rgb_to_dct: {ips:.0f} images/s at batch {config.batch_size} on {jax.devices()[0]}", flush=True)

    report = {
        "source": source,
        "num_images": n,
        "image_size": config.image_size,
        "chroma": config.chroma,
        "output_shape": list(coeffs.shape[1:]),
        "libjpeg_agreement": agreement,
        "table7_keep": keep_rows,
        "images_per_s": round(ips, 1),
        "batch_size": config.batch_size,
        "device": str(jax.devices()[0]),
        "dtype": "float32",
    }
    (workdir / "dct_report.json").write_text(json.dumps(report, indent=2))
    print(f"[dct_demo] wrote {workdir / 'dct_report.json'}, keep_lowest.png, y_channels.png", flush=True)
    return report


if __name__ == "__main__":  # python -m freqjax.studies.dct_demo --config configs/dct_demo.py --workdir runs/dct_demo
    from freqjax.main import run

    run(forced_mode="dct_demo")
