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
    config.msnet_sweep.threshold_step = 0.1
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


def _msnet_run(workdir, seed=0, **overrides):
    """An msnet_cifar_resnet8 workdir with one checkpoint of spread random weights (nothing trained)."""
    from config_files import config_module

    from freqjax.train.checkpoint import Checkpointer
    from freqjax.train.loop import Setup

    config = config_module("msnet").get_config("msnet_cifar_resnet8")
    config.update(
        dataset="synthetic", decode_cache=False, batch_size=8, synthetic_size=64, eval_steps=4, augment="none"
    )
    config.update(worker_count=0, mode="msnet_sweep", **overrides)
    setup = Setup(config, str(workdir))
    spread = spread_variables(setup.model, (32, 32, 3), seed=seed)
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), setup.abstract_state())
    ckpt = Checkpointer(workdir / "checkpoints")
    ckpt.save(3, zeros.replace(params=spread["params"], batch_stats=spread["batch_stats"]), iter(setup.train_loader()))
    ckpt.close()
    return config


def _base_run(workdir):
    """A plain cifar_resnet8 trained two steps on the same synthetic data (its run_config.json and checkpoint)."""
    from config_files import tiny_train_config

    from freqjax.train.loop import train_and_evaluate

    config = tiny_train_config(image_size=32, batch_size=8, synthetic_size=64, num_train_steps=2, eval_steps=1)
    train_and_evaluate(config, str(workdir))


def test_sweep_job_calibrates_on_held_out_images_against_the_base_network(tmp_path):
    from freqjax.data.loader import eval_batches
    from freqjax.models import count_macs, create_model
    from freqjax.studies.msnet_calibration import split_indices
    from freqjax.studies.msnet_sweep import run_msnet_sweep
    from freqjax.train.checkpoint import load_weights
    from freqjax.train.loop import Setup
    from freqjax.train.steps import to_model_input

    _base_run(tmp_path / "base")
    config = _msnet_run(tmp_path / "ms")
    config.msnet_sweep.update(base_from=str(tmp_path / "base"), base_sizes=(16, 32), calibration_fraction=0.5)
    result = run_msnet_sweep(config, str(tmp_path / "ms"))
    n = 16  # the synthetic evaluation split of 64 records
    assert (result["images"], result["calibration_images"]) == (n // 2, n // 2)

    plain = [r for r in result["rows"] if r["threshold"] is None]
    assert [r["setting"] for r in plain] == ["16 px", "32 px", "multi-scale test (16 + 32 px)"]
    base = create_model("cifar_resnet8", num_classes=10)
    assert plain[1]["macs"] == count_macs(base, (32, 32, 3))
    assert plain[2]["macs"] == count_macs(base, (16, 16, 3)) + count_macs(base, (32, 32, 3))
    # the base's 32 px top-1 on the report images, recomputed from its checkpoint
    setup = Setup(config, str(tmp_path / "ms"))
    assert len(setup.eval_source) == n
    batches = list(eval_batches(setup.eval_source, global_batch=8, image_size=32, augment="none"))
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    weights = load_weights(tmp_path / "base")
    predicted = np.argmax(base.apply(weights, to_model_input(images, "rgb")), axis=-1)
    _, report = split_indices(n, 0.5, config.seed)
    assert plain[1]["top1"] == pytest.approx(np.mean(predicted[report] == labels[report]))

    calibrated = result["calibrated"]
    assert len(calibrated) == 2 * len(plain)
    same_macs = [r for r in calibrated if r["criterion"] == "same MACs"]
    assert all(r["threshold"] is not None for r in same_macs)  # threshold 0 always fits (L alone is cheaper)
    chosen = [r for r in calibrated if r["threshold"] is not None]
    for r in chosen:
        assert 0.0 <= r["threshold"] <= 1.0 and r["top1_gain"] == pytest.approx(r["top1"] - r["target_top1"])
    out = tmp_path / "ms" / "msnet_sweep"
    assert (out / "calibrated.csv").read_text().count("\n") == len(calibrated) + 1
    assert "| compared with | calibrated for |" in (out / "sweep.md").read_text()


def test_calibration_picks_thresholds_on_the_calibration_images_only():
    from freqjax.studies.msnet_calibration import ExitOutputs, Point, calibrate

    # images 0-3 calibrate, 4-7 report; L is right on the confident ones, H on every one
    conf = np.array([0.9, 0.7, 0.5, 0.3, 0.95, 0.8, 0.4, 0.2])
    labels = np.zeros(8, int)
    pred_low = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    outputs = ExitOutputs(conf, pred_low, np.zeros(8, int), labels, macs_low=1.0, macs_high=4.0)
    calibration, report = np.arange(4), np.arange(4, 8)
    target = (Point("base", "x", 4.0, 1.0), Point("base", "x", 4.0, 0.75))  # on calibration / on report
    rows = calibrate(outputs, [0.0, 0.6, 0.8, 1.0], calibration, report, [target])
    accuracy, macs = rows
    # all four right needs the two unsure images at H: threshold 0.6 (0.8 sends one more, costs more)
    assert accuracy["threshold"] == 0.6 and accuracy["criterion"] == "same accuracy"
    assert accuracy["top1"] == pytest.approx(0.75) and accuracy["macs"] == pytest.approx(1.0 + 0.5 * 4.0)
    # within 4 MACs on calibration (threshold 0.6: 3.0; 0.8: 4.0; 1.0: 5.0): best top-1 is 1.0 at 0.6
    assert macs["threshold"] == 0.6 and macs["macs_ratio"] == pytest.approx(3.0 / 4.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("base_from", "missing_run", "is not a freqjax training workdir"),
        ("base_sizes", (16, 3), "base_sizes must be a tuple of ints >= 8"),
        ("calibration_fraction", 1.0, "calibration_fraction must be a number in \\[0, 1\\)"),
        ("threshold_step", 0.0, "threshold_step must be a number in \\(0, 1\\]"),
    ],
)
def test_bad_sweep_fields_are_one_line_before_anything_compiles(tmp_path, field, value, message):
    from freqjax.studies.msnet_sweep import run_msnet_sweep

    config = _msnet_run(tmp_path)
    config.msnet_sweep[field] = str(tmp_path / value) if field == "base_from" else value
    with pytest.raises(ValueError, match=message):
        run_msnet_sweep(config, str(tmp_path))
    assert not (tmp_path / "msnet_sweep").exists()


def test_a_base_run_of_another_class_count_is_refused(tmp_path):
    from config_files import tiny_train_config

    from freqjax.studies.msnet_sweep import run_msnet_sweep
    from freqjax.train.workdir import write_run_config

    (tmp_path / "base").mkdir()
    write_run_config(tmp_path / "base", tiny_train_config(num_classes=5), 5)  # refused before any weights load
    config = _msnet_run(tmp_path / "ms")
    config.msnet_sweep.base_from = str(tmp_path / "base")
    with pytest.raises(ValueError, match="trained 5 classes, this run 10"):
        run_msnet_sweep(config, str(tmp_path / "ms"))
