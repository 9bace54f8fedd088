"""Dropping input channels of a trained DCT-input network (FUN paper Table 7 and Figure 6).

From "Rethinking FUN: Frequency-Domain Utilization Networks": at inference only the lowest
``y``/``cb``/``cr`` zigzag frequencies of each plane are kept, the rest zeroed, with no retraining
(192 -> 88 channels cost eFUN 1 point of ImageNet top-1). Per keep setting this job measures:

- **zeroed**: the trained network on the zeroed input (:func:`freqjax.dct.keep_lowest`);
- **params**: the network built for the kept channels (:func:`sliced_model`). This is the paper's
  parameter column (eFUN 4.23 M -> 3.99 M at 88 channels): its first block's widths follow its
  input width, so that network needs training; the job counts it;
- **sliced**: where only the layers that read the input change with its width (ResFUN), the
  trained network with those layers cut to the kept channels, fed the kept channels (:func:`kept_input`);
  its logits equal the zeroed ones, which the job checks (None for eFUN);
- **fine-tuned** (``fine_tune_steps`` > 0): the network trained on from the run's weights on the
  zeroed input, a resumable run in ``WORKDIR/input_channels/finetune_Y_CB_CR`` (a zeroed input's
  weights get no gradient, so this is the sliced network fine-tuned);
- **RGB down-sampling** (``rgb_from``): a plain RGB network of another run on images down-sampled
  by the same input compression ratio (area) and up-sampled back (bilinear) to its side, the
  paper's Figure 6 baseline: the same MACs as the RGB network on full images.

``python -m freqjax.studies.input_channels --config CONFIG --workdir RUN
--config.input_channels.rgb_from=RGB_RUN``; writes ``RUN/input_channels/input_channels.{md,csv,png}``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax import dct
from freqjax.models import count_macs, count_params
from freqjax.studies.eval_split import load_plain_run, predict_eval_split, run_image_size, top1_of, write_csv

__all__ = ["kept_input", "run_input_channels", "slice_input", "sliced_model"]

DEFAULTS = dict(keep=tuple(dct.TABLE7_KEEP), rgb_from="", fine_tune_steps=0, fine_tune_learning_rate=-1.0)


def sliced_model(model: Any, channels: int) -> Any:
    """``model`` (a DCT-input network) taking ``channels`` input channels instead of 192."""
    if hasattr(model, "spec") and hasattr(model.spec, "in_channels"):  # MBNet (eFUN)
        return model.clone(spec=dataclasses.replace(model.spec, in_channels=channels))
    if hasattr(model, "in_channels"):  # ResNet without a stem (ResFUN)
        return model.clone(in_channels=channels)
    raise TypeError(f"cannot give {type(model).__name__} another number of input channels")


class NotSliceableError(ValueError):
    """More than the layers that read the input change width with it (eFUN's first block)."""


def kept_input(coeffs: jax.Array, keep: tuple[int, int, int]) -> jax.Array:
    """The ``keep`` = (y, cb, cr) lowest frequencies of (..., 192) DCT input, in their original order."""
    return jnp.take(coeffs, np.sort(dct.lowest_channels(*keep)), axis=-1)


def slice_input(model: Any, variables: Any, keep: tuple[int, int, int], side: int) -> tuple[Any, Any]:
    """(model, variables) with the layers that read the input cut to the ``keep`` = (y, cb, cr)
    lowest frequencies; feed it :func:`kept_input`. The input channels stay in their order (192
    kept: the network unchanged), not zigzag order as :func:`freqjax.dct.select_lowest` gives.

    ``side``: the DCT input's spatial side (image side / 8).

    Raises:
        NotSliceableError: other layers change width with the input (eFUN's first block), so trained
            weights cannot simply be cut.
    """
    index = np.sort(dct.lowest_channels(*keep))
    small = sliced_model(model, len(index))
    shapes = jax.eval_shape(lambda: small.init(jax.random.key(0), jnp.zeros((1, side, side, len(index)))))

    def cut(full, target):
        if full.shape == target.shape:
            return full
        reads_input = len(full.shape) >= 2 and full.shape[-2] == dct.CHANNELS and target.shape[-2] == len(index)
        if not reads_input or (full.shape[:-2], full.shape[-1]) != (target.shape[:-2], target.shape[-1]):
            raise NotSliceableError(
                f"{type(model).__name__}'s {full.shape} weight becomes {target.shape} with {len(index)} input "
                "channels: more than the input layer changes width"
            )
        return jnp.take(full, index, axis=-2)

    return small, jax.tree_util.tree_map(cut, variables, shapes)


def _options(config: Any) -> dict:
    options = DEFAULTS | dict(config.get("input_channels") or {})
    rows = options["keep"]
    if (
        not isinstance(rows, tuple | list)
        or not rows
        or any(not isinstance(r, tuple | list) or len(r) != 3 for r in rows)
    ):
        raise ValueError(f"input_channels.keep must be (y, cb, cr) triples, got {rows!r}")
    for row in rows:
        try:
            dct.lowest_channels(*row)
        except (TypeError, ValueError) as err:
            raise ValueError(f"input_channels.keep row {tuple(row)!r}: {err}") from None
    options["keep"] = tuple(tuple(int(k) for k in row) for row in rows)
    steps = options["fine_tune_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"input_channels.fine_tune_steps must be an int >= 0, got {steps!r}")
    lr = options["fine_tune_learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (lr > 0 or lr == -1):
        raise ValueError(f"input_channels.fine_tune_learning_rate must be > 0 or -1 (a tenth of the run's), got {lr!r}")
    return options


def run_input_channels(config: Any, workdir: str) -> dict:
    """The ``input_channels`` job (module docstring) on the newest checkpoint of the DCT run in ``workdir``.

    Raises:
        ValueError: before anything compiles: not a DCT-input network, a bad ``input_channels``
            field, an RGB run that is missing, of another class count or not an RGB network.
    """
    from freqjax.train.loop import Setup

    options = _options(config)
    setup = Setup(config, workdir)
    if setup.input_kind != "dct":
        raise ValueError(f"--mode input_channels needs a DCT-input model, got {config.model!r} ({setup.input_kind})")
    sliced_model(setup.model, 1)  # the model kind check
    rgb = rgb_side = None
    if options["rgb_from"]:
        rgb = load_plain_run(options["rgb_from"], setup.num_classes, "input_channels.rgb_from")
        rgb_side = run_image_size(options["rgb_from"])
    state, step = setup.restore_newest()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    side, dct_side = int(config.image_size), int(config.image_size) // 8
    (full,), labels = predict_eval_split(setup, _dct_logits(setup.model, None), variables, side)
    rows = []
    for keep in options["keep"]:
        (zeroed,), _ = predict_eval_split(setup, _dct_logits(setup.model, keep), variables, side)
        channels = sum(keep)
        rebuilt = sliced_model(setup.model, channels)
        shapes = jax.eval_shape(
            lambda m=rebuilt, k=channels: m.init(jax.random.key(0), jnp.zeros((1, dct_side, dct_side, k)))
        )
        row = dict(y=keep[0], cb=keep[1], cr=keep[2], channels=channels, ratio=dct.CHANNELS / channels,
                   params=count_params(shapes), macs=count_macs(rebuilt, (dct_side, dct_side, channels)),
                   top1_zeroed=top1_of(zeroed, labels), top1_sliced=None, sliced_max_relative_diff=None)  # fmt: skip
        try:
            small, small_vars = slice_input(setup.model, variables, keep, dct_side)
        except NotSliceableError:
            small = None  # eFUN: see the module docstring
        if small is not None:
            (sliced,), _ = predict_eval_split(setup, _dct_logits(small, keep, sliced=True), small_vars, side)
            scale = max(1.0, float(np.max(np.abs(zeroed))))
            row.update(
                top1_sliced=top1_of(sliced, labels),
                sliced_max_relative_diff=float(np.max(np.abs(sliced - zeroed))) / scale,
            )
        if options["fine_tune_steps"]:
            row["top1_fine_tuned"] = _fine_tune(config, workdir, keep, options)
        if rgb is not None:
            row.update(_rgb_row(setup, rgb, rgb_side, row["ratio"]))
        rows.append(row)
        print(f"[input_channels] {keep}: top-1 zeroed {row['top1_zeroed']:.4f}", flush=True)
    out_dir = Path(workdir) / "input_channels"
    table = _markdown(rows, full_top1=top1_of(full, labels), params=count_params(variables), images=len(labels))
    print(table, flush=True)
    paths = {}
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "input_channels.md").write_text(table)
        paths = {"table": str(out_dir / "input_channels.md"), "csv": write_csv(rows, out_dir / "input_channels.csv")}
        paths["plot"] = _plot(rows, out_dir / "input_channels.png", config.model, rgb[2] if rgb else None)
    return {"step": step, "images": len(labels), "rows": rows, "paths": paths}


def _dct_logits(model: Any, keep: tuple[int, int, int] | None, sliced: bool = False):
    from freqjax.train.steps import to_model_input

    def logits(variables, images):
        x = to_model_input(images, "dct")
        if keep is not None:
            x = kept_input(x, keep) if sliced else dct.keep_lowest(x, *keep)
        return (model.apply(variables, x).astype(jnp.float32),)

    return logits


def _fine_tune(config: Any, workdir: str, keep: tuple[int, int, int], options: dict) -> float:
    """Train on from the run's weights on the zeroed input; the final evaluation's top-1."""
    from freqjax.train.loop import evaluate_checkpoint, train_and_evaluate

    c = config.copy_and_resolve_references()
    steps = options["fine_tune_steps"]
    lr = options["fine_tune_learning_rate"]
    c.update(mode="train", init_from=str(workdir), dct_keep=tuple(keep), num_train_steps=steps,
             learning_rate=config.learning_rate / 10 if lr == -1 else float(lr), warmup_epochs=0.0,
             eval_every_steps=steps, checkpoint_every_steps=steps)  # fmt: skip
    run = Path(workdir) / "input_channels" / "finetune_{}_{}_{}".format(*keep)
    result = train_and_evaluate(c, str(run))  # resumes a half-done fine-tune
    if "eval" not in result:  # finished by an earlier call: evaluate its last checkpoint
        result = evaluate_checkpoint(c, str(run))
    return float(result["eval"]["top1"])


def _rgb_row(setup: Any, rgb: tuple[Any, Any, str], side: int, ratio: float) -> dict:
    """The RGB network on images keeping 1/``ratio`` of their pixels, up-sampled back to ``side``."""
    from freqjax.train.steps import to_model_input

    model, variables, name = rgb
    small = max(1, round(side / math.sqrt(ratio)))

    def logits(v, images):
        x = to_model_input(images, "rgb")
        n, _, _, c = x.shape
        x = jax.image.resize(x, (n, small, small, c), "linear", antialias=True)  # area-like down-sampling
        return (model.apply(v, jax.image.resize(x, (n, side, side, c), "linear")).astype(jnp.float32),)

    (out,), labels = predict_eval_split(setup, logits, variables, side)
    return dict(rgb_side=small, rgb_top1=top1_of(out, labels), rgb_macs=count_macs(model, (side, side, 3)), rgb=name)


def _markdown(rows: list[dict], *, full_top1: float, params: int, images: int) -> str:
    tune = "top1_fine_tuned" in rows[0]
    rgb = "rgb_top1" in rows[0]
    head = ["# input channels", "Y/Cb/Cr", "ratio", "params", "MMACs", "top-1 % zeroed", "top-1 % sliced"]
    head += ["top-1 % fine-tuned"] * tune + [f"{rows[0]['rgb']} side", f"{rows[0]['rgb']} top-1 %"] * rgb
    lines = [f"Top-1 on {images} evaluation images; all 192 channels: {100 * full_top1:.2f} % ({params:,} params)",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for r in rows:
        sliced = "" if r["top1_sliced"] is None else f"{100 * r['top1_sliced']:.2f}"
        cells = [str(r["channels"]), f"{r['y']}/{r['cb']}/{r['cr']}", f"{r['ratio']:.2f}", f"{r['params']:,}",
                 f"{r['macs'] / 1e6:.1f}", f"{100 * r['top1_zeroed']:.2f}", sliced]  # fmt: skip
        cells += [f"{100 * r['top1_fine_tuned']:.2f}"] * tune + [
            str(r.get("rgb_side")),
            f"{100 * r.get('rgb_top1', 0):.2f}",
        ] * rgb
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path, name: str, rgb_name: str | None) -> str:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ratios = [r["ratio"] for r in rows]
    ax.plot(ratios, [100 * r["top1_zeroed"] for r in rows], "ko-", label=f"{name} (channels dropped)")
    if "top1_fine_tuned" in rows[0]:
        ax.plot(ratios, [100 * r["top1_fine_tuned"] for r in rows], "k^--", label=f"{name}, fine-tuned")
    if rgb_name:
        ax.plot(ratios, [100 * r["rgb_top1"] for r in rows], "s-", label=f"{rgb_name} (RGB down-sampled)")
    ax.set_xlabel("input compression ratio")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return str(path)


if __name__ == "__main__":  # python -m freqjax.studies.input_channels --config CONFIG --workdir RUN
    from freqjax.main import run

    run(forced_mode="input_channels")
