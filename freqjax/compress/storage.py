"""Save / load a compressed variables tree as one ``.npz`` file, with its real size on disk.

Orderings are stored in the smallest unsigned integer type that holds their values 0..N/g-1
(uint8 / uint16 / uint32), coefficients and other leaves in their own dtype. The file is written
to a temporary name in the target folder and renamed into place, so an error never leaves a
partial file behind.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.compress.tree import CompressedTensor
from freqjax.runtime import atomic_path

__all__ = ["index_dtype", "load", "save"]

_FORMAT = "freqjax-compressed-v1"
_META = "__meta__"


def index_dtype(columns: int) -> np.dtype:
    """Smallest unsigned integer dtype holding every index 0..columns-1."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if columns - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"columns={columns} is too large for any unsigned integer type")


def _is_coded(x: object) -> bool:
    return isinstance(x, CompressedTensor)


def _entries(tree: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[dict]]:
    arrays, meta = {}, []
    for kp, leaf in jax.tree_util.tree_flatten_with_path(dict(tree), is_leaf=_is_coded)[0]:
        path = [str(k.key) if hasattr(k, "key") else None for k in kp]
        if None in path or any("/" in p for p in path):
            raise ValueError(f"tree keys must be strings without '/', got path {kp!r}")
        key = "/".join(path)
        if _is_coded(leaf):
            if leaf.index is None or isinstance(leaf.coef, jax.ShapeDtypeStruct):
                raise ValueError(f"leaf {key!r} is not a concrete compressed tensor (abstract, or a split() half)")
            arrays[f"{key}#coef"] = np.asarray(leaf.coef)
            arrays[f"{key}#index"] = np.asarray(leaf.index).astype(index_dtype(leaf.columns))
            entry = {"key": key, "ref_shape": leaf.ref_shape, "flax_shape": leaf.flax_shape, "r": leaf.r}
            meta.append(entry if leaf.kind == "dct" else {**entry, "kind": leaf.kind})
        else:
            if isinstance(leaf, jax.ShapeDtypeStruct) or not hasattr(leaf, "shape"):
                raise ValueError(f"leaf {key!r} must be an array, got {type(leaf).__name__}")
            arrays[key] = np.asarray(leaf)
            meta.append({"key": key})
    return arrays, meta


def save(tree: Mapping[str, Any], path: str | os.PathLike) -> int:
    """Write a (compressed) variables tree to ``path`` (an .npz archive); returns its size in bytes.

    Raises before creating any file if the tree cannot be written; the file appears only complete.
    """
    if not isinstance(tree, Mapping) or "params" not in tree:
        raise TypeError("tree must be a (compressed) variables dict with a 'params' entry")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path {path!r}: folder {folder!r} does not exist")
    arrays, meta = _entries(tree)
    arrays[_META] = np.frombuffer(json.dumps({"format": _FORMAT, "leaves": meta}).encode(), np.uint8)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)
    return os.path.getsize(path)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a tree written by :func:`save` (orderings come back as int32, as compress makes them)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path {path!r} is not a file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as err:  # not an .npz, or a damaged one
        raise ValueError(f"{path!r} is not a readable .npz archive ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is a single .npy array, not a freqjax compressed checkpoint (.npz)")
    with archive as data:
        if _META not in data.files:
            raise ValueError(f"{path!r} is not a freqjax compressed checkpoint (no {_META} entry)")
        meta = json.loads(data[_META].tobytes().decode())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path!r} has format {meta.get('format')!r}, expected {_FORMAT!r}")
        out: dict[str, Any] = {}
        for entry in meta["leaves"]:
            key = entry["key"]
            if "ref_shape" in entry:
                value = CompressedTensor(
                    jnp.asarray(data[f"{key}#coef"]),
                    jnp.asarray(data[f"{key}#index"].astype(np.int32)),
                    tuple(entry["ref_shape"]),
                    tuple(entry["flax_shape"]),
                    entry["r"],
                    entry.get("kind", "dct"),  # files written before the baselines hold 'dct' only
                )
            else:
                value = jnp.asarray(data[key])
            node = out
            *parents, last = key.split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
    return out
