"""launch/: the local multi-process script for real, the Slurm script under a fake srun, tpu_pod.sh's commands."""

import json
import os
import random
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
QUICK = (
    "--config=configs/cifar_quick.py:synthetic",
    "--config.image_size=16",
    "--config.batch_size=16",
    "--config.synthetic_size=128",
    "--config.num_train_steps=3",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=3",
    "--config.checkpoint_every_steps=3",
    "--config.progress_bar=False",
)


def _env(**extra) -> dict:
    """The test process's environment without its 8-device XLA flag and any job settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "FREQJAX_DISTRIBUTED"))}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # compile-bound: see tests/conftest.py
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def _losses(workdir: Path) -> tuple[list[float], list[float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r], [r["eval/top1"] for r in rows if "eval/top1" in r]


def test_local_multiprocess_two_processes_train_like_one(tmp_path):
    def run(n: int, devices: int, workdir: Path) -> str:
        cmd = [str(LAUNCH / "local_multiprocess.sh"), "-n", str(n), "--cpu-devices", str(devices)]
        cmd += ["--logdir", str(workdir / "logs"), "--", sys.executable, "-m", "freqjax.main", *QUICK]
        cmd += ["--workdir", str(workdir)]
        out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out.stdout

    one = run(1, 2, tmp_path / "one")
    two = run(2, 1, tmp_path / "two")
    assert (
        "[0] backend cpu (cpu), float32 compute" in one
        and "; model cifar_resnet8 (rgb, 10 classes) on 2 devices / 1 processes" in one
    )
    assert "on 2 devices / 2 processes" in two
    assert sorted(p.name for p in (tmp_path / "two" / "logs").iterdir()) == ["process_0.log", "process_1.log"]
    (loss1, top1_1), (loss2, top1_2) = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(loss1) == 3
    # the same two devices' shards of the same global batches: the same losses, to all-reduce order
    np.testing.assert_allclose(loss2, loss1, rtol=1e-5)
    assert top1_2 == top1_1


def test_local_multiprocess_stops_the_others_when_one_fails(tmp_path):
    script = 'echo "p$JAX_PROCESS_ID/$JAX_NUM_PROCESSES at $JAX_COORDINATOR_ADDRESS"; '
    script += "[ $JAX_PROCESS_ID = 1 ] && { sleep 2; exit 3; }; sleep 60"  # p1 fails once all have started
    cmd = [str(LAUNCH / "local_multiprocess.sh"), "-n", "3", "--", "bash", "-c", script]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 3
    assert sorted(line.split()[1].split("/")[0] for line in out.stdout.splitlines()) == ["p0", "p1", "p2"]
    assert "stopping the others" in out.stderr
    bad = subprocess.run(
        [str(LAUNCH / "local_multiprocess.sh"), "-n", "0", "--", "true"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "local_multiprocess.sh: -n must be a positive integer, got '0'"


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


# srun as Slurm runs a job step on one node: every task gets its SLURM_* ids; the arguments are logged.
FAKE_SRUN = r"""#!/usr/bin/env bash
echo "$*" > "$FAKE_LOG/srun_args"
ntasks=1
while [[ $1 == -* ]]; do
  case $1 in --ntasks=*) ntasks=${1#--ntasks=} ;; esac
  shift
done
pids=()
for ((i = 0; i < ntasks; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 SLURM_NTASKS=$ntasks SLURM_STEP_NUM_NODES=1 \
    SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST "$@" > "$FAKE_LOG/task_$i" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""
FAKE_SCONTROL = '#!/usr/bin/env bash\n[ "$1 $2" = "show hostnames" ] && tr "," "\\n" <<< "$3"\n'

# Each task: join the job through freqjax, then a real cross-process collective.
TASK = """
import os, jax, numpy as np
from jax.experimental import multihost_utils
from freqjax.train.parallel import initialize_distributed
assert initialize_distributed()
ids = multihost_utils.process_allgather(np.array([jax.process_index()]))
print("TASK", os.environ["FREQJAX_DISTRIBUTED"], jax.process_index(), jax.process_count(), ids.ravel().tolist())
"""


def _free_slurm_port() -> tuple[int, int]:
    """A Slurm job id whose derived coordinator port (20000 + id mod 20000) is free now."""
    rng = random.Random()
    for _ in range(50):
        job = rng.randrange(100_000, 999_999)
        with socket.socket() as sock:
            try:
                sock.bind(("localhost", 20000 + job % 20000))
            except OSError:
                continue
        return job, 20000 + job % 20000
    raise RuntimeError("no free port in 20000-39999")


def test_slurm_sbatch_derives_the_job_and_its_tasks_join(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    _write_exe(bin_dir / "srun", FAKE_SRUN)
    _write_exe(bin_dir / "scontrol", FAKE_SCONTROL)
    job, port = _free_slurm_port()
    env = _env(
        PATH=f"{bin_dir}{os.pathsep}{_env()['PATH']}",
        FAKE_LOG=str(log),
        JAX_PLATFORMS="cpu",
        SLURM_JOB_ID=str(job),
        SLURM_JOB_NODELIST="localhost",
        SLURM_JOB_NUM_NODES="1",
        SLURM_GPUS_ON_NODE="2",
        JAX_COORDINATOR_ADDRESS="must-be-unset:1",  # a stale explicit setting the script must drop
    )
    cmd = ["bash", str(LAUNCH / "slurm_gpu.sbatch"), sys.executable, "-c", TASK]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    tasks = [(log / f"task_{i}").read_text() if (log / f"task_{i}").exists() else "" for i in range(2)]
    assert out.returncode == 0, out.stderr + "".join(tasks)
    assert f"1 nodes x 2 GPUs = 2 processes; coordinator localhost:{port}" in out.stderr
    assert (log / "srun_args").read_text().split()[:4] == [
        "--nodes=1",
        "--ntasks=2",
        "--ntasks-per-node=2",
        "--kill-on-bad-exit=1",
    ]
    for i, text in enumerate(tasks):
        assert f"TASK 1 {i} 2 [0, 1]" in text, text[-2000:]


def test_slurm_sbatch_bad_environment_is_one_line():
    env = _env(SLURM_JOB_ID="12", SLURM_JOB_NODELIST="n1", SLURM_GPUS_ON_NODE="two")
    out = subprocess.run(
        ["bash", str(LAUNCH / "slurm_gpu.sbatch"), "true"], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("slurm_gpu.sbatch: GPUs per node must be a positive integer")
    assert out.stderr.strip().endswith("got 'two'")
    out = subprocess.run(
        ["bash", str(LAUNCH / "slurm_gpu.sbatch"), "true"], env=_env(), capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert "SLURM_JOB_ID is not set" in out.stderr


TPU_ARGS = ("--name", "pod1", "--zone", "us-central2-b", "--type", "v4-32")
TPU_CMD = ("python", "-m", "freqjax.main", "--config", "configs/efun.py:efun_s_plus", "--workdir", "gs://b/run 1")


def test_tpu_pod_dry_run_prints_every_gcloud_command():
    cmd = [str(LAUNCH / "tpu_pod.sh"), "--dry-run", *TPU_ARGS, "--", *TPU_CMD]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=30, check=True)
    lines = out.stdout.splitlines()
    assert all(line.startswith("gcloud compute tpus tpu-vm ") for line in lines)
    assert [line.split()[4] for line in lines] == ["describe", "create", "scp", "ssh", "ssh"]
    assert "create pod1 --zone us-central2-b --accelerator-type v4-32 --version tpu-ubuntu2204-base" in lines[1]
    assert all("--worker=all" in line for line in lines[2:])
    assert 'pip install -c constraints.txt -e . "jax[tpu]"' in lines[3]
    assert lines[4].endswith(
        "--command 'cd ~/freqjax && . .venv/bin/activate && FREQJAX_DISTRIBUTED=1 python -m freqjax.main "
        "--config configs/efun.py:efun_s_plus --workdir '\\''gs://b/run 1'\\'''"
    )
    bad = subprocess.run(
        [str(LAUNCH / "tpu_pod.sh"), "--zone", "z", "--", "x"], capture_output=True, text=True, check=False
    )
    assert (bad.returncode, bad.stderr.strip()) == (2, "tpu_pod.sh: --name is required (the TPU VM's name)")


def test_tpu_pod_creates_a_missing_vm_and_reuses_a_ready_one(tmp_path):
    """A fake gcloud that logs its calls: describe fails (no VM) or answers READY."""
    _write_exe(
        tmp_path / "gcloud",
        '#!/usr/bin/env bash\necho "$*" >> "$FAKE_LOG"\n'
        'if [ "$4" = describe ]; then [ -n "$FAKE_STATE" ] && echo "$FAKE_STATE" && exit 0; exit 1; fi\n',
    )
    calls = tmp_path / "calls"
    for state, expected in (
        ("", ["describe", "create", "scp", "ssh", "ssh"]),
        ("READY", ["describe", "scp", "ssh", "ssh"]),
    ):
        calls.write_text("")
        path = f"{tmp_path}{os.pathsep}{_env()['PATH']}"
        env = _env(PATH=path, FAKE_LOG=str(calls), FAKE_STATE=state, TMPDIR=str(tmp_path))
        cmd = [str(LAUNCH / "tpu_pod.sh"), *TPU_ARGS, "--", *TPU_CMD]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert [line.split()[3] for line in calls.read_text().splitlines()] == expected
    # the archive copied to the workers holds this checkout
    listing = subprocess.run(
        ["tar", "-tzf", str(tmp_path / "freqjax-pod1.tgz")], capture_output=True, text=True, check=False
    )
    assert "freqjax/main.py" in listing.stdout.split()
