"""Host-side uint8 augmentation per recipe (decode + crop + flip stay on the host; DCT runs on device).

Training augmentations (``config.augment``):

    inception   random-resized crop (scale 0.08..1, ratio 3/4..4/3), horizontal flip, colour
                jitter 0.4 (brightness, contrast, saturation, random order): the ImageNet recipes
    cifar       zero-pad 4 pixels, random crop back, horizontal flip (CIFAR, XSepConv paper)
    flip        horizontal flip only
    none        resize to the image size if needed (SVHN)

Policies may follow the base kind, joined by ``+`` (:func:`parse_train_augment`), applied after
the crop and flip, in this order, and before colour jitter (which the recipes using a policy
turn off, as timm does):

    rand-mM[-nN][-mstdS]   RandAugment: N ops (default 2) at magnitude M (0..10), magnitude
                           noise S (default 0); timm's grammar, e.g. ``rand-m9-mstd0.5``
    auto                   AutoAugment, the paper's ImageNet policy
    eraseP                 random erasing with probability P (pixel-noise fill), e.g. ``erase0.2``

e.g. ``inception+rand-m9-mstd0.5+erase0.2`` (timm's EfficientNet-B0 / the ReXNet recipe). See
:mod:`freqjax.data.autoaugment`. Batch-level mixing (Mixup / CutMix) is not here: it needs soft
labels in the loss, which the training step does not take.

Evaluation (``config.eval_augment``): ``centre`` resizes the short side to ``size / crop_pct``
(bicubic) and crops the centre (224 -> 256 -> 224 at crop_pct 0.875); ``none`` only resizes.
"""

from __future__ import annotations

import dataclasses
import math
import re

import grain.python as grain
import numpy as np
from PIL import Image

from freqjax.data.autoaugment import auto_augment, rand_augment, random_erasing

__all__ = [
    "EVAL_AUGMENTS",
    "TRAIN_AUGMENTS",
    "AugmentSpec",
    "EvalTransform",
    "TrainTransform",
    "centre_crop",
    "colour_jitter",
    "pad_crop",
    "parse_train_augment",
    "random_resized_crop",
]

TRAIN_AUGMENTS = ("inception", "cifar", "flip", "none")
EVAL_AUGMENTS = ("centre", "none")
_POLICY_FORMS = "rand-mM[-nN][-mstdS], auto, eraseP"
_RAND = re.compile(r"rand(?P<opts>(-(m|n|mstd)[0-9.]+)+)")


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """A parsed ``config.augment``: base kind, RandAugment (n, m, mstd) or None, AutoAugment, erasing probability."""

    kind: str
    rand: tuple[int, float, float] | None = None
    auto: bool = False
    erase: float = 0.0


def parse_train_augment(value: object) -> AugmentSpec:
    """Parse ``BASE[+POLICY...]`` (see the module docstring); ValueError naming the bad part otherwise."""
    bad = f"config.augment must be one of {list(TRAIN_AUGMENTS)}, optionally followed by +POLICY ({_POLICY_FORMS})"
    if not isinstance(value, str):
        raise ValueError(f"{bad}; got {value!r}")
    kind, *policies = value.split("+")
    if kind not in TRAIN_AUGMENTS:
        raise ValueError(f"{bad}; got {value!r}")
    fields: dict = {"kind": kind}
    for policy in policies:
        try:
            name, setting = _one_policy(policy)
        except ValueError as err:
            raise ValueError(f"{bad}; got {value!r}: {err}") from None
        if name in fields:
            raise ValueError(f"{bad}; got {value!r}: {name} appears twice")
        fields[name] = setting
    if "rand" in fields and "auto" in fields:
        raise ValueError(f"{bad}; got {value!r}: choose RandAugment or AutoAugment, not both")
    return AugmentSpec(**fields)


def _one_policy(policy: str) -> tuple[str, object]:
    """(AugmentSpec field, its value) of one ``+`` part."""
    if policy == "auto":
        return "auto", True
    if policy.startswith("erase"):
        try:
            p = float(policy[5:])
        except ValueError:
            p = -1.0
        if not 0.0 < p <= 1.0:
            raise ValueError(f"{policy!r}: the erasing probability must be in (0, 1]")
        return "erase", p
    match = _RAND.fullmatch(policy)
    if match is None:
        raise ValueError(f"{policy!r} is not a policy")
    opts = dict(re.findall(r"-(mstd|m|n)([0-9.]+)", match["opts"]))
    try:
        n, m, mstd = int(opts.get("n", 2)), float(opts["m"]), float(opts.get("mstd", 0))
    except (KeyError, ValueError):
        raise ValueError(f"{policy!r}: RandAugment needs -mM (0..10), an integer -nN and a number -mstdS") from None
    if not (0 <= m <= 10 and n >= 1 and mstd >= 0):
        raise ValueError(f"{policy!r}: RandAugment needs 0 <= m <= 10, n >= 1, mstd >= 0")
    return "rand", (n, m, mstd)


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
        self.spec = parse_train_augment(kind)
        self.kind, self.size, self.jitter, self.pad = self.spec.kind, size, colour_jitter, pad

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image = element["image"]
        spec = self.spec
        if self.kind == "inception":
            image = random_resized_crop(image, self.size, rng)
        elif self.kind == "cifar":
            image = pad_crop(image, self.size, self.pad, rng)
        else:
            image = _resize(image, self.size, self.size)
        if self.kind != "none" and rng.uniform() < 0.5:
            image = image[:, ::-1]
        if spec.rand is not None:
            image = rand_augment(np.ascontiguousarray(image), *spec.rand, rng)
        elif spec.auto:
            image = auto_augment(np.ascontiguousarray(image), rng)
        if self.jitter > 0:
            image = colour_jitter(image, self.jitter, rng)
        if spec.erase > 0:
            image = random_erasing(np.ascontiguousarray(image), spec.erase, rng)
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
