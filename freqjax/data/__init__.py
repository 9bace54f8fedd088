"""Data sources. For now: :mod:`freqjax.data.synthetic` (procedural gratings) and JPEG folders."""

from freqjax.data.folder import load_folder_images
from freqjax.data.synthetic import grating_image, grating_images

__all__ = ["grating_image", "grating_images", "load_folder_images"]
