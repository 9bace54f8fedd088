"""The command-line entry points run and do real work, on tiny inputs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from freqjax import dct, runtime
from freqjax.data import grating_image, grating_images


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def test_main_dct_demo_writes_report(tmp_path):
    out = run(
        "-m",
        "freqjax.main",
        "--config",
        "configs/dct_demo.py",
        "--workdir",
        str(tmp_path),
        "--config.num_images=4",
        "--config.image_size=32",
        "--config.batch_size=4",
        "--config.repeats=1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "dct_report.json").read_text())
    assert report["output_shape"] == [4, 4, 192]
    assert report["libjpeg_agreement"]["fraction_within_1"] >= 0.99
    psnrs = [row["mean_psnr_db"] for row in report["table7_keep"]]
    assert psnrs == sorted(psnrs, reverse=True)  # fewer channels, lower fidelity
    assert report["images_per_s"] > 0
    assert (tmp_path / "keep_lowest.png").stat().st_size > 0 and (tmp_path / "y_channels.png").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.image_size=40", "multiple of 16"),
        ("--config.chroma=422", "chroma"),
        ("--config.bogus=1", "bogus"),
        ("--mode=train", "mode must be one of"),
    ],
)
def test_main_rejects_bad_config(tmp_path, override, message):
    out = run("-m", "freqjax.main", "--config", "configs/dct_demo.py", "--workdir", str(tmp_path), override)
    assert out.returncode != 0
    assert message in out.stderr


@pytest.mark.parametrize("tuning", ["1", "0"])
def test_profile_dct_prints_both_figures(monkeypatch, tuning):
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


def test_profile_rejects_bad_size():
    out = run("-m", "freqjax.bench", "dct", "--size", "40")
    assert out.returncode == 2 and "multiple of 16" in out.stderr


def test_reference_path_agrees_with_rgb_to_dct():

    img, _ = grating_image(3, size=64)
    ref = dct.reference_dct(img)
    assert ref.shape == (8, 8, 192)
    assert np.abs(np.round(np.asarray(dct.rgb_to_dct(img))) - ref).max() <= 4


def test_synthetic_images_are_deterministic_and_random_access():
    a, la = grating_images(6, size=32, seed=1)
    b, lb = grating_images(3, size=32, seed=1, start=3)
    np.testing.assert_array_equal(a[3:], b)
    np.testing.assert_array_equal(la[3:], lb)
    c, _ = grating_images(6, size=32, seed=2)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    _, labels = grating_images(200, size=16, num_classes=10)
    assert set(labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="num_classes"):
        grating_image(0, num_classes=1)
