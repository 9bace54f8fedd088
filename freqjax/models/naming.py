"""The PyTorch names of freqjax's parameters.

freqjax modules carry timm's (and torchvision's) module names, so one rule names every leaf: the
Flax path ``blocks_1_0/conv_pw/kernel`` is the PyTorch key ``blocks.1.0.conv_pw.weight``
(:func:`torch_key`). :mod:`freqjax.interop.torch_weights` converts weights by it and
:mod:`freqjax.compress` names the layers of its plans and reports by it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["torch_key"]

_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_INDEXED = re.compile(r"^(.*?)((?:_\d+)+)$")


def torch_key(collection: str, path: tuple[str, ...], renames: Mapping[str, str] | None = None) -> str:
    """The PyTorch key of the Flax leaf ``variables[collection][path...]``.

    ``blocks_1_0`` becomes ``blocks.1.0`` (index suffixes are PyTorch's ``Sequential`` indices).
    """
    *modules, leaf = path
    try:
        suffix = _LEAF[(collection, leaf)]
    except KeyError:
        raise ValueError(f"no PyTorch name for leaf {collection}/{'/'.join(path)}") from None
    parts = []
    for module in modules:
        renamed = (renames or {}).get(module, module)
        match = _INDEXED.match(renamed)
        parts.append(match.group(1) + match.group(2).replace("_", ".") if match else renamed)
    return ".".join([*parts, suffix])
