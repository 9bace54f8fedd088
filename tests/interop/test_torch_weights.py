"""PyTorch weight import: strictness without torch, numerical parity with timm when torch is present."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_parity import randomise_batch_norm

from freqjax.interop.torch_weights import from_torch
from freqjax.models import create_model, list_models, model_info
from freqjax.models.naming import torch_key


def numpy_state_dict(name, num_classes=10, **options):
    """A synthetic state_dict with the names and layouts freqjax expects (no torch needed)."""
    model = create_model(name, num_classes=num_classes, **options)
    x = jax.ShapeDtypeStruct((1, *model_info(name).input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    rng = np.random.default_rng(0)
    sd = {}
    for collection, tree in shapes.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            keys = tuple(k.key for k in path)
            shape = leaf.shape
            if len(shape) == 4:
                shape = (shape[3], shape[2], shape[0], shape[1])
            elif len(shape) == 2:
                shape = shape[::-1]
            value = rng.normal(size=shape).astype(np.float32)
            if keys[-1] == "var":
                value = np.abs(value) + 0.5
            sd[torch_key(collection, keys, {"dct_front": "conv_stem"} if name == "lefun" else None)] = value
    return sd


def test_torch_key_rule():
    assert torch_key("params", ("blocks_1_0", "conv_pw", "kernel")) == "blocks.1.0.conv_pw.weight"
    assert torch_key("params", ("blocks_0_0", "se", "conv_reduce", "bias")) == "blocks.0.0.se.conv_reduce.bias"
    assert torch_key("batch_stats", ("bn1", "var")) == "bn1.running_var"
    assert torch_key("params", ("bn2", "scale")) == "bn2.weight"


def test_round_trip_layouts_without_torch():
    sd = numpy_state_dict("efun_s_plus")
    variables = from_torch(sd, "efun_s_plus")
    k = variables["params"]["blocks_1_0"]["conv_dw"]["kernel"]
    np.testing.assert_array_equal(k, sd["blocks.1.0.conv_dw.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["classifier"]["kernel"], sd["classifier.weight"].T)
    np.testing.assert_array_equal(variables["batch_stats"]["bn2"]["mean"], sd["bn2.running_mean"])
    model = create_model("efun_s_plus", num_classes=10)
    out = model.apply(variables, jnp.ones((1, 4, 4, 192)))
    assert out.shape == (1, 10) and np.isfinite(out).all()


def test_fun_checkpoint_names_have_no_stem_and_carry_bn_counters():
    # The FUN repository's eFUN checkpoints: timm 0.2.2 names, empty stem, BN num_batches_tracked.
    sd = numpy_state_dict("efun", num_classes=1000)
    assert not any(k.startswith(("conv_stem", "bn1.")) for k in sd)
    bns = {k.rsplit(".", 1)[0] for k in sd if k.endswith("running_mean")}
    sd.update({f"{m}.num_batches_tracked": np.zeros((), np.float32) for m in bns})
    variables = from_torch(sd, "efun")
    assert variables["params"]["classifier"]["kernel"].shape == (1280, 1000)


def test_strict_errors_list_every_problem():
    sd = numpy_state_dict("mobilenetv3_small_075")
    del sd["blocks.2.1.conv_pwl.weight"]
    sd["blocks.9.9.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    sd["conv_head.weight"] = sd["conv_head.weight"][:, :-1]
    sd["stray.num_batches_tracked"] = np.zeros((), np.float32)
    with pytest.raises(ValueError) as err:
        from_torch(sd, "mobilenetv3_small_075")
    msg = str(err.value)
    assert "1 missing: blocks.2.1.conv_pwl.weight" in msg
    assert "2 unexpected: blocks.9.9.conv.weight, stray.num_batches_tracked" in msg
    assert "1 mis-shaped: conv_head.weight" in msg


def test_bad_arguments():
    with pytest.raises(TypeError, match="mapping"):
        from_torch([("a", 1)], "efun")
    with pytest.raises(ValueError, match="unknown model name"):
        from_torch({}, "efunn")
    sd = numpy_state_dict("efun_s_plus")
    sd["bn2.weight"] = sd["bn2.weight"].astype(np.int64)
    with pytest.raises(TypeError, match=r"state_dict\['bn2.weight'\].*floating"):
        from_torch(sd, "efun_s_plus")
    with pytest.raises(TypeError, match=r"state_dict\['fc.weight'\] must be a torch tensor or numpy array, got str"):
        from_torch({"fc.weight": "abc"}, "resnet18")


# ----------------------------------------------------------------------------- parity with timm


@pytest.mark.parametrize("name", list_models())
def test_weights_load_strictly_and_logits_equal_timm(name):
    from freqjax.interop.torch_models import has_counterpart, timm_model

    if not has_counterpart(name):
        pytest.skip(f"{name} has no PyTorch counterpart in freqjax.interop.torch_models")
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")

    torch.manual_seed(0)
    reference = timm_model(name, num_classes=10)
    randomise_batch_norm(reference, torch)
    variables = from_torch(reference.state_dict(), name)  # strict: every key and shape matches
    info = model_info(name)
    if info.variant_of is not None:
        # a width / depth variant runs the code of its base model, whose logits are compared; its
        # own names and shapes were just checked by the strict conversion
        return
    side = 8 if info.input_kind == "dct" else 64  # any size: parity does not depend on it
    x = np.random.default_rng(1).normal(size=(2, side, side, info.input_shape[-1])).astype(np.float32)
    with torch.inference_mode():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    model = create_model(name, num_classes=10)
    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    # Multi-exit models (MSNet) return one logits array per exit; compare each.
    expected, got = (expected, got) if isinstance(got, tuple) else ((expected,), (got,))
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert np.abs(e.numpy()).max() > 0.1  # logits of a useful scale
        np.testing.assert_allclose(np.asarray(g), e.numpy(), rtol=0, atol=1e-4)


def test_load_torch_checkpoint_unwraps_training_checkpoints(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from freqjax.interop.torch_models import timm_model
    from freqjax.interop.torch_weights import load_torch_checkpoint

    reference = timm_model("mobilenetv3_small_075", num_classes=5)
    sd = reference.state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "state_dict_ema": sd}, path)
    plain = from_torch(sd, "mobilenetv3_small_075")
    for key in (None, "state_dict_ema"):
        loaded = load_torch_checkpoint(path, "mobilenetv3_small_075", key=key)
        jax.tree.map(np.testing.assert_array_equal, loaded, plain)
    with pytest.raises(ValueError, match="key 'ema'"):
        load_torch_checkpoint(path, "mobilenetv3_small_075", key="ema")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_torch_checkpoint(tmp_path / "none.pth", "mobilenetv3_small_075")
