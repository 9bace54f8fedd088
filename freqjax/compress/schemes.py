"""How a planned kernel is stored: the paper's reordered DCT and the two baselines it is measured against.

Every scheme keeps the same values per layer, g * t with t = int((N/g) / r) from the plan, so
accuracies compare at an equal budget (the paper's Table 1):

- ``dct``: the paper's method (Alg. 2): reorder the (g, N/g) view's columns by Algorithm 1,
  DCT each row, keep the t lowest frequencies; stores N/g ordering entries per layer.
- ``dct_no_reorder``: the same without reordering (section 4.1's baseline); no ordering stored.
- ``l1``: magnitude pruning over the same g-sized columns (section 4.2, "Alg. 2 ... bypassing the
  DCT transform"): keep the t columns with the largest l1 norm; stores their t positions.

A scheme returns (values (g, t) float32, index int64, node kind): kind 'dct' decodes through the
inverse DCT (:func:`freqjax.compress.codec.decode`; an empty index = identity order), kind
'sparse' scatters the kept columns into zeros (:func:`freqjax.compress.codec.scatter_decode`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from freqjax.compress.codec import encode, l1_encode

__all__ = ["KINDS", "SCHEMES", "index_length", "scheme_kind"]

KINDS = ("dct", "sparse")
Encoder = Callable[..., tuple[np.ndarray, np.ndarray, str]]


def _dct(w: np.ndarray, g: int, r: float, *, distance: str, start: str, method: str):
    coded = encode(w, g, r, distance=distance, start=start, method=method)
    return coded.coef, coded.index, "dct"


def _dct_no_reorder(w: np.ndarray, g: int, r: float, *, distance: str, start: str, method: str):
    coded = encode(w, g, r, reorder=False)
    return coded.coef, np.zeros((0,), np.int64), "dct"


def _l1(w: np.ndarray, g: int, r: float, *, distance: str, start: str, method: str):
    coded = l1_encode(w, g, r)
    return coded.coef, coded.index, "sparse"


# scheme -> (reference-layout weights, g, r, *, distance, start, method) -> (values, index, kind)
SCHEMES: dict[str, Encoder] = {"dct": _dct, "dct_no_reorder": _dct_no_reorder, "l1": _l1}


def index_length(scheme: str, columns: int, t: int) -> int:
    """Entries of a layer's stored index under ``scheme`` (``columns`` = N/g, ``t`` kept per row)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    return {"dct": columns, "dct_no_reorder": 0, "l1": t}[scheme]


def scheme_kind(scheme: str) -> str:
    """The node kind a scheme produces ('dct' or 'sparse')."""
    return "sparse" if scheme == "l1" else "dct"
