"""The PyTorch module layouts of published checkpoints, renamed to freqjax's and back.

freqjax's own PyTorch names are timm's (:func:`freqjax.models.naming.torch_key`). Where a published
checkpoint names its modules otherwise, a module map (reference module path -> freqjax module
path) renames its keys on import (:func:`to_freqjax_keys`) and back on export
(:func:`from_freqjax_keys`):

- ``torchvision``: torchvision's MobileNetV2 (``features.N.conv.M``, ``classifier.1``); its
  ResNet-18/34/50 and DenseNet-121 already have timm's names.
- ``official``: the clovaai/rexnet repository's ReXNet and ReXNet-lite (``features.N...out.M``).
- ``timm``: freqjax's names; for ReXNet, timm's own (``stem.conv``, ``features.k.conv_exp``).

Every layout loads strictly: keys that match no rule are kept and reported by the converter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["LAYOUTS", "default_layout", "from_freqjax_keys", "layouts", "to_freqjax_keys"]

LAYOUTS = ("timm", "torchvision", "official")

# torchvision's MobileNetV2: features.0 stem, features.1 the depthwise-separable block, then the
# inverted residuals of stages 1..6 (timm's blocks.s.j) in order, features.18 the head conv.
_MOBILENETV2_REPEATS = (2, 3, 4, 3, 3, 1)
_SAME_IN_TORCHVISION = ("resnet18", "resnet34", "resnet50", "densenet121")


def layouts(name: str) -> tuple[str, ...]:
    """The layouts model ``name`` can be exported to; the first is :func:`default_layout`."""
    if _is_rexnet(name):
        return ("official",) if name.startswith("rexnet_lite") else ("timm", "official")
    if name.startswith("mobilenetv2") or name in _SAME_IN_TORCHVISION:
        return ("timm", "torchvision")
    return ("timm",)


def _is_rexnet(name: str) -> bool:
    """ReXNet and ReXNet-lite at a width (``rexnet_130``, ``rexnet_lite_100``): the published layouts."""
    return re.fullmatch(r"rexnet_(lite_)?\d+", name) is not None


def default_layout(name: str) -> str:
    """The layout of :func:`freqjax.interop.torch_models.timm_model` (timm's, or the official ReXNet-lite's)."""
    return layouts(name)[0]


def _mobilenetv2_torchvision_map() -> dict[str, str]:
    out = {"features.0.0": "conv_stem", "features.0.1": "bn1", "features.18.0": "conv_head", "features.18.1": "bn2"}
    out |= {"classifier.1": "classifier"}
    out |= {"features.1.conv.0.0": "blocks.0.0.conv_dw", "features.1.conv.0.1": "blocks.0.0.bn1"}
    out |= {"features.1.conv.1": "blocks.0.0.conv_pw", "features.1.conv.2": "blocks.0.0.bn2"}
    k = 2
    for stage, repeats in enumerate(_MOBILENETV2_REPEATS, start=1):
        for j in range(repeats):
            b = f"blocks.{stage}.{j}"
            subs = (("0.0", "conv_pw"), ("0.1", "bn1"), ("1.0", "conv_dw"), ("1.1", "bn2"), ("2", "conv_pwl"))
            out |= {f"features.{k}.conv.{m}": f"{b}.{sub}" for m, sub in (*subs, ("3", "bn3"))}
            k += 1
    return out


def _module_map(name: str, layout: str) -> dict[str, str] | None:
    """Reference module -> freqjax module for ``layout`` of ``name``; None where the names are freqjax's."""
    if _is_rexnet(name):
        return _rexnet_map(name, layout)
    if name.startswith("mobilenetv2") and layout == "torchvision":
        return _mobilenetv2_torchvision_map()
    return None


@functools.cache
def _rexnet_map(name: str, layout: str) -> dict[str, str]:
    # the import rule (freqjax.models.rexnet.reference_to_freqjax_keys) applied to the module names
    # of the reference network in that layout (needs torch, as every export does)
    from freqjax.interop import torch_models
    from freqjax.models.rexnet import reference_to_freqjax_keys

    if layout == "timm" and not name.startswith("rexnet_lite"):
        reference = torch_models.timm_model(name, num_classes=10)
    else:
        width = int(name.rsplit("_", 1)[1]) / 100
        reference = torch_models.rexnet_reference(width, lite=name.startswith("rexnet_lite"), num_classes=10)
    keys = list(reference.state_dict())
    renamed = reference_to_freqjax_keys(dict.fromkeys(keys), name)
    return {k.rpartition(".")[0]: f.rpartition(".")[0] for k, f in zip(keys, renamed, strict=True)}


def _rename(state_dict: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        target = mapping.get(module)
        out[f"{target}.{leaf}" if target is not None else key] = value
    return out


def to_freqjax_keys(state_dict: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``state_dict`` renamed to freqjax's names if its keys are in a known other layout of ``name``."""
    if _is_rexnet(name):
        from freqjax.models.rexnet import reference_to_freqjax_keys

        return reference_to_freqjax_keys(state_dict, name)
    if name.startswith("mobilenetv2") and "features.0.0.weight" in state_dict:
        return _rename(state_dict, _mobilenetv2_torchvision_map())
    return dict(state_dict)


def from_freqjax_keys(state_dict: Mapping[str, Any], name: str, layout: str) -> dict[str, Any]:
    """A ``state_dict`` in freqjax's names renamed to ``layout`` (one of :func:`layouts` of ``name``).

    Raises:
        ValueError: ``layout`` is not one of ``layouts(name)``.
    """
    if layout not in layouts(name):
        raise ValueError(f"layout must be one of {list(layouts(name))} for model {name!r}, got {layout!r}")
    mapping = _module_map(name, layout)
    if mapping is None:
        return dict(state_dict)
    out = _rename(state_dict, {v: k for k, v in mapping.items()})
    if _is_rexnet(name) and layout == "official":  # the official classifier is a 1x1 conv
        key = next(f"{k}.weight" for k, v in mapping.items() if v == "classifier")
        if key in out and len(out[key].shape) == 2:
            out[key] = out[key].reshape(*out[key].shape, 1, 1)
    return out
