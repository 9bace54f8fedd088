"""config.init_from from PyTorch state dicts, compressed files and runs; init_head; --mode eval from weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from config_files import tiny_train_config

from freqjax.train import loop as train
from freqjax.train import parallel
from freqjax.train.checkpoint import load_weights

torch = pytest.importorskip("torch")


def _config(**kw):
    return tiny_train_config(**{"num_train_steps": 2, "eval_steps": 1, "image_size": 32, **kw})


def _save(model, path):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return sd


def _torch_weight(sd, key):
    w = sd[key].numpy()
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w


@pytest.mark.parametrize(
    ("maker", "model", "filename"),
    [
        ("timm:resnet18", "resnet18", "resnet18.safetensors"),
        ("torchvision:mobilenet_v2", "mobilenetv2_050", "mobilenet_v2.pth"),
    ],
)
def test_state_dict_starts_a_run_with_a_new_10_class_head(tmp_path, maker, model, filename):
    source, arch = maker.split(":")
    if source == "timm":
        import timm

        reference = timm.create_model(arch, pretrained=False)  # 1000 classes, random weights
        stem = ("conv1.weight", ("conv1", "kernel"))
    else:
        import torchvision

        reference = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5)
        stem = ("features.0.0.weight", ("conv_stem", "kernel"))
    sd = _save(reference, tmp_path / filename)
    config = _config(model=model, init_from=str(tmp_path / filename), init_head="reinit", learning_rate=0.005)
    s = train.Setup(config, str(tmp_path / "run"))
    state = s.init_state()
    np.testing.assert_array_equal(state.params[stem[1][0]][stem[1][1]], _torch_weight(sd, stem[0]))
    head = "fc" if model.startswith("resnet") else "classifier"
    assert state.params[head]["kernel"].shape[-1] == 10  # a fresh head for the 10 synthetic classes
    batch = parallel.global_batch(next(iter(s.train_loader())), s.mesh)
    losses = []
    for _ in range(3):
        state, metrics = s.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    # random 1000-class networks at 32 px: the loss of three steps is finite, not reliably falling
    assert all(np.isfinite(losses)) and int(state.step) == 3
    assert not np.array_equal(state.params[stem[1][0]][stem[1][1]], _torch_weight(sd, stem[0]))


def test_eval_straight_from_a_state_dict_equals_pytorch(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    for m in reference.modules():  # non-trivial statistics, so a BatchNorm mix-up would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    _save(reference, tmp_path / "r18.pth")
    config = _config(model="resnet18", init_from=str(tmp_path / "r18.pth"), eval_steps=2)
    result = train.evaluate_checkpoint(config, str(tmp_path / "empty"))
    assert result["step"] == 0 and result["eval"]["count"] > 0
    assert not (tmp_path / "empty").exists()  # evaluation writes nothing

    s = train.Setup(config, str(tmp_path / "empty"))
    losses, count = [], 0
    for batch in s.eval_batches():
        x = np.array(train.steps.to_model_input(jnp.asarray(batch["image"]), "rgb"))
        with torch.inference_mode():
            logits = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        keep = torch.from_numpy(np.asarray(batch["mask"]) > 0)
        labels = torch.from_numpy(np.asarray(batch["label"])).long()
        losses.append(float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")))
        count += int(keep.sum())
    assert count == result["eval"]["count"]
    np.testing.assert_allclose(result["eval"]["loss"], sum(losses) / count, rtol=1e-4)


def test_eval_from_init_from_needs_the_head(tmp_path):
    import timm

    _save(timm.create_model("resnet18", pretrained=False, num_classes=10), tmp_path / "r18.pth")
    config = _config(model="resnet18", init_from=str(tmp_path / "r18.pth"), init_head="reinit")
    with pytest.raises(ValueError, match="would evaluate a random one"):
        train.evaluate_checkpoint(config, str(tmp_path / "empty"))


def _no_workdir_written(config, workdir, match):
    with pytest.raises(ValueError, match=match) as err:
        train.train_and_evaluate(config, str(workdir))
    assert "\n" not in str(err.value)  # one line
    assert not workdir.exists()  # nothing written
    return str(err.value)


def test_bad_sources_are_one_line_before_anything_is_compiled_or_written(tmp_path, monkeypatch):
    import timm

    _save(timm.create_model("resnet18", pretrained=False), tmp_path / "r18.pth")  # 1000 classes
    compiled = []
    monkeypatch.setattr(train.Setup, "init_state", lambda self: compiled.append(1))  # the first compilation
    work = tmp_path / "run"
    # a state dict of another architecture
    msg = _no_workdir_written(
        _config(model="mobilenetv2_050", init_from=str(tmp_path / "r18.pth"), init_head="reinit"),
        work,
        r"config\.init_from=.*r18\.pth.*does not match freqjax model 'mobilenetv2_050'",
    )
    assert "missing" in msg and "unexpected" in msg
    # init_head='load' with another class count
    _no_workdir_written(
        _config(model="resnet18", init_from=str(tmp_path / "r18.pth")),
        work,
        r"init_head='load' keeps the classifier .* 1000 classes, but this run has 10; set config\.init_head='reinit'",
    )
    # init_head='reinit' with a frozen head
    _no_workdir_written(
        _config(model="resnet18", init_from=str(tmp_path / "r18.pth"), init_head="reinit", trainable="^layer4"),
        work,
        r"init_head='reinit' starts a new classifier, but config\.trainable='\^layer4' freezes 'fc/",
    )
    # not a source at all
    (tmp_path / "weights.h5").write_bytes(b"x")
    for path, match in ((tmp_path / "none.pth", "does not exist"), (tmp_path / "weights.h5", "another suffix")):
        _no_workdir_written(_config(init_from=str(path)), work, match)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    _no_workdir_written(_config(init_from=str(tmp_path / "garbage.pth")), work, "is not a file torch.load can read")
    assert compiled == []
    with pytest.raises(ValueError, match=r"config\.init_head must be one of \['load', 'reinit'\], got 'keep'"):
        train.Setup(_config(init_from=str(tmp_path / "r18.pth"), init_head="keep"), str(work))


def test_a_compressed_file_starts_a_run(tmp_path):
    from freqjax import compress

    base = train.Setup(_config(seed=3), str(tmp_path / "unused"))
    state = base.init_state()
    variables = {"params": jax.device_get(state.params), "batch_stats": jax.device_get(state.batch_stats)}
    plan = compress.make_plan(variables, ["layer*/conv*/kernel"], "uniform", g=4, r=2.0)
    ctree = compress.compress(variables, plan)
    compress.save(ctree, tmp_path / "net.npz")
    dense = jax.device_get(compress.decompress(compress.load(tmp_path / "net.npz")))
    s = train.Setup(_config(init_from=str(tmp_path / "net.npz")), str(tmp_path / "run"))
    started = s.init_state()
    for path, leaf in jax.tree_util.tree_leaves_with_path(dense["params"]):
        got = started.params
        for k in path:
            got = got[k.key]
        np.testing.assert_array_equal(got, leaf)
    # the decompressed kernels are not the originals: the weights came from the file
    assert not np.array_equal(
        dense["params"]["layer1_0"]["conv1"]["kernel"], variables["params"]["layer1_0"]["conv1"]["kernel"]
    )


def test_a_freqjax_run_with_a_new_head(tmp_path):
    from freqjax.train.checkpoint import Checkpointer

    base = train.Setup(_config(seed=1, synthetic_size=64, num_classes=5), str(tmp_path / "base"))
    ckpt = Checkpointer(tmp_path / "base" / "checkpoints")
    ckpt.save(1, base.init_state(), iter(base.train_loader()))
    ckpt.close()
    loaded = load_weights(tmp_path / "base")
    with pytest.raises(ValueError, match="5 classes, but this run has 10"):
        train.Setup(_config(init_from=str(tmp_path / "base")), str(tmp_path / "run")).init_weights()
    s = train.Setup(_config(init_from=str(tmp_path / "base"), init_head="reinit"), str(tmp_path / "run"))
    state = s.init_state()
    np.testing.assert_array_equal(state.params["conv1"]["kernel"], loaded["params"]["conv1"]["kernel"])
    assert state.params["fc"]["kernel"].shape == (64, 10)
    assert jnp.all(jnp.isfinite(state.params["fc"]["kernel"]))
