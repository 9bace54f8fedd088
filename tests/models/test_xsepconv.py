"""XSepConv: weight counts, padding strategies (centre of mass), depthwise impls, MobileNetV3-Small-XSep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.models import count_macs, count_params, create_model, list_models
from freqjax.models.builder import MBNet
from freqjax.models.layers import depthwise_conv, make_divisible
from freqjax.models.mobilenet import mobilenetv3_small_xsep_spec
from freqjax.models.xsepconv import (
    XSEP_FORMS,
    TwoByTwoDepthwise,
    XSepConv,
    original_groups,
    two_by_two_padding,
    xsep_weight_count,
)
from freqjax.ops import conv_impl

# MobileNetV3-Small at 1000 classes, 224 px: (params, MACs) of the depthwise baseline and of the
# XSep version (6 XSepConv layers: 2 + 2 with k=5, 2 with k=3), per width multiplier.
XSEP_VS_DW = {
    0.5: ((1_593_224, 24_188_688), (1_583_864, 22_833_936)),
    0.75: ((2_041_872, 43_399_344), (2_028_168, 41_470_704)),
    1.0: ((2_542_856, 56_510_400), (2_524_976, 54_059_616)),
    1.25: ((3_205_384, 90_800_864), (3_183_160, 87_776_192)),
}


def sizes(spec, side=224, num_classes=1000):
    model = MBNet(spec, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    return count_params(variables), count_macs(model, (side, side, 3))


def layer_params(layer, channels=8, side=6):
    x = jax.ShapeDtypeStruct((1, side, side, channels), jnp.float32)
    return count_params(jax.eval_shape(lambda x: layer.init(jax.random.key(0), x), x))


# ----------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("k", [3, 5, 7])
def test_layer_has_4_plus_2k_weights_per_channel_plus_three_bns(k):
    c = 8
    assert xsep_weight_count(k, c) == (4 + 2 * k) * c
    for form in XSEP_FORMS:
        bns = 2 if form == "no_2x2" else 3
        assert layer_params(XSepConv(k, form=form), c) == xsep_weight_count(k, c, form) + bns * 2 * c
    # vs the k x k depthwise it replaces: 0.56x at k=5, 0.37x at k=7, more at k=3
    assert {3: 10 / 9, 5: 14 / 25, 7: 18 / 49}[k] == pytest.approx(xsep_weight_count(k, 1) / k**2)


def test_downsampling_form_strides_width_then_height_and_its_macs():
    layer = XSepConv(7, stride=2)
    x = jnp.ones((1, 12, 16, 4))
    variables = layer.init(jax.random.key(0), x)
    y, inter = layer.apply(variables, x, capture_intermediates=True)
    assert y.shape == (1, 6, 8, 4)
    assert inter["intermediates"]["conv_1xk"]["__call__"][0].shape == (1, 12, 8, 4)  # stride (1, 2) first
    h, w, c, k = 12, 16, 4, 7
    assert count_macs(layer, (h, w, c)) == 4 * h * w * c + k * h * w * c // 2 + k * h * w * c // 4


@pytest.mark.parametrize("form", XSEP_FORMS)
@pytest.mark.parametrize("padding", ["right_bottom", "left_top", "original"])
def test_depthwise_implementations_agree_inside_xsepconv(form, padding):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 9, 6)), jnp.float32)
    layer = XSepConv(5, form=form, padding=padding, act="hard_swish")
    variables = layer.init(jax.random.key(1), x)
    with conv_impl("xla"):
        y_xla = layer.apply(variables, x)
    with conv_impl("cpu"):
        y_cpu = layer.apply(variables, x)
    assert y_xla.shape == x.shape
    np.testing.assert_allclose(y_cpu, y_xla, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "pad"),
    [
        ((1, 5), (1, 2), ((0, 0), (2, 2))),
        ((5, 1), (2, 1), ((2, 2), (0, 0))),
        ((1, 7), 1, ((0, 0), (3, 3))),
        ((3, 1), 2, ((1, 1), (0, 0))),
        ((2, 2), 1, ((0, 1), (1, 0))),
        ((2, 2), 2, ((1, 0), (0, 1))),
    ],
)
def test_depthwise_implementations_agree_for_1xk_kx1_2x2(kernel, stride, pad):
    rng = np.random.default_rng(sum(kernel))
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 1, 3)), jnp.float32)

    def run(impl):
        return jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(depthwise_conv(x, w, stride, pad, impl))), (0, 1))(x, w)

    (v_xla, g_xla), (v_cpu, g_cpu) = run("xla"), run("cpu")
    y = depthwise_conv(x, w, stride, pad, "cpu")
    np.testing.assert_allclose(y, depthwise_conv(x, w, stride, pad, "xla"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_cpu, v_xla, rtol=1e-5)
    for a, b in zip(g_cpu, g_xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- padding strategies


def centre_shifts(paddings, channels=4, side=40):
    """Per-channel centre-of-mass shift (y, x) of a centred impulse after 2x2 averaging layers."""
    x = np.zeros((1, side, side, channels), np.float32)
    x[0, side // 2, side // 2] = 1.0
    y = jnp.asarray(x)
    kernel = jnp.full((2, 2, 1, channels), 0.25)
    for mode in paddings:
        y = TwoByTwoDepthwise(mode).apply({"params": {"kernel": kernel}}, y)
    y = np.asarray(y[0], np.float64)
    assert np.allclose(y.sum((0, 1)), 1.0)  # no mass reached the border
    grid = np.arange(side, dtype=np.float64)
    cy = np.einsum("hwc,h->c", y, grid) - side // 2
    cx = np.einsum("hwc,w->c", y, grid) - side // 2
    return np.stack([cy, cx], axis=-1)  # (channels, 2)


@pytest.mark.parametrize("n", range(1, 13))
def test_improved_padding_keeps_the_centre_of_mass(n):
    improved = centre_shifts([two_by_two_padding("improved", i, n) for i in range(n)])
    if n % 4 == 0:
        assert np.abs(improved).max() < 1e-5
    assert np.abs(improved).max() <= 1.0 + 1e-6
    naive = centre_shifts([two_by_two_padding("right_bottom", i, n) for i in range(n)])
    np.testing.assert_allclose(naive, -n / 2, atol=1e-5)  # drifts n/2 px up and left
    # C2sp balances each layer over channel groups, but each channel keeps its group's direction.
    original = centre_shifts([two_by_two_padding("original", i, n) for i in range(n)])
    np.testing.assert_allclose(np.abs(original), n / 2, atol=1e-5)
    np.testing.assert_allclose(original.mean(0), 0.0, atol=1e-5)


def test_padding_cycle_and_remainder_rules():
    assert [two_by_two_padding("improved", i, 8) for i in range(4)] == [
        "right_bottom",
        "left_top",
        "left_bottom",
        "right_top",
    ]
    assert [two_by_two_padding("improved", i, 6) for i in (4, 5)] == ["right_bottom", "left_top"]  # opposite pair
    assert two_by_two_padding("improved", 4, 5) == "original"  # N % 4 == 1: last layer C2sp
    assert original_groups(10) == (3, 3, 2, 2) and original_groups(3) == (1, 1, 1, 0)
    for bad in ((5, 5), (-1, 3)):
        with pytest.raises(ValueError, match="index"):
            two_by_two_padding("improved", *bad)
    with pytest.raises(ValueError, match="strategy"):
        two_by_two_padding("diagonal", 0, 1)


def test_the_network_numbers_its_2x2_layers():
    spec = mobilenetv3_small_xsep_spec(1.0)
    paddings = [p for p in spec.two_by_two_paddings() if p]
    assert paddings == ["right_bottom", "left_top", "left_bottom", "right_top", "right_bottom", "left_top"]
    down = [p for p in mobilenetv3_small_xsep_spec(1.0, downsample=True).two_by_two_paddings() if p]
    assert len(down) == 7 and down[-1] == "left_bottom"
    assert not any(mobilenetv3_small_xsep_spec(1.0, form="no_2x2").two_by_two_paddings())
    assert set(mobilenetv3_small_xsep_spec(1.0, padding="original").two_by_two_paddings()) == {None, "original"}


# ----------------------------------------------------------------------------- MobileNetV3-Small-XSep


def test_registered_widths():
    assert list_models("*xsep") == [f"mobilenetv3_small_{w}_xsep" for w in ("050", "075", "100", "125")]


@pytest.mark.parametrize("width", sorted(XSEP_VS_DW))
def test_xsep_has_fewer_params_and_macs_than_the_dw_baseline(width):
    (base_p, base_m), (xsep_p, xsep_m) = XSEP_VS_DW[width]
    assert sizes(mobilenetv3_small_xsep_spec(width, xsep=False)) == (base_p, base_m)
    assert sizes(mobilenetv3_small_xsep_spec(width)) == (xsep_p, xsep_m)
    assert xsep_p < base_p and xsep_m < base_m
    # Per XSep layer on C mid channels: k0^2 C depthwise + 2C BN become (4 + 2k) C + 6C.
    spec = mobilenetv3_small_xsep_spec(width)
    saved, c_in = 0, spec.stem
    for block in (b for s in spec.stages for b in s):
        if block.xsep:
            saved += (25 - (4 + 2 * block.kernel) - 4) * make_divisible(c_in * block.exp)
        c_in = block.out
    assert base_p - xsep_p == saved


def test_baseline_of_xsep_equals_mobilenetv3_small():
    n = create_model("mobilenetv3_small_100", num_classes=10)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    expected = count_params(jax.eval_shape(lambda x: n.init(jax.random.key(0), x), x))
    assert sizes(mobilenetv3_small_xsep_spec(1.0, xsep=False), 32, 10)[0] == expected


def test_xsep_false_option_registers_the_dw_baseline_at_small_input_strides():
    def model_sizes(**options):
        model = create_model("mobilenetv3_small_100_xsep", num_classes=10, cifar=True, **options)
        x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        return count_params(variables), count_macs(model, (32, 32, 3))

    assert model_sizes(xsep=False) == sizes(mobilenetv3_small_xsep_spec(1.0, setting="cifar", xsep=False), 32, 10)
    assert model_sizes() == sizes(mobilenetv3_small_xsep_spec(1.0, setting="cifar"), 32, 10)
    assert model_sizes()[0] < model_sizes(xsep=False)[0]
    with pytest.raises(TypeError, match="xsep must be a bool"):
        create_model("mobilenetv3_small_100_xsep", xsep="no")


def test_tiny_imagenet_setting_saves_the_papers_4_75_percent():
    # Paper 4.2: "saving 4.75 % of the computational cost on Tiny-ImageNet" (56 px crops, 200 classes).
    base = sizes(mobilenetv3_small_xsep_spec(1.0, setting="tiny_imagenet", xsep=False), 56, 200)[1]
    xsep = sizes(mobilenetv3_small_xsep_spec(1.0, setting="tiny_imagenet"), 56, 200)[1]
    assert round(100 * (1 - xsep / base), 2) == 4.75


@pytest.mark.parametrize(("kernel", "downsample"), [(7, False), (5, True)])
def test_larger_kernel_and_downsampling_experiments_save_more(kernel, downsample):
    kw = {"kernel": kernel, "downsample": downsample, "setting": "tiny_imagenet"}
    base = sizes(mobilenetv3_small_xsep_spec(1.0, xsep=False, **kw), 56, 200)
    xsep = sizes(mobilenetv3_small_xsep_spec(1.0, **kw), 56, 200)
    assert xsep[0] < base[0] and xsep[1] < base[1]


def test_cifar_option_ends_at_4x4_and_options_are_checked():
    model = create_model("mobilenetv3_small_050_xsep", cifar=True, num_classes=10)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    out, inter = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), variables, x
    )
    assert out.shape == (2, 10)
    assert inter["intermediates"]["blocks_5_0"]["__call__"][0].shape == (2, 4, 4, 288)
    for kwargs, match in (
        ({"kernel": 3}, "kernel"),
        ({"padding": "diagonal"}, "xsep_padding"),
        ({"form": "sideways"}, "xsep_form"),
        ({"cifar": True, "tiny_imagenet": True}, "exclusive"),
        ({"cifar": 1}, "cifar must be a bool"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            create_model("mobilenetv3_small_100_xsep", **kwargs)
    bad = create_model("mobilenetv3_small_100_xsep", form="parallel", downsample=True)
    with pytest.raises(ValueError, match="parallel"):
        jax.eval_shape(lambda: bad.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))


@pytest.mark.parametrize("padding", ["original", "right_bottom"])
def test_logits_equal_an_independent_pytorch_xsepconv(padding):
    # The registered default (improved padding) is in
    # tests/interop/test_torch_weights.py::test_weights_load_strictly_and_logits_equal_timm.
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from torch_parity import randomise_batch_norm

    from freqjax.interop.torch_models import xsep_reference
    from freqjax.interop.torch_weights import from_torch

    torch.manual_seed(0)
    reference = xsep_reference(0.5, num_classes=6, padding=padding).eval()
    randomise_batch_norm(reference, torch)
    variables = from_torch(reference.state_dict(), "mobilenetv3_small_050_xsep", padding=padding)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = create_model("mobilenetv3_small_050_xsep", num_classes=6, padding=padding)
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
