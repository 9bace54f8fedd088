"""Steps, sharding, config validation, checkpoints and metric files, in-process on 8 fake CPU devices."""

import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from config_files import tiny_train_config

from freqjax import dct
from freqjax.data.loader import train_loader
from freqjax.data.sources import SyntheticSource
from freqjax.train import loop as train
from freqjax.train import parallel, steps
from freqjax.train.checkpoint import Checkpointer
from freqjax.train.config import validate_train_config
from freqjax.train.writers import MetricWriter, crc32c


def _config(**kw):
    return tiny_train_config(**kw)


def test_to_model_input_per_kind():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), np.uint8))
    np.testing.assert_allclose(steps.to_model_input(images, "dct"), dct.rgb_to_dct(images), rtol=1e-6)
    kept = steps.to_model_input(images, "dct", dct_keep=(6, 1, 1))
    assert int(jnp.sum(jnp.any(kept != 0, axis=(0, 1, 2)))) <= 8  # 6 + 1 + 1 channels survive
    rgb = steps.to_model_input(images, "rgb")
    np.testing.assert_allclose(rgb[..., 0], (np.asarray(images[..., 0], np.float32) - 123.675) / 58.395, rtol=1e-5)
    np.testing.assert_allclose(steps.to_model_input(images, "ycbcr"), dct.rgb_to_ycbcr(images) - 128, rtol=1e-6)
    assert steps.to_model_input(images, "rgb", jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="input_kind"):
        steps.to_model_input(images, "hsv")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model": "efun_s_plu"}, "did you mean efun_s_plus"),
        ({"dataset": "synthtic"}, "did you mean 'synthetic'"),
        ({"dataset": "folder:/no/such/dir"}, "not an existing directory"),
        ({"batch_size": 12}, "batch_size=12 is not divisible by the device count 8"),
        ({"optimizer": "rmsprop"}, "did you mean 'rmsprop_tf'"),
        ({"model": "efun", "image_size": 40}, "multiple of 16"),
        ({"learning_rate": -1.0}, "config.learning_rate must be a number"),
        ({"dct_keep": (64, 0, 64)}, "dct_keep"),
        ({"decode_cache": True}, "decode_cache=True needs a folder: dataset, got dataset='synthetic'"),
        (
            {"model_options": {"width": 8, "depth": 3}},
            r"model_options of 'cifar_resnet8' has unknown field\(s\) \['depth'\]",
        ),
    ],
)
def test_bad_configs_fail_before_compiling(override, message):
    with pytest.raises(ValueError, match=message):
        train.Setup(_config(**override), "/tmp/unused")


def test_unknown_config_field_names_a_close_match():
    c = _config()
    c.unlock()
    c.learning_rat = 0.1
    with pytest.raises(ValueError, match="'learning_rat' -> 'learning_rate'"):
        validate_train_config(c)


def test_sharded_train_step_matches_single_device_and_keeps_float32_params():
    s = train.Setup(_config(half_precision=False, ema_decay=0.5), "/tmp/unused")
    state = s.init_state()
    batch = next(iter(train_loader(s.train_source, global_batch=16, image_size=16, augment="cifar")))
    sharded = parallel.global_batch(batch, s.mesh)
    assert len(sharded["image"].sharding.device_set) == 8
    fn = jax.jit(
        lambda st, b: steps.train_step(
            st, b, model=s.model, tx=s.tx, schedule=s.schedule, input_kind="rgb", seed=0, ema_decay=0.5
        )
    )
    initial_fc = np.array(state.params["fc"]["kernel"])  # copied: the sharded step donates ``state``
    on_one = jax.tree_util.tree_map(lambda x: jax.device_put(np.array(x), jax.devices()[0]), state)
    ref_state, ref = fn(on_one, {k: jnp.asarray(v) for k, v in batch.items()})
    new, metrics = s.train_step(state, sharded)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref["loss"]), rtol=1e-5)
    np.testing.assert_allclose(new.params["fc"]["kernel"], ref_state.params["fc"]["kernel"], rtol=1e-4, atol=1e-6)
    assert int(new.step) == 1 and new.params["fc"]["kernel"].dtype == jnp.float32
    # EMA moved half-way from the initial parameters towards the new ones
    new_fc = np.asarray(new.params["fc"]["kernel"])
    np.testing.assert_allclose(new.ema_params["fc"]["kernel"], 0.5 * initial_fc + 0.5 * new_fc, rtol=1e-5, atol=1e-7)
    assert not np.allclose(initial_fc, new_fc)


