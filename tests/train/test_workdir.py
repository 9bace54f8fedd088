"""A run's workdir is never lost: a resume or an evaluation that does not fit the saved run is an
error that leaves every checkpoint byte for byte as it was; one run owns a workdir at a time;
damaged checkpoints are moved aside, never deleted. One tiny run is trained once; each case works
on a copy of its workdir."""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from config_files import tiny_train_config

from freqjax.train import loop as train
from freqjax.train.checkpoint import MANIFEST, CheckpointMismatchError, is_intact, verify_manifest
from freqjax.train.workdir import RUN_CONFIG, WorkdirLock, check_resume_config, check_workdir


def _config(**kw):
    # 4 steps, checkpoints at 2 and 4
    defaults = dict(num_train_steps=4, checkpoint_every_steps=2, eval_every_steps=1000, eval_steps=1)
    return tiny_train_config(**{**defaults, **kw})


def _digest(workdir: Path) -> dict[str, str]:
    """Every file under checkpoints/ with the SHA-256 of its bytes."""
    return _hashes(workdir / "checkpoints")


def _hashes(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "w"
    train.train_and_evaluate(_config(), str(workdir))
    return workdir


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(trained, copy)
    return copy


def test_a_finished_run_has_manifests_a_saved_config_and_a_released_lock(trained):
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["2", "4"]
    for step in ("2", "4"):
        assert verify_manifest(trained / "checkpoints" / step) is None
    assert (trained / RUN_CONFIG).exists()
    assert (trained / "run.lock").read_text() == ""  # empty: the run finished and let go


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"model_options": {"width": 32}}, "model_options.width"),
        ({"optimizer": "adamw"}, "optimizer"),
        ({"batch_size": 8}, "batch_size"),
        ({"seed": 1}, "seed"),
        ({"synthetic_size": 128}, "synthetic_size"),
        ({"worker_count": 1}, "worker_count"),
    ],
)
def test_resume_with_a_changed_field_is_an_error_and_keeps_every_checkpoint(run, override, field):
    before = _digest(run)
    config = _config(num_train_steps=6)
    if "model_options" in override:
        config.model_options.width = override["model_options"]["width"]
    else:
        config.update(override)
    with pytest.raises(ValueError, match=rf"different config \({field}: ") as err:
        train.train_and_evaluate(config, str(run))
    assert f"--config.allow_config_change={field}" in str(err.value)
    assert _digest(run) == before


def test_eval_with_a_different_width_is_an_error_and_keeps_every_checkpoint(run):
    before = _digest(run)
    config = _config(mode="eval")
    config.model_options.width = 32
    with pytest.raises(ValueError, match=r"model_options.width: 16 -> 32"):
        train.evaluate_checkpoint(config, str(run))
    assert _digest(run) == before


def test_intact_checkpoint_that_does_not_fit_is_kept_even_without_a_saved_config(run):
    # a workdir from before run_config.json: the restore fails, the manifest proves the files intact
    (run / RUN_CONFIG).unlink()
    before = _digest(run)
    config = _config(num_train_steps=6)
    config.model_options.width = 32
    with pytest.raises(CheckpointMismatchError, match="is intact but does not restore"):
        train.train_and_evaluate(config, str(run))
    assert _digest(run) == before
    config.mode = "eval"
    with pytest.raises(CheckpointMismatchError, match="is intact but does not restore"):
        train.evaluate_checkpoint(config, str(run))
    assert _digest(run) == before


def test_a_stray_folder_among_the_checkpoints_is_an_error_not_deleted(run):
    stray = run / "checkpoints" / "99"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    before = _digest(run)
    with pytest.raises(CheckpointMismatchError, match=f"has no {MANIFEST}"):
        train.train_and_evaluate(_config(num_train_steps=6), str(run))
    assert _digest(run) == before


def test_a_second_run_into_a_live_workdir_is_refused_naming_the_holder(run):
    before = _digest(run)
    with WorkdirLock(run), pytest.raises(ValueError, match=rf"is in use by pid {os.getpid()} on "):
        train.train_and_evaluate(_config(num_train_steps=6), str(run))
    assert _digest(run) == before


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from freqjax.train.workdir import WorkdirLock; "
         "lock = WorkdirLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(ValueError, match=f"in use by pid {holder.pid} on"):
        WorkdirLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    lock = WorkdirLock(tmp_path)
    lock.acquire()
    assert f"left by a run that is no longer running (pid {holder.pid} on" in capsys.readouterr().out
    assert (tmp_path / "run.lock").read_text().startswith(f"pid {os.getpid()} on ")
    lock.release()


