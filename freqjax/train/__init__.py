"""Training: the loop, pure steps, optimisers, checkpoints, metric writers, device mesh, config checks.

- :mod:`freqjax.train.loop`: ``train_and_evaluate(config, workdir)``, ``evaluate_checkpoint``,
  ``benchmark_input`` (what ``python -m freqjax.main`` runs).
- :mod:`freqjax.train.steps`: the jitted train / eval steps and the on-device input transform.
- :mod:`freqjax.train.optim`: optimisers, schedules, losses (name -> function tables).
- :mod:`freqjax.train.checkpoint`: orbax checkpoints, resume, ``init_from`` weights.
- :mod:`freqjax.train.writers`: JSONL, TensorBoard and console output; ``python -m freqjax.train curve``.
- :mod:`freqjax.train.parallel`: the ('data',) device mesh and multi-host set-up.
- :mod:`freqjax.train.config`: config defaults and validation.
"""