def test_half_precision_step_runs_in_bfloat16_with_float32_params():
    s = train.Setup(_config(half_precision=True), "/tmp/unused")
    state = s.init_state()
    batch = parallel.global_batch(
        next(iter(train_loader(s.train_source, global_batch=16, image_size=16, augment="none"))), s.mesh
    )
    losses = []
    for _ in range(3):
        state, metrics = s.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]  # the same batch three times: loss falls
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(state.params))
    result = s.evaluate(state.params, state.batch_stats)
    assert result["count"] == 16 and 0.0 <= result["top1"] <= result["top5"] <= 1.0


def test_checkpointer_round_trip_restores_state_and_data_position(tmp_path):
    source = SyntheticSource(8, 32)
    loader = train_loader(source, global_batch=8, image_size=8, augment="cifar", seed=0)
    it = iter(loader)
    next(it)
    mesh = parallel.make_mesh()
    state = jax.device_put({"w": jnp.arange(6.0), "step": jnp.int32(3)}, parallel.replicated(mesh))
    ckpt = Checkpointer(tmp_path / "ck", keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, jax.tree_util.tree_map(lambda x, s=step: x * s, state), it)
    expected_next = next(it)["image"]
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "ck", keep=2)
    assert ckpt.steps() == [2, 3]  # keep-N
    fresh = iter(loader)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, step = ckpt.restore_latest(abstract, fresh)
    ckpt.close()
    assert step == 3 and restored["w"].sharding == state["w"].sharding
    np.testing.assert_array_equal(restored["w"], np.arange(6.0) * 3)
    np.testing.assert_array_equal(next(fresh)["image"], expected_next)


def _records(path):
    data, out = path.read_bytes(), []
    while data:
        (n,) = struct.unpack("<Q", data[:8])
        out.append(data[12 : 12 + n])
        data = data[16 + n :]
    return out


