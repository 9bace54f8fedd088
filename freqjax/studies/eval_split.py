"""Shared by the studies that evaluate trained runs: predictions over a run's evaluation split
(sharded over the devices, gathered from every process) and the plain network of another run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.train.workdir import RUN_CONFIG

__all__ = ["evaluation_images", "load_plain_run", "predict_eval_split", "run_image_size", "top1_of", "write_csv"]


def load_plain_run(workdir: str, num_classes: int, field: str) -> tuple[Any, Any, str]:
    """(model, variables on the devices, name) of the plain RGB network trained in ``workdir``
    (its ``run_config.json`` names the model and options; the newest checkpoint's weights).

    Raises:
        ValueError: naming ``field`` (the config field that gave ``workdir``): not a training
            workdir, not a plain RGB network, another class count, a checkpoint that does not fit.
    """
    if not (Path(workdir) / RUN_CONFIG).is_file():
        raise ValueError(
            f"{field}={workdir!r} is not a freqjax training workdir (no {RUN_CONFIG}); "
            "give the workdir of the plain network's run"
        )
    import json

    from freqjax.models import create_model, model_info
    from freqjax.train.checkpoint import load_weights

    saved = json.loads((Path(workdir) / RUN_CONFIG).read_text())
    name = saved["model"]
    if model_info(name).input_kind != "rgb" or name.startswith("msnet_"):
        raise ValueError(f"{field}={workdir!r} trained {name!r}; it must be a plain RGB network")
    if saved["num_classes"] != num_classes:
        raise ValueError(f"{field}={workdir!r} trained {saved['num_classes']} classes, this run {num_classes}")
    model = create_model(name, num_classes=num_classes, **saved.get("model_options", {}))
    loaded = load_weights(workdir)
    variables = {"params": loaded["params"], "batch_stats": loaded["batch_stats"]}
    side = model_info(name).resolution
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, side, side, 3))))
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(variables):
        raise ValueError(f"{field}={workdir!r}: its checkpoint does not fit {name!r}")
    return model, jax.device_put(variables), name


def run_image_size(workdir: str) -> int:
    """The ``image_size`` the run in ``workdir`` trained at (its ``run_config.json``)."""
    import json

    return int(json.loads((Path(workdir) / RUN_CONFIG).read_text())["image_size"])


def evaluation_images(setup: Any) -> int:
    """How many images the evaluation reads (the whole split, or ``eval_steps`` batches of it)."""
    n = len(setup.eval_source)
    steps = setup.config.eval_steps
    return n if steps == -1 else min(n, steps * setup.eval_batch_size)


def predict_eval_split(setup: Any, fn, variables: Any, image_size: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """``fn(variables, uint8 images)``'s outputs and the labels over the evaluation images at
    ``image_size`` (the run's evaluation transform), batches sharded over all devices, gathered."""
    from jax.experimental import multihost_utils

    from freqjax.data.loader import eval_batches
    from freqjax.train import parallel

    c = setup.config
    step = jax.jit(fn, in_shardings=(setup.rep, parallel.data_sharding(setup.mesh)))
    batches = eval_batches(setup.eval_source, global_batch=setup.eval_batch_size, image_size=image_size,
                           augment=c.eval_augment, crop_pct=c.crop_pct, worker_count=c.worker_count,
                           process_index=jax.process_index(), process_count=jax.process_count())  # fmt: skip
    parts, labels = [], []
    for i, batch in enumerate(batches):
        if c.eval_steps != -1 and i >= c.eval_steps:
            break
        g = parallel.global_batch(batch, setup.mesh)
        out, label, mask = multihost_utils.process_allgather((step(variables, g["image"]), g["label"], g["mask"]))
        real = np.asarray(mask) > 0
        parts.append([np.asarray(a)[real] for a in out])
        labels.append(np.asarray(label)[real])
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True)), np.concatenate(labels)


def top1_of(probs: np.ndarray, labels: np.ndarray, index: np.ndarray | None = None) -> float:
    """Top-1 of class scores ``probs`` over images ``index`` (None: all; NaN for none)."""
    if index is not None:
        probs, labels = probs[index], labels[index]
    return float(np.mean(np.argmax(probs, axis=-1) == labels)) if len(labels) else float("nan")


def write_csv(rows: list[dict], path: Path) -> str:
    """``rows`` (dicts with the same keys) as a CSV file; returns its path."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)
