"""ReXNet's rank study on the small preset (fixed seed): what the paper's Figure 1 reports, and the CLI."""

import csv
import dataclasses

import numpy as np
import pytest

from freqjax import rank_study as rs


@pytest.fixture(scope="module")
def small():
    rows = rs.rank_study("small")
    table = {(r["layer"], r["activation"], r["ratio"]): r["rank_ratio"] for r in rows}
    return rows, table


def test_rows_cover_every_layer_activation_and_ratio(small):
    rows, table = small
    cfg = rs.PRESETS["small"]
    assert len(rows) == len(cfg.layers) * len(cfg.activations) * len(cfg.ratios) == len(table)
    assert all(0.0 < r["rank_ratio"] <= 1.0 for r in rows)
    assert rs.rank_study("small") == rows  # fixed seed: reproducible


def test_nonlinearities_lift_the_rank_above_d_in_over_d_out(small):
    _, table = small
    nonlinear = [a for a in rs.ACTIVATIONS if a != "linear"]
    for ratio in (0.1, 0.2):
        assert abs(table[("conv1x1", "linear", ratio)] - ratio) < 0.01  # linear: rank d_in
        for act in nonlinear:
            assert table[("conv1x1", act, ratio)] > ratio + 0.02, act
    # Inverted bottlenecks (partial shortcut included): every ReLU-family and SiLU output ranks
    # above the linear bottleneck at the smallest ratio.
    for layer in ("ir_conv3x3", "ir_dw3x3"):
        for act in ("relu", "relu6", "leaky_relu", "hard_swish", "silu", "elu"):
            assert table[(layer, act, 0.1)] > table[(layer, "linear", 0.1)], (layer, act)


def test_silu_lifts_the_1x1_rank_more_than_relu6(small):
    _, table = small
    ratios = rs.PRESETS["small"].ratios
    for ratio in ratios[1:]:
        assert table[("conv1x1", "silu", ratio)] > table[("conv1x1", "relu6", ratio)], ratio
    # ELU only overtakes ReLU6 at the large ratios under this rank measure (README, rank study).
    assert table[("conv1x1", "elu", 1.0)] > table[("conv1x1", "relu6", 1.0)]


def test_drastic_expansion_harms_the_rank(small):
    _, table = small
    for layer in rs.LAYERS:
        for act in rs.ACTIVATIONS:
            assert table[(layer, act, 0.1)] < table[(layer, act, 1.0)], (layer, act)


def test_numerical_rank():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 20))
    assert rs.numerical_rank(m, 1e-6) == 3
    assert rs.numerical_rank(np.diag([1.0, 0.5, 0.05]), 0.1) == 2
    assert rs.numerical_rank(np.zeros((4, 4)), 0.1) == 0


def test_bad_configs():
    with pytest.raises(ValueError, match="layers"):
        rs.RankStudyConfig(layers=("conv5x5",))
    with pytest.raises(ValueError, match="activations"):
        rs.RankStudyConfig(activations=("tanh",))
    with pytest.raises(ValueError, match="ratios"):
        rs.RankStudyConfig(ratios=(0.0, 0.5))
    with pytest.raises(ValueError, match="d_out_range"):
        rs.RankStudyConfig(d_out_range=(8, 4))
    with pytest.raises(ValueError, match="rtol"):
        rs.RankStudyConfig(rtol=1.5)
    with pytest.raises(ValueError, match="preset"):
        rs.rank_study("huge")
    with pytest.raises(TypeError, match="RankStudyConfig"):
        rs.rank_study(3)


def test_cli_writes_csv_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rank"
    rc = rs.main(["--preset", "small", "--layers", "conv1x1", "--samples", "2", "--out", str(out)])
    assert rc == 0
    with open(out / "rank_study.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(rs.ACTIVATIONS) * len(rs.PRESETS["small"].ratios)
    assert {r["layer"] for r in rows} == {"conv1x1"} and rows[0]["samples"] == "2"
    png = (out / "rank_study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rs.main(["--rtol", "2"])


def test_config_replace_keeps_validation():
    cfg = dataclasses.replace(rs.PRESETS["small"], samples=1, layers=("ir_dw3x3",), activations=("silu",))
    rows = rs.rank_study(cfg)
    assert [r["activation"] for r in rows] == ["silu"] * len(cfg.ratios)
