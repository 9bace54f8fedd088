"""Host-side uint8 augmentation per recipe (decode + crop + flip stay on the host; DCT runs on device).

Training augmentations (``config.augment``):

    inception   random-resized crop (scale 0.08..1, ratio 3/4..4/3), horizontal flip, colour
                jitter 0.4 (brightness, contrast, saturation, random order): the ImageNet recipes
    cifar       zero-pad 4 pixels, random crop back, horizontal flip (CIFAR, XSepConv paper)
    flip        horizontal flip only
    none        resize to the image size if needed (SVHN)

Evaluation (``config.eval_augment``): ``centre`` resizes the short side to ``size / crop_pct``
(bicubic) and crops the centre (224 -> 256 -> 224 at crop_pct 0.875); ``none`` only resizes.
"""

from __future__ import annotations

import math

import grain.python as grain
import numpy as np
from PIL import Image

__all__ = [
    "EVAL_AUGMENTS",
    "TRAIN_AUGMENTS",
    "EvalTransform",
    "TrainTransform",
    "centre_crop",
    "colour_jitter",
    "pad_crop",
    "random_resized_crop",
]

TRAIN_AUGMENTS = ("inception", "cifar", "flip", "none")
EVAL_AUGMENTS = ("centre", "none")


def _resize(image: np.ndarray, height: int, width: int, resample=Image.BILINEAR) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def random_resized_crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Inception crop (torchvision's algorithm): a random area/aspect box resized to ``size`` x ``size``."""
    h, w = image.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return _resize(image[top : top + ch, left : left + cw], size, size)
    # fallback: the largest centre crop within the ratio range
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(image[top : top + ch, left : left + cw], size, size)


def colour_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors uniform in [1 - s, 1 + s], applied in random order."""
    if strength <= 0:
        return image
    x = image.astype(np.float32)
    grey_weights = np.array([0.299, 0.587, 0.114], np.float32)
    for op in rng.permutation(3):
        factor = np.float32(rng.uniform(1 - strength, 1 + strength))
        if op == 0:  # brightness
            x = x * factor
        elif op == 1:  # contrast: blend with the mean grey level
            x = (x - (x @ grey_weights).mean()) * factor + (x @ grey_weights).mean()
        else:  # saturation: blend with the grey image
            grey = (x @ grey_weights)[..., None]
            x = (x - grey) * factor + grey
        x = np.clip(x, 0, 255)
    return np.round(x).astype(np.uint8)


def pad_crop(image: np.ndarray, size: int, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad ``pad`` pixels on every side and take a random ``size`` x ``size`` crop."""
    image = _resize(image, size, size)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, size=2)
    return padded[top : top + size, left : left + size]


def centre_crop(image: np.ndarray, size: int, crop_pct: float = 0.875) -> np.ndarray:
    """Resize the short side to ``round(size / crop_pct)`` (bicubic) and crop the centre square."""
    h, w = image.shape[:2]
    short = round(size / crop_pct)
    if min(h, w) != short:
        scale = short / min(h, w)
        image = _resize(image, max(short, round(h * scale)), max(short, round(w * scale)), Image.BICUBIC)
        h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


class TrainTransform(grain.RandomMapTransform):
    """Training augmentation of one record; grain passes a per-record generator seeded by (seed, index)."""

    def __init__(self, kind: str, size: int, colour_jitter: float = 0.0, pad: int = 4):
        if kind not in TRAIN_AUGMENTS:
            raise ValueError(f"augment must be one of {TRAIN_AUGMENTS}, got {kind!r}")
        self.kind, self.size, self.jitter, self.pad = kind, size, colour_jitter, pad

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image = element["image"]
        if self.kind == "inception":
            image = random_resized_crop(image, self.size, rng)
        elif self.kind == "cifar":
            image = pad_crop(image, self.size, self.pad, rng)
        else:
            image = _resize(image, self.size, self.size)
        if self.kind != "none" and rng.uniform() < 0.5:
            image = image[:, ::-1]
        if self.jitter > 0:
            image = colour_jitter(image, self.jitter, rng)
        return {**element, "image": np.ascontiguousarray(image, np.uint8)}


class EvalTransform(grain.MapTransform):
    """Deterministic evaluation resize (+ centre crop); adds ``mask`` = 1 (padding examples get 0)."""

    def __init__(self, kind: str, size: int, crop_pct: float = 0.875):
        if kind not in EVAL_AUGMENTS:
            raise ValueError(f"eval_augment must be one of {EVAL_AUGMENTS}, got {kind!r}")
        self.kind, self.size, self.crop_pct = kind, size, crop_pct

    def map(self, element: dict) -> dict:
        image = element["image"]
        image = (
            centre_crop(image, self.size, self.crop_pct)
            if self.kind == "centre"
            else _resize(image, self.size, self.size)
        )
        return {**element, "image": np.ascontiguousarray(image, np.uint8), "mask": np.float32(1)}
