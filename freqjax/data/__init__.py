"""Data: sources (``synthetic``, ``folder:PATH``, ``tfds:NAME``), host augmentation, grain loaders.

See :mod:`freqjax.data.sources`, :mod:`freqjax.data.augment` and :mod:`freqjax.data.loader`.
"""

from freqjax.data.folder import load_folder_images
from freqjax.data.synthetic import grating_image, grating_images

__all__ = ["grating_image", "grating_images", "load_folder_images"]
