"""Multi-host for real: two processes x 4 CPU devices (jax.distributed on localhost) vs one process x 8."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARGS = (
    "--config",
    "configs/cifar_quick.py:synthetic",
    "--config.image_size=16",
    "--config.batch_size=16",
    "--config.synthetic_size=128",
    "--config.num_train_steps=4",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=4",
    "--config.checkpoint_every_steps=4",
    "--config.progress_bar=False",
)


def _cmd(workdir):
    return [sys.executable, "-m", "freqjax.main", *ARGS, "--workdir", str(workdir)]


def _losses(workdir):
    lines = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [m["train/loss"] for m in lines if "train/loss" in m], [m["eval/top1"] for m in lines if "eval/top1" in m]


def test_two_processes_with_four_devices_match_one_process_with_eight(tmp_path):
    single = subprocess.run(_cmd(tmp_path / "one"), capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    with socket.socket() as sock:  # a free localhost port for the coordinator
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        procs.append(
            subprocess.Popen(
                _cmd(tmp_path / "two"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "on 8 devices / 2 processes" in outs[0][0]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one[0]) == 4
    # same global batches, same initialisation: the same losses (up to all-reduce summation order)
    np.testing.assert_allclose(two[0], one[0], rtol=1e-5)
    assert two[1] == one[1]
    # both processes wrote their data-iterator state into the shared checkpoint
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "4" / "data").glob("process_*.json")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
