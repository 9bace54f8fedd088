"""grain loaders: per-process shards, worker processes, deterministic (seed, epoch) order, resumable.

The training loader is endless: grain's :class:`IndexSampler` draws a fresh permutation for each
epoch from ``seed``, so the order depends only on (seed, epoch), and the iterator's
``get_state()`` / ``set_state()`` (saved with each checkpoint) resume it mid-epoch exactly.
Each process reads only its ``global_batch / process_count`` slice of every global batch
(:class:`GlobalBatchSampler`), so a run's batches do not depend on the number of processes;
:func:`freqjax.train.parallel.global_batch` joins the slices into one sharded array.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import grain.python as grain
import numpy as np
from absl import flags

from freqjax.data.augment import EvalTransform, TrainTransform

__all__ = ["GlobalBatchSampler", "eval_batches", "local_batch_size", "train_loader"]


def local_batch_size(global_batch: int, process_count: int) -> int:
    """The per-process share of ``global_batch``; raises ValueError unless it divides evenly."""
    if not isinstance(global_batch, int) or global_batch < 1:
        raise ValueError(f"batch_size must be a positive integer, got {global_batch!r}")
    if global_batch % process_count:
        raise ValueError(f"batch_size={global_batch} is not divisible by the process count {process_count}")
    return global_batch // process_count


def train_loader(
    source,
    *,
    global_batch: int,
    image_size: int,
    augment: str,
    colour_jitter: float = 0.0,
    seed: int = 0,
    worker_count: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DataLoader:
    """Endless shuffled, augmented batches of this process's shard (iterate it; checkpoint its iterator).

    Args:
        source: a random-access source (:mod:`freqjax.data.sources`).
        global_batch: batch size over all processes.
        image_size: output side.
        augment: a ``config.augment`` spec, base kind [+ policies] (:func:`freqjax.data.augment.parse_train_augment`).
        colour_jitter: colour jitter strength (0 = off).
        seed: shuffle and augmentation seed.
        worker_count: grain worker processes (0 = in the main process).
        process_index / process_count: this process's shard.
    """
    local = local_batch_size(global_batch, process_count)
    if len(source) // process_count < local:
        raise ValueError(
            f"the training set has {len(source)} records: fewer than one batch of {local} per process "
            f"({process_count} processes); lower batch_size"
        )
    sampler = GlobalBatchSampler(len(source), global_batch, process_index, process_count, seed)
    _allow_workers(worker_count)
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[TrainTransform(augment, image_size, colour_jitter), grain.Batch(local, drop_remainder=True)],
        worker_count=worker_count,
        shard_options=grain.NoSharding(),  # the sampler already picks this process's records
    )


def eval_batches(
    source,
    *,
    global_batch: int,
    image_size: int,
    augment: str = "centre",
    crop_pct: float = 0.875,
    worker_count: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """One pass over this process's shard of ``source`` in fixed-size batches.

    Every process yields the same number of batches (needed for multi-host steps); examples that
    only pad a batch have ``mask`` 0, so metrics weighted by the mask count every record once.
    """
    local = local_batch_size(global_batch, process_count)
    # strided shards (process p reads records p, p + P, ...): grain's ShardOptions would drop the remainder
    shard = _Strided(source, process_index, process_count)
    sampler = grain.IndexSampler(len(shard), shuffle=False, num_epochs=1, seed=0)
    _allow_workers(worker_count)
    loader = grain.DataLoader(
        data_source=shard,
        sampler=sampler,
        operations=[EvalTransform(augment, image_size, crop_pct), grain.Batch(local, drop_remainder=False)],
        worker_count=worker_count,
    )
    num_batches = math.ceil(math.ceil(len(source) / process_count) / local)
    produced = 0
    template = None
    for batch in loader:
        template = batch
        yield _pad(batch, local)
        produced += 1
    if template is None:
        raise ValueError("the evaluation source yielded no records for this process")
    for _ in range(num_batches - produced):
        yield {k: np.zeros_like(v) for k, v in _pad(template, local).items()}


class GlobalBatchSampler:
    """Endless shuffled order over all records; this process gets its slice of every global batch.

    Global stream position ``g`` is record ``IndexSampler(seed)[g]`` (a fresh permutation per
    epoch) with augmentation seed ``seed + g``. Process ``p`` of ``P`` owns positions
    ``b * B + p * B/P + j`` (``j < B/P``) of global batch ``b``, so the global batches, and the
    losses, are the same for any number of processes; each process reads only its own records.
    """

    def __init__(self, num_records: int, global_batch: int, process_index: int, process_count: int, seed: int):
        self._local = local_batch_size(global_batch, process_count)
        self._global, self._offset = global_batch, process_index * self._local
        self._base = grain.IndexSampler(num_records, shuffle=True, num_epochs=None, seed=seed)
        self._repr = (
            f"GlobalBatchSampler(num_records={num_records}, global_batch={global_batch}, "
            f"process={process_index}/{process_count}, seed={seed})"
        )

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        batch, j = divmod(int(index), self._local)
        meta = self._base[batch * self._global + self._offset + j]
        return grain.RecordMetadata(index=index, record_key=meta.record_key, rng=meta.rng)

    def __repr__(self) -> str:
        return self._repr


class _Strided:
    """Records ``start, start + step, ...`` of ``source`` (a picklable view for grain workers)."""

    def __init__(self, source, start: int, step: int):
        self.source, self.start, self.step = source, start, step

    def __len__(self) -> int:
        return len(range(self.start, len(self.source), self.step))

    def __getitem__(self, index: int):
        return self.source[self.start + int(index) * self.step]

    def __repr__(self) -> str:
        return f"_Strided({self.source!r}, start={self.start}, step={self.step})"


def _allow_workers(worker_count: int) -> None:
    # grain's worker processes read absl flags; outside an absl app (notebooks, tests) mark them parsed
    if worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _pad(batch: dict, size: int) -> dict:
    n = len(batch["label"])
    if n == size:
        return batch
    return {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
