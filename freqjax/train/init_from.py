"""``config.init_from``: the weights a fresh run starts from, or ``--mode eval`` evaluates.

Three kinds of source, told apart by what the path is:

- a freqjax training workdir, its ``checkpoints`` folder or one ``checkpoints/<step>`` directory
  (:func:`freqjax.train.checkpoint.load_weights`);
- a PyTorch / timm / torchvision ``state_dict`` file (``.pth``, ``.pt``, ``.safetensors``),
  converted strictly for ``config.model`` (:mod:`freqjax.interop.torch_weights`); a LeFUN run
  also takes the state dict of the eFUN it is put in front of (the paper's LeFUN stage);
- a compressed freqjax file (``.npz``, :func:`freqjax.compress.save`), decompressed to dense weights.

``config.init_head`` decides the classifier (``fc`` / ``classifier``): 'load' takes the source's
(its class count must be the run's), 'reinit' keeps the run's freshly initialised head (transfer
to a dataset with other classes). Everything here reads files and shapes only (``jax.eval_shape``),
so a bad source is one ValueError before anything is compiled or written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from freqjax.train.checkpoint import load_weights

__all__ = ["HEAD_MODULES", "INIT_HEADS", "head_leaf", "load_init_weights", "read_weights", "source_kind"]

INIT_HEADS = ("load", "reinit")
HEAD_MODULES = ("classifier", "fc")  # the final Dense layer's name in every freqjax model
# model -> (the network whose state dict it also takes, the module that network lacks)
_BASE_NETWORK = {"lefun": ("efun", "dct_front")}
_VALID = (
    "a freqjax workdir or checkpoints/<step> directory, a PyTorch state dict (.pth, .pt, .safetensors) "
    "or a compressed freqjax file (.npz)"
)


def source_kind(path: str, arg: str = "config.init_from") -> str:
    """'checkpoint', 'torch' or 'compressed' for an ``init_from`` path.

    Raises:
        ValueError: a path that does not exist or is none of these.
    """
    from freqjax.interop.torch_weights import STATE_DICT_SUFFIXES

    p = Path(path)
    if p.is_dir():
        return "checkpoint"
    if p.is_file() and p.suffix in STATE_DICT_SUFFIXES:
        return "torch"
    if p.is_file() and p.suffix == ".npz":
        return "compressed"
    what = "does not exist" if not p.exists() else "is not a directory and has another suffix"
    raise ValueError(f"{arg}={path!r} {what}; it must be {_VALID}")


def head_leaf(path: str) -> bool:
    """Whether a '/'-joined parameter path belongs to a classifier (``.../fc/kernel``)."""
    parts = path.split("/")
    return len(parts) >= 2 and parts[-2] in HEAD_MODULES


def _flat(tree) -> dict[str, object]:
    return {"/".join(str(getattr(k, "key", k)) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _from_torch(path: str, model: str, options: dict, arg: str) -> dict:
    from freqjax.interop.torch_weights import from_torch, read_state_dict

    state_dict = read_state_dict(path)
    base = _BASE_NETWORK.get(model)
    if base is not None and not any(k.startswith(("conv_stem.", f"{base[1]}.")) for k in state_dict):
        model, options = base[0], {}  # the base network's weights; the missing module must train
    try:
        return from_torch(state_dict, model, **options)
    except ValueError as err:
        raise ValueError(f"{arg}={path!r}: {err}") from None


def _from_compressed(path: str, arg: str) -> dict:
    from freqjax.compress import decompress, load

    tree = load(path)
    if "params" not in tree:
        raise ValueError(f"{arg}={path!r} is a compressed file without 'params'")
    dense = jax.device_get(decompress(tree))
    return {"params": dense["params"], "batch_stats": dense.get("batch_stats", {})}


def read_weights(path: str, model: str, options: dict | None = None, *, arg: str = "config.init_from") -> dict:
    """``{'params', 'batch_stats'}`` (host arrays) of any ``init_from`` source, for model ``model``.

    ``model`` and ``options`` (its ``model_options``) only matter for PyTorch state dicts, which
    are converted for that model; the other sources are freqjax trees already.

    Raises:
        ValueError: the path is no source (:func:`source_kind`) or does not convert.
    """
    kind = source_kind(path, arg)
    if kind == "checkpoint":
        return load_weights(path)
    if kind == "torch":
        return _from_torch(path, model, dict(options or {}), arg)
    return _from_compressed(path, arg)


def _head_classes(params: dict) -> int | None:
    kernels = [v for k, v in _flat(params).items() if head_leaf(k) and k.endswith("kernel")]
    return int(np.shape(kernels[0])[-1]) if kernels else None


def load_init_weights(
    config: ml_collections.ConfigDict, num_classes: int, target: dict, *, for_eval: bool = False
) -> tuple[dict, Callable[[str], bool]]:
    """``config.init_from``'s ``{'params', 'batch_stats'}`` (host arrays) for a run of ``num_classes``.

    Args:
        config: the run's config (init_from, init_head, model, model_options, trainable).
        num_classes: the run's class count.
        target: the run's abstract ``{'params', 'batch_stats'}`` (shapes, from ``jax.eval_shape``).
        for_eval: every parameter, the head included, must come from the source.

    Returns:
        (weights, may_be_missing): ``may_be_missing(path)`` says which parameter paths the run
        initialises itself (matched by ``config.trainable``, or the head under 'reinit').

    Raises:
        ValueError: a bad source, a head that does not fit ``init_head``, a frozen parameter the
            source lacks, or a shape that does not match, naming the path.
    """
    path, init_head = config.init_from, config.init_head
    if for_eval and init_head != "load":
        raise ValueError(
            f"--mode eval of config.init_from={path!r} evaluates its own classifier; config.init_head="
            f"{init_head!r} would evaluate a random one: set config.init_head='load'"
        )
    regex = re.compile(config.trainable) if config.trainable and not for_eval else None
    loaded = read_weights(config.init_from, config.model, config.model_options.to_dict())
    target_classes = _head_classes(target["params"])
    source_classes = _head_classes(loaded["params"])
    if init_head == "reinit":
        frozen_head = [k for k in _flat(target["params"]) if head_leaf(k) and regex and not regex.search(k)]
        if frozen_head:
            raise ValueError(
                f"config.init_head='reinit' starts a new classifier, but config.trainable={config.trainable!r} "
                f"freezes {frozen_head[0]!r}: make the trainable pattern match the head or set init_head='load'"
            )
        loaded["params"] = _without_head(loaded["params"])
    elif source_classes is not None and target_classes is not None and source_classes != target_classes:
        raise ValueError(
            f"config.init_head='load' keeps the classifier of config.init_from={path!r}, which has "
            f"{source_classes} classes, but this run has {num_classes}; set config.init_head='reinit' for a new "
            f"{num_classes}-class head"
        )

    def may_be_missing(name: str) -> bool:
        return bool(regex and regex.search(name)) or (init_head == "reinit" and head_leaf(name))

    _check_fits(path, target, loaded, may_be_missing)
    return loaded, may_be_missing


def _without_head(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and key in HEAD_MODULES and "kernel" in value:
            continue
        out[key] = _without_head(value) if isinstance(value, dict) else value
    return out


def _check_fits(path: str, target: dict, loaded: dict, may_be_missing: Callable[[str], bool]) -> None:
    # what merge_weights would find after the init is compiled, found before: every parameter the
    # run does not initialise itself is in the source, every shared leaf has this model's shape
    have = _flat(loaded["params"])
    for name in _flat(target["params"]):
        if name not in have and not may_be_missing(name):
            raise ValueError(
                f"config.init_from={os.fspath(path)!r} has no parameter {name!r}; only those matched by "
                "config.trainable (and the classifier under init_head='reinit') may be missing"
            )
    for collection in ("params", "batch_stats"):
        want = _flat(target.get(collection, {}))
        for name, value in _flat(loaded.get(collection, {})).items():
            if name in want and tuple(np.shape(value)) != tuple(want[name].shape):
                raise ValueError(
                    f"config.init_from={path!r}: {collection} {name!r} has shape {tuple(np.shape(value))}, "
                    f"this model needs {tuple(want[name].shape)}"
                )
    if not set(_flat(loaded["params"])) & set(_flat(target["params"])):
        raise ValueError(f"config.init_from={os.fspath(path)!r} shares no parameter with this model")
