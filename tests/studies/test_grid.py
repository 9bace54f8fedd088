"""Grid runner: planning, bad input in one line, aggregation, and a grid resumed after SIGKILL."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freqjax.studies import grid

ROOT = Path(__file__).resolve().parents[2]
TINY = (
    "--config",
    "configs/cifar_quick.py:synthetic",
    "--config.image_size=16",
    "--config.batch_size=16",
    "--config.synthetic_size=64",
    "--config.num_train_steps=2",
    "--config.eval_steps=1",
    "--config.checkpoint_every_steps=1",
)


def test_plan_is_the_product_with_seeds_innermost_and_values_split_outside_brackets():
    assert grid.split_values("(6,1,1),(64,64,64)") == ["(6,1,1)", "(64,64,64)"]
    assert grid.parse_set("model_options.width=8,16") == ("model_options.width", ["8", "16"])
    cells = grid.plan_grid([("model", ["a", "b"]), ("learning_rate", ["0.1", "0.2"])], seeds=2)
    assert len(cells) == 8
    assert cells[0].values == (("model", "a"), ("learning_rate", "0.1"), ("seed", "0"))
    assert cells[1].values[-1] == ("seed", "1") and cells[2].values[1] == ("learning_rate", "0.2")
    assert cells[0].overrides == ("--config.model=a", "--config.learning_rate=0.1", "--config.seed=0")
    assert cells[0].name == "model=a__learning_rate=0.1__seed=0"
    assert cells[0].setting == cells[1].setting != cells[2].setting
    for bad, message in (
        ("width", "expected FIELD=VALUE1"),
        ("width=1,,2", "an empty value"),
        ("width=1,1", "appears twice"),
    ):
        with pytest.raises(grid.GridError, match=message):
            grid.parse_set(bad)
    with pytest.raises(grid.GridError, match="both set the seed"):
        grid.plan_grid([("seed", ["1"])], seeds=2)
    with pytest.raises(grid.GridError, match="nothing to run"):
        grid.plan_grid([], seeds=None)


def test_aggregate_is_mean_and_sample_std_over_the_finished_seeds():
    cells = grid.plan_grid([("model", ["a", "b"])], seeds=3)
    results = {
        c.name: {"result": {"eval": {"top1": top1, "top5": 1.0, "loss": 1.0}, "train": {"loss": 2.0}}, "wall_s": 1.0}
        for c, top1 in zip(cells, (0.1, 0.2, 0.3, 0.5, 0.7), strict=False)  # b's third seed unfinished
    }
    header, rows = grid.aggregate(cells, results)
    assert header[:3] == ["model", "cells", "finished"] and "eval_ema_top1_mean" not in header
    col = header.index("eval_top1_mean")
    assert rows[0][:3] == ["a", 3, 3] and rows[1][:3] == ["b", 3, 2]
    assert math.isclose(rows[0][col], 0.2) and math.isclose(rows[0][col + 1], 0.1)
    assert math.isclose(rows[1][col], 0.6) and math.isclose(rows[1][col + 1], math.sqrt(0.02))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "model_options.widht=8,16"), "unknown config field 'model_options.widht'"),
        (("--set", "model_options.width=8,x"), "--set model_options.width=x: invalid literal for int()"),
        (("--set", "augment=cifar,cifar+mixup"), "cell augment=cifar+mixup: config.augment must be one of"),
        (("--set", "model_options.width"), "expected FIELD=VALUE1,VALUE2"),
        (("--seeds", "2", "--config.learning_rat=0.1"), "unknown config field 'learning_rat'"),
        (("--seeds", "0"), "--seeds must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(args, message, tmp_path, capsys):
    out = tmp_path / "grid"
    assert grid.main(["--config", "configs/cifar_quick.py:synthetic", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("freqjax.studies.grid: error: ") and message in err, err
    assert not out.exists()


def test_another_grid_in_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert grid.main([*TINY, "--seeds", "1", "--out", str(out)]) == 2
    assert "has files but no grid.json" in capsys.readouterr().err
    (out / "grid.json").write_text(json.dumps({"config": "other"}))
    assert grid.main([*TINY, "--seeds", "1", "--out", str(out)]) == 2
    assert "holds another grid" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def _grid_cmd(out, processes):
    args = [*TINY, "--seeds", "2", "--out", str(out), "--processes", str(processes)]
    return [sys.executable, "-m", "freqjax.studies.grid", *args]


def test_grid_killed_with_sigkill_resumes_without_rerunning_finished_cells(tmp_path):
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    out = tmp_path / "grid"
    # first: cells inside the grid's own process; SIGKILL the whole process group once one cell has finished
    first = subprocess.Popen(
        _grid_cmd(out, 0), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    done = out / "seed=0" / grid.RESULT_FILE
    deadline = time.monotonic() + 500
    while not done.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the grid finished before it could be killed"
    assert done.exists() and not (out / "seed=1" / grid.RESULT_FILE).exists()
    recorded = done.read_text()
    # then: the same command, each cell its own process
    second = subprocess.run(
        _grid_cmd(out, 1), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "2 cells, 1 finished before, 1 to run" in second.stdout
    assert done.read_text() == recorded  # the finished cell was not rerun
    assert (out / "seed=0" / grid.LOG_FILE).read_text().count("starting at step 0 of 2") == 1
    assert json.loads((out / "seed=1" / grid.RESULT_FILE).read_text())["result"]["step"] == 2
    rows = list(csv.DictReader((out / "grid.csv").open()))
    assert len(rows) == 1 and rows[0]["finished"] == "2" and 0 <= float(rows[0]["eval_top1_mean"]) <= 1
    assert "| 2 | 2 |" in (out / "grid.md").read_text()
    assert len(list(csv.DictReader((out / "cells.csv").open()))) == 2
