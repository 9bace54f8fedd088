"""freqjax -> PyTorch export: round trips to 1e-6 in every layout, files, the export command, torchvision layouts."""

import jax
import numpy as np
import pytest
from test_torch_weights import numpy_state_dict
from torch_parity import randomise_batch_norm

from freqjax.interop.layouts import layouts
from freqjax.interop.torch_weights import from_torch, read_state_dict, save_state_dict, to_torch
from freqjax.models import list_models, model_info

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

BASE_MODELS = [n for n in list_models() if model_info(n).variant_of is None]


def _tensors(state_dict):
    return {k: torch.from_numpy(v) for k, v in state_dict.items()}


def _assert_same(expected, got):
    assert set(expected) == set(got)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            continue
        np.testing.assert_allclose(np.asarray(got[key]), value.numpy(), rtol=0, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", BASE_MODELS)
def test_export_round_trips_into_the_pytorch_model(name):
    from freqjax.interop.torch_models import has_counterpart, timm_model

    if not has_counterpart(name):
        pytest.skip(f"{name} has no PyTorch counterpart in freqjax.interop.torch_models")
    torch.manual_seed(0)
    reference = timm_model(name, num_classes=10)
    randomise_batch_norm(reference, torch)
    expected = reference.state_dict()
    exported = to_torch(from_torch(expected, name), name)
    reference.load_state_dict(_tensors(exported), strict=True)  # every key, every shape
    _assert_same(expected, exported)


@pytest.mark.parametrize(("name", "arch"), [("mobilenetv2_050", "mobilenet_v2"), ("resnet50", "resnet50")])
def test_torchvision_state_dicts_load_strictly_and_export_back(name, arch):
    import torchvision

    kwargs = {"width_mult": 0.5} if arch == "mobilenet_v2" else {}
    reference = getattr(torchvision.models, arch)(weights=None, num_classes=10, **kwargs).eval()
    randomise_batch_norm(reference, torch)
    expected = reference.state_dict()
    variables = from_torch(expected, name)  # strict: torchvision's 'features.N.conv.M' names included
    exported = to_torch(variables, name, layout="torchvision")
    reference.load_state_dict(_tensors(exported), strict=True)
    _assert_same(expected, exported)


@pytest.mark.parametrize("layout", ["timm", "official"])
def test_rexnet_exports_to_both_published_layouts(layout):
    from freqjax.interop.torch_models import rexnet_reference, timm_model

    reference = timm_model("rexnet_100", num_classes=10) if layout == "timm" else rexnet_reference(1.0, num_classes=10)
    randomise_batch_norm(reference, torch)
    expected = reference.state_dict()
    exported = to_torch(from_torch(expected, "rexnet_100"), "rexnet_100", layout=layout)
    reference.load_state_dict(_tensors(exported), strict=True)
    _assert_same(expected, exported)


def test_files_round_trip_and_bad_variables_are_listed(tmp_path):
    sd = numpy_state_dict("efun_s_plus")
    variables = from_torch(sd, "efun_s_plus")
    for suffix in (".pth", ".safetensors"):
        path = tmp_path / f"efun{suffix}"
        assert save_state_dict(variables, "efun_s_plus", path) == path.stat().st_size
        back = from_torch(read_state_dict(path), "efun_s_plus")
        jax.tree.map(np.testing.assert_array_equal, back, variables)
    broken = jax.tree.map(np.asarray, variables)
    del broken["params"]["bn2"]["scale"]
    broken["params"]["classifier"]["kernel"] = broken["params"]["classifier"]["kernel"][:-1]
    broken["params"]["extra"] = {"kernel": np.zeros(3, np.float32)}
    with pytest.raises(ValueError) as err:
        to_torch(broken, "efun_s_plus")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("variables does not match freqjax model 'efun_s_plus'")
    assert "1 missing: params/bn2/scale" in msg and "1 unexpected: params/extra/kernel" in msg
    assert "1 mis-shaped: params/classifier/kernel" in msg
    with pytest.raises(
        ValueError, match=r"layout must be one of \['timm'\] for model 'efun_s_plus', got 'torchvision'"
    ):
        to_torch(variables, "efun_s_plus", layout="torchvision")
    with pytest.raises(ValueError, match=r"must end in one of \['.pth', '.pt', '.safetensors'\]"):
        save_state_dict(variables, "efun_s_plus", tmp_path / "efun.npz")
    assert layouts("mobilenetv2_100") == ("timm", "torchvision") and layouts("rexnet_lite_100") == ("official",)


def test_export_command_from_a_workdir(tmp_path, capsys):
    from config_files import tiny_train_config

    from freqjax.interop.__main__ import main
    from freqjax.interop.torch_models import timm_model
    from freqjax.train import loop as train
    from freqjax.train.checkpoint import Checkpointer, load_weights
    from freqjax.train.workdir import write_run_config

    s = train.Setup(tiny_train_config(), str(tmp_path / "run"))
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints")
    ckpt.save(1, s.init_state(), iter(s.train_loader()))
    ckpt.close()
    write_run_config(tmp_path / "run", s.config, s.num_classes)
    out = tmp_path / "net.pth"
    assert main(["export", "--weights", str(tmp_path / "run"), "--out", str(out)]) == 0
    reference = timm_model("cifar_resnet8", num_classes=10)
    reference.load_state_dict(torch.load(out, weights_only=True), strict=True)
    np.testing.assert_array_equal(
        reference.state_dict()["conv1.weight"].numpy().transpose(2, 3, 1, 0),
        load_weights(tmp_path / "run")["params"]["conv1"]["kernel"],
    )
    before = out.read_bytes()
    assert main(["export", "--weights", str(tmp_path / "run"), "--out", str(out)]) == 1
    assert out.read_bytes() == before  # never overwritten
    assert main(["export", "--weights", str(out), "--out", str(tmp_path / "again.pth")]) == 1  # no model name
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("freqjax.interop: error: --out") and "exists" in err[0]
    assert err[1].startswith("freqjax.interop: error: --model is needed")
    assert not (tmp_path / "again.pth").exists()
