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

from freqjax.interop.layouts import default_layout, from_freqjax_keys, to_freqjax_keys
from freqjax.models.naming import torch_key

__all__ = [
    "STATE_DICT_SUFFIXES",
    "from_torch",
    "load_torch_checkpoint",
    "read_state_dict",
    "save_state_dict",
    "to_torch",
]

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
    from freqjax.models import model_info

    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    _check_values(state_dict)
    model_info(name)  # an unknown name fails here, before any key is looked at
    # torchvision's MobileNetV2, timm's / clovaai's ReXNet: renamed to the builder's names
    state_dict = to_freqjax_keys(state_dict, name)
    if num_classes is None:
        num_classes = _infer_num_classes(state_dict)
    expected, targets = _targets(name, num_classes, options)

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


def _targets(name: str, num_classes: int, options: dict) -> tuple[dict, dict]:
    """(abstract variables of the model, torch key -> (collection, path, flax shape)); no compilation."""
    from freqjax.models import create_model, model_info

    model = create_model(name, num_classes=num_classes, **options)
    x = jax.ShapeDtypeStruct((1, *model_info(name).input_shape), jnp.float32)
    expected = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    renames = _RENAMES.get(name, {})
    targets = {}
    for collection, tree in expected.items():
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = tuple(k.key for k in keypath)
            targets[torch_key(collection, path, renames)] = (collection, path, tuple(leaf.shape))
    return expected, targets


def _mismatch_report(
    name: str, num_classes: int, missing: list, unexpected: list, mis_shaped: list, *, what: str = "state_dict"
) -> str:
    # one line: the CLI prints it as one error line
    parts = []
    for title, keys in (("missing", missing), ("unexpected", sorted(unexpected)), ("mis-shaped", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:_MAX_LISTED])
            more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
            parts.append(f"{len(keys)} {title}: {shown}{more}")
    return f"{what} does not match freqjax model {name!r} (num_classes={num_classes}): {'; '.join(parts)}"


STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")


