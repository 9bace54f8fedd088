"""Whole variables trees: compress / decompress / count / save / load / fine-tuning helpers.

A compressed leaf is a :class:`CompressedTensor` pytree node: float coefficients (trainable) and
the integer ordering (frozen) are its children, the shapes are static. Every other leaf passes
through unchanged, so a compressed tree is still a variables dict that ``jax.jit`` accepts and
:func:`decompress` turns back into ``{'params', 'batch_stats'}`` for ``model.apply``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.compress.codec import decode, scatter_decode
from freqjax.compress.plan import LayerPlan, Plan, leaf_table
from freqjax.compress.schemes import KINDS, SCHEMES, index_length, scheme_kind

__all__ = [
    "CompressedTensor",
    "check_plan",
    "compress",
    "count",
    "decompress",
    "finetune_apply",
    "merge",
    "split",
    "to_reference",
]


def to_reference(w: np.ndarray) -> np.ndarray:
    """A Flax kernel in the PyTorch layout the codec works in.

    (kh, kw, in, out) -> (out, in, kh, kw); (in, out) -> (out, in).
    """
    return w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T


def _to_flax(w: jax.Array) -> jax.Array:
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T


@jax.tree_util.register_pytree_node_class
class CompressedTensor:
    """One compressed kernel: ``coef`` (g, t) float, ``index`` int.

    ``kind`` 'dct' (the paper's): ``coef`` holds DCT coefficients and ``index`` the inverse
    permutation (N/g,), or nothing (length 0: columns never reordered). ``kind`` 'sparse' (the l1
    baseline): ``coef`` holds the kept columns' values and ``index`` their t positions.
    ``index`` may be None in the trainable half of :func:`split`. ``ref_shape`` is the reference
    layout (out, in, kh, kw) / (out, in), ``flax_shape`` the kernel's shape in the model, ``r``
    the compression rate the plan chose (static metadata).
    """

    def __init__(  # noqa: PLR0917  (pytree unflattening passes the fields positionally)
        self,
        coef: Any,
        index: Any,
        ref_shape: tuple[int, ...],
        flax_shape: tuple[int, ...],
        r: float,
        kind: str = "dct",
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.coef, self.index = coef, index
        self.ref_shape, self.flax_shape, self.r, self.kind = tuple(ref_shape), tuple(flax_shape), float(r), kind

    def tree_flatten(self):
        return (self.coef, self.index), (self.ref_shape, self.flax_shape, self.r, self.kind)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    @property
    def g(self) -> int:
        """Rows of the (g, N/g) view."""
        return int(self.coef.shape[0])

    @property
    def t(self) -> int:
        """Kept coefficients per row."""
        return int(self.coef.shape[1])

    @property
    def columns(self) -> int:
        """N/g: columns of the (g, N/g) view (the length of a full ordering)."""
        return math.prod(self.ref_shape) // self.g

    @property
    def index_entries(self) -> int:
        """Stored index entries: N/g (reordered DCT), 0 (no reordering) or t (l1 positions)."""
        return self.columns if self.index is None else int(self.index.shape[0])

    def weight(self) -> jax.Array:
        """The decompressed kernel in the model's (Flax) layout; jit-able, differentiable in ``coef``."""
        if self.index is None:
            raise ValueError("this CompressedTensor has no index (a split() half); merge() it with the frozen half")
        coef, index = jnp.asarray(self.coef), jnp.asarray(self.index)
        if self.kind == "sparse":
            return _to_flax(scatter_decode(coef, index, self.ref_shape))
        return _to_flax(decode(coef, index, self.ref_shape))

    def __repr__(self) -> str:
        shape = self.ref_shape
        return f"CompressedTensor(g={self.g}, t={self.t}, r={self.r:.4g}, kind={self.kind!r}, ref_shape={shape})"


def _is_coded(x: object) -> bool:
    return isinstance(x, CompressedTensor)


def _get(tree: Mapping, path: tuple[str, ...], name: str) -> Any:
    node = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"plan names leaf {name!r} (params/{'/'.join(path)}), which variables['params'] lacks")
        node = node[key]
    return node


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree[key] = dict(tree[key])
        tree = tree[key]
    tree[path[-1]] = value


