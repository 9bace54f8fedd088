"""Config checks shared by every mode: unknown keys and bad values fail early, with a clear message."""

from __future__ import annotations

from collections.abc import Iterable

import ml_collections

__all__ = ["check_choice", "check_keys", "check_positive_int"]


def check_keys(config: ml_collections.ConfigDict, allowed: Iterable[str], where: str = "config") -> None:
    """Raise ValueError naming any key of ``config`` that is not in ``allowed``."""
    allowed = set(allowed)
    unknown = sorted(set(config.keys()) - allowed)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; valid fields: {sorted(allowed)}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"config.{name} must be one of {choices}, got {value!r}")


def check_positive_int(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
