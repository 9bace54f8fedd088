"""The compression job: load a trained network, compress it, evaluate, fine-tune the kept values, report.

From "Tensor Reordering for CNN Compression" (Ulicny, Krylov & Dahyot)::

    python -m freqjax.main --config configs/compress.py:uniform --workdir runs/c \\
        --config.init_from=runs/cifar --config.dataset=folder:PATH

``config`` is a training config (model, data, optimiser, ``num_epochs`` of fine-tuning) plus a
``compression`` group (:func:`compression_defaults`). The job

1. loads ``config.init_from`` (any training run's source: a freqjax workdir or checkpoint, a
   PyTorch / timm / torchvision state dict; or a file written by :func:`freqjax.compress.save`,
   whose compressed layers are kept when they match the plan) and checks it fits ``config.model``;
2. plans (:func:`freqjax.compress.make_plan`) and compresses with ``compression.method``: the
   paper's reordered DCT, or a baseline at the same kept values (``dct_no_reorder``, ``l1``);
3. evaluates the original and the compressed network;
4. fine-tunes only the kept values (``compression.finetune='coefficients'``; gradients reach them
   through the inverse DCT and the un-permutation) or everything trainable ('all'), checkpointing
   like the trainer: a resume after SIGKILL ends bitwise equal to an uninterrupted run;
5. evaluates again and writes ``compressed.npz`` and ``report.{json,md}``.

Every check (config, source, plan, an earlier compression in the workdir) runs before anything is
compiled or written. The workdir holds ``compressed_init.npz`` (the network right after
compression: the fine-tune's start and frozen half), ``before.json`` (the evaluations before
fine-tuning, made once), ``checkpoints/``, ``metrics.jsonl``, ``run_config.json`` and the outputs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from freqjax.compress import storage
from freqjax.compress.codec import CodedTensor, decode_numpy, nsse
from freqjax.compress.ordering import DISTANCES, STARTS
from freqjax.compress.plan import PRESETS, STRATEGIES, STRATEGY_ARGS, make_plan
from freqjax.compress.schemes import SCHEMES
from freqjax.compress.tree import CompressedTensor, check_plan, compress, count, to_reference
from freqjax.runtime import atomic_path
from freqjax.studies.compression_finetune import (
    assemble,
    compressed_tree,
    finetune_step,
    flat_leaves,
    halves,
    static_layers,
)
from freqjax.train import parallel, steps
from freqjax.train.checkpoint import Checkpointer, load_weights
from freqjax.train.config import check_choice, check_keys, model_options, train_defaults
from freqjax.train.init_from import source_kind
from freqjax.train.loop import Setup
from freqjax.train.workdir import RUN_CONFIG, WorkdirLock, check_resume_config, check_workdir, write_run_config
from freqjax.train.writers import MetricWriter

__all__ = [
    "FINETUNE",
    "METHODS",
    "VARIANTS",
    "CompressionJob",
    "compress_config",
    "compression_defaults",
    "run_compression",
    "validate_compression",
]

METHODS = tuple(SCHEMES)  # 'dct' (the paper's), 'dct_no_reorder', 'l1'
FINETUNE = ("coefficients", "all")
INIT_FILE, FINAL_FILE, BEFORE_FILE = "compressed_init.npz", "compressed.npz", "before.json"


def compression_defaults() -> ml_collections.ConfigDict:
    """The ``compression`` group of a compression config, with the paper's uniform g=4, r=8."""
    c = ml_collections.ConfigDict()
    c.method = "dct"  # METHODS
    c.strategy = "uniform"  # freqjax.compress.plan.STRATEGIES
    c.g = 4  # uniform, progressive_r
    c.r = 8.0  # uniform, progressive_g
    c.r_prime = 1.0  # progressive_r
    c.rule = ""  # '': the model's preset (resnet50, mobilenetv2_100) or 'all_but_first'; a preset or globs
    c.distance = "euclidean"
    c.start = "l2"
    c.finetune = "coefficients"  # FINETUNE
    return c


# variant -> (strategy, g, r, r'): the paper's settings (configs/compress.py states where each is from)
_PRESET_PLANS = {
    "uniform": ("uniform", 4, 8.0, 1.0),
    "progressive_r": ("progressive_r", 4, 8.0, 1.0),
    "progressive_g": ("progressive_g", 4, 8.0, 1.0),
}
VARIANTS = tuple(_PRESET_PLANS) + tuple(f"{v}_long" for v in _PRESET_PLANS)


