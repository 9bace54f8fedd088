"""A training workdir's safety: start-up checks, one writer at a time, and the config it was written with.

- :func:`check_workdir`: the workdir exists or can be made, is a writable directory, its
  ``checkpoints`` is a directory, and the disk has room; one clear ValueError before anything compiles.
- :class:`WorkdirLock`: an exclusive advisory lock (``WORKDIR/run.lock``, holding the pid, host
  and start time). The kernel drops it when the holder dies, so a lock left by a killed run is
  taken over (with a message); a second live run gets an error naming the holder.
- :func:`check_resume_config`: the config a run was started with is saved in ``WORKDIR/run_config.json``;
  a resume compares against it. Fields in :data:`MAY_CHANGE_ON_RESUME` may differ (each change is
  printed); any other difference is an error listing the fields, unless the user names them in
  ``config.allow_config_change``. Nothing is deleted either way.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

import ml_collections

from freqjax.runtime import atomic_path

__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "MIN_FREE_BYTES",
    "RUN_CONFIG",
    "WorkdirLock",
    "check_resume_config",
    "check_workdir",
    "write_run_config",
]

RUN_CONFIG = "run_config.json"
LOCK = "run.lock"
MIN_FREE_BYTES = 256 * 2**20  # below this a checkpoint save is likely to fail half-way

# Fields a resumed run may change: the length of training, the learning rate, and what the loop
# logs, evaluates and keeps. Everything else (model, data order, optimiser, batch size, seed, ...)
# decides what the checkpoint holds or what the next step sees, so a change is an error.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        "mode",
        "num_epochs",
        "num_train_steps",
        "learning_rate",
        "eval_every_steps",
        "eval_steps",
        "eval_batch_size",
        "eval_augment",
        "crop_pct",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "log_every_steps",
        "progress_bar",
        "data_dir",
        "decode_cache",
        "init_from",  # only read by a fresh start
        "init_head",
        "inject_nan_at_step",
        "allow_config_change",
        "msnet_sweep",  # read by the sweep only
        "input_channels",  # read by --mode input_channels only
    }
)
# Evaluating a checkpoint (``--mode eval``, studies) only needs the state to have the same structure.
_STRUCTURE = ("model", "model_options", "num_classes", "optimizer", "ema_decay", "trainable")


def check_workdir(workdir: str | os.PathLike, *, min_free_bytes: int | None = None) -> Path:
    """Make sure ``workdir`` can hold a run; returns it as a Path.

    ``min_free_bytes``: default :data:`MIN_FREE_BYTES`, or ``$FREQJAX_MIN_FREE_MB`` MiB if set.

    Raises:
        ValueError: one line naming the path and what is wrong (a file, not writable, no space,
            ``checkpoints`` not a directory).
    """
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--workdir {str(path)!r} is a file, not a directory; give a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--workdir {str(path)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {str(path)!r} is not writable; give a directory you can write to")
    try:  # os.access misses read-only mounts and some ACLs: write a file to be sure
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--workdir {str(path)!r} is not writable ({err.strerror or err})") from None
    ckpt = path / "checkpoints"
    if ckpt.exists() and not ckpt.is_dir():
        raise ValueError(
            f"{str(ckpt)!r} is a file, but a run keeps its checkpoints in that directory; move the file away"
        )
    if min_free_bytes is None:
        min_free_bytes = int(float(os.environ.get("FREQJAX_MIN_FREE_MB", MIN_FREE_BYTES / 2**20)) * 2**20)
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise ValueError(
            f"--workdir {str(path)!r} has {free / 2**20:.0f} MiB free, less than the {min_free_bytes / 2**20:.0f} MiB "
            "a run needs for its checkpoints; free some space or use another disk"
        )
    return path


class WorkdirLock:
    """Exclusive ownership of a workdir for one run (a context manager; see the module docstring)."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = Path(workdir) / LOCK
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise ValueError naming the run that holds it."""
        f = open(self.path, "a+")  # noqa: SIM115 -- held open for the run: the open file is the lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ValueError(
                    f"--workdir {str(self.path.parent)!r} is in use by {holder}; wait for it to finish, "
                    "stop it, or use another workdir"
                ) from None
            raise
        f.seek(0)
        previous = f.read().strip()
        if previous:  # the lock file outlived its run (killed): the kernel had dropped its lock
            print(f"taking over {self.path}, left by a run that is no longer running ({previous})", flush=True)
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        """Empty the lock file (an empty file means a clean finish) and drop the lock."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _resolved(config: ml_collections.ConfigDict, num_classes: int) -> dict:
    from freqjax.models import model_info

    saved = json.loads(config.to_json())
    saved["num_classes"] = num_classes  # -1 resolved, so a dataset with other classes is a change
    # the model's defaults filled in, so '--config.model_options.width=16' equals leaving it out
    saved["model_options"] = {**dict(model_info(config.model).options), **saved.get("model_options", {})}
    return saved


def _defaults(config: ml_collections.ConfigDict) -> dict[str, object]:
    """Every field's default for this config's model, flattened as in ``run_config.json``."""
    from freqjax.models import model_info
    from freqjax.train.config import train_defaults

    defaults = _flatten(json.loads(train_defaults().to_json()))
    options = {f"model_options.{k}": v for k, v in _flatten(dict(model_info(config.model).options)).items()}
    return {**defaults, **options}


def write_run_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict, num_classes: int) -> None:
    """Save the resolved config in ``WORKDIR/run_config.json`` (atomically)."""
    with atomic_path(Path(workdir) / RUN_CONFIG) as tmp:
        Path(tmp).write_text(json.dumps(_resolved(config, num_classes), indent=2, sort_keys=True) + "\n")


def check_resume_config(
    workdir: str | os.PathLike, config: ml_collections.ConfigDict, num_classes: int, *, evaluating: bool = False
) -> list[str]:
    """Compare ``config`` with the one saved in ``workdir``; returns the allowed changes as lines.

    Resuming (``evaluating=False``), fields outside :data:`MAY_CHANGE_ON_RESUME` and
    ``config.allow_config_change`` must be equal; evaluating, only the fields that shape the
    checkpoint (model, model_options, num_classes, optimizer, ema_decay, trainable). A workdir
    without a saved config (written by an older freqjax) is not checked.

    Raises:
        ValueError: the differing fields, saved -> now, and how to go on.
    """
    path = Path(workdir) / RUN_CONFIG
    if not path.exists():
        return []
    try:
        saved = _flatten(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is unreadable ({err}); it records the config of the run in this workdir") from None
    now = _flatten(_resolved(config, num_classes))
    allowed = {f.strip() for f in str(config.get("allow_config_change", "")).split(",") if f.strip()}
    defaults = _defaults(config)
    changed = sorted(
        k
        for k in saved.keys() | now.keys()
        if saved.get(k, "<absent>") != now.get(k, "<absent>")
        # a field newer than the saved config, at its default, is what the run had
        and not (k not in saved and k in defaults and now[k] == defaults[k])
    )

    def permitted(field: str) -> bool:
        top = field.split(".", maxsplit=1)[0]
        if field in allowed or top in allowed:
            return True
        return top not in _STRUCTURE if evaluating else top in MAY_CHANGE_ON_RESUME

    blocking = [k for k in changed if not permitted(k)]
    if blocking:
        diff = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}" for k in blocking)
        raise ValueError(
            f"--workdir {str(Path(workdir))!r} holds a run with a different config ({diff}); "
            "use a new workdir, or pass --config.allow_config_change="
            f"{','.join(blocking)} to resume anyway (its checkpoints are kept either way)"
        )
    return [f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}" for k in changed]
