"""A thin wrapper over orbax's CheckpointManager: train state + data iterator, async, keep-N, never losing data.

Each checkpoint ``WORKDIR/checkpoints/<step>/`` holds ``state`` (the :class:`~freqjax.train.steps.TrainState`
pytree, restored straight into the replicated shardings), ``data`` (grain's iterator state, one
file per process) and ``freqjax_manifest.json`` (size and CRC-32 of every file, written once
orbax has published the step). Saves are asynchronous; orbax only publishes a step directory
once it is complete, so a killed process leaves the previous checkpoints valid.

:meth:`Checkpointer.restore_latest` never deletes a checkpoint. When the newest cannot be
restored it checks the manifest: files that no longer match it (truncated, changed, missing)
prove damage, and the step is moved to ``WORKDIR/checkpoints_damaged/`` (kept for inspection)
before the next older one is tried. A checkpoint whose files match, or that has no manifest
(a stray folder, an older freqjax), is left where it is and the restore stops with an error:
the cause is then the run's config, not the files.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import zlib
from pathlib import Path

import grain.python as grain
import jax
import orbax.checkpoint as ocp

__all__ = [
    "MANIFEST",
    "CheckpointMismatchError",
    "CheckpointSaveError",
    "Checkpointer",
    "is_intact",
    "load_weights",
    "merge_weights",
    "verify_manifest",
]

log = logging.getLogger(__name__)

MANIFEST = "freqjax_manifest.json"


class CheckpointMismatchError(ValueError):
    """A checkpoint that is not provably damaged could not be restored into this run's state."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the message names the intact ones."""


def _digests(step_dir: Path) -> dict[str, list[int]]:
    out = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            crc = 0
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    crc = zlib.crc32(chunk, crc)
            out[str(path.relative_to(step_dir))] = [path.stat().st_size, crc]
    return out


def verify_manifest(step_dir: str | os.PathLike) -> str | None:
    """What is wrong with the files of ``step_dir`` against its manifest: None if they match.

    Raises:
        FileNotFoundError: no manifest (damage cannot be told from a config change).
    """
    step_dir = Path(step_dir)
    manifest = step_dir / MANIFEST
    try:
        expected = json.loads(manifest.read_text())["files"]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError) as err:
        return f"its manifest is unreadable ({err})"
    found = _digests(step_dir)
    for name, (size, crc) in expected.items():
        if name not in found:
            return f"{name} is missing"
        if found[name][0] != size:
            return f"{name} has {found[name][0]} bytes, {size} when saved"
        if found[name][1] != crc:
            return f"{name} changed since it was saved (CRC-32)"
    return None


def is_intact(step_dir: str | os.PathLike) -> bool:
    """Whether a checkpoint's files match its manifest or, lacking one (a save that finished as the
    disk filled, or was killed before its manifest), its weights restore."""
    try:
        return verify_manifest(step_dir) is None
    except FileNotFoundError:
        return bool(load_weights(step_dir)["params"])


