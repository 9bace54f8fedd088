"""DCT weight compression, one tensor: ordering vs a brute-force Algorithm 1, DCT, codec, l1, nSSE."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.compress import dct_ortho, decode, encode, greedy_order, idct_ortho, l1_prune, nsse
from freqjax.compress.codec import decode_numpy


def brute_force_order(X, distance="euclidean", start="l2"):
    """The paper's Algorithm 1 in plain numpy with docs/reference.md section 6's tie rules.

    Distances are float64 sums over the g coordinates in order; ties go to the lowest index.
    A cosine distance involving a zero column is 1.
    """
    X = np.asarray(X, np.float64)
    g, m = X.shape
    norm = np.zeros(m)
    for k in range(g):
        norm += X[k] ** 2 if start == "l2" else np.abs(X[k])
    lengths = np.zeros(m)
    for k in range(g):
        lengths += X[k] ** 2
    lengths = np.sqrt(lengths)
    order = [int(np.argmax(norm))]
    remaining = np.ones(m, bool)
    remaining[order[0]] = False
    for _ in range(m - 1):
        c = order[-1]
        d = np.zeros(m)
        if distance == "euclidean":
            for k in range(g):
                d += (X[k, c] - X[k]) ** 2
        elif distance == "manhattan":
            for k in range(g):
                d += np.abs(X[k, c] - X[k])
        else:
            for k in range(g):
                d += X[k, c] * X[k]
            with np.errstate(divide="ignore", invalid="ignore"):
                d = 1.0 - d / (lengths[c] * lengths)
            d[(lengths == 0) | (lengths[c] == 0)] = 1.0
        d[~remaining] = np.inf
        nxt = int(np.argmin(d))
        order.append(nxt)
        remaining[nxt] = False
    return np.array(order)


def _layers():
    rng = np.random.default_rng(0)
    yield "random_g4", rng.normal(size=(4, 1500)).astype(np.float32)
    yield "random_g1", rng.normal(size=(1, 700)).astype(np.float32)
    yield "random_g16", rng.normal(size=(16, 400)).astype(np.float32)
    ties = rng.integers(-1, 2, size=(2, 900)).astype(np.float32)  # few distinct points: ties everywhere
    yield "ternary_g2", ties
    dup = rng.normal(size=(4, 1200)).astype(np.float32)
    dup[:, 100:300] = 0.0  # zero columns (pruned filters)
    dup[:, 500:700] = dup[:, [7]]  # duplicated columns
    yield "zeros_and_duplicates_g4", dup
    t = np.sort(rng.uniform(0, 6, 1000))
    curve = np.stack([np.sin(t), np.cos(2 * t), t / 6, np.sin(3 * t)]).astype(np.float32)
    yield "shuffled_curve_g4", curve[:, rng.permutation(1000)]
    w = rng.normal(size=(32, 16, 3, 3)).astype(np.float32) * np.linspace(0.1, 2, 16)[None, :, None, None]
    yield "conv_scaled_channels_g8", w.reshape(8, -1)


@pytest.mark.parametrize("distance", ["euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("start", ["l2", "l1"])
def test_ordering_equals_brute_force(distance, start):
    for name, X in _layers():
        expected = brute_force_order(X, distance, start)
        for method in ("kdtree", "brute", "auto"):
            got = greedy_order(X, distance, start, method=method)
            assert np.array_equal(got, expected), (name, method, int(np.argmax(got != expected)))


def test_ordering_is_a_permutation_and_starts_at_largest_column():
    X = np.random.default_rng(1).normal(size=(4, 5000)).astype(np.float32)
    order = greedy_order(X)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(5000))
    assert order[0] == np.argmax((X.astype(np.float64) ** 2).sum(0))
    assert greedy_order(X, start="l1")[0] == np.argmax(np.abs(X.astype(np.float64)).sum(0))


def test_dct_matches_the_papers_matrix_and_jax():
    for n in (1, 2, 7, 8, 33):
        a, u = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        C = np.sqrt(np.where(u == 0, 1.0, 2.0) / n) * np.cos(np.pi / n * (a + 0.5) * u)  # eq. (2)
        x = np.random.default_rng(n).normal(size=(3, n))
        np.testing.assert_allclose(dct_ortho(x), x @ C, atol=1e-12)
        np.testing.assert_allclose(idct_ortho(x @ C), x, atol=1e-12)
        if n in (7, 8):  # decode's jnp inverse (odd and even lengths), one compile each
            np.testing.assert_allclose(jax.scipy.fft.idct(jnp.asarray(x @ C, jnp.float32), norm="ortho"), x, atol=2e-6)


@pytest.mark.parametrize("g", [1, 2, 4, 8, 64])
def test_r1_round_trip(g):
    w = np.random.default_rng(g).normal(size=(64, 32, 3, 3)).astype(np.float32)
    coded = encode(w, g, 1)
    assert coded.coef.shape == (g, w.size // g) and coded.shape == w.shape
    assert np.array_equal(np.sort(coded.index), np.arange(w.size // g))
    back = np.asarray(jax.jit(decode, static_argnums=2)(coded.coef, coded.index, coded.shape))
    assert np.linalg.norm(back - w) / np.linalg.norm(w) < 1e-5
    assert np.linalg.norm(decode_numpy(coded) - w) / np.linalg.norm(w) < 1e-6


def test_encode_keeps_int_m_over_r_and_index_inverts_the_ordering():
    w = np.random.default_rng(2).normal(size=(10, 30)).astype(np.float32)  # dense (out, in)
    coded = encode(w, 4, 2.6)
    m = w.size // 4
    assert coded.coef.shape == (4, int(m / 2.6))
    order = greedy_order(w.reshape(4, m))
    assert np.array_equal(coded.index[order], np.arange(m))
    np.testing.assert_allclose(coded.coef, dct_ortho(w.reshape(4, m)[:, order])[:, : int(m / 2.6)], rtol=1e-6)


def test_gradient_reaches_the_coefficients_as_the_adjoint():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(16, 8, 1, 1)).astype(np.float32)
    coded = encode(w, 4, 3)
    G = rng.normal(size=w.shape).astype(np.float32)
    grad = jax.grad(lambda c: jnp.sum(decode(c, jnp.asarray(coded.index), coded.shape) * G))(jnp.asarray(coded.coef))
    # decode is linear (C_t, then a permutation), so its gradient is C_t^T of the reordered G.
    order = np.argsort(coded.index)
    expected = dct_ortho(G.reshape(4, -1)[:, order])[:, : coded.coef.shape[1]]
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_reordering_lowers_nsse_at_the_same_budget():
    # Filters that are smooth functions of a hidden per-channel parameter, channels shuffled:
    # smooth after Algorithm 1, noise-like in the original order.
    rng = np.random.default_rng(4)
    theta = rng.uniform(0, 3, size=256)
    out = np.arange(32)[:, None]
    w = (np.sin(theta[None, :] * (1 + out / 8)) + 0.01 * rng.normal(size=(32, 256))).astype(np.float32)
    w = w.reshape(32, 256, 1, 1)
    for g, r in ((4, 4), (16, 4), (32, 8)):
        plain = nsse(w, decode_numpy(encode(w, g, r, reorder=False)))
        ordered = nsse(w, decode_numpy(encode(w, g, r)))
        assert ordered < 0.5 * plain, (g, r, ordered, plain)
    # Smaller g: more similar neighbours, better reconstruction (the paper's section 4.1).
    assert nsse(w, decode_numpy(encode(w, 4, 8))) < nsse(w, decode_numpy(encode(w, 32, 8)))


def test_l1_prune_keeps_the_largest_columns():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(8, 6, 3, 3)).astype(np.float32)
    pruned = l1_prune(w, 4, 4)
    view, kept = w.reshape(4, -1), pruned.reshape(4, -1)
    alive = np.flatnonzero(np.abs(kept).sum(0) > 0)
    assert len(alive) == int(view.shape[1] / 4)
    np.testing.assert_array_equal(kept[:, alive], view[:, alive])
    norms = np.abs(view).sum(0)
    assert norms[alive].min() >= np.delete(norms, alive).max()


def test_nsse():
    w = np.array([3.0, 4.0])
    assert nsse(w, w) == 0.0
    assert math.isclose(nsse(w, np.zeros(2)), 1.0)
    assert math.isclose(nsse(w, np.array([3.0, 3.0])), 1 / 25)
    with pytest.raises(ValueError, match="same shape"):
        nsse(w, np.zeros(3))
    with pytest.raises(ValueError, match="all-zero"):
        nsse(np.zeros(2), w)


def test_bad_input():
    w = np.ones((6, 5, 1, 1), np.float32)
    with pytest.raises(ValueError, match="g=4 does not divide the 30 weights"):
        encode(w, 4, 2)
    with pytest.raises(ValueError, match="r must be a number >= 1"):
        encode(w, 3, 0.5)
    with pytest.raises(ValueError, match="keeps int"):
        encode(w, 3, 11)
    with pytest.raises(ValueError, match="g must be a positive int"):
        encode(w, 0, 2)
    with pytest.raises(ValueError, match="distance must be one of"):
        greedy_order(w.reshape(3, 10), "chebyshev")
    with pytest.raises(ValueError, match="start must be one of"):
        greedy_order(w.reshape(3, 10), start="linf")
    with pytest.raises(ValueError, match="method must be one of"):
        greedy_order(w.reshape(3, 10), method="fast")
    with pytest.raises(TypeError, match="floating"):
        greedy_order(np.ones((2, 3), np.int32))
    with pytest.raises(ValueError, match="finite"):
        greedy_order(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="cannot decode"):
        decode(jnp.ones((3, 4)), jnp.arange(10), (6, 5, 1, 2))
