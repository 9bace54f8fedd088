"""A thin wrapper over orbax's CheckpointManager: train state + data iterator, async, keep-N, fallback.

Each checkpoint ``WORKDIR/checkpoints/<step>/`` holds ``state`` (the :class:`~freqjax.train.steps.TrainState`
pytree, restored straight into the replicated shardings) and ``data`` (grain's iterator state,
one file per process). Saves are asynchronous: the step loop continues while the arrays are
written; orbax only publishes a step directory once it is complete, so a killed process leaves
the previous checkpoints valid. :meth:`Checkpointer.restore_latest` falls back to older steps
when the newest one cannot be read (e.g. a truncated file) and deletes the broken one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grain.python as grain
import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "load_weights", "merge_weights"]

log = logging.getLogger(__name__)


class Checkpointer:
    """Save and restore (state, data iterator) pairs under ``directory``.

    Args:
        directory: where step directories live (created if missing).
        keep: how many of the newest checkpoints to keep.
        async_save: write arrays in a background thread.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, iterator) -> None:
        """Start saving ``state`` and the ``iterator`` position at ``step`` (returns before arrays are on disk)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.PyGrainCheckpointSave(iterator)),
        )

    def restore_latest(self, abstract_state, iterator) -> tuple[object, int] | None:
        """Restore the newest readable checkpoint into ``abstract_state``'s structure and shardings.

        ``iterator`` (None: state only, e.g. for evaluation) is set to the saved data position in
        place. Returns (state, step), or None
        when there is no checkpoint. A checkpoint that fails to restore is logged, deleted, and
        the next older one is tried.

        Raises:
            RuntimeError: if checkpoints exist but none can be restored.
        """
        steps = self.steps()
        for step in reversed(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if iterator is not None:
                items["data"] = grain.PyGrainCheckpointRestore(iterator)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as err:  # orbax/tensorstore raise many types for a damaged checkpoint
                msg = f"checkpoint {step} in {self.directory} is unreadable ({type(err).__name__}: {str(err)[:300]})"
                log.warning("%s; deleting it and trying an older one", msg)
                if jax.process_index() == 0:
                    print(f"WARNING: {msg}; deleting it and trying an older one", flush=True)
                self._manager.delete(step)
                continue
            return restored["state"], step
        if steps:
            raise RuntimeError(f"none of the checkpoints {steps} in {self.directory} could be restored")
        return None

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
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
