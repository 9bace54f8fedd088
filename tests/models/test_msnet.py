"""MSNet: structure, costs, calibrated early exit (equality, monotone MACs, real saving), errors.

One random-weight msnet_resnet18 (10 classes, 64x64 images, batch 32) serves every numeric test,
so each jitted piece compiles once.
"""

import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from msnet_weights import spread_variables

from freqjax.models import count_macs, count_params, create_model, list_models, model_info
from freqjax.models.msnet import MSNet, downsample2, upsample_to
from freqjax.models.msnet_infer import (
    EXIT_HIGH,
    EXIT_LOW,
    bucket_sizes,
    calibrated_predict,
    exit_macs,
    two_exit_predictions,
)

SIDE, BATCH, CLASSES = 64, 32, 10


@pytest.fixture(scope="module")
def net():
    model = create_model("msnet_resnet18", num_classes=CLASSES)
    variables = spread_variables(model, (SIDE, SIDE, 3))
    images = np.random.default_rng(1).normal(size=(BATCH, SIDE, SIDE, 3)).astype(np.float32)
    conf, pred_low, pred_high = two_exit_predictions(model, variables, images)
    return model, variables, images, conf, pred_low, pred_high


def midpoints(conf, fractions):
    """Thresholds between sorted confidences, so float rounding cannot move an image across."""
    s = np.sort(conf)
    return [float((s[k - 1] + s[k]) / 2) for k in (int(f * len(s)) for f in fractions)]


# ----------------------------------------------------------------------------- structure and costs


