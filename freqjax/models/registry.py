"""Model registry: ``create_model(name, ...)``, ``list_models()``, ``model_info(name)``.

Family modules register their models at import with :func:`register`; a model is a factory
taking the common arguments (num_classes, drop_rate, drop_path_rate, dtype) plus
any model-specific keyword arguments it declares.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["INPUT_KINDS", "ModelInfo", "create_model", "list_models", "model_info", "register"]

INPUT_KINDS = ("dct", "rgb", "ycbcr")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a model expects and where it comes from.

    Attributes:
        name: registry name.
        input_kind: 'dct' (28x28x192 coefficients from :func:`freqjax.dct.rgb_to_dct` at 224 px),
            'rgb' (normalised RGB) or 'ycbcr' (JFIF YCbCr level-shifted by -128, LeFUN).
        resolution: default image side in pixels (before the DCT for 'dct' models).
        paper: the paper (or code base) that defines the model.
        table: where in that paper the architecture or its numbers are.
        timm_name: the timm model with the same architecture and parameter names, if any.
        default_drop_rate: dropout before the classifier used when ``drop_rate`` is not given.
        options: model-specific keyword arguments ``create_model`` accepts, with defaults.
        family: the module that registered it ('resnet', 'efficientnet', ...); set by :func:`register`.
        variant_of: the registered model whose code this one runs with other widths, depths or
            stage tables (or, for a combination, one of the models whose code it combines), or None.
            Tests that train every architecture once (the train-mode test) skip variants; a model
            that leaves it None is always tested.
    """

    name: str
    input_kind: str
    resolution: int
    paper: str
    table: str
    timm_name: str | None = None
    default_drop_rate: float = 0.2
    options: tuple[tuple[str, object], ...] = ()
    family: str = ""
    variant_of: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-example model input shape (H, W, C) at the default resolution."""
        if self.input_kind == "dct":
            return (self.resolution // 8, self.resolution // 8, 192)
        return (self.resolution, self.resolution, 3)


_REGISTRY: dict[str, tuple[ModelInfo, Callable[..., nn.Module]]] = {}


def register(info: ModelInfo, factory: Callable[..., nn.Module]) -> None:
    """Add a model. ``factory(num_classes=, drop_rate=, drop_path_rate=, dtype=, **options)``.

    Call it in the module that defines the model (as timm's ``@register_model``): the module's name
    becomes ``info.family`` unless set, and :mod:`freqjax.models` imports every module of the
    package, so the model is found without a list kept anywhere else.
    """
    if not info.family:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        info = dataclasses.replace(info, family=caller.rsplit(".", 1)[-1])
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    if info.input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {info.input_kind!r}")
    _REGISTRY[info.name] = (info, factory)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    import fnmatch

    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def _lookup(name: object) -> tuple[ModelInfo, Callable[..., nn.Module]]:
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        raise ValueError(f"unknown model name {name!r}{hint}")
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model."""
    return _lookup(name)[0]


def _check_rate(arg: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{arg} must be a float in [0, 1), got {value!r}")
    return float(value)


def _check_option(model: str, key: str, value: object, default: object) -> None:
    """A model option must have its default's type; int options (widths, kernel sizes) are positive."""
    kind = type(default)
    accepted = (int, float) if kind is float else kind  # 1 for a float option such as a width multiplier
    ok = isinstance(value, accepted) and (kind is bool or not isinstance(value, bool))
    if ok and kind is int and value < 1:
        raise ValueError(f"create_model({model!r}): option {key} must be a positive int, got {value!r}")
    if not ok:
        raise TypeError(
            f"create_model({model!r}): option {key} must be {'an' if kind is int else 'a'} {kind.__name__} "
            f"(default {default!r}), got {value!r}"
        )


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    drop_rate: float | None = None,
    drop_path_rate: float = 0.0,
    dtype: jnp.dtype = jnp.float32,
    **options,
) -> nn.Module:
    """Create a registered model by name (see :func:`list_models`).

    Args:
        name: registry name, e.g. 'efun', 'efficientnet_b0', 'mobilenetv3_large_100'.
        num_classes: classifier outputs; 0 returns pooled features.
        drop_rate: dropout before the classifier (default: the model's recipe value).
        drop_path_rate: stochastic-depth rate of the last block (linearly scaled from 0).
        dtype: computation dtype (parameters stay float32).
        **options: model-specific arguments listed in ``model_info(name).options``.

    Returns:
        A Flax module; ``model.init(rng, x, train=False)``, ``model.apply(variables, x, train=...)``.
    """
    info, factory = _lookup(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
    drop_rate = _check_rate("drop_rate", info.default_drop_rate if drop_rate is None else drop_rate)
    drop_path_rate = _check_rate("drop_path_rate", drop_path_rate)
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32 or jnp.bfloat16, got {dtype}")
    known = dict(info.options)
    unknown = sorted(set(options) - set(known))
    if unknown:
        valid = ", ".join(known) if known else "none"
        raise TypeError(f"create_model({name!r}) got unexpected arguments {unknown}; model options: {valid}")
    for key, value in options.items():
        _check_option(name, key, value, known[key])
    return factory(
        num_classes=num_classes,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        dtype=dtype,
        **{**known, **options},
    )