def compress_config(variant: str = "uniform") -> ml_collections.ConfigDict:
    """The compression job's config: ``<plan>`` (one epoch of fine-tuning) or ``<plan>_long`` (20 epochs).

    The fine-tune recipes are the paper's (section 4.2): one epoch on centre crops of the resized
    training images without augmentation, SGD at 0.001 x batch_size / 256; the longer one, 20
    epochs with the rate divided by 10 at epoch 15 and standard augmentation. configs/compress.py
    states every choice the paper leaves open.
    """
    if variant not in VARIANTS:
        raise ValueError(f"configs/compress.py variant must be one of {list(VARIANTS)}, got {variant!r}")
    plan, long = variant.removesuffix("_long"), variant.endswith("_long")
    c = train_defaults()
    c.mode = "compress"
    c.model = "cifar_resnet8"
    c.model_options = model_options(c.model)
    c.image_size = 32
    c.eval_augment = "none"
    c.dataset = "synthetic"
    c.batch_size = 128
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.weight_decay = 1e-4
    c.learning_rate = 0.001 * c.batch_size / 256
    c.label_smoothing = 0.0
    c.drop_rate = 0.0
    c.colour_jitter = 0.0
    c.worker_count = 1
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    c.eval_every_steps = 10**9  # the job evaluates before and after fine-tuning only
    c.progress_bar = False
    if long:
        c.num_epochs, c.schedule, c.boundaries, c.decay_rate, c.augment = 20.0, "piecewise", (15,), 0.1, "cifar"
    else:
        c.num_epochs, c.schedule, c.augment = 1.0, "constant", "none"
    c.compression = compression_defaults()
    c.compression.strategy, c.compression.g, c.compression.r, c.compression.r_prime = _PRESET_PLANS[plan]
    return c


def validate_compression(group: ml_collections.ConfigDict) -> None:
    """Check the ``compression`` group's fields (the plan's own checks follow in :func:`make_plan`)."""
    check_keys(group, compression_defaults().keys(), where="config.compression")
    check_choice("compression.method", group.method, METHODS)
    check_choice("compression.strategy", group.strategy, list(STRATEGIES))
    check_choice("compression.distance", group.distance, DISTANCES)
    check_choice("compression.start", group.start, STARTS)
    check_choice("compression.finetune", group.finetune, FINETUNE)
    if not isinstance(group.rule, str):
        raise ValueError(f"config.compression.rule must be a preset name or comma-separated globs, got {group.rule!r}")


def _split_config(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    if "compression" not in config:
        raise ValueError("config has no 'compression' group; start from configs/compress.py")
    values = config.to_dict()
    group = ml_collections.ConfigDict(values.pop("compression"))
    validate_compression(group)
    if not config.init_from:
        raise ValueError("config.init_from must name the trained network to compress (a workdir, checkpoint or .npz)")
    if config.trainable:
        raise ValueError(f"config.trainable must be '' here (compression.finetune chooses), got {config.trainable!r}")
    if config.get("init_head", "load") != "load":
        raise ValueError(
            f"config.init_head must be 'load' to compress a network's own classifier, got {config.init_head!r}"
        )
    if config.ema_decay:
        raise ValueError(f"config.ema_decay must be 0 for a compression fine-tune, got {config.ema_decay!r}")
    return ml_collections.ConfigDict(values), group


def _is_compressed(tree: Any) -> bool:
    return any(isinstance(x, CompressedTensor) for x in flat_leaves(tree).values())


def _load_source(config: ml_collections.ConfigDict) -> dict:
    """{'params', 'batch_stats'} of ``config.init_from``; a compressed file keeps its compressed nodes.

    The sources a training run's init_from takes (:func:`freqjax.train.init_from.source_kind`): a
    freqjax workdir or checkpoint (:func:`freqjax.train.checkpoint.load_weights`), a PyTorch /
    timm / torchvision state dict (converted strictly for ``config.model``), a freqjax ``.npz``.
    """
    path = config.init_from
    kind = source_kind(path)
    if kind == "compressed":
        tree = storage.load(path)
    elif kind == "torch":
        from freqjax.interop.torch_weights import from_torch, read_state_dict

        try:
            tree = from_torch(read_state_dict(path), config.model, **config.model_options.to_dict())
        except ValueError as err:
            raise ValueError(f"config.init_from={path!r}: {err}") from None
    else:
        tree = load_weights(path)
    return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}


