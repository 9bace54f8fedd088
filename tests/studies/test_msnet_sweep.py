"""MSNet's threshold sweep (freqjax.studies.msnet_sweep) on a random-weight msnet_resnet18."""

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
