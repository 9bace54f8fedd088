"""MSNet's threshold sweep (freqjax.studies.msnet_sweep) on a random-weight msnet_resnet18."""

import jax
import numpy as np
import pytest
from msnet_weights import spread_variables

from freqjax.models import count_macs, create_model
from freqjax.models.msnet_infer import two_exit_predictions
from freqjax.studies.msnet_sweep import sweep

SIDE, BATCH, CLASSES = 32, 16, 10


@pytest.fixture(scope="module")
def net():
    model = create_model("msnet_resnet18", num_classes=CLASSES)
    variables = spread_variables(model, (SIDE, SIDE, 3))
    images = np.random.default_rng(1).normal(size=(BATCH, SIDE, SIDE, 3)).astype(np.float32)
    return model, variables, images, two_exit_predictions(model, variables, images)


def test_sweep_writes_table_and_plot(net, tmp_path):
    model, variables, images, (conf, pred_low, pred_high) = net
    labels = np.array(pred_high)  # labels H gets right: accuracy then grows with the threshold
    labels[::4] = (labels[::4] + 1) % CLASSES
    base = create_model("resnet18", num_classes=CLASSES)
    base_vars = {k: variables[k]["high"] for k in variables}
    s = np.sort(conf)
    middle = float((s[BATCH // 2 - 1] + s[BATCH // 2]) / 2)  # between two confidences: rounding cannot move one
    result = sweep(
        model, variables, images, labels, [0.0, middle, 1.0], base=(base, base_vars), base_sizes=(16, 32),
        batch_size=BATCH, out_dir=str(tmp_path), name="MS-ResNet-18",
    )  # fmt: skip
    assert len(result.rows) == 5
    ms = result.rows[:3]
    assert [r["fraction_low"] for r in ms] == [1.0, 0.5, 0.0]
    assert ms[0]["macs"] < ms[1]["macs"] < ms[2]["macs"]
    assert ms[2]["top1"] == pytest.approx(0.75) and ms[0]["top1"] == pytest.approx(np.mean(pred_low == labels))
    assert result.rows[4]["macs"] == count_macs(base, (SIDE, SIDE, 3))
    assert result.rows[4]["top1"] == pytest.approx(np.mean(np.asarray(pred_high) == labels), abs=0.2)
    assert "| MS-ResNet-18 | threshold 0.00 |" in result.table
    assert (tmp_path / "sweep.md").read_text() == result.table
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 6
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_clear_errors(net):
    model, variables, images, _ = net
    with pytest.raises(ValueError, match="labels"):
        sweep(model, variables, images, np.zeros(3, int), [0.5])
    with pytest.raises(ValueError, match="base_sizes"):
        sweep(model, variables, images, np.zeros(BATCH, int), [0.5], base_sizes=(SIDE,))
    with pytest.raises(ValueError, match="thresholds"):
        sweep(model, variables, images, np.zeros(BATCH, int), [])


def test_sweep_job_on_a_checkpoint_agrees_with_evaluation(tmp_path):
    # the msnet_sweep job (python -m freqjax.main ... --mode msnet_sweep) on a real orbax checkpoint
    from config_files import config_module

    from freqjax.studies.msnet_sweep import DEFAULT_THRESHOLDS, run_msnet_sweep
    from freqjax.train.checkpoint import Checkpointer
    from freqjax.train.loop import Setup

    config = config_module("msnet").get_config("msnet_resnet18")
    config.update(dataset="synthetic", image_size=SIDE, batch_size=8, synthetic_size=64, eval_steps=2)
    config.update(worker_count=0, mode="msnet_sweep")
    setup = Setup(config, str(tmp_path))
    spread = spread_variables(setup.model, (SIDE, SIDE, 3))  # confidences that differ between images
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), setup.abstract_state())  # no init compile
    state = zeros.replace(params=spread["params"], batch_stats=spread["batch_stats"])
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(7, state, iter(setup.train_loader()))
    ckpt.close()

    result = run_msnet_sweep(config, str(tmp_path))
    assert result["step"] == 7 and result["images"] == 16
    rows = result["rows"]
    assert [r["threshold"] for r in rows] == list(DEFAULT_THRESHOLDS)
    evaluated = setup.evaluate(state.params, state.batch_stats)
    # threshold 0: every image leaves at Network-L; threshold 1: every image goes on to Network-H
    assert rows[0]["fraction_low"] == 1.0 and rows[0]["top1"] == pytest.approx(evaluated["top1_exit0"])
    assert rows[-1]["fraction_low"] == 0.0 and rows[-1]["top1"] == pytest.approx(evaluated["top1"])
    assert rows[0]["macs"] < rows[-1]["macs"]
    assert 0 < rows[5]["fraction_low"] < 1  # thresholds in between split the images
    for ext in ("csv", "md", "png"):
        assert (tmp_path / "msnet_sweep" / f"sweep.{ext}").stat().st_size > 0


def test_sweep_job_refuses_a_model_that_is_not_an_msnet(tmp_path):
    from config_files import config_module

    from freqjax.studies.msnet_sweep import run_msnet_sweep

    config = config_module("cifar_quick").get_config("synthetic")
    config.mode = "msnet_sweep"
    with pytest.raises(TypeError, match="model must be an MSNet"):
        run_msnet_sweep(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()
