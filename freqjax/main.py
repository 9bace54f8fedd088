"""Command-line entry point: ``python -m freqjax.main --config configs/<recipe>.py --workdir DIR``.

The config file's ``get_config(arg)`` returns an ``ml_collections.ConfigDict`` (``file.py:arg``
picks a variant); any field can be overridden with ``--config.field=value`` (unknown fields are
errors with a close match). ``config.mode`` (or ``--mode``) picks the job:

    train      train and evaluate, resuming from WORKDIR (:func:`freqjax.train.loop.train_and_evaluate`)
    eval       evaluate the newest checkpoint in WORKDIR (:func:`freqjax.train.loop.evaluate_checkpoint`)
    input_bench  images/s of the input pipeline alone (:func:`freqjax.train.loop.benchmark_input`)
    dct_demo   DCT input transform on real or synthetic images: libjpeg agreement, input
               compression (paper Table 7), throughput; see :mod:`freqjax.studies.dct_demo`.
    msnet_sweep  an MSNet run's early-exit threshold sweep on its evaluation split
               (:func:`freqjax.studies.msnet_sweep.run_msnet_sweep`)

Several hosts: start one process per host with ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID`` set (or ``FREQJAX_DISTRIBUTED=1`` under Slurm / TPU pods); see
:func:`freqjax.train.parallel.initialize_distributed`.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_MODE = flags.DEFINE_string("mode", None, "Override config.mode.")
_DEBUG = flags.DEFINE_boolean(
    "debug", False, "Show the traceback of a bad config, data or file error (also FREQJAX_DEBUG=1)."
)

# mode -> (module, function(config, workdir) -> result dict), imported when run.
JOBS = {
    "train": ("freqjax.train.loop", "train_and_evaluate"),
    "eval": ("freqjax.train.loop", "evaluate_checkpoint"),
    "input_bench": ("freqjax.train.loop", "benchmark_input"),
    "dct_demo": ("freqjax.studies.dct_demo", "run_dct_demo"),
    "msnet_sweep": ("freqjax.studies.msnet_sweep", "run_msnet_sweep"),
    "input_channels": ("freqjax.studies.input_channels", "run_input_channels"),
    "compress": ("freqjax.studies.compression", "run_compression"),
}
# A dct_demo config only runs the demo, a compress config only compresses; a training config trains,
# evaluates or benchmarks its input.
_MODES_OF = {
    "dct_demo": ("dct_demo",),
    "compress": ("compress",),
    "train": ("train", "eval", "input_bench", "msnet_sweep", "input_channels"),
}


def _debug() -> bool:
    return _DEBUG.value or os.environ.get("FREQJAX_DEBUG") == "1"


class _HeldOrbaxErrors:
    """Holds back what a failed asynchronous checkpoint save prints from its background threads:
    orbax's error log records, and the "Event loop is closed" RuntimeErrors that tensorstore's
    threads report through ``sys.unraisablehook`` once orbax's event loop is gone (dozens of
    tracebacks under load). The run reports that failure in one line; :meth:`release` prints
    everything held if the run ends any other way, so nothing orbax or tensorstore says is lost."""

    def __init__(self):
        self.records = []
        self.unraisables = []

    def filter(self, record) -> bool:
        if record.levelno >= 40 and "orbax" in record.pathname:  # logging.ERROR
            self.records.append(record)
            return False
        return True

    def unraisablehook(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            self.unraisables.append(unraisable)
        else:
            sys.__unraisablehook__(unraisable)

    def hold(self) -> None:
        from absl import logging

        logging.get_absl_handler().addFilter(self)
        sys.unraisablehook = self.unraisablehook

    def release(self) -> None:
        from absl import logging

        sys.unraisablehook = sys.__unraisablehook__
        handler = logging.get_absl_handler()
        handler.removeFilter(self)
        for record in self.records:
            handler.handle(record)
        for unraisable in self.unraisables:
            sys.__unraisablehook__(unraisable)


def choose_mode(config_mode: str | None, requested: str | None) -> str:
    """The job to run: ``--mode`` if given, else ``config.mode``; ValueError if this config cannot run it."""
    allowed = _MODES_OF.get(config_mode, _MODES_OF["train"])
    mode = requested or config_mode
    if mode not in allowed:
        raise ValueError(f"mode must be one of {list(allowed)} for this config, got {mode!r}")
    return mode


def _run(config, workdir: str, mode: str) -> None:
    """Run job ``mode``; the user's errors (bad config or data, a non-finite loss) are one line, exit 1."""
    errors: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError)
    held = _HeldOrbaxErrors()
    if mode != "dct_demo":
        from absl import logging

        from freqjax.train import parallel
        from freqjax.train.loop import NonFiniteError

        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
        if not _debug():
            held.hold()
        parallel.initialize_distributed()
        errors += (NonFiniteError,)
    import jax

    module, name = JOBS[mode]
    job = getattr(importlib.import_module(module), name)
    try:
        result = job(config, workdir)
    except errors as err:
        if _debug():
            raise
        # one clear line instead of a traceback: these are the user's config, data or files, not a bug
        if type(err).__name__ != "CheckpointSaveError":
            held.release()
        print(f"freqjax.main: error: {err}", file=sys.stderr, flush=True)
        if type(err).__name__ == "CheckpointSaveError":
            # orbax's background threads still hold the failed save: a normal interpreter exit would
            # print their tracebacks under the line above
            sys.stdout.flush()
            os._exit(1)
        sys.exit(1)
    held.release()
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def main(argv: list[str], forced_mode: str | None = None) -> None:
    """Run the job the config names (``forced_mode``: a study's own entry point, ``--mode`` may not differ)."""
    if len(argv) > 1:
        _fail(f"unexpected positional arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        _fail("--config is required, e.g. --config configs/cifar_quick.py:synthetic")
    if not _WORKDIR.value:
        _fail("--workdir is required, e.g. --workdir runs/quick_synthetic")
    try:
        config_mode = config.get("mode")
    except OSError as err:  # ml_collections defers a missing config file's error to first use
        _fail(str(err).split("\n")[0] + ": " + " ".join(str(err).split("\n")[1:]))
    try:
        if forced_mode and _MODE.value not in (None, forced_mode):
            raise ValueError(f"--mode must be {forced_mode!r} here or absent, got {_MODE.value!r}")
        mode = choose_mode(config_mode, _MODE.value or forced_mode)
    except ValueError as err:
        _fail(str(err))
    with config.unlocked():
        config.mode = mode
    _run(config, _WORKDIR.value, mode)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with a one-line error for a bad config file, variant or ``--config.x=y`` override."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        inner: BaseException = err
        while True:  # the user's message is in the innermost error (ml_collections wraps it once or twice)
            if inner.args and isinstance(inner.args[0], BaseException):
                inner = inner.args[0]
            elif isinstance(inner, flags.Error) and (inner.__cause__ or inner.__context__):
                inner = inner.__cause__ or inner.__context__
            else:
                break
        message = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
        if isinstance(inner, KeyError | AttributeError):  # ml_collections says only the field's name
            message = unknown_field_message(argv, message)
        else:  # a value that does not parse: name the override it came from
            flag = next((a for a in argv if a.startswith("--config.") and f"'{a.partition('=')[2]}'" in message), None)
            if flag and flag.partition("=")[0] not in message:
                message = f"{flag}: {message}"
        _fail(message)
        raise  # unreachable: _fail exits


def unknown_field_message(argv: list[str], field: str) -> str:
    """'unknown config field X in FILE; did you mean ...' from the config file named on the command line."""
    import difflib
    import importlib.util

    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv[:-1]:
        spec = argv[argv.index("--config") + 1]
    field = field.splitlines()[0].strip("'\"")  # ml_collections may add its own "Did you mean" line
    if not spec:
        return f"unknown config field {field!r}"
    path, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("freqjax_user_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
        names = list(config)
        names += [f"{k}.{sub}" for k in names if hasattr(config[k], "keys") for sub in config[k]]
    except Exception:  # the hint is best-effort; the field name is still reported
        return f"unknown config field {field!r} in {path}"
    wanted = [a.split("=", 1)[0].removeprefix("--config.") for a in argv if a.startswith("--config.")]
    full = next((w for w in wanted if w.split(".")[-1] == field), field)
    close = difflib.get_close_matches(full, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; its fields: {', '.join(sorted(names))}"
    return f"unknown config field {full!r} in {spec}{hint}"


def _fail(message: str) -> None:
    if "Traceback (most recent call last)" in message:  # an error raised inside the config file: its last line
        message = message.strip().splitlines()[-1]
    print(f"freqjax.main: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def run(forced_mode: str | None = None) -> None:
    """The command line's entry point (``python -m freqjax.main``, or a study's with its mode fixed)."""
    from freqjax.runtime import reexec_with_malloc_tuning

    reexec_with_malloc_tuning()
    app.run(functools.partial(main, forced_mode=forced_mode), flags_parser=parse_flags)


if __name__ == "__main__":
    run()