def test_metric_writer_jsonl_and_tensorboard_events(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    writer = MetricWriter(tmp_path)
    writer.write(5, "train", {"loss": 1.5, "accuracy": 0.25})
    writer.write(5, "eval", {"top1": float("nan")})
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 5, "train/loss": 1.5, "train/accuracy": 0.25}
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    records = _records(events)
    assert b"brain.Event:2" in records[0] and len(records) == 2  # the all-NaN eval event is not written
    assert b"train/loss" in records[1] and struct.pack("<f", 1.5) in records[1]
    data = events.read_bytes()
    c = crc32c(data[:8])
    assert struct.unpack("<I", data[8:12])[0] == (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


TRAIN_CONFIGS = ("efun", "resfun", "resnet", "efficientnet", "rexnet", "mobilenet", "msnet", "xsepconv", "cifar_quick")


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_every_training_config_and_variant_validates_and_documents_its_command(name):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert f"python -m freqjax.main --config configs/{name}.py" in module.__doc__
    for variant in module.VARIANTS if hasattr(module, "VARIANTS") else (name,):
        config = module.get_config(variant)
        validate_train_config(config)
        assert config.mode == "train" and not config.half_precision  # float32 recipes: exact on a CPU
        if name != "cifar_quick":  # every paper recipe has its accelerator variant, the same in bfloat16
            accelerated = module.get_config(f"{variant}:bf16")
            assert accelerated.half_precision and accelerated.to_dict() == {**config.to_dict(), "half_precision": True}
    with pytest.raises(ValueError, match="variant must be"):
        module.get_config("no_such_variant")


def test_model_options_reach_create_model_and_train_split_reaches_the_source():
    s = train.Setup(_config(model_options={"width": 8}), "/tmp/unused")
    assert s.model.width == 8
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        s = train.Setup(_config(dataset="tfds:svhn_cropped", train_split="train+extra", image_size=32), "/tmp/unused")
        assert s.train_source.split == "train+extra" and s.eval_source.split == "test" and s.num_classes == 10


def test_multi_exit_models_train_on_the_sum_of_losses_and_report_each_exit():
    import flax.linen as nn
    import optax

    from freqjax.train.optim import cross_entropy

    class TwoExits(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = x.reshape(x.shape[0], -1)
            return nn.Dense(3, name="low")(x), nn.Dense(3, name="high")(x)

    model, tx = TwoExits(), optax.sgd(0.1)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 2, 2, 3), np.uint8))
    batch = {"image": images, "label": jnp.array([0, 1, 2, 0]), "skipped": jnp.zeros(4, jnp.int32)}
    state = steps.init_state(model, tx, steps.to_model_input(images, "rgb"), seed=0, ema=False)
    _, metrics = steps.train_step(state, batch, model=model, tx=tx, schedule=lambda s: 0.1, input_kind="rgb", seed=0)
    low, high = model.apply({"params": state.params}, steps.to_model_input(images, "rgb"))
    expected = cross_entropy(low, batch["label"]).mean() + cross_entropy(high, batch["label"]).mean()
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-6)
    sums = steps.eval_step(state.params, {}, {**batch, "mask": jnp.ones(4)}, model=model, input_kind="rgb")
    assert float(sums["top1"]) == float(jnp.sum(jnp.argmax(high, -1) == batch["label"]))
    assert float(sums["top1_exit0"]) == float(jnp.sum(jnp.argmax(low, -1) == batch["label"]))


def test_corrupt_images_are_skipped_and_counted_in_the_training_logs(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(3):
            d = tmp_path / "data" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(d / f"{i}.png")
    (tmp_path / "data" / "train" / "class1" / "3.png").write_bytes(b"truncated")
    config = _config(
        dataset=f"folder:{tmp_path / 'data'}",
        num_train_steps=3,
        log_every_steps=1,
        eval_every_steps=3,
        checkpoint_every_steps=3,
    )
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    # 3 batches of 16 from 24 images = exactly 2 epochs: the broken file is met (and replaced) twice
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m.get("train/skipped", 0) for m in lines) == 2 and result["train"]["skipped_total"] == 2
    assert "unreadable images" in capsys.readouterr().out
    assert result["eval"]["count"] == 24 and result["step"] == 3
    # each process lists an unreadable file once, in the workdir
    listed = (tmp_path / "run" / "unreadable_images.txt").read_text().splitlines()
    assert listed == [str(tmp_path / "data" / "train" / "class1" / "3.png")]


