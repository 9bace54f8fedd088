"""ReXNet / ReXNet-lite: exact sizes, channel rule, partial residual, timm and official weight layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.interop.torch_weights import from_torch
from freqjax.models import abstract_variables, count_macs, count_params, create_model, list_models, model_info
from freqjax.models.blocks import BlockArgs, ReXNetBottleneck
from freqjax.models.rexnet import reference_to_freqjax_keys, rexnet_channels

# docs/reference.md section 8: trainable parameters at 1000 classes, GMACs at 224 px.
REXNET = {
    "rexnet_090": (4_091_257, 0.348),
    "rexnet_100": (4_796_873, 0.398),
    "rexnet_130": (7_557_091, 0.662),
    "rexnet_150": (9_728_593, 0.876),
    "rexnet_200": (16_366_620, 1.529),
    "rexnet_220": (19_485_308, 1.843),
    "rexnet_300": (34_708_792, 3.396),
    "rexnet_lite_100": (4_740_056, 0.407),
    "rexnet_lite_130": (6_747_960, 0.646),
    "rexnet_lite_150": (8_332_296, 0.836),
    "rexnet_lite_200": (12_966_200, 1.498),
}


def test_all_eleven_names_and_the_plain_network_are_registered():
    assert list_models("rexnet*") == sorted([*REXNET, "rexnet_plain"])
    assert model_info("rexnet_100").timm_name == "rexnet_100"
    assert model_info("rexnet_090").timm_name is None  # timm has no x0.9 / x2.2 / lite entry point


@pytest.mark.parametrize("name", sorted(REXNET))
def test_parameters_exact_and_macs_within_three_percent(name):
    params, gmacs = REXNET[name]
    model = create_model(name)
    assert count_params(abstract_variables(model, (1, 224, 224, 3))) == params
    macs = count_macs(model, (224, 224, 3))
    assert abs(macs / 1e9 - gmacs) <= 0.03 * gmacs, macs


def _plain_count(num_classes=1000, side=224):
    """ReXNet-plain's parameters and MACs by hand: stem, 13 separable blocks (BN: 2 per channel), head."""
    outs = [96 + 48 * i for i in range(12)] + [1024]
    ins, strides = [32, *outs[:-1]], [2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]
    params, hw = 27 * 32 + 2 * 32, side // 2
    macs = hw * hw * 27 * 32
    for cin, cout, s in zip(ins, outs, strides, strict=True):
        params += 9 * cin + 2 * cin + cin * cout + 2 * cout
        hw //= s
        macs += hw * hw * (9 * cin + cin * cout)
    params += 1024 * 1280 + 2 * 1280 + 1280 * num_classes + num_classes
    return params, macs + hw * hw * 1024 * 1280 + 1280 * num_classes


def test_rexnet_plain_count_structure_and_forward():
    model = create_model("rexnet_plain")
    params, macs = _plain_count()
    assert (params, macs) == (4_968_520, 442_145_152)  # 4.97 M parameters, 0.442 GMACs at 224 px
    assert count_params(abstract_variables(model, (1, 224, 224, 3))) == params
    assert count_macs(model, (224, 224, 3)) == macs
    v = abstract_variables(model, (1, 32, 32, 3))["params"]
    blocks = [v[f"blocks_{i}_{j}"] for i, n in enumerate((2, 2, 6, 3)) for j in range(n)]
    widths = [b["conv_pw"]["kernel"].shape[-1] for b in blocks]
    assert widths[:12] == list(range(96, 625, 48)) and widths[12] == 1024  # linear, then MobileNetV1's 1024
    assert v["conv_head"]["kernel"].shape == (1, 1, 1024, 1280) and "se" not in blocks[5]
    assert model_info("rexnet_plain").default_drop_rate == 0.2
    small = create_model("rexnet_plain", num_classes=7)
    variables = small.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    features = create_model("rexnet_plain", num_classes=0)
    assert features.apply(variables, jnp.ones((2, 64, 64, 3))).shape == (2, 1280)
    logits = small.apply(variables, jnp.ones((2, 64, 64, 3)))
    assert logits.shape == (2, 7) and bool(jnp.all(jnp.isfinite(logits)))


def test_channel_schedule_matches_reference():
    stem, outs, head = rexnet_channels(1.0)
    assert (stem, head) == (32, 1280)
    assert outs == (16, 27, 38, 50, 61, 72, 84, 95, 106, 117, 128, 140, 151, 162, 174, 185)
    stem, outs, head = rexnet_channels(0.9)  # below 1: the 32 stem and the 16 start stay
    assert (stem, head) == (32, 1152)
    assert outs == (16, 26, 36, 46, 56, 67, 77, 87, 97, 107, 117, 127, 138, 148, 158, 168)
    stem, outs, head = rexnet_channels(1.0, lite=True)
    assert (stem, head) == (32, 1280) and all(c % 8 == 0 for c in outs) and outs[-1] == 184
    assert rexnet_channels(2.0, lite=True)[2] == 2560  # lite's head scales only above width 1
    with pytest.raises(ValueError, match="width"):
        rexnet_channels(0)


