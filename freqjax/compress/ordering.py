"""Greedy nearest-neighbour ordering of columns (the paper's Algorithm 1), fast and exact.

The paper orders the N/g columns of a (g, N/g) matrix by a greedy chain: start at the column
with the largest norm, then repeatedly append the *remaining* column closest to the last one.
Done literally (as the reference does, with numba) that is O((N/g)^2 g) per layer: hours for
ResNet-50 at g = 4 on two cores.

:func:`greedy_order` gives the same chain in near O(M log M) (M = N/g) with Bentley's
nearest-neighbour-tour technique: a k-d tree over the columns (g-dimensional points) whose nodes
count their unvisited points, so a nearest-*unvisited* query skips emptied subtrees; each
appended column is deleted from the counts along its leaf-to-root path.

Exactness (the tie rules of docs/reference.md section 6): every distance that decides the chain is the
*canonical* float64 value ``sum_k op(x_k - y_k)`` accumulated in k order, the same numbers a
brute-force loop computes; ties go to the lowest column index. The tree only prunes subtrees
whose lower bound is provably larger (Euclidean/Manhattan: the box bound is computed with the
same correctly rounded, monotone operations, so it never exceeds a contained point's canonical
distance; cosine: bound on the unit-normalised points minus a 1e-9 safety margin), so it never
changes the answer. ``method='brute'`` is the literal O(M^2 g) loop, compiled, for comparison.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["DISTANCES", "STARTS", "greedy_order"]

DISTANCES = ("euclidean", "manhattan", "cosine")
STARTS = ("l2", "l1")
METHODS = ("auto", "kdtree", "brute")
_KDTREE_MAX_G = 8  # above this the tree prunes too little: brute force is faster (measured)
_LEAF_SIZE = 16
_COS_MARGIN = 1e-9  # |canonical cosine - ||u - v||^2 / 2| is ~1e-15; the margin only costs visits


@nb.njit(cache=True, inline="always")
def _dist(P, norms, i, j, metric):
    # Canonical distance between points i and j: float64, accumulated in coordinate order.
    s = 0.0
    if metric == 0:
        for k in range(P.shape[1]):
            d = P[i, k] - P[j, k]
            s += d * d
        return s
    if metric == 1:
        for k in range(P.shape[1]):
            s += abs(P[i, k] - P[j, k])
        return s
    if norms[i] == 0.0 or norms[j] == 0.0:
        return 1.0  # cosine with a zero column: treated as orthogonal
    for k in range(P.shape[1]):
        s += P[i, k] * P[j, k]
    return 1.0 - s / (norms[i] * norms[j])


@nb.njit(cache=True)
def _select(perm, Q, dim, lo, hi, kth):  # noqa: PLR0917  (numba kernel: flat array arguments)
    """Quickselect: reorder perm[lo..hi] so Q[perm[:kth], dim] <= Q[perm[kth], dim] <= the rest."""
    while hi > lo:
        a, b, c = Q[perm[lo], dim], Q[perm[(lo + hi) // 2], dim], Q[perm[hi], dim]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while Q[perm[i], dim] < pivot:
                i += 1
            while Q[perm[j], dim] > pivot:
                j -= 1
            if i <= j:
                perm[i], perm[j] = perm[j], perm[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            return


@nb.njit(cache=True)
def _build(Q, leaf_size):
    """k-d tree over the rows of Q: median splits on the widest coordinate, boxes per node."""
    m, g = Q.shape
    cap = 2 * (m // leaf_size + 1) * 2 + 1
    lo = np.zeros(cap, np.int64)
    hi = np.zeros(cap, np.int64)
    left = -np.ones(cap, np.int64)
    right = -np.ones(cap, np.int64)
    parent = -np.ones(cap, np.int64)
    bmin = np.zeros((cap, g))
    bmax = np.zeros((cap, g))
    minidx = np.zeros(cap, np.int64)
    perm = np.arange(m)
    point_leaf = np.zeros(m, np.int64)
    stack = np.zeros(cap, np.int64)
    n_nodes = 1
    lo[0], hi[0] = 0, m
    top = 1
    stack[0] = 0
    while top > 0:
        top -= 1
        node = stack[top]
        a, b = lo[node], hi[node]
        mi = perm[a]
        for k in range(g):
            bmin[node, k] = Q[perm[a], k]
            bmax[node, k] = Q[perm[a], k]
        for p in range(a, b):
            idx = perm[p]
            mi = min(mi, idx)
            for k in range(g):
                bmin[node, k] = min(bmin[node, k], Q[idx, k])
                bmax[node, k] = max(bmax[node, k], Q[idx, k])
        minidx[node] = mi
        spread, dim = -1.0, 0
        for k in range(g):
            if bmax[node, k] - bmin[node, k] > spread:
                spread, dim = bmax[node, k] - bmin[node, k], k
        if b - a <= leaf_size or spread <= 0.0:
            for p in range(a, b):
                point_leaf[perm[p]] = node
            continue
        mid = (a + b) // 2
        _select(perm, Q, dim, a, b - 1, mid)
        for child in range(2):
            c = n_nodes
            n_nodes += 1
            lo[c], hi[c], parent[c] = (a, mid, node) if child == 0 else (mid, b, node)
            if child == 0:
                left[node] = c
            else:
                right[node] = c
            stack[top] = c
            top += 1
    return (
        perm,
        lo[:n_nodes],
        hi[:n_nodes],
        left[:n_nodes],
        right[:n_nodes],
        parent[:n_nodes],
        bmin[:n_nodes],
        bmax[:n_nodes],
        minidx[:n_nodes],
        point_leaf,
    )


@nb.njit(cache=True, inline="always")
def _box_bound(Q, q, bmin, bmax, node, metric):  # noqa: PLR0917  (numba kernel: flat array arguments)
    # Lower bound of the distance from point q to any point in the node's box (same op order).
    s = 0.0
    for k in range(Q.shape[1]):
        x = Q[q, k]
        if x < bmin[node, k]:
            d = bmin[node, k] - x
        elif x > bmax[node, k]:
            d = x - bmax[node, k]
        else:
            d = 0.0
        s += d if metric == 1 else d * d
    if metric == 2:
        return s / 2.0 - _COS_MARGIN
    return s


@nb.njit(cache=True, nogil=True)
def _kdtree_order(P0, norms0, Q0, start, metric, leaf_size):  # noqa: PLR0912, PLR0915, PLR0917  (one compiled loop)
    m = P0.shape[0]
    perm, lo, hi, left, right, parent, bmin, bmax, minidx, leaf_of = _build(Q0, leaf_size)
    # Work on copies in tree order (a leaf's points are contiguous in memory); ``orig`` maps a
    # tree position back to the column index, which decides ties.
    P, Q, norms = P0[perm], Q0[perm], norms0[perm]
    orig = perm
    point_leaf = leaf_of[perm]
    count = hi - lo
    alive = np.ones(m, np.bool_)
    out = np.empty(m, np.int64)
    stack = np.empty(4 * 64 + 8, np.int64)
    bounds = np.empty(4 * 64 + 8)
    lowest_alive = 0  # in column index order, for the cosine zero-column rule
    alive_col = np.ones(m, np.bool_)
    pos_of = np.empty(m, np.int64)
    pos_of[perm] = np.arange(m)
    cur = pos_of[start]
    for step in range(m):
        out[step] = orig[cur]
        alive[cur] = False
        alive_col[orig[cur]] = False
        node = point_leaf[cur]
        while node != -1:
            count[node] -= 1
            node = parent[node]
        if step == m - 1:
            break
        if metric == 2 and norms[cur] == 0.0:
            while not alive_col[lowest_alive]:
                lowest_alive += 1
            cur = pos_of[lowest_alive]  # every cosine distance from a zero column is 1: lowest index wins
            continue
        best, best_idx, best_pos = np.inf, m, -1
        top = 1
        stack[0] = 0
        bounds[0] = 0.0
        while top > 0:
            top -= 1
            node = stack[top]
            bound = bounds[top]  # computed when pushed; best may have shrunk since
            if count[node] == 0 or bound > best or (bound == best and minidx[node] > best_idx):
                continue
            if left[node] == -1:
                for p in range(lo[node], hi[node]):
                    if alive[p]:
                        d = _dist(P, norms, cur, p, metric)
                        if d < best or (d == best and orig[p] < best_idx):
                            best, best_idx, best_pos = d, orig[p], p
                continue
            # Visit the child whose box is nearer first (pushed last).
            b_left = _box_bound(Q, cur, bmin, bmax, left[node], metric)
            b_right = _box_bound(Q, cur, bmin, bmax, right[node], metric)
            if b_left <= b_right:
                stack[top], stack[top + 1] = right[node], left[node]
                bounds[top], bounds[top + 1] = b_right, b_left
            else:
                stack[top], stack[top + 1] = left[node], right[node]
                bounds[top], bounds[top + 1] = b_left, b_right
            top += 2
        cur = best_pos
    return out


@nb.njit(cache=True, nogil=True)
def _brute_order(P, norms, start, metric):
    m = P.shape[0]
    alive = np.ones(m, np.bool_)
    out = np.empty(m, np.int64)
    cur = start
    for step in range(m):
        out[step] = cur
        alive[cur] = False
        best, best_idx = np.inf, m
        for j in range(m):  # a sequential scan (cache-friendly); ascending j keeps the lowest index on ties
            if alive[j]:
                d = _dist(P, norms, cur, j, metric)
                if d < best:
                    best, best_idx = d, j
        cur = best_idx
    return out


def _check_columns(columns: np.ndarray) -> np.ndarray:
    arr = np.asarray(columns)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"columns must be a non-empty 2-D (g, N/g) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"columns must hold floating values, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("columns must be finite (found NaN or inf)")
    return arr


def start_column(columns: np.ndarray, start: str = "l2") -> int:
    """Index of the first column: largest squared L2 (or L1) norm, the first one on ties."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    X = _check_columns(columns).astype(np.float64)
    norm = np.zeros(X.shape[1])
    for k in range(X.shape[0]):  # coordinate order, as every distance here
        norm += X[k] * X[k] if start == "l2" else np.abs(X[k])
    return int(np.argmax(norm))