def read_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, Any]:
    """The ``state_dict`` in a PyTorch checkpoint file (``.pth`` / ``.pt`` / ``.safetensors``).

    Handles the usual wrappers of ``torch.save`` files: a training checkpoint dict (pick ``key``,
    e.g. 'state_dict' or 'state_dict_ema'; by default 'state_dict' or 'model' if present) and the
    'module.' prefix of ``DataParallel``. ``torch.load`` runs with ``weights_only=True`` (no
    pickled code runs); ``.safetensors`` files are read with safetensors (timm depends on it).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: a file that is not a readable checkpoint, or holds no ``state_dict``.
    """
    import torch

    shown = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint path {shown!r} is not a file")
    try:
        if shown.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(shown, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's unpickler / safetensors raise many types on garbage
        summary = " ".join(str(err).split())[:200]
        reader = "safetensors" if shown.endswith(".safetensors") else "torch.load"
        raise ValueError(f"checkpoint {shown!r} is not a file {reader} can read ({summary})") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {shown!r} holds a {type(obj).__name__}, not a state_dict")
    if key is not None:
        if key not in obj:
            raise ValueError(f"key {key!r} is not in checkpoint {shown!r}; it has {sorted(obj)[:20]}")
        obj = obj[key]
    else:
        for candidate in ("state_dict", "model"):
            if isinstance(obj.get(candidate), Mapping):
                obj = obj[candidate]
                break
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def load_torch_checkpoint(path: str | os.PathLike, name: str, *, key: str | None = None, **kwargs) -> dict[str, dict]:
    """Read a PyTorch checkpoint file (:func:`read_state_dict`) and convert it with :func:`from_torch`."""
    return from_torch(read_state_dict(path, key=key), name, **kwargs)


def to_torch(variables: Mapping[str, Any], name: str, *, layout: str | None = None, **options) -> dict[str, np.ndarray]:
    """freqjax variables of model ``name`` -> a PyTorch ``state_dict`` (numpy arrays), strictly.

    The inverse of :func:`from_torch`: kernels back to (out, in, kh, kw), linear weights
    transposed, BatchNorm ``num_batches_tracked`` counters added (0, int64) so that
    ``load_state_dict(..., strict=True)`` accepts it. ``torch.from_numpy`` each value for
    ``load_state_dict``; :func:`save_state_dict` writes a file.

    Args:
        variables: ``{'params': ..., 'batch_stats': ...}`` (host or device arrays).
        name: registered freqjax model name.
        layout: the PyTorch module names (:func:`freqjax.interop.layouts.layouts`); default the
            names of :func:`freqjax.interop.torch_models.timm_model` (timm's; the official
            repository's for ReXNet-lite). 'torchvision' for torchvision's MobileNetV2 / ResNets.
        **options: model options (e.g. ``front='full'`` for LeFUN).

    Raises:
        ValueError: a missing, unexpected or mis-shaped leaf (all listed), or a bad layout.
    """
    from freqjax.models import model_info

    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(f"variables must be a dict with 'params' (and 'batch_stats'), got {type(variables).__name__}")
    model_info(name)
    layout = default_layout(name) if layout is None else layout
    head = _find_leaf(variables.get("params", {}), "classifier", "fc")
    num_classes = int(np.shape(head)[-1]) if head is not None else 0
    _, targets = _targets(name, num_classes, options)
    wanted = {(collection, path): key for key, (collection, path, _) in targets.items()}
    out, unexpected, mis_shaped, seen = {}, [], [], set()
    for collection, tree in variables.items():
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = tuple(str(getattr(k, "key", k)) for k in keypath)
            key = wanted.get((collection, path))
            if key is None:
                unexpected.append(f"{collection}/{'/'.join(path)}")
                continue
            seen.add(key)
            shape = targets[key][2]
            arr = np.asarray(jax.device_get(leaf), np.float32)
            if arr.shape != shape:
                mis_shaped.append(f"{collection}/{'/'.join(path)}: got {arr.shape}, expected {shape}")
                continue
            # an owned, writable, C-ordered copy (torch.from_numpy shares memory with it)
            out[key] = np.array(arr.transpose(_to_torch_axes(len(shape))) if len(shape) in (2, 4) else arr, order="C")
    missing = sorted(f"{targets[k][0]}/{'/'.join(targets[k][1])}" for k in set(targets) - seen)
    if missing or unexpected or mis_shaped:
        raise ValueError(_mismatch_report(name, num_classes, missing, unexpected, mis_shaped, what="variables"))
    for key in [k for k in out if k.endswith(".running_mean")]:
        out[key[: -len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return from_freqjax_keys(out, name, layout)


def _to_torch_axes(ndim: int) -> tuple[int, ...]:
    return (3, 2, 0, 1) if ndim == 4 else (1, 0)


def _find_leaf(params: Mapping, *modules: str):
    """The ``kernel`` of the first module named one of ``modules`` (depth-first), or None."""
    for key, value in params.items():
        if key in modules and isinstance(value, Mapping) and "kernel" in value:
            return value["kernel"]
        if isinstance(value, Mapping) and (found := _find_leaf(value, *modules)) is not None:
            return found
    return None


def save_state_dict(
    variables: Mapping[str, Any], name: str, path: str | os.PathLike, *, layout: str | None = None, **options
) -> int:
    """Write :func:`to_torch` of ``variables`` to ``path`` (``.pth`` / ``.pt``: torch.save; ``.safetensors``).

    Everything is checked before the file is opened; it is written under a temporary name and
    renamed into place, so it appears complete or not at all. Returns its size in bytes.

    Raises:
        ValueError: a path with another suffix or in a missing folder, or variables that do not match.
    """
    from freqjax.runtime import atomic_path

    shown = os.fspath(path)
    suffix = os.path.splitext(shown)[1]
    if suffix not in STATE_DICT_SUFFIXES:
        raise ValueError(f"path {shown!r} must end in one of {list(STATE_DICT_SUFFIXES)}")
    folder = os.path.dirname(os.path.abspath(shown))
    if not os.path.isdir(folder):
        raise ValueError(f"path {shown!r}: folder {folder!r} does not exist")
    state_dict = to_torch(variables, name, layout=layout, **options)
    import torch

    tensors = {k: torch.from_numpy(v) for k, v in state_dict.items()}
    with atomic_path(shown, suffix) as tmp:
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, tmp)
        else:
            torch.save(tensors, tmp)
    return os.path.getsize(shown)
