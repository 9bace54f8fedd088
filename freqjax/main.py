"""Command-line entry point: ``python -m freqjax.main --config configs/<recipe>.py --workdir DIR``.

The config file's ``get_config()`` returns an ``ml_collections.ConfigDict``; any field can be
overridden with ``--config.field=value`` (unknown fields are errors). ``config.mode`` (or
``--mode``) picks the job. Implemented modes:

    dct_demo   DCT input transform on real or synthetic images: libjpeg agreement, input
               compression (paper Table 7), throughput; see :mod:`freqjax.demo`.

Training, evaluation, compression and calibration sweeps arrive with their issues.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_MODE = flags.DEFINE_string("mode", None, "Override config.mode.")

MODES = ("dct_demo",)


def main(argv: list[str]) -> None:
    """Run the job the config names."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/dct_demo.py")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required, e.g. --workdir runs/dct_demo")
    mode = _MODE.value or config.get("mode")
    if mode not in MODES:
        raise app.UsageError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "dct_demo":
        from freqjax.demo import run_dct_demo

        with config.unlocked():
            config.mode = mode
        run_dct_demo(config, _WORKDIR.value)


if __name__ == "__main__":
    from freqjax.runtime import reexec_with_malloc_tuning

    reexec_with_malloc_tuning()
    app.run(main)
