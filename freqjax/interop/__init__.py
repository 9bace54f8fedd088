"""PyTorch interoperability (the ``[torch]`` extra for everything that runs PyTorch).

- :mod:`freqjax.interop.torch_weights`: a PyTorch / timm ``state_dict`` -> freqjax variables, strictly.
- :mod:`freqjax.interop.torch_models`: PyTorch versions of freqjax models (parity tests, benchmarks).
"""
