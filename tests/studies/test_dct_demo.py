"""The DCT input demo (freqjax.studies.dct_demo, ``--config configs/dct_demo.py``) on tiny inputs."""

import importlib.util
import json
from pathlib import Path

import pytest

from freqjax.studies.dct_demo import run_dct_demo

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "dct_demo.py"


def demo_config(**overrides):
    spec = importlib.util.spec_from_file_location("dct_demo_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("synthetic")
    config.update(num_images=4, image_size=32, batch_size=4, repeats=1)
    config.unlock()
    for key, value in overrides.items():
        config[key] = value
    return config


def test_dct_demo_writes_report(tmp_path):
    report = run_dct_demo(demo_config(), tmp_path)
    assert json.loads((tmp_path / "dct_report.json").read_text()) == report
    assert report["output_shape"] == [4, 4, 192]
    assert report["libjpeg_agreement"]["fraction_within_1"] >= 0.99
    psnrs = [row["mean_psnr_db"] for row in report["table7_keep"]]
    assert psnrs == sorted(psnrs, reverse=True)  # fewer channels, lower fidelity
    assert report["images_per_s"] > 0
    assert (tmp_path / "keep_lowest.png").stat().st_size > 0 and (tmp_path / "y_channels.png").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"image_size": 40}, "multiple of 16"),
        ({"chroma": "422"}, "chroma"),
        ({"bogus": 1}, "bogus"),
        ({"data": "imagenet"}, "config.data must be"),
        ({"num_images": 0}, "num_images"),
    ],
)
def test_bad_configs_are_rejected_before_any_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_dct_demo(demo_config(**override), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("skimage:nope", "scikit-image has no sample 'nope'"),
        ("folder:{junk}", "none of the 3 image files tried is readable"),
        ("folder:{missing}", "not an existing directory"),
    ],
)
def test_bad_data_is_a_clear_error(tmp_path, data, message):
    junk = tmp_path / "junk" / "cls"
    junk.mkdir(parents=True)
    for i in range(3):
        (junk / f"{i}.jpg").write_bytes(b"not a jpeg")
    config = demo_config(data=data.format(junk=tmp_path / "junk", missing=tmp_path / "missing"))
    with pytest.raises(ValueError, match=message):
        run_dct_demo(config, tmp_path / "out")


def test_study_entry_points_run_their_job(tmp_path):
    # python -m freqjax.studies.<study> is freqjax.main with the study's mode fixed
    import subprocess
    import sys

    root = CONFIG.parents[1]
    small = ["--config.num_images=2", "--config.image_size=32", "--config.batch_size=2", "--config.repeats=1"]
    demo = [sys.executable, "-m", "freqjax.studies.dct_demo", "--config", str(CONFIG), *small]
    out = subprocess.run(
        [*demo, "--workdir", str(tmp_path / "demo")], capture_output=True, text=True, check=False, cwd=root
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "demo" / "dct_report.json").read_text())["num_images"] == 2

    out = subprocess.run(
        [*demo, "--workdir", str(tmp_path / "x"), "--mode=train"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0 and out.stderr.strip().splitlines() == [
        "freqjax.main: error: --mode must be 'dct_demo' here or absent, got 'train'"
    ]
    sweep = [sys.executable, "-m", "freqjax.studies.msnet_sweep", "--config", "configs/cifar_quick.py:synthetic"]
    out = subprocess.run(
        [*sweep, "--workdir", str(tmp_path / "y")], capture_output=True, text=True, check=False, cwd=root
    )
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "freqjax.main: error: model must be an MSNet (create_model('msnet_...')), got CifarResNet"
    ]
    assert not (tmp_path / "y").exists()
