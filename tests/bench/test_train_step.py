"""The train-step benchmark (freqjax.bench.train_step, ``python -m freqjax.bench train-step``) on tiny runs."""

import sys

import pytest

from freqjax.bench import timing
from freqjax.bench import train_step as train_bench
from freqjax.bench.__main__ import main as bench_main


def test_all_paths_side_by_side():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    r = train_bench.bench_train_step("cifar_resnet8", batch=8, size=16, paths=train_bench.PATHS, repeats=1, warmup=0)
    assert (r["batch"], r["size"], r["input_shape"]) == (8, 16, [16, 16, 3])
    for path in train_bench.PATHS:
        assert r[f"{path}_images_per_s"] > 0
        assert r[f"{path}_images_per_s"] == pytest.approx(8 / (r[f"{path}_ms_per_step"] / 1e3), rel=0.02)
    # The ratios are of the reported (rounded) images/s, to two decimals: exactly, whatever their
    # size (a relative tolerance fails on two-decimal rounding of ratios below 0.5).
    assert r["speedup_vs_xla"] == round(r["freqjax_images_per_s"] / r["freqjax_xla_images_per_s"], 2)
    assert r["ratio_vs_torch"] == round(r["freqjax_images_per_s"] / r["torch_images_per_s"], 2)


def test_freqjax_only_when_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    r = train_bench.bench_train_step("cifar_resnet8", batch=4, size=8, paths=["freqjax", "torch"], repeats=1)
    assert r["freqjax_images_per_s"] > 0 and "torch_images_per_s" not in r
    assert "cannot be imported" in r["torch_note"] and "ratio_vs_torch" not in r


def test_paths_are_timed_in_turn():
    calls = []
    times = timing.time_calls_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up of each, then one call of each per repeat
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        timing.time_calls_interleaved({"a": lambda: None}, 0)


def test_defaults_follow_the_model():
    assert (train_bench.default_size("cifar_resnet8"), train_bench.default_batch("cifar_resnet8")) == (32, 128)
    assert (train_bench.default_size("mobilenetv2_100"), train_bench.default_batch("mobilenetv2_100")) == (64, 64)
    assert train_bench.default_size("efun_s_plus") == 112


def test_bad_arguments_are_clear_errors(capsys):
    with pytest.raises(ValueError, match="paths must be a non-empty subset"):
        train_bench.bench_train_step("cifar_resnet8", paths=["jax"])
    with pytest.raises(ValueError, match="multiple of 8 pixels, got 100"):
        train_bench.bench_train_step("efun_s_plus", size=100)
    for argv, message in (
        (["--paths", "freqjax,tf"], "--paths must be a non-empty subset"),
        (["--models", "efun_s_plus", "--size", "100"], "multiple of 8 pixels"),
        (["--models", "resnet19"], "resnet19"),
    ):
        with pytest.raises(SystemExit):
            bench_main(["train-step", *argv])
        assert message in capsys.readouterr().err
