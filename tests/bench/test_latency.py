"""The latency benchmark (freqjax.bench.latency, ``python -m freqjax.bench latency``) on one tiny run each."""

import json
import subprocess
import sys

import pytest

from freqjax.bench import latency, timing
from freqjax.bench.__main__ import main as bench_main

SMALL = "mobilenetv3_small_075"


def test_freqjax_only_when_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    assert "torch" in timing.torch_missing()
    r = latency.bench_latency(SMALL, 1, repeats=1, warmup=0, impl="cpu")
    assert r["freqjax_ms_per_image"] > 0 and r["freqjax_compile_s"] > 0
    assert r["torch_ms_per_image"] is None and r["ratio"] is None
    assert "cannot be imported" in r["torch_note"]
    assert r["input_shape"] == [224, 224, 3] and r["conv_impl"] == "cpu"


def test_both_frameworks_side_by_side():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    r = latency.bench_latency(SMALL, 2, repeats=1, warmup=1, threads=1)
    assert r["torch_ms_per_image"] > 0 and r["threads"] == 1
    # ratio is round(torch / freqjax, 2) of the unrounded times: within 0.005 of the ratio of the
    # reported (3-decimal) times, plus those times' own rounding
    expected = r["torch_ms_per_image"] / r["freqjax_ms_per_image"]
    assert abs(r["ratio"] - expected) <= 0.005 + 0.01 * expected
    assert "torch_note" not in r


def test_speed_ratios_pair_models_by_batch():
    rows = [
        {"model": "efun", "batch": 1, "freqjax_ms_per_image": 10.0, "torch_ms_per_image": None},
        {"model": "efficientnet_b0", "batch": 1, "freqjax_ms_per_image": 16.5, "torch_ms_per_image": 3.0},
        {"model": "efun", "batch": 64, "freqjax_ms_per_image": 1.0, "torch_ms_per_image": 1.0},
    ]
    assert list(latency.speed_ratios(rows)) == [
        {"batch": 1, "fast": "efun", "slow": "efficientnet_b0", "freqjax": 1.65, "torch": None}
    ]


def test_default_repeats():
    assert latency.default_repeats(1) == 10 and latency.default_repeats(64) == 3


def test_cli_no_torch_json(capsys):
    bench_main(
        ["latency", "--models", SMALL, "--batch", "1", "--repeats", "1", "--warmup", "0", "--no-torch", "--json"]
    )
    (line,) = capsys.readouterr().out.strip().splitlines()
    r = json.loads(line)
    assert r["type"] == "latency" and r["model"] == SMALL and r["batch"] == 1
    assert r["freqjax_ms_per_image"] > 0 and r["torch_ms_per_image"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "efunn"], "did you mean efun"),
        (["--models", "efun,resnet9000"], "unknown model name 'resnet9000'"),
        (["--batch", "0"], "positive integer"),
        (["--threads", "4096"], "--threads 4096 is more than"),
        (["--conv-impl", "fft"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        bench_main(["latency", *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.bench  # needs a machine with more than one CPU the process may use
def test_cli_threads_pin_the_process():
    # A fresh process, so the affinity is set before JAX starts its CPU client.
    code = (
        "import os; from freqjax.bench.__main__ import main; "
        f"main(['latency', '--models', '{SMALL}', '--batch', '1', '--repeats', '1', '--warmup', '0', "
        "'--threads', '1', '--no-torch']); print('cpus', len(os.sched_getaffinity(0)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 threads on 1 of" in out.stdout and "note: --no-torch" in out.stdout
    assert out.stdout.strip().endswith("cpus 1") and "warning" not in out.stderr


def test_malloc_note(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=4294967296")
    assert "mmap_threshold" in timing.malloc_note()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1:glibc.malloc.mmap_threshold=33554432")
    assert timing.malloc_note() is None
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert timing.malloc_note() is None
