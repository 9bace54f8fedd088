"""Which leaves of a variables tree are compressed, and each one's g, r and t (the paper's section 3).

A plan is computed from shapes only (arrays or ``jax.ShapeDtypeStruct``), so it costs nothing
and :func:`freqjax.compress.tree.count` can report a whole model's budget without compressing.
Leaves are named by their PyTorch keys (:func:`freqjax.models.naming.torch_key`: ``layer1.0.conv1.weight``)
so rules and reports read like the reference code.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from freqjax.compress.codec import check_group, keep_count
from freqjax.compress.ordering import DISTANCES, STARTS
from freqjax.models.naming import torch_key

__all__ = ["PRESETS", "STRATEGIES", "STRATEGY_ARGS", "LayerPlan", "Plan", "leaf_table", "make_plan", "reference_shape"]

Rule = Callable[[str, tuple[int, ...]], bool]


def _uniform(factor: float, g: int | None, r: float | None, r_prime: float | None) -> tuple[int, float]:
    """The same g and r for every layer."""
    return g, r


def _progressive_r(factor: float, g: int | None, r: float | None, r_prime: float | None) -> tuple[int, float]:
    """Fixed g; r_l = 1 + r' sqrt(p_l) / sqrt(p_ref)."""
    return g, 1 + factor * r_prime


def _progressive_g(factor: float, g: int | None, r: float | None, r_prime: float | None) -> tuple[int, float]:
    """Fixed r; g_l = max(2, 2^floor(log2(sqrt(p_l) / sqrt(p_ref))))."""
    return max(2, 2 ** math.floor(math.log2(factor))), r


# strategy -> (sqrt(p_l) / sqrt(p_ref), g, r, r') -> the layer's (g, r), p_ref the smallest
# compressed layer (the paper's section 3). STRATEGY_ARGS: which of g, r, r' each one takes.
STRATEGIES: dict[str, Callable[[float, int | None, float | None, float | None], tuple[int, float]]] = {
    "uniform": _uniform,
    "progressive_r": _progressive_r,
    "progressive_g": _progressive_g,
}
STRATEGY_ARGS: dict[str, frozenset[str]] = {
    "uniform": frozenset({"g", "r"}),
    "progressive_r": frozenset({"g", "r_prime"}),
    "progressive_g": frozenset({"r"}),
}


def reference_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The PyTorch layout of a Flax kernel shape: (kh, kw, in, out) -> (out, in, kh, kw); (in, out) -> (out, in)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    raise ValueError(f"only conv (4-D) and dense (2-D) kernels can be compressed, got a leaf of shape {shape}")


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One compressed leaf.

    Attributes:
        path: key path inside ``variables['params']``, e.g. ('layer1_0', 'conv1', 'kernel').
        name: its PyTorch key, e.g. 'layer1.0.conv1.weight'.
        shape: the Flax shape; ``ref_shape`` the reference layout the codec works in.
        g, r, t: rows of the (g, N/g) view, compression rate, kept coefficients per row.
    """

    path: tuple[str, ...]
    name: str
    shape: tuple[int, ...]
    ref_shape: tuple[int, ...]
    g: int
    r: float
    t: int

    @property
    def size(self) -> int:
        """Weights in the tensor (N)."""
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Compression settings for a whole tree (build with :func:`make_plan`)."""

    layers: tuple[LayerPlan, ...]
    strategy: str
    distance: str = "euclidean"
    start: str = "l2"
    settings: tuple[tuple[str, Any], ...] = ()  # the arguments that made it, for reports