def test_registered_models_are_two_base_networks():
    assert list_models("msnet_*") == [
        "msnet_cifar_resnet20",
        "msnet_cifar_resnet8",
        "msnet_densenet121",
        "msnet_mobilenetv1_025",
        "msnet_mobilenetv1_050",
        "msnet_mobilenetv1_075",
        "msnet_mobilenetv1_100",
        "msnet_resnet18",
    ]
    assert model_info("msnet_resnet18").resolution == 256 and model_info("msnet_densenet121").resolution == 224
    v = jax.eval_shape(lambda: create_model("msnet_resnet18").init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert sorted(v["params"]) == ["high", "low"]
    assert count_params(v) == 2 * 11_689_512  # two ResNet-18s, torchvision names inside each
    assert v["params"]["high"]["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 512, 512)


def test_cifar_msnet_is_two_cifar_resnets_with_l_at_half_the_side():
    model = create_model("msnet_cifar_resnet8", num_classes=10)
    base = create_model("cifar_resnet8", num_classes=10)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert count_params(v) == 2 * count_params(
        jax.eval_shape(lambda: base.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    )
    low, high = exit_macs(model, (32, 32, 3))
    assert (low, high) == (count_macs(base, (16, 16, 3)), count_macs(base, (32, 32, 3)))
    variables = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    logits_low, logits_high = model.apply(variables, x)
    # Network-L alone is the CIFAR ResNet on the 2x-downsampled images
    low_alone = base.apply({k: variables[k]["low"] for k in variables}, x.reshape(2, 16, 2, 16, 2, 3).mean((2, 4)))
    np.testing.assert_allclose(logits_low, low_alone, rtol=1e-5, atol=1e-5)
    assert logits_high.shape == (2, 10)


def test_two_scale_cost_of_ms_resnet18_is_the_papers():
    low, high = exit_macs(create_model("msnet_resnet18"), (256, 256, 3))
    assert low == count_macs(create_model("resnet18"), (128, 128, 3))
    assert high == count_macs(create_model("resnet18"), (256, 256, 3))
    assert abs((low + high) / 1e6 - 2983) <= 0.03 * 2983, low + high
    # MS-MobileNet 1.0 128/256 = MobileNet @128 + @256 (paper Table 2: 186 M + 743 M).
    low, high = exit_macs(create_model("msnet_mobilenetv1_100"), (256, 256, 3))
    assert abs(low / 1e6 - 186) <= 0.03 * 186 and abs(high / 1e6 - 743) <= 0.03 * 743


def test_upsample_aligns_by_crop_or_zero_pad():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    up = upsample_to(x, 7, 5)
    assert up.shape == (1, 7, 5, 1)
    np.testing.assert_array_equal(
        up[0, :6, :, 0], np.repeat(np.repeat(np.arange(9.0).reshape(3, 3), 2, 0), 2, 1)[:, :5]
    )
    assert float(jnp.abs(up[0, 6]).max()) == 0.0  # padded row
    np.testing.assert_array_equal(downsample2(jnp.ones((2, 4, 6, 3))), jnp.ones((2, 2, 3, 3)))


def test_low_is_the_base_on_the_half_image_and_high_adds_its_features(net):
    model, variables, images, *_ = net
    base = create_model("resnet18", num_classes=CLASSES)
    x = images[:2]
    part = {k: variables[k]["low"] for k in variables}
    logits_low, feats = model.apply(variables, x, method=MSNet.forward_low)
    np.testing.assert_allclose(logits_low, base.apply(part, downsample2(x)), rtol=0, atol=1e-4)
    assert [f.shape[1] for f in feats] == [8, 8, 4, 2, 1]  # stem and four stages of L on 32x32
    # With L's features zeroed, Network-H is exactly the plain base network on the full image.
    zeros = tuple(jnp.zeros_like(f) for f in feats)
    part = {k: variables[k]["high"] for k in variables}
    high_alone = model.apply(variables, x, zeros, method=MSNet.forward_high)
    np.testing.assert_allclose(high_alone, base.apply(part, x), rtol=0, atol=1e-4)
    fused = model.apply(variables, x, feats, method=MSNet.forward_high)
    assert float(jnp.abs(fused - high_alone).max()) > 1e-2  # the residual fusion changes H's output


@pytest.mark.parametrize("name", ["msnet_resnet18", "msnet_densenet121"])
def test_logits_equal_an_independent_pytorch_msnet(name):
    # At 96 px Network-L's upsampled maps overhang H's (ResNet: crop) or fall short (DenseNet's
    # floor pooling: zero-pad), so both alignment rules are checked against PyTorch.
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from torch_parity import randomise_batch_norm

    from freqjax.interop.torch_models import timm_model
    from freqjax.interop.torch_weights import from_torch

    torch.manual_seed(0)
    reference = timm_model(name, num_classes=CLASSES)
    randomise_batch_norm(reference, torch)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(20.0)  # logits of a useful scale (timm's classifier init is tiny)
    variables = from_torch(reference.state_dict(), name)  # num_classes read from low.fc / low.classifier
    x = np.random.default_rng(2).normal(size=(2, 96, 96, 3)).astype(np.float32)
    with torch.inference_mode():
        expected = [t.numpy() for t in reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))]
    model = create_model(name, num_classes=CLASSES)
    got = jax.jit(model.apply)(variables, x)
    for g, e in zip(got, expected, strict=True):
        assert np.abs(e).max() > 0.2
        np.testing.assert_allclose(np.asarray(g), e, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- calibrated inference


def test_threshold_zero_exits_every_image_at_low_without_touching_high(net):
    model, variables, images, *_ = net
    low, _ = exit_macs(model, (SIDE, SIDE, 3))
    # Network-H's variables removed: threshold 0 must never run it.
    low_only = {k: {"low": variables[k]["low"]} for k in variables}
    out = calibrated_predict(model, low_only, images, 0.0)
    assert (out.exits == EXIT_LOW).all() and (out.macs == low).all()
    with pytest.raises(Exception, match="high"):
        calibrated_predict(model, low_only, images, 1.0)


def test_threshold_one_sends_every_image_through_high(net):
    model, variables, images, conf, _, pred_high = net
    low, high = exit_macs(model, (SIDE, SIDE, 3))
    assert conf.max() < 1.0
    out = calibrated_predict(model, variables, images, 1.0)
    assert (out.exits == EXIT_HIGH).all() and (out.macs == low + high).all()
    np.testing.assert_array_equal(out.predictions, pred_high)


def test_calibrated_equals_both_networks_then_select_and_macs_are_monotone(net):
    model, variables, images, conf, pred_low, pred_high = net
    assert conf.std() > 0.05  # spread confidences: the thresholds below split the batch
    thresholds = [0.0, *midpoints(conf, (0.1, 0.4, 0.7, 0.95)), 1.0]
    means = []
    for t in thresholds:
        out = calibrated_predict(model, variables, images, t)
        expected = np.where(conf > t, pred_low, pred_high)
        np.testing.assert_array_equal(out.predictions, expected)
        np.testing.assert_array_equal(out.exits, np.where(conf > t, EXIT_LOW, EXIT_HIGH))
        means.append(out.mean_macs)
    assert all(a < b for a, b in itertools.pairwise(means)), means
    assert np.unique(pred_low != pred_high).size == 2  # the selection matters for some images


def test_buckets_bound_the_number_of_compiled_sub_batches():
    assert bucket_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert bucket_sizes(20) == (1, 2, 4, 8, 16, 20)
    assert bucket_sizes(1) == (1,)


@pytest.mark.bench
def test_early_exits_take_less_wall_time_than_the_full_two_network_pass(net):
    model, variables, images, conf, *_ = net
    threshold = midpoints(conf, (4 / BATCH,))[0]  # 4 of 32 images go on to Network-H

    def timed(fn):
        fn()  # compile / warm up
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return float(np.median(runs))

    # Both networks on every image (already compiled by the fixture) is the full two-network pass.
    t_full = timed(lambda: two_exit_predictions(model, variables, images))
    t_cal = timed(lambda: calibrated_predict(model, variables, images, threshold))
    assert calibrated_predict(model, variables, images, threshold).fraction_low == 28 / 32
    print(f"calibrated / full wall time with 28 of 32 early exits: {t_cal / t_full:.2f}")
    assert t_cal < 0.75 * t_full, (t_cal, t_full)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_are_clear_errors(net):
    model, variables, images, *_ = net
    for t in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="threshold must be a number in"):
            calibrated_predict(model, variables, images, t)
    with pytest.raises(ValueError, match=r"even.*63x64"):
        calibrated_predict(model, variables, images[:, :63], 0.5)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*\(64, 64, 3\)"):
        calibrated_predict(model, variables, images[0], 0.5)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        calibrated_predict(model, variables, images[..., :1], 0.5)
    with pytest.raises(TypeError, match="MSNet"):
        calibrated_predict(create_model("resnet18"), variables, images, 0.5)
    with pytest.raises(ValueError, match="buckets"):
        calibrated_predict(model, variables, images, 0.5, buckets=(4, 8))
    with pytest.raises(ValueError, match="even"):
        model.init(jax.random.key(0), jnp.zeros((1, 33, 32, 3)))
    with pytest.raises(ValueError, match="RGB staged network"):
        MSNet(base="efun").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="num_classes >= 1"):
        create_model("msnet_resnet18", num_classes=0).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
