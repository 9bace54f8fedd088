"""Image file bytes to (H, W, 3) uint8 RGB: the one decoder of ``folder:`` and ``prepared:`` data sets.

One function for both is what makes a prepared data set yield the folder's pixels exactly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["decode_image"]


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
    """An image file's bytes as (H, W, 3) uint8 RGB (16-bit grey keeps its top byte); raises PIL's
    OSError / ValueError / SyntaxError (or ValueError for float images) if it cannot."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes | bytearray) else data) as im:
        if im.mode.startswith("I;16") or im.mode == "I":
            # 16-bit grey (PNG): PIL's convert('RGB') clips every value above 255 to white; keep the top byte
            grey = np.asarray(im, dtype=np.uint32)
            if grey.max(initial=0) > 65535:
                raise ValueError(f"{im.mode} image with values above 16 bits")
            return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=-1)
        if im.mode == "F":
            raise ValueError("floating-point image (mode F): convert it to 8-bit first")
        return np.asarray(im.convert("RGB"))
