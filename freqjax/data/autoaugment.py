"""RandAugment, AutoAugment (ImageNet policy) and random erasing on uint8 HxWx3 images (host, PIL).

From "RandAugment: Practical automated data augmentation with a reduced search space" and
"AutoAugment: Learning Augmentation Strategies from Data" (Cubuk et al.), and "Random Erasing Data
Augmentation" (Zhong et al.), as timm implements them for the EfficientNet / ReXNet recipes
(``--aa rand-m9-mstd0.5 --reprob 0.2 --remode pixel``):

- 15 operations (timm's ``_RAND_TRANSFORMS``); magnitude ``m`` on timm's 0..10 scale; each of
  the ``n`` ops drawn uniformly with replacement and applied with probability 0.5; ``mstd`` > 0
  draws the magnitude per op from N(m, mstd) clipped to [0, 10]; rotate (30 degrees at m = 10),
  shear (0.3) and translate negate with probability 0.5; colour, contrast, brightness and
  sharpness factors are 0.1 + 1.8 m / 10; geometric ops fill with timm's grey
  (124, 116, 104), translations move up to 45 % of the side at m = 10 ("translate_pct").
- AutoAugment: the paper's ImageNet policy (25 sub-policies of two (op, probability, magnitude)
  each, magnitudes on the paper's 0..10 scale, posterize keeping 4..8 bits as the paper
  describes), one sub-policy drawn per image; translations as RandAugment's (45 % of the side).
- Random erasing ("pixel" mode): with probability ``p`` one box of area 2..33 % of the image and
  aspect ratio 0.3..3.3 (log-uniform) is filled with per-pixel noise; timm draws N(0, 1) after
  normalisation, here ``mean + std * N(0, 1)`` in pixel units (the ImageNet mean/std the
  training step normalises with), rounded and clipped to uint8, the same distribution before
  quantisation.

Every draw comes from the ``numpy.random.Generator`` grain hands the record (seeded by the run
seed and the record's position in the stream), so a resumed run sees the same images.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

__all__ = ["AUTOAUGMENT_IMAGENET", "RAND_OPS", "apply_op", "auto_augment", "rand_augment", "random_erasing"]

_FILL = (124, 116, 104)  # timm's fill colour (ImageNet mean in pixels)
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
_MAX_LEVEL = 10.0

# timm's _RAND_TRANSFORMS, in its order
RAND_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)

# AutoAugment's ImageNet policy (the paper's Table 9): (op, probability, magnitude 0..10) pairs
AUTOAUGMENT_IMAGENET = (
    (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.uniform() < 0.5 else value


def _affine(image: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=_FILL)


def _posterize(image: Image.Image, f: float, rng, original: bool = False) -> Image.Image:
    # bits kept: RandAugment 0..4 (timm, after TF's EfficientNet), AutoAugment's paper 4..8
    # (0 bits: black, as TF's shift by 8; PIL's posterize refuses 0)
    bits = int(4 * f) + (4 if original else 0)
    if bits >= 8:
        return image
    return Image.fromarray(np.asarray(image) & np.uint8((0xFF << (8 - bits)) & 0xFF))


def _solarize_add(image: Image.Image, f: float, rng) -> Image.Image:
    x = np.asarray(image).astype(np.int32)
    return Image.fromarray(np.where(x < 128, np.minimum(x + int(110 * f), 255), x).astype(np.uint8))


def _enhance(enhancer):
    # timm's (non-"increasing") enhance factor 0.1..1.9
    return lambda image, f, rng: enhancer(image).enhance(1.8 * f + 0.1)


def _translate(axis: int):
    def op(image: Image.Image, f: float, rng) -> Image.Image:
        pixels = _signed(0.45 * f * image.size[axis], rng)
        return _affine(image, (1, 0, pixels, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, pixels))

    return op


# name -> (PIL image, level / 10, rng) -> PIL image
_OPS = {
    "AutoContrast": lambda image, f, rng: ImageOps.autocontrast(image),
    "Equalize": lambda image, f, rng: ImageOps.equalize(image),
    "Invert": lambda image, f, rng: ImageOps.invert(image),
    "Rotate": lambda image, f, rng: image.rotate(_signed(30.0 * f, rng), resample=Image.BILINEAR, fillcolor=_FILL),
    "Posterize": _posterize,
    "PosterizeOriginal": lambda image, f, rng: _posterize(image, f, rng, original=True),
    "Solarize": lambda image, f, rng: ImageOps.solarize(image, min(256, int(256 * f))),  # threshold rises with m
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda image, f, rng: _affine(image, (1, _signed(0.3 * f, rng), 0, 0, 1, 0)),
    "ShearY": lambda image, f, rng: _affine(image, (1, 0, 0, _signed(0.3 * f, rng), 1, 0)),
    "TranslateXRel": _translate(0),
    "TranslateYRel": _translate(1),
}


def apply_op(image: Image.Image, name: str, level: float, rng: np.random.Generator) -> Image.Image:
    """Apply operation ``name`` at magnitude ``level`` (0..10) to a PIL RGB image (timm's level -> argument maps)."""
    if name not in _OPS:
        raise ValueError(f"augmentation op must be one of {sorted(_OPS)}, got {name!r}")
    return _OPS[name](image, level / _MAX_LEVEL, rng)


def rand_augment(image: np.ndarray, n: int, m: float, mstd: float, rng: np.random.Generator) -> np.ndarray:
    """RandAugment: ``n`` ops drawn from :data:`RAND_OPS`, each applied with probability 0.5 at magnitude ``m``."""
    pil = Image.fromarray(image)
    for _ in range(n):
        name = RAND_OPS[int(rng.integers(len(RAND_OPS)))]
        if rng.uniform() >= 0.5:
            continue
        level = m if mstd <= 0 else float(np.clip(rng.normal(m, mstd), 0.0, _MAX_LEVEL))
        pil = apply_op(pil, name, level, rng)
    return np.asarray(pil, np.uint8)


def auto_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AutoAugment's ImageNet policy: one of its 25 sub-policies, each op with its own probability."""
    pil = Image.fromarray(image)
    for name, prob, level in AUTOAUGMENT_IMAGENET[int(rng.integers(len(AUTOAUGMENT_IMAGENET)))]:
        if rng.uniform() < prob:
            pil = apply_op(pil, name, level, rng)
    return np.asarray(pil, np.uint8)


def random_erasing(
    image: np.ndarray,
    prob: float,
    rng: np.random.Generator,
    area: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
) -> np.ndarray:
    """With probability ``prob``, fill one random box (10 tries to fit) with per-pixel noise (see the module doc)."""
    if rng.uniform() >= prob:
        return image
    h, w = image.shape[:2]
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            noise = _MEAN + _STD * rng.standard_normal((eh, ew, 3), dtype=np.float32)
            out = image.copy()
            out[top : top + eh, left : left + ew] = np.clip(np.round(noise), 0, 255).astype(np.uint8)
            return out
    return image
