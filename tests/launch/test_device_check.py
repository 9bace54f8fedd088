"""launch/device_check.py: the --smoke form on the CPU, its dependency report and its argument errors."""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "launch" / "device_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # one CPU device; compile-bound (tests/conftest.py)
    return env


def test_smoke_passes_on_the_cpu_and_writes_its_report(tmp_path):
    out_file = tmp_path / "report.json"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out_file)]
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out_file.read_text())
    assert report["ok"] and report["environment"]["backend"] == "cpu"
    assert [r["model"] for r in report["logits"]] == ["efun", "resnet50"]
    for row in report["logits"]:
        assert row["float32_rel_error"] <= 1e-4 and row["bfloat16_rel_error"] <= 1e-1
        assert row["float32_top1_agree"] == 1.0
    (train,) = report["train_step"]
    assert train["model"] == "cifar_resnet8" and train["float32"] > 0 and train["bfloat16"] > 0
    assert report["dct"]["images_per_s"] > 0
    table = out.stdout.splitlines()
    assert table[0].split()[:4] == ["check", "item", "float32", "bfloat16"]
    assert any(
        line.startswith("logits  efun rel err") and line.rstrip().endswith("ok (tol 1e-04/1e-01)") for line in table
    )
    assert table[-1].startswith("all checks passed in ")


def test_dependency_report_names_what_is_missing(monkeypatch):
    module = _load()
    real = importlib.metadata.version

    def version(name):
        if name in ("grain", "tensorflow-datasets", "torch"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    report = module.dependency_report()
    assert report["missing"] == ["tensorflow-datasets", "grain"]  # torch is optional, not a dependency
    assert report["versions"]["torch"] is None and report["versions"]["jax"] == real("jax")


def test_missing_needed_module_and_bad_model_are_one_line(tmp_path):
    # a site dir whose sitecustomize hides optax, as on an image without it
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'optax':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = dict(_env(), PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("device_check.py: needs optax (pip install optax)")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--logit-models", "efun,nope"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "device_check.py: --logit-models has unknown models ['nope']; valid: names of freqjax.models.list_models()"
    ]
