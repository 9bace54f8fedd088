"""The papers' studies, each a command:

- :mod:`freqjax.studies.rank_study`: ReXNet's rank study (Fig. 1), ``python -m freqjax.studies.rank_study``.
- :mod:`freqjax.studies.dct_demo`: the DCT input demo,
  ``python -m freqjax.studies.dct_demo --config configs/dct_demo.py --workdir runs/dct_demo``.
- :mod:`freqjax.studies.msnet_sweep`: MSNet's threshold sweep (Fig. 5) on a trained run,
  ``python -m freqjax.studies.msnet_sweep --config configs/msnet.py:msnet_resnet18 --workdir RUN``,
  or :func:`~freqjax.studies.msnet_sweep.sweep` over arrays in memory.

The dct_demo and msnet_sweep commands are ``python -m freqjax.main`` with their ``--mode`` fixed.
"""
