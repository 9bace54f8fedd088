"""ReXNet's rank study on the small preset (fixed seed): what the paper's Figure 1 reports, and the CLI."""

import csv
import dataclasses

import numpy as np
import pytest

from freqjax.studies import rank_study as rs


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
            assert table[("conv1x1", act, ratio)] > ratio + 0.2, act
    assert table[("conv1x1", "linear", 1.0)] == 1.0  # matrix_rank keeps a random square layer full
    # Inverted bottlenecks (partial shortcut included): every nonlinearity ranks above the linear
    # bottleneck at the smallest ratio.
    for layer in ("ir_conv3x3", "ir_dw3x3"):
        for act in nonlinear:
            assert table[(layer, act, 0.1)] > table[(layer, "linear", 0.1)], (layer, act)


def test_elu_and_silu_against_relu6_for_the_1x1_conv(small):
    """Paper: ELU and SiLU lift the rank more than ReLU6. Under matrix_rank's tolerance the 1x1 rank
    saturates from ratio 0.2, so only the smallest ratio (0.1, d_in of 2-5) can tell them apart."""
    _, table = small
    assert table[("conv1x1", "elu", 0.1)] > table[("conv1x1", "relu6", 0.1)]
    for ratio in rs.PRESETS["small"].ratios[1:]:
        for act in ("relu6", "elu", "silu"):
            assert table[("conv1x1", act, ratio)] == 1.0, (act, ratio)
    # SiLU does not beat ReLU6 in float32 (the default, PyTorch's): its trailing singular values
    # fall under the float32 cut. Computed in float64 it does, and so does ELU.
    assert table[("conv1x1", "silu", 0.1)] < table[("conv1x1", "relu6", 0.1)]
    cfg = dataclasses.replace(rs.PRESETS["small"], layers=("conv1x1",), ratios=(0.1,), dtype="float64")
    t64 = {r["activation"]: r["rank_ratio"] for r in rs.rank_study(cfg)}
    assert t64["relu6"] == table[("conv1x1", "relu6", 0.1)] < 1.0  # ReLU6's missing ranks are exact zeros
    assert t64["elu"] == t64["silu"] == 1.0


def test_drastic_expansion_harms_the_rank(small):
    _, table = small
    for act in rs.ACTIVATIONS:
        assert table[("conv1x1", act, 0.1)] < table[("conv1x1", act, 1.0)], act
    # The 3x3 layers see 9 * d_in inputs per output: every nonlinearity is at full rank from 0.1.
    for layer in ("conv3x3", "ir_conv3x3", "ir_dw3x3"):
        assert table[(layer, "linear", 0.1)] < table[(layer, "linear", 1.0)], layer
        for act in rs.ACTIVATIONS:
            if act != "linear":
                assert table[(layer, act, 0.1)] == 1.0, (layer, act)


def test_relative_tolerance_breaks_the_linear_baseline():
    """Why not a coarse relative cut: with rtol=0.1 a random square layer loses rank and SoftPlus
    falls below the linear layer."""
    cfg = dataclasses.replace(rs.PRESETS["small"], layers=("conv1x1",), ratios=(0.6, 1.0), rtol=0.1, samples=4)
    table = {(r["activation"], r["ratio"]): r["rank_ratio"] for r in rs.rank_study(cfg)}
    assert table[("linear", 1.0)] < 0.9
    assert table[("softplus", 0.6)] < table[("linear", 0.6)]
    assert all(r["tolerance"] == "rtol=0.1" for r in rs.rank_study(dataclasses.replace(cfg, samples=1)))


def test_numerical_rank():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 20))
    assert rs.numerical_rank(m, 1e-6) == 3
    assert rs.numerical_rank(np.diag([1.0, 0.5, 0.05]), 0.1) == 2
    assert rs.numerical_rank(np.zeros((4, 4)), 0.1) == 0
    assert rs.numerical_rank(np.zeros((4, 4))) == 0
    # rtol=None is numpy's matrix_rank default, in the matrix's own precision.
    for dtype in (np.float32, np.float64):
        for _ in range(5):
            a = (rng.standard_normal((30, 6)) @ rng.standard_normal((6, 20))).astype(dtype)
            a[:, :5] += np.logspace(-12, -3, 5, dtype=dtype) * rng.standard_normal((30, 5)).astype(dtype)
            assert rs.numerical_rank(a) == np.linalg.matrix_rank(a)
    d = np.diag([1.0, 1e-5, 1e-10])
    assert rs.numerical_rank(d) == 3 and rs.numerical_rank(d.astype(np.float32)) == 2


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
    with pytest.raises(ValueError, match="dtype"):
        rs.RankStudyConfig(dtype="float16")
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
    assert rows[0]["tolerance"] == "matrix_rank" and rows[0]["dtype"] == "float32"
    png = (out / "rank_study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rs.main(["--rtol", "2"])


def test_config_replace_keeps_validation():
    cfg = dataclasses.replace(rs.PRESETS["small"], samples=1, layers=("ir_dw3x3",), activations=("silu",))
    rows = rs.rank_study(cfg)
    assert [r["activation"] for r in rows] == ["silu"] * len(cfg.ratios)