def test_structure_se_widths_and_activations():
    v = abstract_variables(create_model("rexnet_130"), (1, 32, 32, 3))["params"]
    assert "conv_exp" not in v["blocks_0_0"] and "se" not in v["blocks_1_1"]  # block 0: no expansion
    stem, outs, _ = rexnet_channels(1.3)
    ins = (stem, *outs[:-1])
    blocks = [v[f"blocks_{i}_{j}"] for i, r in enumerate((1, 2, 2, 3, 3, 5)) for j in range(r)]
    for k, block in enumerate(blocks):
        mid = ins[k] * (1 if k == 0 else 6)
        assert block["conv_dw"]["conv"]["kernel"].shape == (3, 3, 1, mid)
        if k >= 3:  # SE on blocks 3..15, reduced to mid // 12, with a BN inside
            assert block["se"]["fc1"]["kernel"].shape == (1, 1, mid, mid // 12)
            assert block["se"]["bn"]["scale"].shape == (mid // 12,)
    lite = abstract_variables(create_model("rexnet_lite_100"), (1, 32, 32, 3))["params"]
    assert not any("se" in lite[k] for k in lite if k.startswith("blocks"))
    assert lite["pre_logits_conv"]["kernel"].shape == (1, 1, 1280, 1024)


def test_partial_residual_adds_the_input_to_the_first_channels():
    block = ReXNetBottleneck(BlockArgs("rx", 3, 1, 6, exp=6.0), act="silu")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 4)), jnp.float32)
    variables = block.init(jax.random.key(0), x)
    # A projection BN with zero scale and bias makes the branch zero: the output is [x, 0].
    bn = {"scale": jnp.zeros(6), "bias": jnp.zeros(6)}
    params = {**variables["params"], "conv_pwl": {**variables["params"]["conv_pwl"], "bn": bn}}
    y = block.apply({**variables, "params": params}, x)
    np.testing.assert_array_equal(y[..., :4], x)
    np.testing.assert_array_equal(y[..., 4:], 0.0)
    # in > out or stride 2: no shortcut at all.
    for args in (BlockArgs("rx", 3, 1, 3, exp=6.0), BlockArgs("rx", 3, 2, 6, exp=6.0)):
        shrink = ReXNetBottleneck(args, act="silu")
        v = shrink.init(jax.random.key(0), x)
        p = {**v["params"], "conv_pwl": {**v["params"]["conv_pwl"], "bn": {k: jnp.zeros(args.out) for k in bn}}}
        np.testing.assert_array_equal(shrink.apply({**v, "params": p}, x), 0.0)


def test_reference_key_rules_without_torch():
    def renamed(key, name="rexnet_100"):
        return next(iter(reference_to_freqjax_keys({key: np.zeros(1), "stem.conv.weight": 0}, name)))

    assert renamed("features.3.se.fc1.weight") == "blocks.2.0.se.fc1.weight"
    assert renamed("features.16.bn.running_var") == "bn2.running_var"
    assert renamed("head.fc.bias") == "classifier.bias"

    def official(key, name="rexnet_100"):
        return next(iter(reference_to_freqjax_keys({key: np.zeros((5, 7, 1, 1)), "features.0.weight": 0}, name)))

    assert official("features.3.out.3.weight") == "blocks.0.0.conv_pwl.conv.weight"  # block 0: dw, BN, ReLU6, pwl
    assert official("features.5.out.6.weight") == "blocks.1.1.conv_pwl.conv.weight"  # no SE
    assert official("features.6.out.5.fc.3.bias") == "blocks.2.0.se.fc2.bias"
    assert official("features.18.out.8.running_mean") == "blocks.5.4.conv_pwl.bn.running_mean"
    assert official("features.20.weight") == "bn2.weight"
    assert official("output.0.weight", "rexnet_lite_100") == "pre_logits_conv.weight"
    sd = {"features.0.weight": 0, "output.1.weight": np.zeros((10, 1280, 1, 1))}
    out = reference_to_freqjax_keys(sd, "rexnet_100")
    assert out["classifier.weight"].shape == (10, 1280)  # the 1x1-conv classifier becomes a linear weight
    assert reference_to_freqjax_keys({"conv_stem.weight": 1}, "rexnet_100") == {"conv_stem.weight": 1}


# ----------------------------------------------------------------------------- parity (torch)


def _parity(name, reference, side=32):
    torch = pytest.importorskip("torch")
    from torch_parity import randomise_batch_norm

    randomise_batch_norm(reference, torch)
    variables = from_torch(reference.state_dict(), name)
    x = np.random.default_rng(1).normal(size=(2, side, side, 3)).astype(np.float32)
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = create_model(name, num_classes=expected.shape[1])
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# timm parity of all 11 names (timm's layout for rexnet_1xx..3xx, x0.9 and x2.2; the official one
# for lite) is tests/interop/test_torch_weights.py::test_weights_load_strictly_and_logits_equal_timm;
# here the official ReXNet-v1 layout.
@pytest.mark.parametrize(("name", "width", "lite"), [("rexnet_090", 0.9, False)])
def test_official_layout_logits_equal(name, width, lite):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from freqjax.interop.torch_models import rexnet_reference

    torch.manual_seed(0)
    reference = rexnet_reference(width, lite, num_classes=7).eval()
    assert any(k.startswith("features.5.out.") for k in reference.state_dict())
    assert sum(p.numel() for p in rexnet_reference(width, lite).parameters()) == REXNET[name][0]
    _parity(name, reference)


def test_official_state_dict_missing_key_is_listed():
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from freqjax.interop.torch_models import rexnet_reference

    torch.manual_seed(0)
    sd = dict(rexnet_reference(1.0, num_classes=3).state_dict())
    del sd["features.7.out.5.fc.1.weight"]
    with pytest.raises(ValueError, match=r"1 missing: blocks\.2\.1\.se\.bn\.weight"):
        from_torch(sd, "rexnet_100")
