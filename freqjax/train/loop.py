"""The training loop: ``train_and_evaluate(config, workdir)`` and ``evaluate_checkpoint(config, workdir)``.

A run resumes automatically from the newest readable checkpoint in ``WORKDIR/checkpoints``
(model, optimiser, EMA, data iterator position; the step is also the RNG state). Metrics go to
``WORKDIR/metrics.jsonl`` and ``WORKDIR/tensorboard``; the console shows a progress bar with
images/s. SIGTERM (e.g. pre-emption) or SIGINT (Ctrl-C) saves a checkpoint at the current step
and returns normally. One run at a time owns a workdir (``run.lock``); a resume must keep the
config it was started with, bar the fields that may change (:mod:`freqjax.train.workdir`); no
checkpoint is ever deleted unless provably damaged (:mod:`freqjax.train.checkpoint`). A
non-finite loss or gradient norm stops the run with :class:`NonFiniteError` before any
checkpoint of the bad state is written, so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import functools
import itertools
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from freqjax.data.loader import eval_batches, train_loader
from freqjax.data.sources import make_source
from freqjax.models import create_model, model_info
from freqjax.train import optim, parallel, steps
from freqjax.train.checkpoint import Checkpointer, merge_weights
from freqjax.train.config import validate_train_config
from freqjax.train.init_from import load_init_weights
from freqjax.train.workdir import WorkdirLock, check_resume_config, check_workdir, write_run_config
from freqjax.train.writers import MetricWriter, ProgressBar

__all__ = [
    "NonFiniteError",
    "Setup",
    "benchmark_input",
    "evaluate_checkpoint",
    "train_and_evaluate",
]


UNREADABLE_LOG = "unreadable_images.txt"


class NonFiniteError(RuntimeError):
    """A training metric became NaN or infinite; the message names the step, metric and last checkpoint."""


class Setup:
    """Everything built from a config before the loop (sources, model, optimiser, jitted steps)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        validate_train_config(config)
        self.config, self.workdir = config, Path(workdir)
        self.mesh = parallel.make_mesh()
        n_dev = jax.device_count()
        self.eval_batch_size = config.batch_size if config.eval_batch_size == -1 else config.eval_batch_size
        for name, value in (("batch_size", config.batch_size), ("eval_batch_size", self.eval_batch_size)):
            if value % n_dev:
                raise ValueError(f"config.{name}={value} is not divisible by the device count {n_dev}")
        info = model_info(config.model)
        self.input_kind = info.input_kind
        synthetic_classes = 10 if config.num_classes == -1 else config.num_classes
        common = dict(image_size=config.image_size, num_classes=synthetic_classes, seed=config.seed)
        common.update(synthetic_size=config.synthetic_size, data_dir=config.data_dir or None)
        common.update(decode_cache=config.decode_cache)
        self.train_source = make_source(config.dataset, True, train_split=config.train_split, **common)
        self.eval_source = make_source(config.dataset, False, **common)
        self.num_classes = self.train_source.num_classes
        if config.num_classes not in (-1, self.num_classes):
            raise ValueError(
                f"config.num_classes={config.num_classes} but dataset {config.dataset!r} has {self.num_classes}"
            )
        self.steps_per_epoch = max(1, len(self.train_source) // config.batch_size)
        self.total_steps = (
            config.num_train_steps
            if config.num_train_steps != -1
            else max(1, math.ceil(config.num_epochs * self.steps_per_epoch))
        )
        self.dtype = jnp.bfloat16 if config.half_precision else jnp.float32
        self.model = create_model(
            config.model,
            num_classes=self.num_classes,
            drop_rate=None if config.drop_rate == -1 else config.drop_rate,
            drop_path_rate=config.drop_path_rate,
            dtype=self.dtype,
            **config.model_options.to_dict(),
        )
        self.schedule = optim.make_schedule(config, self.steps_per_epoch, self.total_steps)
        self.tx = optim.make_optimizer(config, self.schedule)
        rep, data = parallel.replicated(self.mesh), parallel.data_sharding(self.mesh)
        keep = tuple(config.dct_keep)
        self.train_step = jax.jit(
            functools.partial(
                steps.train_step,
                model=self.model,
                tx=self.tx,
                schedule=self.schedule,
                input_kind=self.input_kind,
                seed=config.seed,
                label_smoothing=config.label_smoothing,
                ema_decay=config.ema_decay,
                dtype=self.dtype,
                dct_keep=keep,
                inject_nan_at_step=config.inject_nan_at_step,
                trainable=config.trainable,
            ),
            in_shardings=(rep, data),
            out_shardings=(rep, rep),
            donate_argnums=0,
        )
        self.eval_step = jax.jit(
            functools.partial(
                steps.eval_step, model=self.model, input_kind=self.input_kind, dtype=self.dtype, dct_keep=keep
            ),
            in_shardings=(rep, rep, data),
            out_shardings=rep,
        )
        self.rep = rep
        self._init_weights: dict[bool, tuple] = {}

    def init_weights(self, for_eval: bool = False) -> tuple[dict, object]:
        """``config.init_from``'s weights checked against this model (host arrays, no compilation; cached).

        Returns (weights, may_be_missing) of :func:`freqjax.train.init_from.load_init_weights`.
        """
        if for_eval not in self._init_weights:
            state = self.abstract_state()
            target = {"params": state.params, "batch_stats": state.batch_stats}
            self._init_weights[for_eval] = load_init_weights(self.config, self.num_classes, target, for_eval=for_eval)
        return self._init_weights[for_eval]

    def init_state(self) -> steps.TrainState:
        """Fresh replicated state from ``config.seed`` (jitted, so it is placed on every device)."""
        size = self.config.image_size
        sample = steps.to_model_input(jnp.zeros((1, size, size, 3), jnp.uint8), self.input_kind, self.dtype)
        init = functools.partial(
            steps.init_state, self.model, self.tx, seed=self.config.seed, ema=self.config.ema_decay > 0
        )
        state = jax.jit(init, out_shardings=self.rep)(sample)
        if self.config.init_from:
            state = self._load_init(state)
        return state

    def _load_init(self, state: steps.TrainState) -> steps.TrainState:
        # weights (and BN statistics) from config.init_from; parameters matched by config.trainable,
        # and the head under init_head='reinit', may be new
        loaded, may_be_missing = self.init_weights()
        params, n = merge_weights(state.params, loaded["params"], may_be_missing)
        stats, _ = merge_weights(state.batch_stats, loaded["batch_stats"], lambda name: True)
        if jax.process_index() == 0:
            print(
                f"init_from {self.config.init_from}: loaded {n} of {len(jax.tree_util.tree_leaves(params))} "
                f"parameters (head: {self.config.init_head})"
            )
        params, stats = jax.device_put((params, stats), self.rep)
        ema = self.config.ema_decay > 0
        return state.replace(
            params=params,
            batch_stats=stats,
            ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else {},
            ema_batch_stats=jax.tree_util.tree_map(jnp.copy, stats) if ema else {},
        )

    def abstract_state(self):
        """Shapes, dtypes and shardings of the state (for restoring without initialising)."""
        size = self.config.image_size
        sample = jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)

        def init(x):
            x = steps.to_model_input(x, self.input_kind, self.dtype)
            return steps.init_state(self.model, self.tx, x, self.config.seed, self.config.ema_decay > 0)

        shapes = jax.eval_shape(init, sample)
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.rep), shapes)

    def announce(self, where: str) -> None:
        """Print what is being trained on what: backend, devices, precision, model, data (process 0 only)."""
        from freqjax.ops import resolve_conv_impl

        if jax.process_index() == 0:
            print(
                f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {jnp.dtype(self.dtype).name} "
                f"compute, float32 parameters, conv {resolve_conv_impl()}; "
                f"model {self.config.model} ({self.input_kind}, {self.num_classes} classes) on "
                f"{jax.device_count()} devices / {jax.process_count()} processes; data {self.train_source!r}; "
                f"{self.steps_per_epoch} steps/epoch; {where}",
                flush=True,
            )

    def train_loader(self):
        """This process's endless training loader (iterate it; its iterator is checkpointable)."""
        c = self.config
        return train_loader(
            self.train_source,
            global_batch=c.batch_size,
            image_size=c.image_size,
            augment=c.augment,
            colour_jitter=c.colour_jitter,
            seed=c.seed,
            worker_count=c.worker_count,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    def evaluate_all(self, state: steps.TrainState, step: int, writer: MetricWriter | None = None) -> dict:
        """Evaluate the weights (and the EMA weights when on), write and print the results."""
        out = {"eval": self.evaluate(state.params, state.batch_stats)}
        line = f"step {step}: eval top1 {out['eval']['top1']:.4f} top5 {out['eval']['top5']:.4f}"
        if self.config.ema_decay > 0:
            out["eval_ema"] = self.evaluate(state.ema_params, state.ema_batch_stats)
            line += f" (EMA top1 {out['eval_ema']['top1']:.4f})"
        if writer is not None:
            for prefix, metrics in out.items():
                writer.write(step, prefix, metrics)
        if jax.process_index() == 0:
            print(line, flush=True)
        return out

    def restore_newest(self) -> tuple[steps.TrainState, int]:
        """The newest checkpoint's state and step, for evaluation and studies (the data position is not restored).

        Raises:
            ValueError: no checkpoint in the workdir.
        """
        ckpt_dir = self.workdir / "checkpoints"
        restored = None
        if ckpt_dir.is_dir():
            check_resume_config(self.workdir, self.config, self.num_classes, evaluating=True)
            ckpt = Checkpointer(ckpt_dir, read_only=True)  # evaluation never writes, moves or deletes
            try:
                restored = ckpt.restore_latest(self.abstract_state(), None)
            finally:
                ckpt.close()
        if restored is None:
            raise ValueError(f"--mode {self.config.mode}: no checkpoint in {self.workdir / 'checkpoints'}")
        state, step = restored
        return state, int(step)

    def eval_batches(self):
        """This process's evaluation batches (uint8 ``image``, ``label``, ``mask``), ``config.eval_steps`` at most."""
        c = self.config
        batches = eval_batches(
            self.eval_source,
            global_batch=self.eval_batch_size,
            image_size=c.image_size,
            augment=c.eval_augment,
            crop_pct=c.crop_pct,
            worker_count=c.worker_count,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return batches if c.eval_steps == -1 else itertools.islice(batches, c.eval_steps)

    def evaluate(self, params, batch_stats) -> dict:
        """Top-1 / top-5 / loss over the evaluation set (or ``config.eval_steps`` batches)."""
        totals = None
        for batch in self.eval_batches():
            sums = self.eval_step(params, batch_stats, parallel.global_batch(batch, self.mesh))
            totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
        totals = jax.device_get(totals)
        count = max(float(totals["count"]), 1.0)
        out = {k: float(v) / count for k, v in totals.items() if k != "count"}
        return {**out, "count": int(totals["count"])}


def _summarise(pending: list[tuple[int, dict]], last_ckpt: int | None, ckpt_dir: Path) -> dict:
    """Mean metrics of the ``pending`` steps (empty: {}); raises NonFiniteError on a NaN/inf loss."""
    if not pending:  # SIGTERM right after a log
        return {}
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), metrics in zip(pending, fetched, strict=True):
        for name in ("loss", "grad_norm"):
            value = float(metrics[name])
            if not math.isfinite(value):
                where = f"step {last_ckpt} in {ckpt_dir}" if last_ckpt is not None else "none (no checkpoint yet)"
                raise NonFiniteError(
                    f"non-finite training {name} ({value}) at step {step}; stopped without saving it. "
                    f"Last good checkpoint: {where}. Lower learning_rate or set grad_clip_norm, then rerun to resume."
                )
    summary = {k: float(np.mean([float(m[k]) for m in fetched])) for k in fetched[0] if k != "skipped"}
    summary["skipped"] = int(sum(int(m["skipped"]) for m in fetched))
    return summary


MAX_UNREADABLE_FRACTION = 0.1  # stop a run when more of the images it has read than this were unreadable
_MIN_IMAGES_FOR_FRACTION = 512  # ... judged once this many have been read


def _report_skipped(step: int, summary: dict, is_main: bool, s: Setup) -> int:
    if summary["skipped"] and is_main:
        print(f"step {step}: skipped {summary['skipped']} unreadable images ({summary['skipped_total']} so far)")
    seen = step * s.config.batch_size + summary["skipped_total"]
    if seen >= _MIN_IMAGES_FOR_FRACTION and summary["skipped_total"] > MAX_UNREADABLE_FRACTION * seen:
        raise ValueError(
            f"{summary['skipped_total']} of the {seen} images read by step {step} were unreadable "
            f"(more than {MAX_UNREADABLE_FRACTION:.0%}); their paths are in {s.workdir / UNREADABLE_LOG}"
        )
    return summary["skipped_total"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train (resuming from ``workdir`` if it has checkpoints) and evaluate; returns the final metrics.

    Raises:
        ValueError: bad config (before anything is compiled).
        NonFiniteError: a NaN/inf loss or gradient norm (the last good checkpoint is kept).
    """
    s = Setup(config, workdir)
    is_main = jax.process_index() == 0
    if config.init_from and not _has_checkpoint(s.workdir):
        s.init_weights()  # a bad source fails here: before compiling, before the workdir is touched
    check_workdir(s.workdir)
    lock = WorkdirLock(s.workdir)
    if is_main:
        lock.acquire()  # before anything in the workdir is read or written
    try:
        return _train(s)
    finally:
        lock.release()


def _resume(s: Setup, iterator) -> tuple[Checkpointer, tuple[steps.TrainState, int] | None]:
    """The checkpoints and, if the saved config allows resuming, the newest one's (state, step)."""
    is_main = jax.process_index() == 0
    ckpt = Checkpointer(s.workdir / "checkpoints", keep=s.config.keep_checkpoints)
    try:
        if ckpt.steps():
            for change in check_resume_config(s.workdir, s.config, s.num_classes):
                if is_main:
                    print(f"resuming with a changed {change}", flush=True)
        restored = ckpt.restore_latest(s.abstract_state(), iterator)
        if is_main:  # only once the workdir's checkpoints are known to fit (or there are none)
            write_run_config(s.workdir, s.config, s.num_classes)
        return ckpt, restored
    except BaseException:
        ckpt.close()
        raise


def _train(s: Setup) -> dict:
    config, is_main = s.config, jax.process_index() == 0
    if hasattr(s.train_source, "skip_log"):  # folder sources list the images they could not read
        s.train_source.skip_log = str(s.workdir / UNREADABLE_LOG)
    iterator = iter(s.train_loader())
    ckpt_dir = s.workdir / "checkpoints"
    ckpt, restored = _resume(s, iterator)
    state, step, last_ckpt = (s.init_state(), 0, None) if restored is None else (*restored, restored[1])
    s.announce(f"{'resumed at' if restored else 'starting at'} step {step} of {s.total_steps}")
    writer = MetricWriter(s.workdir, enabled=is_main, resumed_at=step if restored is not None else 0)
    stop: dict = {"signal": None}  # SIGTERM (pre-emption) or SIGINT (Ctrl-C): save, then return
    previous = {
        sig: signal.signal(sig, lambda signum, _: stop.update(signal=signal.Signals(signum).name))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    bar = ProgressBar(s.total_steps, step, enabled=is_main and config.progress_bar)
    result: dict = {}
    pending: list[tuple[int, dict]] = []
    tick, skipped_total = time.perf_counter(), 0
    try:
        while step < s.total_steps and not stop["signal"]:
            state, metrics = s.train_step(state, parallel.global_batch(next(iterator), s.mesh))
            step += 1
            pending.append((step, metrics))
            do_eval = step % config.eval_every_steps == 0 or step == s.total_steps
            do_ckpt = step % config.checkpoint_every_steps == 0 or step == s.total_steps or stop["signal"]
            if step % config.log_every_steps == 0 or do_eval or do_ckpt:
                summary = _summarise(pending, last_ckpt, ckpt_dir)
                summary.update(
                    images_per_s=len(pending) * config.batch_size / max(time.perf_counter() - tick, 1e-9),
                    epoch=step / s.steps_per_epoch,
                    skipped_total=skipped_total + summary["skipped"],
                )
                skipped_total = _report_skipped(step, summary, is_main, s)
                writer.write(step, "train", summary)
                bar.update(len(pending), loss=summary["loss"], img_s=summary["images_per_s"])
                # The next summary's images/s covers its own steps only.
                pending, result["train"], tick = [], summary, time.perf_counter()
            if do_eval:
                result.update(s.evaluate_all(state, step, writer))
            if do_ckpt:
                ckpt.save(step, state, iterator)
                last_ckpt = step
            if do_eval or do_ckpt:
                tick = time.perf_counter()  # images/s measures training, not evaluation or saving
        if stop["signal"]:
            if last_ckpt != step:  # the signal arrived after this step's checkpoint decision
                _summarise(pending, last_ckpt, ckpt_dir)  # never checkpoint a non-finite step
                ckpt.save(step, state, iterator)
            if is_main:
                print(f"{stop['signal']}: saved checkpoint at step {step} in {ckpt_dir}; exiting", flush=True)
        result["step"] = step
    finally:
        bar.close()
        ckpt.close()
        writer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return result


def _has_checkpoint(workdir: Path) -> bool:
    ckpt_dir = workdir / "checkpoints"
    return ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluate the newest checkpoint in ``workdir`` (and its EMA weights if the config has EMA).

    A ``workdir`` without checkpoints and a ``config.init_from`` (a PyTorch state dict, a
    compressed file, another run) evaluates those weights as they are: step 0, no EMA.

    Raises:
        ValueError: no checkpoint in ``workdir`` and no ``config.init_from``.
    """
    s = Setup(config, workdir)
    if config.init_from and not _has_checkpoint(s.workdir):
        loaded, _ = s.init_weights(for_eval=True)
        state = s.abstract_state()
        params, _ = merge_weights(state.params, loaded["params"], lambda name: False)
        stats, _ = merge_weights(state.batch_stats, loaded["batch_stats"], lambda name: False)
        params, stats = jax.device_put((params, stats), s.rep)
        result = {"eval": s.evaluate(params, stats)}
        if jax.process_index() == 0:
            print(
                f"init_from {config.init_from} (no checkpoint in {s.workdir}): eval top1 {result['eval']['top1']:.4f}"
                f" top5 {result['eval']['top5']:.4f}",
                flush=True,
            )
        return {"step": 0, "init_from": config.init_from, **result}
    state, step = s.restore_newest()
    return {"step": step, **s.evaluate_all(state, step)}


def benchmark_input(config: ml_collections.ConfigDict, workdir: str, num_batches: int = 100) -> dict:
    """Images/s of the input pipeline alone (decode + augment + batch on the host, no device work).

    Reads ``min(num_batches, total steps)`` training batches after 5 warm-up batches (worker start-up).
    """
    del workdir  # nothing is written
    s = Setup(config, ".")
    iterator = iter(s.train_loader())
    for _ in range(5):
        next(iterator)
    n = min(num_batches, s.total_steps)
    start = time.perf_counter()
    for _ in range(n):
        next(iterator)
    elapsed = time.perf_counter() - start
    local = config.batch_size // jax.process_count()
    return {"input_images_per_s": n * local / elapsed, "batches": n, "worker_count": config.worker_count}
