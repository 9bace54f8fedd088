"""Images from a folder tree (``PATH/**/*.jpg|jpeg|png``), e.g. ``../shared/data/cifar10-jpeg/test``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "list_images", "load_folder_images", "resize_centre_crop"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root``, sorted (deterministic order)."""
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"image folder {str(root)!r} is not an existing directory")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"image folder {str(root)!r} contains no {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def resize_centre_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic; no-op at that size) and crop the centre square."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_folder_images(root: str | os.PathLike, num: int, size: int, stride: int = 1) -> tuple[np.ndarray, list[Path]]:
    """Load ``num`` images (every ``stride``-th file) as (num, size, size, 3) uint8, resized + centre-cropped.

    Unreadable files are skipped (and not counted towards ``num``); ValueError if none is readable.

    Args:
        root: folder searched recursively for .jpg/.jpeg/.png files.
        num: how many images to return; fewer are returned if the folder has fewer.
        size: output side in pixels.
        stride: take every ``stride``-th file of the sorted list (spreads a small sample over classes).
    """
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    images, used = [], []
    candidates = list_images(root)[:: max(1, stride)]
    for path in candidates:
        try:
            with Image.open(path) as im:
                images.append(np.asarray(resize_centre_crop(im.convert("RGB"), size)))
        except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated / non-image files
            continue
        used.append(path)
        if len(images) == num:
            break
    if not images:
        raise ValueError(f"image folder {str(root)!r}: none of the {len(candidates)} image files tried is readable")
    return np.stack(images), used
