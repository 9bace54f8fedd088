"""The model zoo: exact sizes (abstract shapes only), depthwise implementations, train mode, errors."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from freqjax import dct
from freqjax.models import (
    abstract_variables,
    count_macs,
    count_params,
    create_model,
    list_models,
    model_info,
    random_variables,
)
from freqjax.models.blocks import BlockArgs, decode_block, decode_stages
from freqjax.models.layers import depthwise_conv, make_divisible, pointwise_conv

# docs/reference.md section 2 and 4: trainable parameters at 1000 classes and MACs at the default size.
PARAMS = {
    "efun": 4_233_448,
    "efun_l": 6_209_180,
    "efun_s": 3_394_390,
    "efun_s_plus": 2_540_728,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "mobilenetv2_100": 3_504_872,
    "mobilenetv3_small_100": 2_542_856,
    "mobilenetv3_large_100": 5_483_032,
}
GMACS = {
    "efun": 0.838,
    "efun_l": 1.603,
    "efun_s": 0.603,
    "efun_s_plus": 0.516,
    "efficientnet_b0": 0.386,
    "efficientnet_b1": 0.687,
    "mobilenetv2_100": 0.301,
    "mobilenetv3_large_100": 0.217,
    "mobilenetv3_small_100": 0.057,
}
# Paper figures (millions, one decimal) for the models without an exact reference count. LeFUN's
# 4.3M fits the full 192->192 front; the default grouped front (the paper's text) gives 4.2M.
PAPER_MILLIONS = {"efun_variant_a": (5.3, {}), "efun_variant_b": (5.6, {}), "lefun": (4.3, {"front": "full"})}


def params_of(name, **kw):
    model = create_model(name, **kw)
    return count_params(abstract_variables(model, (1, *model_info(name).input_shape)))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_reference(name):
    assert params_of(name) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(GMACS))
def test_macs_within_three_percent_of_reference(name):
    macs = count_macs(create_model(name), model_info(name).input_shape)
    assert abs(macs / 1e9 - GMACS[name]) <= 0.03 * GMACS[name], macs


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_ablation_and_lefun_counts_round_to_the_paper(name):
    millions, options = PAPER_MILLIONS[name]
    assert round(params_of(name, **options) / 1e6, 1) == millions


def test_lefun_front_options():
    grouped, full = params_of("lefun"), params_of("lefun", front="full")
    assert grouped - PARAMS["efun"] == 8 * 8 * 64 * 3  # each plane -> 64 filters
    assert full - PARAMS["efun"] == 8 * 8 * 3 * 192
    with pytest.raises(ValueError, match="front"):
        create_model("lefun", front="half")


def test_count_params_ignores_batch_stats():
    v = abstract_variables(create_model("mobilenetv3_small_075", num_classes=10), (1, 32, 32, 3))
    assert count_params(v) == count_params(v["params"])
    assert count_params(v) < count_params(v["params"]) + sum(x.size for x in jax.tree.leaves(v["batch_stats"]))
    with pytest.raises(TypeError, match="mapping"):
        count_params([1, 2])


def test_count_macs_of_a_known_layer():
    # A 1-class head on pooled features is a single dense layer: MACs = features.
    model = create_model("efun_s_plus", num_classes=0)
    with_head = count_macs(create_model("efun_s_plus", num_classes=7), (28, 28, 192))
    assert with_head - count_macs(model, (28, 28, 192)) == 960 * 7
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(model, (28, 28))


def test_every_listed_model_has_info_and_builds():
    names = list_models()
    assert len(names) >= 17 and names == sorted(names)
    assert list_models("efun*") == ["efun", "efun_l", "efun_s", "efun_s_plus", "efun_variant_a", "efun_variant_b"]
    for name in names:
        info = model_info(name)
        assert info.input_kind in ("dct", "rgb", "ycbcr")
        assert info.resolution in (32, 224, 240, 256)  # CIFAR, ImageNet (B1: 240), MSNet's 256
    assert model_info("efun").input_shape == (28, 28, 192)
    assert model_info("efficientnet_b1").input_shape == (240, 240, 3)


def test_feature_maps_of_efun_end_at_14x14():
    model = create_model("efun", num_classes=0)
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((2, 28, 28, 192)))[0])
    assert out.shape == (2, 1280)


# ----------------------------------------------------------------------------- building blocks


def test_make_divisible_matches_timm_examples():
    assert make_divisible(180) == 184 and make_divisible(140) == 144
    assert make_divisible(32 * 0.5) == 16 and make_divisible(4) == 8
    assert make_divisible(16 * 0.75) == 16  # 12 -> 16 (8 would lose over 10 %)


def test_decode_block_and_depth_scaling():
    assert decode_block("ir_r2_k3_s2_e6_c24_se0.25") == (2, BlockArgs("ir", 3, 2, 24, 6.0, 0.25))
    assert decode_block("ds_r1_k3_s1_e1_c16_nre")[1].act == "relu"
    assert decode_block("ir_r1_k3_s1_c8_noskip")[1].skip is False
    b1 = decode_stages((("ds_r1_k3_s1_c16",), ("ir_r2_k3_s2_e6_c24",), ("ir_r4_k5_s2_e6_c192",)), depth=1.1)
    assert [len(s) for s in b1] == [2, 3, 5]
    assert [b.stride for b in b1[1]] == [2, 1, 1]
    for bad, match in (("ir_r2_k3_s2_c24_zz4", "unknown option"), ("ir_r2_k3_e6", "lacks"), ("xx_k3_s1_c8", "kind")):
        with pytest.raises(ValueError, match=match):
            decode_block(bad)


# depthwise_conv's implementations against XLA's: tests/ops/test_conv.py::test_depthwise_matches_xla


def test_depthwise_bad_arguments():
    x = jnp.zeros((1, 8, 8, 4))
    with pytest.raises(ValueError, match="impl"):
        depthwise_conv(x, jnp.zeros((3, 3, 1, 4)), impl="fft")
    with pytest.raises(ValueError, match=r"\(kh, kw, 1, 4\)"):
        depthwise_conv(x, jnp.zeros((3, 3, 1, 5)))


def test_lefun_front_starts_as_the_block_dct():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    ycbcr = dct.rgb_to_ycbcr(images) - 128.0
    for front in ("grouped", "full"):
        model = create_model("lefun", front=front, num_classes=3)
        variables = model.init(jax.random.key(0), ycbcr)
        kernel = variables["params"]["dct_front"]["kernel"]
        groups = 3 if front == "grouped" else 1
        coeffs = jax.lax.conv_general_dilated(
            ycbcr, kernel, (8, 8), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups
        )
        np.testing.assert_allclose(coeffs, dct.rgb_to_dct(images, chroma="444"), atol=2e-3)


# ----------------------------------------------------------------------------- errors


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match=r"did you mean.*efficientnet_b0"):
        create_model("efficientnet_b00")
    with pytest.raises(ValueError, match="unknown model name"):
        model_info(42)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": -1}, ValueError, "num_classes"),
        ({"num_classes": 2.5}, ValueError, "num_classes"),
        ({"drop_rate": 1.0}, ValueError, "drop_rate"),
        ({"drop_path_rate": -0.1}, ValueError, "drop_path_rate"),
        ({"dtype": jnp.int32}, TypeError, "dtype"),
        ({"dtype": "banana"}, TypeError, "dtype"),
        ({"width": 2.0}, TypeError, "unexpected arguments"),
    ],
)
def test_bad_create_model_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        create_model("efun", **kwargs)


def test_wrong_input_channels_is_a_clear_error():
    model = create_model("efun", num_classes=3)
    with pytest.raises(ValueError, match=r"192 channels.*\(1, 224, 224, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))


# ----------------------------------------------------------------------------- train mode


# One model per code path, from the registry: every model but those registered as a width / depth
# variant of another (ModelInfo.variant_of). Each train step compiles for 15-70 s on 2 cores.
TRAIN_MODE_MODELS = [name for name in list_models() if model_info(name).variant_of is None]


def test_every_model_carries_the_family_module_that_registered_it():
    for name in list_models():  # register() takes the family from the calling module's name
        importlib.import_module(f"freqjax.models.{model_info(name).family}")
    assert model_info("efun").family == "efficientnet" and model_info("resfun").family == "resnet"


@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).variant_of is not None])
def test_variants_name_a_tested_model_of_their_family_and_input(name):
    info = model_info(name)
    base = model_info(info.variant_of)
    assert base.variant_of is None and base.name in TRAIN_MODE_MODELS
    assert (base.family, base.input_kind) == (info.family, info.input_kind)


@pytest.mark.parametrize("name", TRAIN_MODE_MODELS)
def test_train_mode_steps_reduce_the_loss(name):
    info = model_info(name)
    side = 4 if info.input_kind == "dct" else 32
    model = create_model(name, num_classes=4, drop_rate=0.1, drop_path_rate=0.1)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, side, side, info.input_shape[-1])), jnp.float32)
    labels = jnp.arange(8) % 4
    # numpy initial values (He-normal convs, unit-scale logits): compiling model.init would take
    # a third of this test's time
    variables = jax.tree.map(jnp.asarray, random_variables(abstract_variables(model, x.shape), seed=0))
    tx = optax.adam(1e-3)

    def forward(params, batch_stats, key):
        return model.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )

    @jax.jit
    def step(params, batch_stats, opt_state, key):
        def loss_fn(p):
            logits, updates = forward(p, batch_stats, key)
            # Multi-exit models (MSNet) train on the sum of their classifiers' cross-entropies.
            outputs = logits if isinstance(logits, tuple) else (logits,)
            loss = sum(optax.softmax_cross_entropy_with_integer_labels(o, labels).mean() for o in outputs)
            return loss, updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), updates["batch_stats"], opt_state, loss

    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    # One dropout key for every step: the objective is then a fixed function, so descent must
    # lower it (a fresh key per step makes 8-sample losses too noisy to judge). Adam, not SGD:
    # timm's classifier init (uniform +-1/sqrt(classes)) gives 4-class logits of std ~10, and SGD
    # steps on those gradients made the loss of some models jump chaotically.
    for _ in range(8):
        params, stats, opt_state, loss = step(params, stats, opt_state, jax.random.key(0))
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.5 * losses[0], losses
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), stats, variables["batch_stats"])
    assert min(jax.tree.leaves(moved)) > 0  # every BN updated its running statistics
    # Dropout / drop-path draw from the 'dropout' rng: two keys give two losses in train mode
    # (at the initial parameters: after the steps above some models fit the batch to a loss of 0).
    start = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    loss_a, loss_b = (float(step(*start, jax.random.key(k))[-1]) for k in (1, 2))
    assert loss_a != loss_b
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda: model.apply(variables, x, train=True, mutable=["batch_stats"]))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_equals_the_convolution(stride):
    rng = np.random.default_rng(stride)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 1, 6, 5)), jnp.float32)

    def reference(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def loss(f, x, w):
        return jnp.sum(jnp.sin(f(x, w)))

    y, y_ref = pointwise_conv(x, w, stride), reference(x, w)
    assert y.shape == y_ref.shape == (2, -(-9 // stride), -(-10 // stride), 5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda x, w: loss(lambda a, b: pointwise_conv(a, b, stride), x, w), argnums=(0, 1))(x, w)
    grads_ref = jax.grad(lambda x, w: loss(reference, x, w), argnums=(0, 1))(x, w)
    for a, b in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