def test_damaged_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous_one(run):
    data = max((p for p in (run / "checkpoints" / "4").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:100])
    damaged = _digest(run)
    result = train.train_and_evaluate(_config(num_train_steps=6), str(run))
    assert result["step"] == 6
    kept = run / "checkpoints_damaged" / "4"
    assert _hashes(kept) == {k.removeprefix("4/"): v for k, v in damaged.items() if k.startswith("4/")}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4", "6"]


def test_resume_may_change_the_length_and_cadence_and_says_so(run, capsys):
    result = train.train_and_evaluate(_config(num_train_steps=6, eval_steps=2, log_every_steps=3), str(run))
    assert result["step"] == 6
    out = capsys.readouterr().out
    assert "resuming with a changed num_train_steps: 4 -> 6" in out and "eval_steps: 1 -> 2" in out


def test_allow_config_change_lets_a_named_field_differ():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        from freqjax.train.workdir import write_run_config

        write_run_config(d, _config(), 10)
        with pytest.raises(ValueError, match=r"label_smoothing: 0\.0 -> 0\.1"):
            check_resume_config(d, _config(label_smoothing=0.1), 10)
        changes = check_resume_config(d, _config(label_smoothing=0.1, allow_config_change="label_smoothing"), 10)
        assert "label_smoothing: 0.0 -> 0.1" in changes
        with pytest.raises(ValueError, match="num_classes: 10 -> 100"):  # another dataset's classes
            check_resume_config(d, _config(), 100)
        # evaluating only needs the checkpoint's structure to match
        assert check_resume_config(d, _config(batch_size=8, seed=3), 10, evaluating=True)
        with pytest.raises(ValueError, match="optimizer"):
            check_resume_config(d, _config(optimizer="adamw"), 10, evaluating=True)


def test_a_field_newer_than_the_saved_config_blocks_only_when_it_is_not_at_its_default(tmp_path):
    from freqjax.train.workdir import write_run_config

    write_run_config(tmp_path, _config(), 10)
    path = tmp_path / RUN_CONFIG
    saved = json.loads(path.read_text())
    del saved["grad_clip_norm"], saved["model_options"]["width"]  # as written by an older freqjax
    path.write_text(json.dumps(saved))
    assert check_resume_config(tmp_path, _config(), 10) == []
    with pytest.raises(ValueError, match=r"grad_clip_norm: '<absent>' -> 1\.0"):
        check_resume_config(tmp_path, _config(grad_clip_norm=1.0), 10)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda w: w.write_text("x"), "is a file, not a directory"),
        (lambda w: (w.mkdir(), (w / "checkpoints").write_text("x")), "is a file, but a run keeps its checkpoints"),
    ],
)
def test_workdir_problems_are_one_line_before_anything_runs(tmp_path, make, message):
    workdir = tmp_path / "w"
    make(workdir)
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(_config(), str(workdir))


def test_too_little_free_space_is_refused(tmp_path):
    with pytest.raises(ValueError, match="MiB free, less than"):
        check_workdir(tmp_path, min_free_bytes=2**62)


@contextlib.contextmanager
def _tmpfs(mount: Path, options: str):
    """A tmpfs mounted at ``mount`` for the block (skips the test where mounting is not allowed)."""
    mount.mkdir()
    mounted = (
        os.geteuid() == 0
        and not subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, check=False
        ).returncode
    )
    if not mounted:
        pytest.skip(f"needs a tmpfs mounted with {options}: mounting needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_at_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    with _tmpfs(tmp_path / "small", "size=1200k") as mount:
        root = Path(__file__).resolve().parents[2]
        args = ["--config", "configs/cifar_quick.py:synthetic", "--config.image_size=16", "--config.batch_size=16",
                "--config.synthetic_size=128", "--config.eval_steps=1", "--config.progress_bar=False",
                "--config.checkpoint_every_steps=2", "--config.num_train_steps=8"]  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "freqjax.main", *args, "--workdir", str(mount / "w")], cwd=root,
            env={**os.environ, "FREQJAX_MIN_FREE_MB": "0"}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert out.returncode == 1
        (line,) = out.stderr.strip().splitlines()
        saved = sorted(p for p in (mount / "w" / "checkpoints").iterdir() if p.name.isdigit())
        assert line.startswith("freqjax.main: error: saving a checkpoint in") and "the disk is full" in line
        assert f"the checkpoints before it are intact (steps {[int(p.name) for p in saved]})" in line
        assert saved and all(is_intact(p) for p in saved)


def test_a_read_only_workdir_is_one_line_before_anything_runs(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        with pytest.raises(ValueError, match="is not writable"):
            train.train_and_evaluate(_config(), str(mount))
        with pytest.raises(ValueError, match="cannot be created"):
            train.train_and_evaluate(_config(), str(mount / "run"))
