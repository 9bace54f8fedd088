"""DenseNet-121: exact size, MACs, torchvision names, stage structure, the 1-pixel transition rule.

Parity with timm's densenet121 is tests/interop/test_torch_weights.py::test_weights_load_strictly_and_logits_equal_timm.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.interop.torch_weights import from_torch
from freqjax.models import count_macs, count_params, create_model, model_info
from freqjax.models.densenet import halve_by_average


def abstract_init(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, capture_intermediates=True), x)


def test_parameter_count_is_exact():
    _, v = abstract_init(create_model("densenet121"), (1, 224, 224, 3))
    assert count_params(v) == 7_978_856


@pytest.mark.parametrize(("side", "gmacs"), [(224, 2.834)])
def test_macs_within_three_percent(side, gmacs):
    macs = count_macs(create_model("densenet121"), (side, side, 3))
    assert abs(macs / 1e9 - gmacs) <= 0.03 * gmacs, macs


def test_stages_grow_by_the_growth_rate_and_halve_at_transitions():
    model = create_model("densenet121", num_classes=0)
    out, state = abstract_init(model, (1, 224, 224, 3))
    assert out.shape == (1, 1024)
    feats = state["intermediates"]["features"]
    # 64 + 6*32 = 256 -> 128 + 12*32 = 512 -> 256 + 24*32 = 1024 -> 512 + 16*32 = 1024 channels.
    for b, (side, ch) in enumerate([(56, 256), (28, 512), (14, 1024), (7, 1024)]):
        assert feats[f"denseblock{b + 1}"]["__call__"][0].shape == (1, side, side, ch)
    assert model_info("densenet121").default_drop_rate == 0.0


def test_torchvision_state_dict_loads_strictly():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    sd = torchvision.models.densenet121(num_classes=5).state_dict()
    variables = from_torch(sd, "densenet121")
    got = variables["params"]["features"]["denseblock3"]["denselayer24"]["conv2"]["kernel"]
    ref = sd["features.denseblock3.denselayer24.conv2.weight"].numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(got), ref)
    np.testing.assert_array_equal(
        np.asarray(variables["batch_stats"]["features"]["transition2"]["norm"]["var"]),
        sd["features.transition2.norm.running_var"].numpy(),
    )


def test_transition_pool_floors_odd_sides_and_keeps_one_pixel_maps():
    x = jnp.arange(2 * 7 * 1 * 3, dtype=jnp.float32).reshape(2, 7, 1, 3)
    y = halve_by_average(x)
    assert y.shape == (2, 3, 1, 3)  # floor(7 / 2) like PyTorch; the 1-wide side stays 1
    np.testing.assert_allclose(y[:, 0, 0], (x[:, 0, 0] + x[:, 1, 0]) / 2)
    # 16 px input: the last transition sees a 1x1 map, where PyTorch would fail; freqjax keeps it.
    out = jax.eval_shape(
        lambda: create_model("densenet121", num_classes=3).init_with_output(
            jax.random.key(0), jnp.zeros((1, 16, 16, 3))
        )[0]
    )
    assert out.shape == (1, 3)


def test_wrong_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"3 channels.*\(1, 32, 32, 1\)"):
        create_model("densenet121").init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
