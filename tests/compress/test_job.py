"""The compression job (``--mode compress``) end to end on a tiny network and synthetic data.

All three methods, a SIGKILL-resumed fine-tune bitwise equal to an uninterrupted one, and bad
input stopping before anything is compiled or written.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from config_files import tiny_train_config

from freqjax.compress import CompressedTensor, compress, l1_prune, load, make_plan, save
from freqjax.compress.tree import to_reference
from freqjax.studies.compression import METHODS, compress_config, run_compression

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(image_size=16, batch_size=16, synthetic_size=64, eval_steps=1, worker_count=0, log_every_steps=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cifar_resnet8 workdir after two training steps (its checkpoint is what gets compressed)."""
    from freqjax.train.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("trained")
    config = tiny_train_config(num_train_steps=2, eval_steps=1, checkpoint_every_steps=2, eval_every_steps=2)
    train_and_evaluate(config, str(workdir))
    return workdir


def job_config(init_from, variant="uniform", **compression):
    c = compress_config(variant)
    c.update(TINY, init_from=str(init_from), num_train_steps=3, checkpoint_every_steps=3)
    c.compression.update({"r": 2.0, **compression})
    return c


def _leaves(tree):
    is_node = lambda x: isinstance(x, CompressedTensor)  # noqa: E731
    return {
        "/".join(str(k.key) for k in kp): x for kp, x in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_node)[0]
    }


