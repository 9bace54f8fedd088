"""Dropping input channels of a trained DCT network (freqjax.studies.input_channels, FUN Table 7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from config_files import tiny_train_config
from msnet_weights import spread_variables

from freqjax import dct
from freqjax.models import count_params, create_model
from freqjax.studies.input_channels import kept_input, run_input_channels, slice_input, sliced_model

SIDE = 32  # pixels: a 4x4x192 DCT input


def test_sliced_input_layer_gives_the_zeroed_inputs_logits_with_fewer_parameters():
    model = create_model("resfun", num_classes=10)
    variables = spread_variables(model, (SIDE // 8, SIDE // 8, 192))
    x = np.random.default_rng(0).normal(size=(2, SIDE // 8, SIDE // 8, 192)).astype(np.float32)
    keep = (14, 5, 5)
    small, small_vars = slice_input(model, variables, keep, SIDE // 8)
    zeroed = model.apply(variables, dct.keep_lowest(x, *keep))
    sliced = small.apply(small_vars, kept_input(x, keep))
    np.testing.assert_allclose(sliced, zeroed, rtol=1e-5, atol=1e-5)
    pairs = zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(small_vars), strict=True)
    readers = [a for a, b in pairs if a.shape != b.shape]  # ResFUN's first block: conv1 and the shortcut conv
    assert [a.shape[-2:] for a in readers] == [(192, 128), (192, 512)]
    per_channel = sum(a.size // 192 for a in readers)
    assert count_params(variables) - count_params(small_vars) == (192 - 24) * per_channel


def test_efun_built_for_fewer_channels_has_the_papers_parameter_column():
    # FUN Table 7: 4.23 / 3.99 / 3.96 / 3.93 / 3.91 M parameters for 192 / 88 / 64 / 48 / 24 channels
    model = create_model("efun")
    paper = (4.23, 3.99, 3.96, 3.93, 3.91)
    for keep, millions in zip(dct.TABLE7_KEEP, paper, strict=True):
        k = sum(keep)
        net = sliced_model(model, k)
        shapes = jax.eval_shape(lambda net=net, k=k: net.init(jax.random.key(0), jnp.zeros((1, 28, 28, k))))
        assert abs(count_params(shapes) / 1e6 - millions) <= 0.0051, (keep, count_params(shapes))
    # its first block's widths follow the input: trained weights cannot simply be cut
    variables = spread_variables(model, (4, 4, 192))
    with pytest.raises(ValueError, match="more than the input layer changes width"):
        slice_input(model, variables, (32, 8, 8), 4)


def _dct_run(workdir, **overrides):
    """A ResFUN workdir with one checkpoint of spread random weights (nothing trained)."""
    from freqjax.train.checkpoint import Checkpointer
    from freqjax.train.loop import Setup

    config = tiny_train_config(model="resfun", image_size=SIDE, batch_size=8, eval_steps=2, mode="input_channels")
    config.input_channels.update(overrides)
    setup = Setup(config, str(workdir))
    spread = spread_variables(setup.model, (SIDE // 8, SIDE // 8, 192))
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), setup.abstract_state())
    ckpt = Checkpointer(workdir / "checkpoints")
    ckpt.save(5, zeros.replace(params=spread["params"], batch_stats=spread["batch_stats"]), iter(setup.train_loader()))
    ckpt.close()
    return config, setup


def test_job_rows_zeroed_sliced_fine_tuned_and_rgb_down_sampling(tmp_path):
    from freqjax.train.checkpoint import Checkpointer
    from freqjax.train.loop import Setup
    from freqjax.train.workdir import write_run_config

    # the RGB run: its run_config.json and a checkpoint of spread random weights (no training compile)
    rgb = Setup(tiny_train_config(image_size=SIDE, batch_size=8), str(tmp_path / "rgb"))
    rgb.workdir.mkdir()
    write_run_config(rgb.workdir, rgb.config, rgb.num_classes)
    spread = spread_variables(rgb.model, (SIDE, SIDE, 3))
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), rgb.abstract_state())
    ckpt = Checkpointer(rgb.workdir / "checkpoints")
    ckpt.save(1, zeros.replace(params=spread["params"], batch_stats=spread["batch_stats"]), iter(rgb.train_loader()))
    ckpt.close()
    keep = ((64, 64, 64), (8, 2, 2))
    config, setup = _dct_run(tmp_path / "dct", keep=keep, rgb_from=str(tmp_path / "rgb"), fine_tune_steps=2)
    result = run_input_channels(config, str(tmp_path / "dct"))
    assert result["step"] == 5 and result["images"] == 16
    full, small = result["rows"]
    assert (full["channels"], small["channels"]) == (192, 12) and small["ratio"] == 16.0
    assert full["sliced_max_relative_diff"] < 1e-5 and small["sliced_max_relative_diff"] < 1e-5
    assert small["top1_sliced"] == small["top1_zeroed"]
    # all channels kept: the zeroed top-1 is the run's own evaluation
    state, _ = setup.restore_newest()
    assert full["top1_zeroed"] == pytest.approx(setup.evaluate(state.params, state.batch_stats)["top1"])
    # the fine-tune is a run of its own, on the zeroed input, from the run's weights
    tuned = tmp_path / "dct" / "input_channels" / "finetune_8_2_2"
    assert (tuned / "checkpoints" / "2").is_dir() and '"dct_keep": [\n    8,\n    2,\n    2\n  ]' in (
        tuned / "run_config.json"
    ).read_text()
    assert 0.0 <= small["top1_fine_tuned"] <= 1.0
    assert (full["rgb_side"], small["rgb_side"]) == (SIDE, SIDE // 4)  # 1/16 of the pixels
    out = tmp_path / "dct" / "input_channels"
    assert (out / "input_channels.csv").read_text().count("\n") == 3
    assert "| 12 | 8/2/2 | 16.00 |" in (out / "input_channels.md").read_text()
    assert (out / "input_channels.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keep", ((65, 1, 1),), r"input_channels.keep row \(65, 1, 1\)"),
        ("keep", (64, 64), "must be \\(y, cb, cr\\) triples"),
        ("fine_tune_steps", -1, "fine_tune_steps must be an int >= 0"),
        ("rgb_from", "nowhere", "input_channels.rgb_from='nowhere' is not a freqjax training workdir"),
    ],
)
def test_bad_fields_are_one_line_before_anything_compiles(tmp_path, field, value, message):
    config, _ = _dct_run(tmp_path)
    config.input_channels[field] = value
    with pytest.raises(ValueError, match=message):
        run_input_channels(config, str(tmp_path))
    assert not (tmp_path / "input_channels").exists()


def test_an_rgb_model_is_refused(tmp_path):
    config = tiny_train_config(mode="input_channels")
    with pytest.raises(ValueError, match="needs a DCT-input model, got 'cifar_resnet8'"):
        run_input_channels(config, str(tmp_path))
