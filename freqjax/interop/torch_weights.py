"""PyTorch ``state_dict`` -> freqjax variables, strictly (how users load the papers' weights).

freqjax modules carry timm's names, so one rule maps every model: the Flax path
``blocks_1_0/conv_pw/kernel`` is the PyTorch key ``blocks.1.0.conv_pw.weight``. Conv weights
(out, in/groups, kh, kw) become kernels (kh, kw, in/groups, out); linear weights are transposed;
BatchNorm ``weight``/``bias`` become ``scale``/``bias`` and ``running_mean``/``running_var`` the
``batch_stats`` ``mean``/``var``; ``num_batches_tracked`` counters are dropped. Any missing,
unexpected or mis-shaped key is an error that lists them all: nothing loads silently wrong.

Covers timm's names for every registered inverted-residual model and the FUN repository's eFUN
checkpoints (timm 0.2.2 EfficientNet names, which are the same, with no ``conv_stem``/``bn1``).
ReXNet checkpoints in timm's or the official clovaai/rexnet layout (``features.N...``) are renamed
first by :func:`freqjax.models.rexnet.reference_to_freqjax_keys`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.models.naming import torch_key

__all__ = ["from_torch", "load_torch_checkpoint"]

# Flax module names that differ from the PyTorch reference's, per model.
_RENAMES: dict[str, dict[str, str]] = {"lefun": {"dct_front": "conv_stem"}}
_MAX_LISTED = 25


def _to_torch_layout(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(PyTorch shape, axes that turn the PyTorch array into the Flax one) for a Flax leaf shape."""
    if len(shape) == 4:  # (kh, kw, in, out) <- (out, in, kh, kw)
        return (shape[3], shape[2], shape[0], shape[1]), (2, 3, 1, 0)
    if len(shape) == 2:  # (in, out) <- (out, in)
        return (shape[1], shape[0]), (1, 0)
    return shape, None


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; .float() also covers bfloat16/half
        value = value.detach().cpu().float().numpy()
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"state_dict[{name!r}] must hold floating values, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def _check_values(state_dict: Mapping[str, Any]) -> None:
    for key, value in state_dict.items():
        if not (hasattr(value, "detach") or isinstance(value, np.ndarray)):
            raise TypeError(f"state_dict[{key!r}] must be a torch tensor or numpy array, got {type(value).__name__}")


def _infer_num_classes(state_dict: Mapping[str, Any]) -> int:
    for key in ("classifier.weight", "fc.weight", "head.fc.weight"):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    # Wrapped networks (MSNet's low./high. copies): a prefixed 2-D classifier weight.
    for key, value in state_dict.items():
        if key.endswith((".classifier.weight", ".fc.weight")) and len(value.shape) == 2:
            return int(value.shape[0])
    return 0


def from_torch(
    state_dict: Mapping[str, Any], name: str, *, num_classes: int | None = None, **options
) -> dict[str, dict]:
    """Convert a PyTorch ``state_dict`` of model ``name`` to ``{'params', 'batch_stats'}``.

    Args:
        state_dict: key -> torch tensor or numpy array (e.g. ``model.state_dict()``).
        name: registered freqjax model name (``freqjax.models.list_models()``).
        num_classes: classifier width; default: read from the classifier weight (0 if none).
        **options: model options, e.g. ``front='full'`` for LeFUN.

    Returns:
        Variables for ``create_model(name, num_classes=..., **options)``.

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped key.
    """
    from freqjax.models import create_model, model_info

    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    _check_values(state_dict)
    info = model_info(name)
    if name.startswith("rexnet"):  # timm's / clovaai's ReXNet layouts differ from the builder's names
        from freqjax.models.rexnet import reference_to_freqjax_keys

        state_dict = reference_to_freqjax_keys(state_dict, name)
    if num_classes is None:
        num_classes = _infer_num_classes(state_dict)
    model = create_model(name, num_classes=num_classes, **options)
    x = jax.ShapeDtypeStruct((1, *info.input_shape), jnp.float32)
    expected = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    renames = _RENAMES.get(name, {})
    targets = {}  # torch key -> (collection, path, flax shape)
    for collection, tree in expected.items():
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = tuple(k.key for k in keypath)
            targets[torch_key(collection, path, renames)] = (collection, path, tuple(leaf.shape))

    bn_modules = {k[: -len(".running_mean")] for k in targets if k.endswith(".running_mean")}
    unexpected, mis_shaped = [], []
    out: dict[str, dict] = {c: {} for c in expected}
    for key, value in state_dict.items():
        if key.endswith(".num_batches_tracked") and key[: -len(".num_batches_tracked")] in bn_modules:
            continue
        if key not in targets:
            unexpected.append(key)
            continue
        collection, path, shape = targets[key]
        torch_shape, axes = _to_torch_layout(shape)
        arr = _as_numpy(key, value)
        if arr.shape != torch_shape:
            mis_shaped.append(f"{key}: got {tuple(arr.shape)}, expected {torch_shape}")
            continue
        node = out[collection]
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = jnp.asarray(arr.transpose(axes) if axes else arr)
    missing = sorted(set(targets) - set(state_dict))
    if missing or unexpected or mis_shaped:
        raise ValueError(_mismatch_report(name, num_classes, missing, unexpected, mis_shaped))
    return out


def _mismatch_report(name: str, num_classes: int, missing: list, unexpected: list, mis_shaped: list) -> str:
    lines = [f"state_dict does not match freqjax model {name!r} (num_classes={num_classes}):"]
    for title, keys in (("missing", missing), ("unexpected", sorted(unexpected)), ("mis-shaped", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:_MAX_LISTED])
            more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
            lines.append(f"  {len(keys)} {title}: {shown}{more}")
    return "\n".join(lines)


def load_torch_checkpoint(path: str | os.PathLike, name: str, *, key: str | None = None, **kwargs) -> dict[str, dict]:
    """Load a PyTorch checkpoint file and convert it with :func:`from_torch`.

    Handles the usual wrappers: a training checkpoint dict (pick ``key``, e.g. 'state_dict' or
    'state_dict_ema'; by default 'state_dict' or 'model' if present) and the 'module.' prefix of
    ``DataParallel``. Loads with ``weights_only=True`` (no pickled code runs).
    """
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint path {os.fspath(path)!r} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpickler raises many types (KeyError, UnpicklingError, ...) on garbage
        summary = " ".join(str(err).split())[:200]
        raise ValueError(f"checkpoint {os.fspath(path)!r} is not a file torch.load can read ({summary})") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {os.fspath(path)!r} holds a {type(obj).__name__}, not a state_dict")
    if key is not None:
        if key not in obj:
            raise ValueError(f"key {key!r} is not in checkpoint {os.fspath(path)!r}; it has {sorted(obj)[:20]}")
        obj = obj[key]
    else:
        for candidate in ("state_dict", "model"):
            if isinstance(obj.get(candidate), Mapping):
                obj = obj[candidate]
                break
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return from_torch(obj, name, **kwargs)