def greedy_order(
    columns: np.ndarray, distance: str = "euclidean", start: str = "l2", method: str = "auto"
) -> np.ndarray:
    """The paper's Algorithm 1 on the columns of a (g, M) matrix.

    Args:
        columns: (g, M) array; its M columns are the g-dimensional points ordered.
        distance: 'euclidean' (squared; the paper's default), 'manhattan' or 'cosine'
            (1 - cosine similarity; a zero column is at distance 1 from everything).
        start: first column by largest squared 'l2' norm or largest 'l1' norm.
        method: 'kdtree' (near M log M for small g), 'brute' (the literal O(M^2 g) loop, compiled)
            or 'auto' (kdtree for g <= 8, else brute); all give the same order.

    Returns:
        int64 array s of length M: s[0] is the start column, s[j] the remaining column nearest to
        s[j-1] (lowest index on ties). A permutation of 0..M-1.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    first = start_column(columns, start)
    P = np.ascontiguousarray(np.asarray(columns, np.float64).T)
    metric = DISTANCES.index(distance)
    norms = np.zeros(P.shape[0])
    if metric == 2:
        sq = np.zeros(P.shape[0])
        for k in range(P.shape[1]):
            sq += P[:, k] * P[:, k]
        norms = np.sqrt(sq)
    if method == "brute" or (method == "auto" and P.shape[1] > _KDTREE_MAX_G):
        return _brute_order(P, norms, first, metric)
    Q = P
    if metric == 2:
        safe = np.where(norms > 0, norms, 1.0)
        Q = np.ascontiguousarray(P / safe[:, None])  # unit vectors; zero columns stay at the origin
    return _kdtree_order(P, norms, Q, first, metric, _LEAF_SIZE)