def _check_fits(source: dict, abstract: dict, init_from: str, model: str) -> None:
    """ValueError naming the first leaf where ``source`` differs from the model's variables."""
    want = {("params", *p): tuple(x.shape) for p, x in flat_leaves(abstract["params"]).items()}
    want |= {("batch_stats", *p): tuple(x.shape) for p, x in flat_leaves(abstract["batch_stats"]).items()}
    got = {}
    for collection in ("params", "batch_stats"):
        for p, x in flat_leaves(source[collection]).items():
            got[(collection, *p)] = x.flax_shape if isinstance(x, CompressedTensor) else tuple(np.shape(x))
    for key in sorted(want.keys() | got.keys()):
        name = "/".join(key)
        if key not in got:
            raise ValueError(f"config.init_from={init_from!r} does not fit model {model!r}: it has no {name}")
        if key not in want:
            raise ValueError(f"config.init_from={init_from!r} does not fit model {model!r}: {name} is not in the model")
        if want[key] != got[key]:
            raise ValueError(
                f"config.init_from={init_from!r} does not fit model {model!r}: {name} has shape {got[key]} there, "
                f"{want[key]} in the model"
            )


def _plan(source: dict, group: ml_collections.ConfigDict, model: str):
    rule: Any = group.rule or (model if model in PRESETS else "all_but_first")
    if rule not in PRESETS:
        rule = [p.strip() for p in rule.split(",") if p.strip()]
    takes = STRATEGY_ARGS[group.strategy]
    args = {k: (group[k] if k in takes else None) for k in ("g", "r", "r_prime")}
    try:
        return make_plan(source, rule, group.strategy, **args, distance=group.distance, start=group.start)
    except (ValueError, TypeError) as err:
        raise type(err)(f"config.compression ({group.strategy}, {args}): {err}") from None


