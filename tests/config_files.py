"""Shared by tests that read the recipes in configs/ (they are files, not a package)."""

import importlib.util
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_module(name: str):
    """The module of ``configs/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_train_config(**overrides):
    """A training config that compiles and runs in seconds: cifar_resnet8 on 16 px synthetic images."""
    from freqjax.train.config import train_defaults

    c = train_defaults()
    c.update(
        model="cifar_resnet8",
        dataset="synthetic",
        image_size=16,
        batch_size=16,
        synthetic_size=64,
        augment="cifar",
        eval_augment="none",
        optimizer="sgd",
        learning_rate=0.05,
        schedule="constant",
        progress_bar=False,
    )
    c.update(overrides)
    return c