def _encode_layer(layer: LayerPlan, leaf: Any, plan: Plan, method: str, scheme: str) -> tuple[CompressedTensor, float]:
    start = time.perf_counter()
    kind = scheme_kind(scheme)
    if isinstance(leaf, jax.ShapeDtypeStruct):  # abstract: shapes only, for counts and plans
        coef = jax.ShapeDtypeStruct((layer.g, layer.t), jnp.float32)
        index = jax.ShapeDtypeStruct((index_length(scheme, layer.size // layer.g, layer.t),), jnp.int32)
        return CompressedTensor(coef, index, layer.ref_shape, layer.shape, layer.r, kind), 0.0
    w = to_reference(np.asarray(leaf, np.float32))
    coef, index, kind = SCHEMES[scheme](w, layer.g, layer.r, distance=plan.distance, start=plan.start, method=method)
    coef, index = jnp.asarray(coef), jnp.asarray(index, jnp.int32)
    node = CompressedTensor(coef, index, layer.ref_shape, layer.shape, layer.r, kind)
    return node, time.perf_counter() - start


def compress(
    variables: Mapping[str, Any],
    plan: Plan,
    *,
    method: str = "auto",
    workers: int | None = None,
    on_layer: Callable[[LayerPlan, CompressedTensor, float], None] | None = None,
    scheme: str = "dct",
) -> dict[str, Any]:
    """Compress the plan's leaves of ``variables``; every other leaf is kept as it is.

    Args:
        variables: {'params', 'batch_stats', ...}; arrays, or ``jax.ShapeDtypeStruct`` leaves for
            an abstract result (shapes only: what :func:`count` needs, computed instantly).
        plan: from :func:`freqjax.compress.make_plan` on the same model.
        method: ordering method, 'auto', 'kdtree' or 'brute' (same result).
        workers: threads compressing layers in parallel (default: all CPUs).
        on_layer: called as ``on_layer(layer, node, seconds)`` as each layer finishes.
        scheme: 'dct' (the paper's), or a baseline at the same kept values, 'dct_no_reorder' or
            'l1' (:data:`freqjax.compress.schemes.SCHEMES`).

    Returns:
        A new variables dict whose planned kernels are :class:`CompressedTensor` nodes.
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be a Plan from make_plan, got {type(plan).__name__}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    _, bn_modules = leaf_table(variables)
    leaves = []
    for layer in plan.layers:
        leaf = _get(variables["params"], layer.path, layer.name)
        if layer.path[:-1] in bn_modules:
            raise ValueError(
                f"plan compresses BatchNorm leaf {layer.name!r}; only conv/dense kernels can be compressed"
            )
        if _is_coded(leaf):
            raise ValueError(f"leaf {layer.name!r} is already compressed")
        if tuple(leaf.shape) != layer.shape:
            raise ValueError(f"leaf {layer.name!r} has shape {tuple(leaf.shape)}, the plan expects {layer.shape}")
        leaves.append(leaf)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")

    def run(i: int) -> tuple[CompressedTensor, float]:
        node, seconds = _encode_layer(plan.layers[i], leaves[i], plan, method, scheme)
        if on_layer is not None:
            on_layer(plan.layers[i], node, seconds)
        return node, seconds

    order = sorted(range(len(leaves)), key=lambda i: -plan.layers[i].size)  # largest first balances threads
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = dict(zip(order, pool.map(run, order), strict=True))
    out = dict(variables)
    out["params"] = dict(variables["params"])
    for i, layer in enumerate(plan.layers):
        _set(out["params"], layer.path, done[i][0])
    return out


def decompress(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Variables with every :class:`CompressedTensor` rebuilt into its kernel (jit-able, differentiable)."""
    return jax.tree.map(lambda x: x.weight() if _is_coded(x) else x, dict(tree), is_leaf=_is_coded)


def count(tree: Mapping[str, Any]) -> dict[str, int]:
    """The reference's accounting of a (compressed) variables tree.

    Returns:
        {'coefficients': kept DCT coefficients or kept values (trainable), 'index': stored index
        entries (orderings: N/g per layer; none without reordering; t positions for l1),
        'uncompressed': other kernels and biases, 'bn_affine': BatchNorm scale and bias,
        'bn_stats': BatchNorm running mean and var, 'total': the sum of these five,
        'trainable': coefficients + uncompressed + bn_affine (what fine-tuning updates)}.
    """
    _, bn_modules = leaf_table(tree)
    c = dict.fromkeys(("coefficients", "index", "uncompressed", "bn_affine", "bn_stats"), 0)
    for kp, leaf in jax.tree_util.tree_flatten_with_path(tree["params"], is_leaf=_is_coded)[0]:
        path = tuple(k.key for k in kp)
        if _is_coded(leaf):
            c["coefficients"] += leaf.g * leaf.t
            c["index"] += leaf.index_entries
        elif path[:-1] in bn_modules:
            c["bn_affine"] += math.prod(leaf.shape)
        else:
            c["uncompressed"] += math.prod(leaf.shape)
    c["bn_stats"] = sum(math.prod(x.shape) for x in jax.tree.leaves(tree.get("batch_stats", {})))
    c["total"] = sum(c.values())
    # Everything fine-tuning updates (the paper's "#trainable" counts only the coefficients).
    c["trainable"] = c["coefficients"] + c["uncompressed"] + c["bn_affine"]
    return c


def check_plan(tree: Mapping[str, Any], plan: Plan, scheme: str = "dct", *, what: str = "tree") -> None:
    """Raise ValueError unless ``tree`` is exactly what ``compress(variables, plan, scheme=scheme)`` makes.

    Compares the compressed leaves' paths, g, t, node kind and index length with the plan's (the
    ordering's values are not recomputed). ``what`` names the tree in the message (e.g. a file).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    found = {
        tuple(k.key for k in kp): x
        for kp, x in jax.tree_util.tree_flatten_with_path(tree.get("params", {}), is_leaf=_is_coded)[0]
        if _is_coded(x)
    }
    planned = {layer.path: layer for layer in plan.layers}
    if not found:
        raise ValueError(f"{what} holds no compressed kernel; the plan compresses {len(planned)} layers")
    for path in sorted(found.keys() ^ planned.keys()):
        where = "is compressed there, not in the plan" if path in found else "is in the plan, not compressed there"
        raise ValueError(f"{what} was compressed with another plan: {'/'.join(path)} {where}")
    for path, layer in planned.items():
        node = found[path]
        want = (layer.g, layer.t, scheme_kind(scheme), index_length(scheme, layer.size // layer.g, layer.t))
        got = (node.g, node.t, node.kind, node.index_entries)
        if want != got:
            raise ValueError(
                f"{what} was compressed with another plan: layer {layer.name!r} has g={got[0]}, t={got[1]}, "
                f"{got[2]} with {got[3]} index entries there; the plan ({plan.strategy}, scheme {scheme!r}) makes "
                f"g={want[0]}, t={want[1]}, {want[2]} with {want[3]}"
            )


# --- fine-tuning: orderings out of the gradients and the optimiser state ----------------------


def _key(path: tuple[str, ...]) -> str:
    return "/".join(path)


def split(tree: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(trainable params, frozen rest): orderings and every non-'params' collection are frozen.

    The trainable half is ``tree['params']`` whose :class:`CompressedTensor` nodes carry no index
    (so ``jax.grad`` and optax see only float leaves); the frozen half is
    ``{'index': {path: ordering}, <other collections>}``. :func:`merge` inverts it.
    """
    params = jax.tree_util.tree_map_with_path(
        lambda kp, x: CompressedTensor(x.coef, None, x.ref_shape, x.flax_shape, x.r, x.kind) if _is_coded(x) else x,
        tree["params"],
        is_leaf=_is_coded,
    )
    index = {
        _key(tuple(k.key for k in kp)): x.index
        for kp, x in jax.tree_util.tree_flatten_with_path(tree["params"], is_leaf=_is_coded)[0]
        if _is_coded(x)
    }
    return params, {"index": index, **{k: v for k, v in tree.items() if k != "params"}}


def merge(params: Any, frozen: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split`."""
    index = frozen["index"]

    def put(kp, x):
        if not _is_coded(x):
            return x
        key = _key(tuple(k.key for k in kp))
        if key not in index:
            raise ValueError(f"frozen half has no index for compressed leaf {key!r}")
        return CompressedTensor(x.coef, index[key], x.ref_shape, x.flax_shape, x.r, x.kind)

    out = {k: v for k, v in frozen.items() if k != "index"}
    out["params"] = jax.tree_util.tree_map_with_path(put, params, is_leaf=_is_coded)
    return out


def finetune_apply(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``model.apply`` so it takes the split halves and rebuilds the kernels in the forward pass.

    ``f = finetune_apply(model.apply); params, frozen = split(compressed)``; then
    ``f(params, frozen, x, train=True, mutable=['batch_stats'], rngs=...)`` is ``model.apply`` on
    the decompressed variables. Differentiate with respect to ``params`` only: gradients reach the
    coefficients and the uncompressed leaves, never the orderings, and ``optimizer.init(params)``
    holds no state for them.
    """

    def apply(params: Any, frozen: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        return apply_fn(decompress(merge(params, frozen)), *args, **kwargs)

    return apply
