"""``python -m freqjax.main`` training end to end: resume, faults (SIGKILL, SIGTERM, NaN, truncated checkpoint).

Subprocesses inherit conftest's 8 fake CPU devices and share one persistent compilation cache,
so only the first run of each model compiles.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from freqjax.main import choose_mode, unknown_field_message

ROOT = Path(__file__).resolve().parents[1]
# a tiny run: cifar_resnet8 on 16x16 synthetic images, batch 16
TINY = (
    "--config",
    "configs/cifar_quick.py:synthetic",
    "--config.image_size=16",
    "--config.batch_size=16",
    "--config.synthetic_size=128",
    "--config.eval_steps=1",
    "--config.progress_bar=False",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=1000",
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )


def _cmd(workdir, *args):
    return [sys.executable, "-m", "freqjax.main", *args, "--workdir", str(workdir)]


def run(env, workdir, *args, timeout=300):
    return subprocess.run(
        _cmd(workdir, *args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False
    )


def _metrics(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _steps(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def _params(workdir, step):
    import orbax.checkpoint as ocp

    tree = ocp.PyTreeCheckpointer().restore(Path(workdir) / "checkpoints" / str(step) / "state")
    return {"/".join(str(k) for k in path): np.asarray(v) for path, v in _flatten(tree)}


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, (*prefix, k))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from _flatten(v, (*prefix, i))
    else:
        yield prefix, tree


def test_efun_s_plus_on_synthetic_runs_writes_checkpoints_and_metrics_and_resumes(env, tmp_path):
    args = (
        "--config",
        "configs/efun.py:efun_s_plus",
        "--config.dataset=synthetic",
        "--config.image_size=32",
        "--config.batch_size=8",
        "--config.synthetic_size=32",
        "--config.worker_count=0",
        "--config.checkpoint_every_steps=1",
        "--config.eval_every_steps=2",
        "--config.eval_steps=1",
        "--config.log_every_steps=1",
        "--config.progress_bar=False",
    )
    first = run(env, tmp_path, *args, "--config.num_train_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting at step 0 of 2" in first.stdout
    result = json.loads(first.stdout.split("RESULT ")[-1])
    assert result["step"] == 2 and np.isfinite(result["train"]["loss"]) and result["eval"]["count"] == 8
    assert "eval_ema" in result  # the recipe evaluates its EMA weights alongside
    assert _steps(tmp_path) == [1, 2]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    second = run(env, tmp_path, *args, "--config.num_train_steps=3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step 2 of 3" in second.stdout
    assert _steps(tmp_path) == [1, 2, 3]
    train_steps = [m["step"] for m in _metrics(tmp_path) if "train/loss" in m]
    assert train_steps == [1, 2, 3]


def test_sigkill_mid_run_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(env, tmp_path):
    args = (*TINY, "--config.num_train_steps=60", "--config.checkpoint_every_steps=15", "--config.ema_decay=0.9")
    whole = run(env, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = subprocess.Popen(
        _cmd(tmp_path / "killed", *args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first_ckpt = tmp_path / "killed" / "checkpoints" / "15"
    deadline = time.monotonic() + 240
    while not first_ckpt.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert max(_steps(tmp_path / "killed")) < 60
    resumed = run(env, tmp_path / "killed", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step" in resumed.stdout
    # one curve in the resumed run's JSONL (the killed run's lines past its checkpoint were dropped),
    # equal to the uninterrupted run's
    curve = lambda w: [(m["step"], m["train/loss"]) for m in _metrics(w) if "train/loss" in m]  # noqa: E731
    assert curve(tmp_path / "killed") == curve(tmp_path / "whole") and len(curve(tmp_path / "whole")) == 60
    a, b = _params(tmp_path / "whole", 60), _params(tmp_path / "killed", 60)
    assert a.keys() == b.keys() and any("ema_params" in k for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigterm_saves_a_checkpoint_and_exits_zero(env, tmp_path):
    args = (*TINY, "--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000")
    proc = subprocess.Popen(
        _cmd(tmp_path, *args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while (not metrics.exists() or metrics.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved checkpoint at step" in out
    (step,) = _steps(tmp_path)
    assert 1 <= step < 100000 and json.loads(out.split("RESULT ")[-1])["step"] == step


def test_nan_loss_stops_with_message_and_keeps_the_last_good_checkpoint(env, tmp_path):
    args = (*TINY, "--config.num_train_steps=10", "--config.checkpoint_every_steps=2")
    out = run(env, tmp_path, *args, "--config.inject_nan_at_step=5")
    assert out.returncode == 1
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("freqjax.main: error: non-finite training loss (nan) at step 5")
    assert f"Last good checkpoint: step 4 in {tmp_path / 'checkpoints'}" in message
    assert _steps(tmp_path) == [2, 4]
    # the kept checkpoint is intact: --mode eval restores and evaluates it
    evaluated = run(env, tmp_path, *args, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout.split("RESULT ")[-1])
    assert result["step"] == 4 and result["eval"]["count"] == 16


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(env, tmp_path):
    args = (*TINY, "--config.checkpoint_every_steps=2")
    assert run(env, tmp_path, *args, "--config.num_train_steps=4").returncode == 0
    data_files = [p for p in (tmp_path / "checkpoints" / "4" / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    biggest = max(data_files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:500])
    out = run(env, tmp_path, *args, "--config.num_train_steps=6")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "checkpoint 4" in out.stdout and "unreadable" in out.stdout
    assert "resumed at step 2 of 6" in out.stdout
    assert _steps(tmp_path) == [2, 4, 6]


# Bad values of every field are one in-process table (tests/train/test_train.py); here the two
# paths that only the command line has: a flag that does not parse, and a config file that does not exist.
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*TINY, "--config.batch_size=abc"), "invalid literal for int()"),
        (("--config", "configs/nope.py"), "nope.py"),
    ],
)
def test_bad_command_lines_give_one_line_errors(env, tmp_path, args, message):
    out = run(env, tmp_path, *args)
    assert out.returncode != 0 and message in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("freqjax.main: error: ")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("config_mode", "requested", "expected"),
    [
        ("train", None, "train"),
        ("train", "eval", "eval"),
        ("train", "input_bench", "input_bench"),
        ("dct_demo", None, "dct_demo"),
        ("dct_demo", "train", "mode must be one of \\['dct_demo'\\] for this config, got 'train'"),
        ("train", "dct_demo", r"mode must be one of \['train', 'eval', 'input_bench', 'msnet_sweep', 'input_"),
        ("train", "trian", "got 'trian'"),
    ],
)
def test_mode_is_the_flag_or_the_configs_and_must_suit_the_config(config_mode, requested, expected):
    if expected.startswith("mode must") or expected.startswith("got"):
        with pytest.raises(ValueError, match=expected):
            choose_mode(config_mode, requested)
    else:
        assert choose_mode(config_mode, requested) == expected


def test_input_bench_measures_the_pipeline_alone(env, tmp_path):
    out = run(env, tmp_path, *TINY, "--config.num_train_steps=10", "--mode=input_bench")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ")[-1])
    assert result["batches"] == 10 and result["input_images_per_s"] > 0
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--config.nope=1", "'nope' in {}; did you mean mode?"),
        ("--config.batchsize=3", "'batchsize' in {}; did you mean batch_size,"),
        ("--config.model_options.widht=3", "'model_options.widht' in {}; did you mean model_options.width"),
    ],
)
def test_an_unknown_config_field_is_named_with_its_file_and_close_fields(override, expected, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = "configs/cifar_quick.py:synthetic"
    argv = ["freqjax.main", "--config", spec, override, "--workdir", "w"]
    field = override.split("=")[0].split(".")[-1]  # all ml_collections names
    assert unknown_field_message(argv, f"'{field}'").startswith("unknown config field " + expected.format(spec))


def test_held_errors_keep_tensorstores_closed_loop_reports_until_released(capsys):
    """A failed save's background threads report "Event loop is closed" through sys.unraisablehook:
    held while the job runs (the run's one-line error follows), printed if the run ends otherwise."""
    from freqjax.main import _HeldOrbaxErrors

    class Raises:  # an exception raised in __del__ goes to sys.unraisablehook, as tensorstore's do
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    def report(error):
        Raises(error)  # collected at once

    held = _HeldOrbaxErrors()
    held.hold()
    try:
        report(RuntimeError("Event loop is closed"))
        report(RuntimeError("something else"))
        err = capsys.readouterr().err
        assert "Event loop is closed" not in err and "something else" in err
    finally:
        held.release()
    assert sys.unraisablehook is sys.__unraisablehook__
    assert "Event loop is closed" in capsys.readouterr().err
