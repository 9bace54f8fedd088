"""The CPU conv formulations (freqjax.ops.conv) against XLA's own convolutions.

Values and gradients must agree to a relative error <= 1e-5 (float32) for every kernel, stride
and padding the models use; the batch-chunked weight gradients are exercised by shrinking the
chunk size so that tiny inputs span several chunks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conv_cases import DENSE_CASES, DEPTHWISE_CASES, RTOL, primitives, rel_err, sym

from freqjax.models import create_model
from freqjax.models.layers import Conv
from freqjax.ops import conv as cpu_conv
from freqjax.ops import conv_impl, resolve_conv_impl


def _values_and_grads(f, x, w):
    """f(x, w), d/dx and d/dw of sum(sin(f)) (a non-trivial cotangent)."""
    y = f(x, w)
    grads = jax.grad(lambda x_, w_: jnp.sum(jnp.sin(f(x_, w_))), (0, 1))(x, w)
    return (y, *grads)


# Every case with the batch split into one image per chunk (the lax.scan path), every third also
# in one chunk (the default for these tiny inputs).
@pytest.mark.parametrize(
    ("k", "s", "pad", "chunk_bytes"), [(*c, 700) for c in DENSE_CASES] + [(*c, None) for c in DENSE_CASES[::3]]
)
def test_dense_conv_matches_xla(k, s, pad, chunk_bytes, monkeypatch):
    if chunk_bytes:  # 700 B: one 9x11x5 image (1,980 B) per chunk; None: the default, one chunk here
        monkeypatch.setitem(cpu_conv._CHUNK_BYTES, "dense", chunk_bytes)
    rng = np.random.default_rng(k * 10 + s)
    side = (16, 16) if k == 8 else (9, 11)  # odd, non-square sizes catch off-by-one padding
    x = jnp.asarray(rng.normal(size=(4, *side, 3 if k == 8 else 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, x.shape[-1], 6)), jnp.float32)
    ours = _values_and_grads(lambda a, b: cpu_conv.conv(a, b, (s, s), pad, "cpu"), x, w)
    ref = _values_and_grads(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w)
    for name, a, b in zip(("value", "dx", "dw"), ours, ref, strict=True):
        assert a.shape == b.shape
        assert rel_err(a, b) <= RTOL, name


@pytest.mark.parametrize("s", [1, 2])
def test_rgb_stem_forward_is_one_gemm_over_patches(s):
    """3x3 convs of 3-channel input (27 values per patch) run their forward as im2col + GEMM."""
    rng = np.random.default_rng(s)
    x = jnp.asarray(rng.normal(size=(2, 9, 11, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 8)), jnp.float32)
    pad = sym(3, s)
    assert "conv_general_dilated" not in primitives(lambda a: cpu_conv.conv(a, w, (s, s), pad, "cpu"), x)
    ours = _values_and_grads(lambda a, b: cpu_conv.conv(a, b, (s, s), pad, "cpu"), x, w)
    ref = _values_and_grads(lambda a, b: cpu_conv.xla_conv(a, b, (s, s), pad), x, w)
    for name, a, b in zip(("value", "dx", "dw"), ours, ref, strict=True):
        assert rel_err(a, b) <= RTOL, name


@pytest.mark.parametrize(
    ("kernel", "strides", "pad", "chunk_bytes"),
    [(*c, 2000) for c in DEPTHWISE_CASES] + [(*c, None) for c in DEPTHWISE_CASES[::3]],
)
def test_depthwise_matches_xla(kernel, strides, pad, chunk_bytes, monkeypatch):
    if chunk_bytes:  # 2000 B: one 9x11x4 image (1,584 B) per chunk
        monkeypatch.setitem(cpu_conv._CHUNK_BYTES, "depthwise", chunk_bytes)
    rng = np.random.default_rng(sum(kernel) + 3 * strides[0])
    x = jnp.asarray(rng.normal(size=(4, 9, 11, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 1, 4)), jnp.float32)
    ours = _values_and_grads(lambda a, b: cpu_conv.depthwise(a, b, strides, pad), x, w)
    ref = _values_and_grads(lambda a, b: cpu_conv.xla_conv(a, b, strides, pad, groups=4), x, w)
    for name, a, b in zip(("value", "dx", "dw"), ours, ref, strict=True):
        assert a.shape == b.shape
        assert rel_err(a, b) <= RTOL, name


def test_conv_impl_context_selects_the_implementation():
    x = jnp.ones((2, 8, 8, 4))
    layer = Conv(6, (3, 3), padding=((1, 1), (1, 1)))
    params = layer.init(jax.random.key(0), x)
    # the tests run on 8 CPU devices (conftest), where the default is 'cpu'; 'native' on one device
    assert resolve_conv_impl() == ("native" if jax.device_count() == 1 else "cpu")
    assert "custom_vjp_call" in primitives(lambda v: layer.apply(v, x), params)
    with conv_impl("cpu"):
        assert resolve_conv_impl() == "cpu"
        assert "custom_vjp_call" in primitives(lambda v: layer.apply(v, x), params)
    with conv_impl("xla"):
        assert resolve_conv_impl() == "xla"
        assert set(primitives(lambda v: layer.apply(v, x), params)) == {"conv_general_dilated"}
    assert resolve_conv_impl("xla") == "xla"


def test_conv_impl_is_part_of_the_jit_cache_key():
    layer = Conv(4, (3, 3), padding=((1, 1), (1, 1)))
    x = jnp.ones((1, 6, 6, 4))
    params = layer.init(jax.random.key(0), x)
    traced = []

    @jax.jit
    def f(v):
        traced.append(resolve_conv_impl())
        return layer.apply(v, x)

    f(params)
    with conv_impl("xla"):
        f(params)
    with conv_impl("native"):
        f(params)
    f(params)
    assert traced == [resolve_conv_impl(), "xla", "native"]


def test_bad_conv_impl_is_a_clear_error():
    with pytest.raises(ValueError, match=r"conv impl must be one of .*'cpu'.*got 'cudnn'"), conv_impl("cudnn"):
        pass
    with pytest.raises(ValueError, match="got 'gemm'"):
        resolve_conv_impl("gemm")


# MobileNetV1-0.25 has no conv the native kernels take (an 8-channel stem, 1x1 and depthwise), so
# it runs under 'native' only.
@pytest.mark.parametrize(
    ("name", "size", "impl"),
    [(m, s, i) for m, s in (("cifar_resnet8", 16), ("resnet18", 32)) for i in ("native", "cpu")]
    + [("mobilenetv1_025", 32, "native")],
)
def test_model_gradients_equal_under_both_impls(name, size, impl):
    """A whole network's loss and parameter gradients agree between ``impl`` and 'xla'.

    Eval mode: with batch statistics of 4 images at the 1x1 end of a network, BN divides by a
    near-zero variance and amplifies float32 rounding, which would test BN rather than the convs.
    """
    model = create_model(name, num_classes=5, drop_rate=0.0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, size, size, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)

    @jax.jit
    def loss_and_grads(v):
        return jax.value_and_grad(lambda p: jnp.mean(jnp.sin(model.apply({**v, "params": p}, x))))(v["params"])

    with conv_impl(impl):
        ours = loss_and_grads(variables)
    with conv_impl("xla"):
        ref = loss_and_grads(variables)
    assert abs(float(ours[0] - ref[0])) <= RTOL * abs(float(ref[0]))
    ref_leaves = jax.tree_util.tree_leaves(ref[1])
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours[1]), ref_leaves, strict=True):
        # relative to the leaf's largest gradient, through up to 50 layers; ResNet's zero-initialised
        # last BN makes some leaves exactly zero in both
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * float(jnp.max(jnp.abs(b))), jax.tree_util.keystr(path)
