"""Start-up on accelerator hosts: the CPU malloc re-exec only for a CPU default backend; the first log line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from freqjax import runtime

ROOT = Path(__file__).resolve().parents[2]
PRINT_TUNABLES = "from freqjax.runtime import reexec_with_malloc_tuning as r; r(); import os; "
PRINT_TUNABLES += "print(os.environ.get('GLIBC_TUNABLES'))"


def _fake_plugins(root: Path) -> None:
    """A jax_plugins entry point (as jax-cuda12-plugin installs) and a jax_plugins namespace module."""
    dist = root / "fake_gpu_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-gpu-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[jax_plugins]\nxla_fake_gpu = fake_gpu_plugin\n")
    (root / "jax_plugins" / "fake_tpu").mkdir(parents=True)
    (root / "jax_plugins" / "fake_tpu" / "__init__.py").write_text("")


def _run(code: str, **env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME", "GLIBC_TUNABLES")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("platforms", "expected"), [("cpu", True), ("cuda", False), ("tpu,cpu", False), ("CPU, cuda", True)]
)
def test_jax_platforms_decides(monkeypatch, platforms, expected):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setattr(runtime, "accelerator_plugins", lambda: ["xla_cuda12"])
    assert runtime.default_backend_is_cpu() is expected


def test_installed_plugins_decide_without_jax_platforms(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("JAX_PLATFORM_NAME", raising=False)
    monkeypatch.setattr(runtime, "accelerator_plugins", lambda: [])
    assert runtime.default_backend_is_cpu()
    monkeypatch.setattr(runtime, "accelerator_plugins", lambda: ["libtpu"])
    assert not runtime.default_backend_is_cpu()


def test_plugins_are_found_without_starting_jax(tmp_path):
    _fake_plugins(tmp_path)
    code = "import sys; from freqjax.runtime import accelerator_plugins as a; print(a(), 'jax' in sys.modules)"
    assert _run(code, PYTHONPATH=str(tmp_path)) == "['xla_fake_gpu', 'fake_tpu'] False"
    assert _run(code) == "[] False"  # this CPU-only test environment


@pytest.mark.skipif(sys.platform != "linux", reason="the malloc tunables are glibc's")
def test_malloc_reexec_only_when_the_default_backend_is_the_cpu(tmp_path):
    assert _run(PRINT_TUNABLES) == runtime.MALLOC_TUNABLES
    assert _run(PRINT_TUNABLES, JAX_PLATFORMS="cuda") == "None"
    _fake_plugins(tmp_path)
    assert _run(PRINT_TUNABLES, PYTHONPATH=str(tmp_path)) == "None"
    assert _run(PRINT_TUNABLES, PYTHONPATH=str(tmp_path), JAX_PLATFORMS="cpu") == runtime.MALLOC_TUNABLES
    assert _run(PRINT_TUNABLES, FREQJAX_MALLOC_TUNING="0") == "None"


def test_first_log_line_names_backend_devices_and_precision(tmp_path):
    args = ["--config", "configs/cifar_quick.py:synthetic", "--config.image_size=16", "--config.batch_size=8"]
    args += ["--config.synthetic_size=16", "--config.num_train_steps=1", "--config.eval_every_steps=1"]
    args += ["--config.progress_bar=False", "--config.half_precision=True", "--workdir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    out = subprocess.run(
        [sys.executable, "-m", "freqjax.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith("backend cpu (cpu), bfloat16 compute, float32 parameters, conv "), first
    assert "model cifar_resnet8 (rgb, 10 classes) on 1 devices / 1 processes" in first
