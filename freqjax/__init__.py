"""freqjax: frequency-domain and efficient CNNs in JAX/Flax.

Packages (import what you need; nothing heavy is imported here):

- :mod:`freqjax.dct`: the FUN paper's DCT input transform (RGB -> 192 DCT channels), its inverse,
  zigzag channel keeping, and coefficients read straight from JPEG files.
- :mod:`freqjax.models`: the model zoo (``create_model``, ``list_models``, ``model_info``, counts).
- :mod:`freqjax.ops`: convolution and BatchNorm implementations behind one backend switch.
- :mod:`freqjax.data`: image sources, augmentation and grain loaders.
- :mod:`freqjax.train`: the training loop, steps, optimisers, checkpoints, writers.
- :mod:`freqjax.compress`: DCT weight compression by tensor reordering, over parameter pytrees.
- :mod:`freqjax.interop`: PyTorch / timm weights in, PyTorch reference models.
- :mod:`freqjax.bench`: benchmarks (``python -m freqjax.bench dct | latency | train-step | compress``).
- :mod:`freqjax.studies`: the papers' studies (``python -m freqjax.studies.rank_study``, ...).
- :mod:`freqjax.main`: the command-line entry point (``python -m freqjax.main --config ...``).
"""

__version__ = "0.1.0"