def leaf_table(variables: Mapping[str, Any]) -> tuple[dict[tuple[str, ...], tuple[str, tuple[int, ...]]], set]:
    """({params path: (PyTorch name, Flax shape)}, {paths of BatchNorm modules}) of a variables dict."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError("variables must be the model's variables dict with a 'params' entry (and 'batch_stats')")
    bn_modules = {
        tuple(k.key for k in kp)[:-1]
        for kp, _ in jax.tree_util.tree_flatten_with_path(variables.get("batch_stats", {}))[0]
    }
    leaves = {}
    is_coded = _is_coded
    for kp, leaf in jax.tree_util.tree_flatten_with_path(variables["params"], is_leaf=is_coded)[0]:
        path = tuple(k.key for k in kp)
        try:
            name = torch_key("params", path)
        except ValueError:
            name = "/".join(path)
        shape = tuple(leaf.shape) if not is_coded(leaf) else leaf.flax_shape
        leaves[path] = (name, shape)
    return leaves, bn_modules


def _is_coded(x: object) -> bool:
    # By name: freqjax.compress.tree (which defines the class) imports this module.
    return type(x).__name__ == "CompressedTensor"


# --- presets: the reference's layer choices -------------------------------------------------


def _resnet50_rule(name: str, ref_shape: tuple[int, ...]) -> bool:
    # reorder-cnn-compression: every conv with kernel <= 3 (1x1, 3x3, downsample) and fc.weight.
    return name == "fc.weight" or (len(ref_shape) == 4 and ref_shape[2] <= 3 and name.endswith(".weight"))


_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _mobilenetv2_rule_for(names: Sequence[str]) -> Rule:
    # torchvision's features.k is timm's k-th block in order (features.0 = stem, features.18 =
    # conv_head); the reference skips features.0..7 and all depthwise (3x3) convs.
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for n in names if (m := _BLOCK.match(n))})
    feature = {b: i + 1 for i, b in enumerate(blocks)}

    def rule(name: str, ref_shape: tuple[int, ...]) -> bool:
        if name == "classifier.weight":
            return True
        if len(ref_shape) != 4 or ref_shape[2] != 1 or not name.endswith(".weight"):
            return False
        if name.startswith("conv_head."):
            return True
        m = _BLOCK.match(name)
        return bool(m) and feature[(int(m.group(1)), int(m.group(2)))] >= 8

    return rule


def _all_but_first_rule(name: str, ref_shape: tuple[int, ...]) -> bool:
    # The paper's "all convolutional layers ... the output layer as a 1x1 conv ... we omit the first
    # layer", for any network: convs reading the image (3 input channels) and depthwise convs (1
    # input channel each) are not compressed.
    if not name.endswith(".weight") and not name.endswith("/kernel"):
        return False
    if len(ref_shape) == 2:
        return True
    return len(ref_shape) == 4 and ref_shape[2] <= 3 and ref_shape[1] > 3


PRESETS: dict[str, str] = {
    "resnet50": "every conv with kernel <= 3 (1x1, 3x3, downsample) and fc.weight; not conv1, BN, fc.bias",
    "mobilenetv2_100": "the 1x1 convs from torchvision's features.8 on (incl. conv_head) and classifier.weight",
    "all_but_first": "every conv with kernel <= 3 and every dense kernel, except convs reading the image "
    "(3 input channels) and depthwise convs (1 input channel); for any network",
}
_PRESET_RULES = {"resnet50": lambda names: _resnet50_rule, "mobilenetv2_100": _mobilenetv2_rule_for}
_PRESET_RULES["all_but_first"] = lambda names: _all_but_first_rule


def _resolve_rule(rule: object, names: dict[tuple[str, ...], str]) -> tuple[Rule, list[str]]:
    """(rule callable, explicit patterns that must each match something)."""
    if isinstance(rule, str) and rule in PRESETS:
        return _PRESET_RULES[rule](list(names.values())), []
    if callable(rule):
        return rule, []
    patterns = [rule] if isinstance(rule, str) else rule
    if not isinstance(patterns, Sequence) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"rule must be a preset name {sorted(PRESETS)}, a callable (name, ref_shape) -> bool, or glob "
            f"patterns over PyTorch names / Flax paths, got {rule!r}"
        )
    path_of = {name: "/".join(p) for p, name in names.items()}

    def match(name: str, ref_shape: tuple[int, ...]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path_of[name], p) for p in patterns)

    return match, list(patterns)


def _check_number(arg: str, value: object, minimum: float, strict: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        raise ValueError(f"{arg} must be a number {'>' if strict else '>='} {minimum}, got {value!r}")
    return float(value)


def _check_strategy(
    strategy: str, *, g: object, r: object, r_prime: object, distance: str, start: str
) -> tuple[int | None, float | None, float | None]:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    takes = STRATEGY_ARGS[strategy]
    for arg, value in (("g", g), ("r", r), ("r_prime", r_prime)):
        if arg not in takes and value is not None:
            uses = ", ".join(sorted(takes))
            raise ValueError(f"strategy {strategy!r} takes only {uses}; got {arg}={value!r} (leave it None)")
    if "r_prime" in takes:
        r_prime = _check_number("r_prime", r_prime, 0.0, strict=True)
    if "r" in takes:
        r = _check_number("r", r, 1.0)
    if "g" in takes:
        g = 4 if g is None else g
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"g must be a positive int, got {g!r}")
    return g, r, r_prime


def make_plan(  # noqa: PLR0917  (the issue's public signature)
    variables: Mapping[str, Any],
    rule: str | Rule | Sequence[str],
    strategy: str = "uniform",
    g: int | None = None,
    r: float | None = None,
    r_prime: float | None = None,
    *,
    distance: str = "euclidean",
    start: str = "l2",
) -> Plan:
    """Choose the compressed leaves and each one's g, r and t = int((N/g)/r).

    Args:
        variables: the model's variables dict ({'params', 'batch_stats'}); arrays or shapes.
        rule: a preset ('resnet50', 'mobilenetv2_100': the reference's choices), a callable
            ``(pytorch_name, ref_shape) -> bool``, or glob patterns matched against PyTorch names
            ('layer4.*.conv2.weight') or Flax paths ('layer4_0/conv2/kernel'); each pattern must
            match a leaf.
        strategy: 'uniform' (g and r everywhere), 'progressive_r' (fixed g,
            r_l = 1 + r' sqrt(p_l) / sqrt(p_ref)) or 'progressive_g' (fixed r,
            g_l = max(2, 2^floor(log2(sqrt(p_l) / sqrt(p_ref))))); p_ref is the smallest compressed
            layer, as in the paper.
        g: rows of the view (uniform, progressive_r; default 4); must divide each layer's N.
        r: compression rate >= 1 (uniform, progressive_g).
        r_prime: the paper's r' > 0 (progressive_r).
        distance, start: ordering options recorded in the plan (see ``greedy_order``).

    Returns:
        A :class:`Plan`, layers in tree order.
    """
    g, r, r_prime = _check_strategy(strategy, g=g, r=r, r_prime=r_prime, distance=distance, start=start)
    leaves, bn_modules = leaf_table(variables)
    names = {p: n for p, (n, _) in leaves.items()}
    select, patterns = _resolve_rule(rule, names)
    chosen = []
    for path, (name, shape) in leaves.items():
        ref = tuple(shape[::-1]) if len(shape) not in (2, 4) else reference_shape(shape)
        if not select(name, ref):
            continue
        if path[:-1] in bn_modules:
            raise ValueError(
                f"rule {rule!r} selects BatchNorm leaf {name!r}; only conv/dense kernels can be compressed"
            )
        reference_shape(shape)  # rejects biases and other non-kernel leaves with a clear message
        chosen.append((path, name, shape, ref))
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase("/".join(path), p) for path, n, _, _ in chosen):
            raise ValueError(
                f"rule pattern {p!r} matches no leaf of variables['params'] (names look like "
                f"{next(iter(names.values()))!r}; presets: {sorted(PRESETS)})"
            )
    if not chosen:
        raise ValueError(f"rule {rule!r} selects no leaf of variables['params']")

    p_ref = min(math.prod(s) for _, _, s, _ in chosen)
    layers = []
    for path, name, shape, ref in chosen:
        n = math.prod(shape)
        factor = math.sqrt(n) / math.sqrt(p_ref)  # the reference's operation order, so t matches it exactly
        layer_g, layer_r = STRATEGIES[strategy](factor, g, r, r_prime)
        try:
            check_group(n, layer_g)
            t = keep_count(n // layer_g, layer_r)
        except ValueError as e:
            raise ValueError(f"layer {name!r} of shape {ref}: {e}") from None
        layers.append(LayerPlan(path, name, shape, ref, layer_g, layer_r, t))
    settings = (("rule", rule if isinstance(rule, str) else repr(rule)), ("g", g), ("r", r), ("r_prime", r_prime))
    return Plan(tuple(layers), strategy, distance, start, settings)
