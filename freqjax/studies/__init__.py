"""The papers' studies, each a command:

- :mod:`freqjax.studies.rank_study`: ReXNet's rank study (Fig. 1), ``python -m freqjax.studies.rank_study``.
- :mod:`freqjax.studies.dct_demo`: the DCT input demo, ``python -m freqjax.main --config configs/dct_demo.py``.
- :mod:`freqjax.studies.msnet_sweep`: MSNet's threshold sweep (Fig. 5) over images in memory.
"""