def test_the_job_runs_all_three_methods_at_the_same_kept_values(trained, tmp_path):
    from freqjax.train.checkpoint import load_weights

    original = load_weights(trained)
    reports = {}
    for method in METHODS:
        result = run_compression(job_config(trained, method=method), str(tmp_path / method))
        report = json.loads((tmp_path / method / "report.json").read_text())
        assert result["finetuned"]["top1"] == report["finetuned"]["top1"]
        assert report["finetune"]["steps"] == 3 and report["original"]["count"] == 16
        assert (tmp_path / method / "report.md").read_text().count("| fine-tuned (3 steps) |") == 1
        reports[method] = report
        start, final = load(tmp_path / method / "compressed_init.npz"), load(tmp_path / method / "compressed.npz")
        assert os.path.getsize(tmp_path / method / "compressed.npz") == report["compressed"]["bytes"]
        a, b = _leaves(start), _leaves(final)
        assert a.keys() == b.keys()
        nodes = [k for k in a if isinstance(a[k], CompressedTensor)]
        assert nodes and "params/conv1/kernel" not in nodes and "params/fc/kernel" in nodes
        for key in a:  # only the kept values were trained; orderings, conv1 and BN affine are as compressed
            if key in nodes:
                np.testing.assert_array_equal(a[key].index, b[key].index)
                assert not np.array_equal(a[key].coef, b[key].coef), key
            elif key.startswith("params/"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        if method == "l1":  # the network-level baseline is the one-tensor l1_prune on every planned layer
            kernel = start["params"]["layer3_0"]["conv2"]["kernel"]
            w = to_reference(np.asarray(original["params"]["layer3_0"]["conv2"]["kernel"]))
            np.testing.assert_array_equal(to_reference(np.asarray(kernel.weight())), l1_prune(w, 4, 2.0))
    kept = {m: r["compressed"]["coefficients"] for m, r in reports.items()}
    assert len(set(kept.values())) == 1 and kept["dct"] * 2 == reports["dct"]["planned_weights"]
    index = {m: r["compressed"]["index"] for m, r in reports.items()}
    assert index["dct_no_reorder"] == 0 and index["l1"] == kept["l1"] // 4 and index["dct"] == kept["dct"] // 2
    assert reports["dct_no_reorder"]["compressed"]["bytes"] < reports["l1"]["compressed"]["bytes"]
    assert reports["l1"]["compressed"]["bytes"] < reports["dct"]["compressed"]["bytes"]


def test_a_compressed_file_is_a_source_of_its_own_plan_only(trained, tmp_path):
    from freqjax.train.checkpoint import load_weights

    variables = load_weights(trained)
    plan = make_plan(variables, "all_but_first", "uniform", g=4, r=2.0)
    save(compress(variables, plan), tmp_path / "r2.npz")
    result = run_compression(job_config(tmp_path / "r2.npz", finetune="all"), str(tmp_path / "same"))
    assert "original" not in result and result["compressed"]["coefficients"] * 2 == sum(x.size for x in plan.layers)
    start, final = load(tmp_path / "r2.npz"), load(tmp_path / "same" / "compressed.npz")
    for module in ("conv1", "fc", "bn1"):  # finetune='all': the uncompressed layers and BatchNorm train too
        a, b = _leaves(start["params"][module]), _leaves(final["params"][module])
        assert any(
            not np.array_equal(np.asarray(getattr(a[k], "coef", a[k])), np.asarray(getattr(b[k], "coef", b[k])))
            for k in a
        ), module
    with pytest.raises(ValueError, match=r"r2.npz.* was compressed with another plan: layer '.*' has g=4, t="):
        run_compression(job_config(tmp_path / "r2.npz", r=4.0), str(tmp_path / "other"))
    with pytest.raises(ValueError, match=r"was compressed with another plan: .* sparse"):
        run_compression(job_config(tmp_path / "r2.npz", method="l1"), str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    # a workdir holding a compression of another plan is refused, whatever the source
    with pytest.raises(ValueError, match=r"same/compressed_init\.npz was compressed with another plan"):
        run_compression(job_config(trained, r=4.0), str(tmp_path / "same"))


@pytest.mark.parametrize(
    ("compression", "message"),
    [
        ({"method": "dct2"}, r"config.compression.method must be one of \['dct', 'dct_no_reorder', 'l1'\], got 'dct2'"),
        ({"r": 500.0}, r"config.compression \(uniform.*layer '.*' of shape .*: r=500.0 keeps int\(.*\) = 0 coeff"),
        ({"g": 7}, r"g=7 does not divide the"),
        ({"strategy": "progressive"}, r"compression.strategy must be one of"),
    ],
)
def test_bad_compression_settings_stop_before_anything_is_written(trained, tmp_path, compression, message):
    with pytest.raises(ValueError, match=message):
        run_compression(job_config(trained, **compression), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def _cmd(workdir, *args):
    return [
        sys.executable,
        "-m",
        "freqjax.main",
        "--config",
        "configs/compress.py:uniform",
        *args,
        "--workdir",
        str(workdir),
    ]


def _args(trained, steps):
    overrides = {**TINY, "init_from": str(trained), "num_train_steps": steps, "checkpoint_every_steps": 10}
    return [f"--config.{k}={v}" for k, v in overrides.items()] + ["--config.compression.r=2"]


def test_a_bad_method_is_one_line_from_the_command_line(trained, tmp_path):
    out = subprocess.run(
        _cmd(tmp_path / "w", *_args(trained, 3), "--config.compression.method=l2"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("freqjax.main: error: config.compression.method must be one of") and "'l2'" in line
    assert not (tmp_path / "w").exists()


def test_sigkill_during_the_fine_tune_then_resume_is_bitwise_equal(trained, tmp_path):
    env = dict(
        os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    args = _args(trained, 30)
    whole = subprocess.run(
        _cmd(tmp_path / "whole", *args), capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = subprocess.Popen(
        _cmd(tmp_path / "killed", *args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first = tmp_path / "killed" / "checkpoints" / "10"
    deadline = time.monotonic() + 240
    while not first.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "compressed.npz").exists()
    resumed = subprocess.run(
        _cmd(tmp_path / "killed", *args), capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fine-tuning resumed at step" in resumed.stdout
    a, b = _leaves(load(tmp_path / "whole" / "compressed.npz")), _leaves(load(tmp_path / "killed" / "compressed.npz"))
    assert a.keys() == b.keys()
    for key in a:
        x, y = (a[key].coef, b[key].coef) if isinstance(a[key], CompressedTensor) else (a[key], b[key])
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)

    def curve(w):
        return [(m["step"], m["train/loss"]) for m in map(json.loads, (w / "metrics.jsonl").read_text().splitlines())]

    assert curve(tmp_path / "killed") == curve(tmp_path / "whole") and len(curve(tmp_path / "whole")) == 30


def _curve(argv):
    from freqjax.studies.compression_curve import main

    main(argv)


def test_the_curve_runs_every_cell_writes_csv_md_png_and_reuses_finished_cells(trained, tmp_path, capsys):
    out = tmp_path / "curve"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "num_train_steps": 2}.items()]
    argv = ["--from", str(trained), "--ratios", "2,4", "--methods", "dct", "--out", str(out), *sets]
    _curve(argv)
    rows = (out / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("method,r,kept_values,index_entries,parameters,bytes,param_ratio") and len(rows) == 3
    table = {float(r.split(",")[1]): r.split(",") for r in rows[1:]}
    assert int(table[4.0][2]) * 2 == int(table[2.0][2]) and float(table[4.0][6]) > float(table[2.0][6]) > 1
    for cells in table.values():
        report = json.loads((out / f"dct_r{cells[1].removesuffix('.0')}" / "report.json").read_text())
        assert float(cells[-2]) == report["before"]["top1"] and float(cells[-1]) == report["finetuned"]["top1"]
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG" and "| dct | 4 |" in (out / "curve.md").read_text()
    assert capsys.readouterr().out.count("== ") == 2
    _curve(argv)  # every cell finished: read, not rerun
    assert capsys.readouterr().out.count("== ") == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ratios", "2,0.5"], "--ratios must be comma-separated numbers >= 1"),
        (["--ratios", "2,500"], "r=500.0 keeps int"),
        (["--ratios", "2", "--methods", "dct,l3"], "--methods must be among"),
        (["--ratios", "2", "--set", "num_trian_steps=3"], "--set num_trian_steps: no such config field"),
    ],
)
def test_a_bad_curve_is_one_line_and_writes_nothing(trained, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        _curve(["--from", str(trained), "--out", str(tmp_path / "curve"), *extra])
    (line,) = [x for x in capsys.readouterr().err.strip().splitlines() if "error:" in x]
    assert message in line
    assert not (tmp_path / "curve").exists()


def test_a_compress_config_runs_the_compress_job_only():
    from freqjax.main import JOBS, choose_mode

    assert JOBS["compress"] == ("freqjax.studies.compression", "run_compression")
    assert choose_mode("compress", None) == "compress"
    with pytest.raises(ValueError, match=r"mode must be one of \['compress'\] for this config, got 'train'"):
        choose_mode("compress", "train")
    with pytest.raises(ValueError, match=r"got 'compress'"):
        choose_mode("train", "compress")