class CompressionJob:
    """One compression run in one workdir: the constructor checks everything and writes nothing; :meth:`run` runs it."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.train_config, self.group = _split_config(config)
        self.s = Setup(self.train_config, workdir)
        self.workdir = self.s.workdir
        abstract = self.s.abstract_state()
        source = _load_source(config)
        _check_fits(
            source, {"params": abstract.params, "batch_stats": abstract.batch_stats}, config.init_from, config.model
        )
        self.source_is_compressed = _is_compressed(source)
        self.source = source
        self.plan = _plan(source, self.group, config.model)
        if self.source_is_compressed:
            check_plan(source, self.plan, self.group.method, what=f"config.init_from={config.init_from!r}")
        init = self.workdir / INIT_FILE
        if init.is_file():  # an earlier start of this run: it must be the same compression
            check_plan(storage.load(init), self.plan, self.group.method, what=str(init))
        if (self.workdir / RUN_CONFIG).is_file():
            check_resume_config(self.workdir, config, self.s.num_classes)

    # -- compression and the evaluations before fine-tuning --------------------------------

    def compressed(self) -> dict:
        """The network right after compression, made once and kept in WORKDIR/compressed_init.npz."""
        path = self.workdir / INIT_FILE
        if path.is_file():
            return storage.load(path)
        if self.source_is_compressed:
            tree = self.source
        else:
            start = time.perf_counter()
            tree = compress(self.source, self.plan, scheme=self.group.method)
            self.compress_seconds = time.perf_counter() - start
        storage.save(tree, path)
        return storage.load(path)  # what a resume reads: the same numbers either way

    def evaluate(self, params: Any, batch_stats: Any) -> dict:
        params, batch_stats = jax.device_put((params, batch_stats), self.s.rep)
        return self.s.evaluate(params, batch_stats)

    def before(self, ctree: dict, assemble_fn) -> dict:
        path = self.workdir / BEFORE_FILE
        if path.is_file():
            return json.loads(path.read_text())
        out: dict = {"compress_seconds": round(getattr(self, "compress_seconds", 0.0), 2)}
        if not self.source_is_compressed:
            out["original"] = self.evaluate(self.source["params"], self.source["batch_stats"])
            with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:  # the same format's size, uncompressed
                out["original_bytes"] = storage.save(jax.device_get(self.source), os.path.join(tmp, "original.npz"))
            out["original_counts"] = count(self.source)
            out["nsse"] = self._nsse(ctree)
        trainable, frozen, index = halves(ctree, "coefficients")
        out["compressed"] = self.evaluate(assemble_fn(trainable, frozen, index), ctree["batch_stats"])
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(out, indent=1))
        return out

    def _nsse(self, ctree: dict) -> dict:
        flat_src, flat_c = flat_leaves(self.source["params"]), flat_leaves(ctree["params"])
        out = {}
        for layer in self.plan.layers:
            node = flat_c[layer.path]
            w = to_reference(np.asarray(flat_src[layer.path], np.float32))
            if node.kind == "sparse":
                w_hat = np.zeros((node.g, node.columns))
                w_hat[:, np.asarray(node.index)] = np.asarray(node.coef)
                w_hat = w_hat.reshape(node.ref_shape)
            else:
                w_hat = decode_numpy(CodedTensor(np.asarray(node.coef), np.asarray(node.index), node.ref_shape))
            out[layer.name] = round(nsse(w, w_hat), 6)
        return out

    # -- the fine-tune ------------------------------------------------------------------------

    def finetune(self, ctree: dict, layers: tuple) -> tuple[steps.TrainState, dict, dict, dict]:
        s, is_main = self.s, jax.process_index() == 0
        trainable, frozen, index = halves(ctree, self.group.finetune)
        frozen, index = jax.device_put((frozen, index), s.rep)
        step_fn = jax.jit(
            functools.partial(
                finetune_step,
                model=s.model,
                tx=s.tx,
                schedule=s.schedule,
                layers=layers,
                input_kind=s.input_kind,
                seed=self.config.seed,
                label_smoothing=self.config.label_smoothing,
                dtype=s.dtype,
            ),
            in_shardings=(s.rep, parallel.data_sharding(s.mesh), s.rep, s.rep),
            out_shardings=(s.rep, s.rep),
            donate_argnums=0,
        )

        def fresh(trainable, batch_stats):
            return steps.TrainState(
                step=jnp.zeros((), jnp.int32),
                params=trainable,
                batch_stats=batch_stats,
                opt_state=s.tx.init(trainable),
                ema_params={},
                ema_batch_stats={},
            )

        shapes = jax.eval_shape(fresh, trainable, ctree["batch_stats"])
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s.rep), shapes)
        iterator = iter(s.train_loader())
        ckpt = Checkpointer(self.workdir / "checkpoints", keep=self.config.keep_checkpoints)
        stop: dict = {"signal": None}
        previous = {
            sig: signal.signal(sig, lambda signum, _: stop.update(signal=signal.Signals(signum).name))
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        writer = None
        try:
            restored = ckpt.restore_latest(abstract, iterator)
            if restored is None:
                state, step = jax.jit(fresh, out_shardings=s.rep)(trainable, ctree["batch_stats"]), 0
            else:
                state, step = restored
            s.announce(f"fine-tuning {'resumed at' if restored else 'from'} step {step} of {s.total_steps}")
            writer = MetricWriter(self.workdir, enabled=is_main, resumed_at=step if restored is not None else 0)
            pending: list = []
            tick = time.perf_counter()
            while step < s.total_steps and not stop["signal"]:
                state, metrics = step_fn(state, parallel.global_batch(next(iterator), s.mesh), frozen, index)
                step += 1
                pending.append(metrics)
                last = step == s.total_steps
                if step % self.config.log_every_steps == 0 or last:
                    fetched = jax.device_get(pending)
                    summary = {k: float(np.mean([m[k] for m in fetched])) for k in ("loss", "accuracy", "grad_norm")}
                    summary["learning_rate"] = float(fetched[-1]["learning_rate"])
                    summary["images_per_s"] = len(pending) * self.config.batch_size / (time.perf_counter() - tick)
                    if not math.isfinite(summary["loss"]):
                        raise ValueError(
                            f"fine-tuning loss became {summary['loss']} at step {step}; lower learning_rate"
                        )
                    writer.write(step, "train", summary)
                    if is_main:
                        print(f"step {step}: loss {summary['loss']:.4f} accuracy {summary['accuracy']:.4f}", flush=True)
                    pending, tick = [], time.perf_counter()
                if step % self.config.checkpoint_every_steps == 0 or last or stop["signal"]:
                    ckpt.save(step, state, iterator)
            if stop["signal"] and is_main:
                print(f"{stop['signal']}: saved checkpoint at step {step}; rerun to resume", flush=True)
        finally:
            ckpt.close()
            if writer is not None:
                writer.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return state, frozen, index, stop

    # -- the whole job ------------------------------------------------------------------------

    def run(self) -> dict:
        check_workdir(self.workdir)
        lock = WorkdirLock(self.workdir)
        if jax.process_index() == 0:
            lock.acquire()
        try:
            start = time.perf_counter()
            ctree = self.compressed()
            if jax.process_index() == 0:
                write_run_config(self.workdir, self.config, self.s.num_classes)
            layers = static_layers(ctree)
            assemble_fn = jax.jit(functools.partial(assemble, layers=layers))
            before = self.before(ctree, assemble_fn)
            state, frozen, index, stop = self.finetune(ctree, layers)
            if stop["signal"]:
                return {"step": int(state.step), "stopped": stop["signal"]}
            trainable = jax.device_get(state.params)
            final = compressed_tree(trainable, jax.device_get(frozen), jax.device_get(index), layers, state.batch_stats)
            after = self.evaluate(assemble_fn(state.params, frozen, index), state.batch_stats)
            report = self.report(final, before, after, step=int(state.step), seconds=time.perf_counter() - start)
        finally:
            lock.release()
        return report

    def report(self, final: dict, before: dict, after: dict, *, step: int, seconds: float) -> dict:
        final_bytes = storage.save(final, self.workdir / FINAL_FILE)
        counts = count(final)
        g = self.group
        report = {
            "init_from": self.config.init_from,
            "model": self.config.model,
            "method": g.method,
            "strategy": g.strategy,
            "plan": dict(self.plan.settings),
            "finetune": {"trains": g.finetune, "steps": step, "epochs": self.config.num_epochs},
            "compressed": {**counts, "bytes": final_bytes},
            "planned_weights": sum(x.size for x in self.plan.layers),
            "finetuned": {"top1": after["top1"], "top5": after["top5"], "loss": after["loss"]},
            "before": before["compressed"],
            "layers": [
                {"name": x.name, "shape": list(x.ref_shape), "g": x.g, "r": round(x.r, 4), "t": x.t}
                for x in self.plan.layers
            ],
            "file": str(self.workdir / FINAL_FILE),
            "seconds": round(seconds, 1),
        }
        if "original" in before:
            original = before["original_counts"]
            report["original"] = {**before["original"], **original, "bytes": before["original_bytes"]}
            report["param_ratio"] = original["total"] / counts["total"]
            report["bytes_ratio"] = before["original_bytes"] / final_bytes
            for row in report["layers"]:
                row["nsse"] = before["nsse"][row["name"]]
        with atomic_path(self.workdir / "report.json") as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1) + "\n")
        with atomic_path(self.workdir / "report.md") as tmp:
            Path(tmp).write_text(report_markdown(report))
        if jax.process_index() == 0:
            print(report_markdown(report).split("\n\n")[1], flush=True)
        return {k: report[k] for k in ("method", "strategy", "before", "finetuned", "compressed", "file")} | {
            k: report[k] for k in ("param_ratio", "bytes_ratio", "original") if k in report
        }


def report_markdown(report: dict) -> str:
    """The report as Markdown: a title line, the accuracy/size table, the per-layer plan."""
    head = (
        f"# {report['model']} compressed: {report['method']}, {report['strategy']} {report['plan']}\n\n"
        "| network | top-1 | top-5 | kept values | index entries | parameters | bytes on disk "
        "| ratio (params / bytes) |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    c, rows = report["compressed"], []
    ratio = f"{report['param_ratio']:.2f} / {report['bytes_ratio']:.2f}" if "param_ratio" in report else "-"
    if "original" in report:
        o = report["original"]
        kept = report["planned_weights"]
        rows.append(
            f"| original | {o['top1']:.4f} | {o['top5']:.4f} | {kept:,} | 0 | {o['total']:,} | {o['bytes']:,} | 1 |"
        )
    sizes = f"{c['coefficients']:,} | {c['index']:,} | {c['total']:,} | {c['bytes']:,} | {ratio}"
    b, f = report["before"], report["finetuned"]
    rows.append(f"| compressed | {b['top1']:.4f} | {b['top5']:.4f} | {sizes} |")
    rows.append(f"| fine-tuned ({report['finetune']['steps']} steps) | {f['top1']:.4f} | {f['top5']:.4f} | {sizes} |")
    layers = ["| layer | shape | g | r | t | nSSE |", "|---|---|---|---|---|---|"]
    layers += [
        f"| {x['name']} | {'x'.join(map(str, x['shape']))} | {x['g']} | {x['r']} | {x['t']} | {x.get('nsse', '-')} |"
        for x in report["layers"]
    ]
    return head + "\n".join(rows) + "\n\n" + "\n".join(layers) + "\n"


def run_compression(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The ``compress`` job (see the module docstring); returns the report's summary.

    Raises:
        ValueError: a bad config, source, plan or an earlier compression of another plan in the
            workdir (before anything is compiled or written).
    """
    return CompressionJob(config, workdir).run()
