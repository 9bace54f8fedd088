"""freqjax: frequency-domain and efficient CNNs in JAX/Flax.

Submodules (import what you need; nothing heavy is imported here):

- :mod:`freqjax.dct`: the FUN paper's DCT input transform (RGB -> 192 DCT channels), its inverse,
  zigzag channel keeping, and coefficients read straight from JPEG files.
- :mod:`freqjax.profile`: benchmarks (``python -m freqjax.profile dct ...``).
- :mod:`freqjax.main`: the command-line entry point (``python -m freqjax.main --config ...``).
"""

__version__ = "0.1.0"
