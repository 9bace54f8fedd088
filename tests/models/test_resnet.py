"""ResNet-18/34/50 and ResFUN: exact sizes, MACs, torchvision weight import, structure, errors.

Parity with timm for every registered model (these included) is
tests/interop/test_torch_weights.py::test_weights_load_strictly_and_logits_equal_timm.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from freqjax.interop.torch_weights import from_torch
from freqjax.models import abstract_variables, count_macs, count_params, create_model, model_info
from freqjax.models.resnet import BasicBlock, Bottleneck

# docs/reference.md section 3 and 4 (torchvision's counts; ResFUN's decision gives the paper's 10.4M).
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resfun": 10_397_672}
# (model, side) -> GMACs: docs/reference.md section 4 at 224; MSNet Table 1 at 256 (2,386 M).
GMACS = {("resnet18", 224): 1.814, ("resnet18", 256): 2.386, ("resnet34", 224): 3.664, ("resnet50", 224): 4.089}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_are_exact(name):
    model = create_model(name)
    assert count_params(abstract_variables(model, (1, *model_info(name).input_shape))) == PARAMS[name]


@pytest.mark.parametrize(("name", "side"), sorted(GMACS))
def test_macs_within_three_percent(name, side):
    macs = count_macs(create_model(name), (side, side, 3))
    assert abs(macs / 1e9 - GMACS[name, side]) <= 0.03 * GMACS[name, side], macs


def test_resfun_structure_and_macs():
    info = model_info("resfun")
    assert (info.input_kind, info.input_shape) == ("dct", (28, 28, 192))
    v = abstract_variables(create_model("resfun"), (1, 28, 28, 192))["params"]
    assert "conv1" not in v and "layer4" not in v
    # conv3_x at stride 1 takes the 192 DCT channels; widths 128/192/256, outputs 512/768/1024.
    assert v["layer1_0"]["conv1"]["kernel"].shape == (1, 1, 192, 128)
    assert v["layer1_0"]["downsample_0"]["kernel"].shape == (1, 1, 192, 512)
    assert v["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 192, 192)
    assert v["layer3_2"]["conv3"]["kernel"].shape == (1, 1, 256, 1024)
    assert v["fc"]["kernel"].shape == (1024, 1000)
    # Between ResNet-18 and ResNet-34 in cost, as the paper's throughput column suggests.
    macs = count_macs(create_model("resfun"), info.input_shape)
    assert 1.9e9 < macs < 2.1e9, macs


def test_v15_stride_on_the_3x3_conv():
    model = create_model("resnet50", num_classes=0)
    x = jnp.zeros((1, 64, 64, 3))
    (out, state) = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, capture_intermediates=True))
    assert out.shape == (1, 2048)
    # v1.5: in a stride-2 stage the first 1x1 keeps the 16x16 resolution and the 3x3 halves it.
    blk = state["intermediates"]["layer2_0"]
    assert blk["conv1"]["__call__"][0].shape == (1, 16, 16, 128)
    assert blk["conv2"]["__call__"][0].shape == (1, 8, 8, 128)


def test_zero_init_last_bn_makes_blocks_start_as_identity_branches():
    # timm's zero_init_last: the last BN of each residual branch starts at scale 0, the shortcut's at 1.
    for block, planes in ((BasicBlock, 8), (Bottleneck, 4)):
        v = block(planes, stride=2, downsample=True).init(jax.random.key(0), jnp.ones((1, 8, 8, 8)))["params"]
        last = "bn2" if block is BasicBlock else "bn3"
        assert float(jnp.abs(v[last]["scale"]).max()) == 0.0
        assert float(jnp.abs(v["downsample_1"]["scale"]).min()) == 1.0
        assert float(jnp.abs(v["bn1"]["scale"]).min()) == 1.0


def test_torchvision_resnet18_loads_and_matches():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=7).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    variables = from_torch(reference.state_dict(), "resnet18")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = jax.jit(lambda v, x: create_model("resnet18", num_classes=7).apply(v, x))(variables, x)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-4)


def test_wrong_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"3 channels.*\(1, 32, 32, 192\)"):
        create_model("resnet18").init(jax.random.key(0), jnp.zeros((1, 32, 32, 192)))
    with pytest.raises(ValueError, match=r"192 channels"):
        create_model("resfun").init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"192 channels"):
        create_model("resfun").init(jax.random.key(0), jnp.zeros((32, 32, 192)))
