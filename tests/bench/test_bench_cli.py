"""``python -m freqjax.bench``: the DCT benchmark runs and does real work on tiny inputs; bad arguments."""

import json
import subprocess
import sys

import pytest

from freqjax import runtime


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


@pytest.mark.parametrize("tuning", ["1", "0"])
def test_bench_dct_prints_both_figures(monkeypatch, tuning):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv("FREQJAX_MALLOC_TUNING", tuning)
    out = run(
        "-m",
        "freqjax.bench",
        "dct",
        "--batch",
        "8",
        "--size",
        "32",
        "--repeats",
        "1",
        "--reference-images",
        "4",
        "--workers",
        "1",
        "--json",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["freqjax_images_per_s"] > 0 and result["reference_images_per_s_1_process"] > 0
    assert result["reference_images_per_s_workers"] > 0
    # the entry point re-executes itself with the malloc tunables unless opted out
    assert result["glibc_tunables"] == (runtime.MALLOC_TUNABLES if tuning == "1" else "")


def test_bench_rejects_bad_size():
    out = run("-m", "freqjax.bench", "dct", "--size", "40")
    assert out.returncode == 2 and "multiple of 16" in out.stderr
