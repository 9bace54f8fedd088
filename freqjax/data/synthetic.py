"""Deterministic, learnable procedural images: coloured gratings whose class is set by orientation
and spatial frequency.

Used where real data is not available (tests, benchmarks, the offline quick start). Image ``i`` of
a given ``seed`` is always the same, independently of any other image, so the source supports
random access and sharding. Nuisance factors (phase, colours, centre and width of the envelope,
noise) vary per image, so a model has to learn the orientation/frequency to classify.
"""

from __future__ import annotations

import numpy as np

__all__ = ["grating_image", "grating_images"]

_FREQS = (3.0, 6.0, 10.0, 15.0)  # cycles per image side


def _classes(num_classes: int) -> list[tuple[float, float]]:
    orientations = max(1, int(np.ceil(num_classes / len(_FREQS))))
    pairs = [(np.pi * o / orientations, f) for f in _FREQS for o in range(orientations)]
    return pairs[:num_classes]


def grating_image(index: int, size: int = 224, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, int]:
    """Image ``index`` of the synthetic set: (size, size, 3) uint8 and its class label.

    Args:
        index: non-negative image index; the same (index, seed) always gives the same image.
        size: side in pixels (>= 8).
        num_classes: number of (orientation, frequency) classes, 2..64.
        seed: data set seed.
    """
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not isinstance(num_classes, (int, np.integer)) or not 2 <= num_classes <= 64:
        raise ValueError(f"num_classes must be an integer in 2..64, got {num_classes!r}")
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(num_classes))
    theta, freq = _classes(num_classes)[label]
    theta += rng.normal(0, 0.05)
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, size), np.linspace(-0.5, 0.5, size), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.cos(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    centre = rng.uniform(-0.2, 0.2, size=2)
    width = rng.uniform(0.25, 0.6)
    envelope = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * width**2))
    fg, bg = rng.uniform(0, 255, size=(2, 3))
    mix = 0.5 + 0.5 * wave * envelope  # in [0, 1]
    img = bg + (fg - bg) * mix[..., None] + rng.normal(0, 8.0, size=(size, size, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), label


def grating_images(
    num: int, size: int = 224, num_classes: int = 10, seed: int = 0, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start + num - 1``: (num, size, size, 3) uint8 and (num,) int32 labels."""
    if not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be a non-negative integer, got {num!r}")
    pairs = [grating_image(start + i, size, num_classes, seed) for i in range(num)]
    images = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
    return images, np.array([p[1] for p in pairs], dtype=np.int32)
