"""Benchmarks, run as ``python -m freqjax.bench dct | latency | train-step | compress``.

The library never imports this package; methods and current figures are in ``benchmarks/README.md``.
"""
