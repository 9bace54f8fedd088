"""MobileNetV1 (timm definition) at widths 0.25-1.0: exact size, MACs of MSNet Table 2, structure.

Parity with timm (mobilenetv1_100 and timm's generator at the other widths) is
tests/interop/test_torch_weights.py::test_weights_load_strictly_and_logits_equal_timm.
"""

import warnings

import jax
import jax.numpy as jnp
import pytest

from freqjax.models import count_macs, count_params, create_model, list_models

# MSNet Table 2 / docs/reference.md section 4 (from the MobileNet paper): (width, side) -> MMACs.
MMACS = {
    ("100", 224): 569,
    ("100", 192): 418,
    ("100", 128): 186,
    ("075", 224): 325,
    ("050", 224): 149,
    ("025", 224): 41,
}


def test_registered_widths():
    assert list_models("mobilenetv1_*") == ["mobilenetv1_025", "mobilenetv1_050", "mobilenetv1_075", "mobilenetv1_100"]


def test_parameter_count_is_exact():
    model = create_model("mobilenetv1_100")
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    assert count_params(v) == 4_231_976
    # 13 separable blocks, activation after both convs, no head conv: stem, 13 x (dw, pw), classifier.
    blocks = [k for k in v["params"] if k.startswith("blocks_")]
    assert len(blocks) == 13 and "conv_head" not in v["params"]
    assert v["params"]["classifier"]["kernel"].shape == (1024, 1000)


@pytest.mark.parametrize(("width", "side"), sorted(MMACS))
def test_macs_within_three_percent_of_msnet_table2(width, side):
    macs = count_macs(create_model(f"mobilenetv1_{width}"), (side, side, 3))
    assert abs(macs / 1e6 - MMACS[width, side]) <= 0.03 * MMACS[width, side], macs


def test_width_scales_channels_by_make_divisible():
    model = create_model("mobilenetv1_025", num_classes=0)
    out, v = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert out.shape == (1, 256)
    assert v["params"]["conv_stem"]["kernel"].shape == (3, 3, 3, 8)
    assert v["params"]["blocks_3_5"]["conv_pw"]["kernel"].shape == (1, 1, 128, 128)


def test_drop_path_has_nothing_to_drop_and_says_so():
    model = create_model("mobilenetv1_050", num_classes=2, drop_path_rate=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert any("drop_path_rate has no effect" in str(w.message) for w in caught)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 32, 32, 4\)"):
        create_model("mobilenetv1_100").init(jax.random.key(0), jnp.zeros((2, 32, 32, 4)))
    from freqjax.models.mobilenetv1 import MobileNetV1

    with pytest.raises(ValueError, match="width must be a number > 0, got -1"):
        MobileNetV1(width=-1).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
