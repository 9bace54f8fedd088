"""One weight tensor: reshape, reorder, DCT, keep the lowest frequencies (the paper's Alg. 2 and 3).

Everything here works in the reference layout, (out, in, kh, kw) for convolutions and (out, in)
for dense weights, so orderings and counts equal the paper's; :mod:`freqjax.compress.tree` does
the Flax <-> reference transposes. Compression runs once, on the host, in numpy (float64
transforms); decompression is a pure jnp function (jit, grad) because it runs in every forward
pass of a compressed model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from freqjax.compress.ordering import DISTANCES, STARTS, greedy_order

__all__ = [
    "CodedTensor",
    "check_group",
    "dct_ortho",
    "decode",
    "encode",
    "idct_ortho",
    "keep_count",
    "l1_encode",
    "l1_prune",
    "nsse",
]


class CodedTensor(NamedTuple):
    """A compressed tensor in numpy: (g, t) coefficients, the inverse permutation, the layout."""

    coef: np.ndarray  # float32 (g, t): the first t orthonormal DCT-II coefficients of each row
    index: np.ndarray  # int64 (N/g,): reordered position of each original column (Alg. 3's s^-1)
    shape: tuple[int, ...]  # the reference-layout shape the tensor decodes to


def check_group(n: int, g: object, name: str = "g") -> int:
    """Validate g for a tensor of n weights: a positive int dividing n."""
    if isinstance(g, bool) or not isinstance(g, int | np.integer) or g < 1:
        raise ValueError(f"{name} must be a positive int, got {g!r}")
    if n % g:
        raise ValueError(f"{name}={g} does not divide the {n} weights of the tensor; use a divisor of {n}")
    return int(g)


def keep_count(m: int, r: object) -> int:
    """Kept coefficients per row, t = int(m / r) (the reference's rule), checked to be >= 1."""
    if isinstance(r, bool) or not isinstance(r, int | float | np.floating | np.integer) or not r >= 1:
        raise ValueError(f"r must be a number >= 1 (1 keeps every coefficient), got {r!r}")
    t = int(m / r)
    if t < 1:
        raise ValueError(f"r={r} keeps int({m} / {r}) = 0 coefficients of a length-{m} row; use r <= {m}")
    return t


def dct_ortho(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II along the last axis (the paper's eq. 2, C^T w), float64, via one FFT."""
    x = np.asarray(x, np.float64)
    n = x.shape[-1]
    v = np.concatenate([x[..., ::2], x[..., 1::2][..., ::-1]], axis=-1)  # Makhoul's reordering
    k = np.arange(n)
    y = np.real(np.fft.fft(v, axis=-1) * np.exp(-1j * np.pi * k / (2 * n)))
    scale = np.full(n, math.sqrt(2.0 / n))
    scale[0] = math.sqrt(1.0 / n)
    return y * scale


def idct_ortho(c: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct_ortho` (orthonormal DCT-III) along the last axis, float64."""
    c = np.asarray(c, np.float64)
    n = c.shape[-1]
    scale = np.full(n, math.sqrt(2.0 / n))
    scale[0] = math.sqrt(1.0 / n)
    y = c / scale
    k = np.arange(n)
    y_rev = np.concatenate([np.zeros((*y.shape[:-1], 1)), y[..., :0:-1]], axis=-1)  # Y[n-k], Y[n] = 0
    v = np.real(np.fft.ifft(np.exp(1j * np.pi * k / (2 * n)) * (y - 1j * y_rev), axis=-1))
    x = np.empty_like(v)
    half = (n + 1) // 2
    x[..., ::2] = v[..., :half]
    x[..., 1::2] = v[..., half:][..., ::-1]
    return x


def _as_reference(w: object) -> np.ndarray:
    arr = np.asarray(w)
    if arr.ndim < 1 or arr.size == 0:
        raise ValueError(f"w must be a non-empty weight tensor, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"w must hold floating values, got dtype {arr.dtype}")
    return arr


def encode(
    w: np.ndarray,
    g: int,
    r: float,
    *,
    reorder: bool = True,
    distance: str = "euclidean",
    start: str = "l2",
    method: str = "auto",
) -> CodedTensor:
    """Compress one tensor given in the reference layout (Alg. 2).

    Args:
        w: weights, (out, in, kh, kw) or (out, in); flattened row-major and viewed as (g, N/g).
        g: rows of the view (the paper's number of groups); must divide N.
        r: compression rate >= 1; t = int((N/g) / r) coefficients are kept per row.
        reorder: order the columns with Alg. 1 first (False: identity order, the no-reordering
            baseline).
        distance, start, method: see :func:`freqjax.compress.ordering.greedy_order`.

    Returns:
        A :class:`CodedTensor`.
    """
    arr = _as_reference(w)
    g = check_group(arr.size, g)
    m = arr.size // g
    t = keep_count(m, r)
    if distance not in DISTANCES or start not in STARTS:
        raise ValueError(f"distance must be one of {DISTANCES} and start one of {STARTS}, got {distance!r}, {start!r}")
    view = arr.reshape(g, m)
    order = greedy_order(view, distance, start, method) if reorder else np.arange(m)
    index = np.empty(m, np.int64)
    index[order] = np.arange(m)
    coef = dct_ortho(view[:, order])[:, :t].astype(np.float32)
    return CodedTensor(coef, index, tuple(arr.shape))


def decode(coef: jax.Array, index: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Rebuild a tensor from coefficients (Alg. 3): zero-pad, inverse DCT, un-permute, reshape.

    Pure jnp (jit-able, differentiable in ``coef``); returns the reference layout ``shape``. An
    empty ``index`` (length 0) means the columns were never reordered (the no-reordering baseline).
    """
    m = index.shape[0] or (math.prod(shape) // max(coef.shape[0], 1) if coef.ndim == 2 else 0)
    if coef.ndim != 2 or coef.shape[1] > m or coef.shape[0] * m != math.prod(shape):
        raise ValueError(f"coef of shape {coef.shape} and an index of length {m} cannot decode to shape {shape}")
    padded = jnp.pad(coef, ((0, 0), (0, m - coef.shape[1])))
    rows = jax.scipy.fft.idct(padded, norm="ortho", axis=-1)
    return (jnp.take(rows, index, axis=1) if index.shape[0] else rows).reshape(shape)


def scatter_decode(values: jax.Array, positions: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Rebuild an l1-pruned tensor: the kept (g, t) columns at ``positions`` of a zero (g, N/g) view.

    Pure jnp (jit-able, differentiable in ``values``); the inverse of :func:`l1_encode`.
    """
    g = values.shape[0] if values.ndim == 2 else 0
    if values.ndim != 2 or positions.shape != (values.shape[1],) or not g or math.prod(shape) % g:
        raise ValueError(f"values {values.shape} and positions {positions.shape} cannot decode to shape {shape}")
    rows = jnp.zeros((g, math.prod(shape) // g), values.dtype).at[:, positions].set(values)
    return rows.reshape(shape)


def decode_numpy(coded: CodedTensor) -> np.ndarray:
    """:func:`decode` on the host in float64 (for reports: no compilation per shape)."""
    g, t = coded.coef.shape
    m = math.prod(coded.shape) // g
    padded = np.zeros((g, m))
    padded[:, :t] = coded.coef
    rows = idct_ortho(padded)
    return (rows[:, coded.index] if coded.index.shape[0] else rows).reshape(coded.shape)


def _l1_columns(arr: np.ndarray, g: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """The (g, N/g) view of ``arr`` and the int((N/g)/r) columns of largest l1 norm, largest first
    (ties keep the lower column index): the magnitude baseline's choice."""
    g = check_group(arr.size, g)
    view = arr.reshape(g, arr.size // g)
    norms = np.abs(view.astype(np.float64)).sum(axis=0)
    return view, np.argsort(-norms, kind="stable")[: keep_count(view.shape[1], r)]


def l1_prune(w: np.ndarray, g: int, r: float) -> np.ndarray:
    """The paper's magnitude baseline: keep the int((N/g)/r) g-sized columns with largest l1 norm.

    Same (g, N/g) view and budget as :func:`encode`, no DCT; the other columns become zero (ties
    keep the lower column index). Returns an array of ``w``'s shape and dtype.
    """
    arr = _as_reference(w)
    view, keep = _l1_columns(arr, g, r)
    out = np.zeros_like(view)
    out[:, keep] = view[:, keep]
    return out.reshape(arr.shape)


def l1_encode(w: np.ndarray, g: int, r: float) -> CodedTensor:
    """:func:`l1_prune` as a stored tensor: the kept columns' values and their positions.

    Returns a :class:`CodedTensor` whose ``coef`` is the (g, t) kept columns (float32) and whose
    ``index`` holds their t column positions in increasing order (what :func:`scatter_decode`
    needs); the same columns as :func:`l1_prune` keeps.
    """
    arr = _as_reference(w)
    view, keep = _l1_columns(arr, g, r)
    keep = np.sort(keep)
    return CodedTensor(view[:, keep].astype(np.float32), keep.astype(np.int64), tuple(arr.shape))


def nsse(w: object, w_hat: object) -> float:
    """Normalised summed squared error ||w - w_hat||^2 / ||w||^2 (the paper's section 4.1)."""
    a = np.asarray(w, np.float64)
    b = np.asarray(w_hat, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"w and w_hat must have the same shape, got {a.shape} and {b.shape}")
    denom = float(np.sum(a * a))
    if denom == 0.0:
        raise ValueError("nsse is undefined for an all-zero w")
    return float(np.sum((a - b) ** 2) / denom)