def test_a_run_stops_when_too_many_images_are_unreadable(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in range(2):
            d = tmp_path / "data" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(16):
                Image.fromarray(np.full((16, 16, 3), 60 * c, np.uint8)).save(d / f"{i}.png")
    for i in range(0, 16, 4):  # 4 of 16 per class truncated: a quarter of the data, not "mostly empty"
        (tmp_path / "data" / "train" / f"class{i % 2}" / f"{i}.png").write_bytes(b"truncated")
    config = _config(dataset=f"folder:{tmp_path / 'data'}", num_train_steps=64, log_every_steps=1)
    with pytest.raises(ValueError, match=r"were unreadable \(more than 10%\); their paths are in"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    listed = (tmp_path / "run" / "unreadable_images.txt").read_text().splitlines()
    truncated = [str(p) for p in (tmp_path / "data" / "train").rglob("*.png") if p.stat().st_size < 20]
    assert sorted(listed) == sorted(truncated)


def test_config_files_expose_model_options_for_command_line_overrides():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "configs_xsep", Path(__file__).resolve().parents[2] / "configs" / "xsepconv.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("svhn")
    assert config.model_options.cifar is True and config.model_options.form == "standard"
    config.model_options.form = "behind"  # what --config.model_options.form=behind does
    validate_train_config(config)
    from freqjax.train.config import model_options

    with pytest.raises(ValueError, match="'with' -> 'width'"):
        model_options("cifar_resnet8", **{"with": 8})


def test_init_from_and_trainable_freeze_all_but_the_matched_parameters(tmp_path):
    base = train.Setup(_config(seed=1), str(tmp_path / "base"))  # another seed: its weights differ from a fresh init
    ckpt = Checkpointer(tmp_path / "base" / "checkpoints")
    ckpt.save(1, base.init_state(), iter(base.train_loader()))
    ckpt.close()
    with pytest.raises(ValueError, match=r"config\.init_from must name"):
        validate_train_config(_config(trainable="^fc/"))
    s = train.Setup(
        _config(trainable="^fc/", init_from=str(tmp_path / "base"), model_options={"width": 16}), str(tmp_path)
    )
    from freqjax.train.checkpoint import load_weights

    loaded = load_weights(tmp_path / "base")
    state = s.init_state()
    assert not np.allclose(
        train.Setup(_config(), str(tmp_path)).init_state().params["conv1"]["kernel"],
        loaded["params"]["conv1"]["kernel"],
    )
    np.testing.assert_array_equal(state.params["conv1"]["kernel"], loaded["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(state.batch_stats["bn1"]["mean"], loaded["batch_stats"]["bn1"]["mean"])
    conv_before, fc_before = np.array(state.params["conv1"]["kernel"]), np.array(state.params["fc"]["kernel"])
    batch = next(iter(s.train_loader()))
    state, _ = s.train_step(state, parallel.global_batch(batch, s.mesh))
    np.testing.assert_array_equal(state.params["conv1"]["kernel"], conv_before)  # frozen
    assert not np.allclose(state.params["fc"]["kernel"], fc_before)  # trained


def test_merge_weights_is_strict_about_shapes_and_frozen_parameters():
    from freqjax.train.checkpoint import merge_weights

    target = {"front": {"kernel": jnp.zeros((2, 2))}, "fc": {"kernel": jnp.zeros(3)}}
    merged, n = merge_weights(target, {"fc": {"kernel": np.ones(3)}}, lambda name: name.startswith("front/"))
    assert n == 1 and float(merged["fc"]["kernel"].sum()) == 3 and float(merged["front"]["kernel"].sum()) == 0
    with pytest.raises(ValueError, match="has shape"):
        merge_weights(target, {"fc": {"kernel": np.ones(4)}, "front": {"kernel": np.ones((2, 2))}}, lambda name: False)
    with pytest.raises(ValueError, match="no 'front/kernel', which is frozen"):
        merge_weights(target, {"fc": {"kernel": np.ones(3)}}, lambda name: False)


def test_summarize_gives_one_row_per_evaluation(tmp_path):
    from freqjax.train.writers import summarize

    writer = MetricWriter(tmp_path)
    for step, loss in ((1, 2.0), (2, 1.0)):
        writer.write(step, "train", {"loss": loss, "accuracy": 0.5, "images_per_s": 10.0, "epoch": step / 2})
    writer.write(2, "eval", {"top1": 0.6, "top5": 0.9})
    writer.write(2, "eval_ema", {"top1": 0.65, "top5": 0.9})
    writer.close()
    (row,) = summarize(tmp_path)
    assert row == {
        "step": 2,
        "eval_top1": 0.6,
        "eval_top5": 0.9,
        "epoch": 1.0,
        "train_loss": 1.5,
        "train_accuracy": 0.5,
        "train_images_per_s": 10.0,
        "eval_ema_top1": 0.65,
    }
    with pytest.raises(ValueError, match=r"no metrics\.jsonl"):
        summarize(tmp_path / "missing")


def test_summary_of_no_pending_steps_is_empty(tmp_path):
    # SIGTERM can arrive right after a log line, when no step is pending; saving must not fail then.
    assert train._summarise([], None, tmp_path) == {}
