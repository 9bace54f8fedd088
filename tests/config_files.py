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
