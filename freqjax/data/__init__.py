"""Data: sources (``synthetic``, ``folder:PATH``, ``prepared:PATH``, ``tfds:NAME``), host augmentation,
grain loaders, and ``python -m freqjax.data.prepare`` (image folder -> ArrayRecord shards).

See :mod:`freqjax.data.sources`, :mod:`freqjax.data.augment`, :mod:`freqjax.data.loader`,
:mod:`freqjax.data.prepare` and :mod:`freqjax.data.prepared`.
"""

from freqjax.data.folder import load_folder_images
from freqjax.data.synthetic import grating_image, grating_images

__all__ = ["grating_image", "grating_images", "load_folder_images"]
