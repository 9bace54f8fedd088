"""The paper's baselines as whole-tree schemes: same kept values, their index, storage, plan checks, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.compress import SCHEMES, check_plan, compress, count, decompress, l1_prune, load, make_plan, save
from freqjax.compress.codec import encode, l1_encode, scatter_decode
from freqjax.compress.tree import to_reference


@pytest.fixture(scope="module")
def variables():
    rng = np.random.default_rng(0)
    shapes = {"conv": {"kernel": (3, 3, 8, 16)}, "fc": {"kernel": (16, 10), "bias": (10,)}}
    params = jax.tree.map(
        lambda s: rng.normal(size=s).astype(np.float32), shapes, is_leaf=lambda s: isinstance(s, tuple)
    )
    return {"params": params, "batch_stats": {}}


def test_l1_encode_keeps_what_l1_prune_keeps_and_scatters_back():
    rng = np.random.default_rng(1)
    w = rng.integers(-2, 3, size=(12, 8, 3, 3)).astype(np.float32)  # ternary-ish: many tied column norms
    for g, r in ((4, 2), (8, 3.5), (2, 16)):
        coded = l1_encode(w, g, r)
        assert coded.coef.shape == (g, int(w.size // g / r)) and np.all(np.diff(coded.index) > 0)
        back = np.asarray(scatter_decode(jnp.asarray(coded.coef), jnp.asarray(coded.index), w.shape))
        np.testing.assert_array_equal(back, l1_prune(w, g, r))


def test_no_reordering_needs_no_index(variables):
    w = to_reference(variables["params"]["conv"]["kernel"])
    coded = encode(w, 4, 2.0, reorder=False)
    np.testing.assert_array_equal(coded.index, np.arange(w.size // 4))
    from freqjax.compress.codec import decode

    with_index = decode(jnp.asarray(coded.coef), jnp.asarray(coded.index), w.shape)
    without = decode(jnp.asarray(coded.coef), jnp.zeros((0,), jnp.int32), w.shape)
    np.testing.assert_array_equal(np.asarray(with_index), np.asarray(without))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_schemes_keep_the_same_values_and_round_trip_through_a_file(variables, scheme, tmp_path):
    plan = make_plan(variables, ["conv/kernel", "fc/kernel"], "uniform", g=4, r=2.0)
    ctree = compress(variables, plan, scheme=scheme)
    c = count(ctree)
    assert c["coefficients"] == (3 * 3 * 8 * 16 + 16 * 10) // 2
    columns, t = (3 * 3 * 8 * 16 + 16 * 10) // 4, c["coefficients"] // 4
    assert c["index"] == {"dct": columns, "dct_no_reorder": 0, "l1": t}[scheme]
    assert count(compress(jax.eval_shape(lambda: variables), plan, scheme=scheme)) == c  # shapes only
    save(ctree, tmp_path / "c.npz")
    back = load(tmp_path / "c.npz")
    check_plan(back, plan, scheme)
    a, b = decompress(ctree), decompress(back)
    np.testing.assert_array_equal(np.asarray(a["params"]["conv"]["kernel"]), np.asarray(b["params"]["conv"]["kernel"]))
    err = np.linalg.norm(a["params"]["conv"]["kernel"] - variables["params"]["conv"]["kernel"])
    assert 0 < err < np.linalg.norm(variables["params"]["conv"]["kernel"])
    others = [s for s in SCHEMES if s != scheme]
    for other in others:
        with pytest.raises(ValueError, match="compressed with another plan"):
            check_plan(back, plan, other)
    with pytest.raises(ValueError, match=r"layer 'conv.weight' has g=4, t=144,.* makes g=4, t=72"):
        check_plan(back, make_plan(variables, ["conv/kernel", "fc/kernel"], "uniform", g=4, r=4.0), scheme)
    with pytest.raises(ValueError, match=r"fc/kernel is compressed there, not in the plan"):
        check_plan(back, make_plan(variables, ["conv/kernel"], "uniform", g=4, r=2.0), scheme)


def test_gradients_reach_the_kept_values_of_every_scheme(variables):
    plan = make_plan(variables, ["fc/kernel"], "uniform", g=4, r=2.0)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 10)), jnp.float32)
    for scheme in SCHEMES:
        node = compress(variables, plan, scheme=scheme)["params"]["fc"]["kernel"]

        def loss(coef, node=node):
            return jnp.sum(
                type(node)(coef, node.index, node.ref_shape, node.flax_shape, node.r, node.kind).weight() * x
            )

        grad = jax.grad(loss)(node.coef)
        assert grad.shape == node.coef.shape and float(jnp.abs(grad).sum()) > 0
        if scheme == "l1":  # d/dvalues of sum(w * x) is x at the kept positions
            expected = to_reference(np.asarray(x)).reshape(4, -1)[:, np.asarray(node.index)]
            np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-6)


def test_unknown_scheme_is_refused(variables):
    plan = make_plan(variables, ["fc/kernel"], "uniform", g=4, r=2.0)
    with pytest.raises(ValueError, match=r"scheme must be one of \['dct', 'dct_no_reorder', 'l1'\], got 'l2'"):
        compress(variables, plan, scheme="l2")