class Checkpointer:
    """Save and restore (state, data iterator) pairs under ``directory``.

    Args:
        directory: where step directories live (created if missing, unless ``read_only``).
        keep: how many of the newest checkpoints to keep (orbax deletes older ones after a save).
        async_save: write arrays in a background thread.
        read_only: restore only (evaluation, studies): nothing is created, written, moved or deleted.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))
        self._unsealed: set[int] = set()  # steps this process saved that have no manifest yet

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, iterator) -> None:
        """Start saving ``state`` and the ``iterator`` position at ``step`` (returns before arrays are on disk)."""
        if self.read_only:
            raise RuntimeError("this Checkpointer is read-only")
        self._seal()
        try:  # also raises a failure of the previous asynchronous save
            self._manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.PyGrainCheckpointSave(iterator)),
            )
        except Exception as err:
            raise self._save_error(err) from err
        self._unsealed.add(step)

    def _save_error(self, err: Exception) -> CheckpointSaveError:
        cause = " ".join(str(err).split())
        if "No space left" in cause or "RESOURCE_EXHAUSTED" in cause or getattr(err, "errno", None) == errno.ENOSPC:
            free = shutil.disk_usage(self.directory).free / 2**20
            cause = f"the disk is full ({free:.0f} MiB free)"
        intact = [s for s in self.steps() if (self.directory / str(s)).is_dir()]
        return CheckpointSaveError(
            f"saving a checkpoint in {self.directory} failed: {cause[:300]}; the checkpoints before it are intact "
            f"(steps {intact})"
        )

    def _seal(self) -> None:
        # Manifests for this process's saves once orbax has finished them (no save in flight: it
        # writes metadata after publishing the step directory); process 0 writes them.
        if self._manager.is_saving_in_progress():
            return
        for step in sorted(self._unsealed):
            step_dir = self.directory / str(step)
            if jax.process_index() == 0 and step_dir.is_dir():  # not a step keep-N already removed
                tmp = step_dir / f".{MANIFEST}.tmp"
                try:
                    tmp.write_text(json.dumps({"step": step, "files": _digests(step_dir)}))
                    os.replace(tmp, step_dir / MANIFEST)
                except OSError as err:
                    tmp.unlink(missing_ok=True)
                    raise self._save_error(err) from err
            self._unsealed.discard(step)

    def restore_latest(self, abstract_state, iterator) -> tuple[object, int] | None:
        """Restore the newest readable checkpoint into ``abstract_state``'s structure and shardings.

        ``iterator`` (None: state only, e.g. for evaluation) is set to the saved data position in
        place. Returns (state, step), or None when there is no checkpoint. A checkpoint that
        fails to restore and is provably damaged (see the module docstring) is moved to
        ``checkpoints_damaged/`` (not in read-only mode: skipped) and the next older one is tried.

        Raises:
            CheckpointMismatchError: a checkpoint that is not provably damaged does not restore
                (nothing is moved or deleted), or none is left to try.
        """
        steps = self.steps()
        for step in reversed(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if iterator is not None:
                items["data"] = grain.PyGrainCheckpointRestore(iterator)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as err:  # orbax/tensorstore raise many types for a damaged checkpoint
                self._set_aside_if_damaged(step, err)
                continue
            return restored["state"], step
        if steps:
            raise CheckpointMismatchError(
                f"none of the checkpoints {steps} in {self.directory} could be restored; damaged ones are in "
                f"{self.directory.parent / 'checkpoints_damaged'}"
            )
        return None

    def _set_aside_if_damaged(self, step: int, err: Exception) -> None:
        step_dir = self.directory / str(step)
        cause = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        try:
            damage = verify_manifest(step_dir)
        except FileNotFoundError:
            raise CheckpointMismatchError(
                f"checkpoint {step_dir} does not restore into this run ({cause}) and has no {MANIFEST}, so "
                "damage cannot be told from a different config; nothing was deleted. Resume with the config "
                "that wrote it, or move that folder out of checkpoints/ to resume from an older step"
            ) from None
        if damage is None:
            raise CheckpointMismatchError(
                f"checkpoint {step_dir} is intact but does not restore into this run's state ({cause}); "
                "nothing was deleted. Resume with the config that wrote it, or use a new workdir"
            ) from None
        msg = f"checkpoint {step} in {self.directory} is unreadable: {damage}"
        if self.read_only:
            print(f"WARNING: {msg}; trying an older one", flush=True)
            return
        if jax.process_index() == 0:
            target = self.directory.parent / "checkpoints_damaged" / str(step)
            n = 1
            while target.exists():
                target = target.with_name(f"{step}.{n}")
                n += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(step_dir, target)
            print(f"WARNING: {msg}; moved it to {target} and trying an older one", flush=True)
            log.warning("%s; moved to %s", msg, target)
        self._manager.reload()

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk (CheckpointSaveError if one failed)."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:
            raise self._save_error(err) from err
        self._seal()

    def close(self) -> None:
        """Finish pending saves and release the manager (CheckpointSaveError if a save failed)."""
        try:
            if self.read_only:
                self._manager.wait_until_finished()
            else:
                self.wait()
        finally:
            self._manager.close()


def _flat(tree) -> dict[str, object]:
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def load_weights(path: str | os.PathLike) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` of a freqjax checkpoint, as host arrays.

    Args:
        path: a training workdir (its newest checkpoint), its ``checkpoints`` folder, or one
            ``checkpoints/<step>`` directory.

    Raises:
        ValueError: no checkpoint there.
    """
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        steps = (
            sorted((p for p in candidate.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
            if candidate.is_dir()
            else []
        )
        if steps:
            path = steps[-1]
            break
    if not (path / "state").is_dir():
        raise ValueError(f"init_from {str(path)!r} is not a freqjax workdir or checkpoint (no state/ inside)")
    state = ocp.StandardCheckpointer().restore(path.absolute() / "state")
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}


def merge_weights(target: dict, loaded: dict, may_be_missing) -> tuple[dict, int]:
    """Replace the leaves of ``target`` with ``loaded``'s of the same path; returns (tree, count loaded).

    Raises:
        ValueError: a shape mismatch, or a target leaf missing from ``loaded`` for which
            ``may_be_missing(path)`` is false (frozen weights must come from the checkpoint).
    """
    source = _flat(loaded)
    count = 0

    def pick(path, leaf):
        nonlocal count
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name not in source:
            if not may_be_missing(name):
                raise ValueError(
                    f"init_from checkpoint has no {name!r}, which is frozen (not matched by config.trainable)"
                )
            return leaf
        value = source[name]
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(f"init_from {name!r} has shape {tuple(value.shape)}, the model needs {tuple(leaf.shape)}")
        count += 1
        return jax.numpy.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(pick, target), count
