"""MobileNetV2 and MobileNetV3 (timm definitions), as :class:`~freqjax.models.builder.MBNet` tables."""

from __future__ import annotations

import functools

from freqjax.models.blocks import SEConfig, decode_stages
from freqjax.models.builder import MBNet, NetSpec
from freqjax.models.layers import make_divisible
from freqjax.models.registry import ModelInfo, register

__all__ = ["MOBILENETV2", "MOBILENETV3_LARGE", "MOBILENETV3_SMALL", "mobilenetv2_spec", "mobilenetv3_spec"]

TIMM = "timm (pytorch-image-models 1.0)"

MOBILENETV2 = (
    ("ds_r1_k3_s1_c16",),
    ("ir_r2_k3_s2_e6_c24",),
    ("ir_r3_k3_s2_e6_c32",),
    ("ir_r4_k3_s2_e6_c64",),
    ("ir_r3_k3_s1_e6_c96",),
    ("ir_r3_k3_s2_e6_c160",),
    ("ir_r1_k3_s1_e6_c320",),
)

MOBILENETV3_LARGE = (
    ("ds_r1_k3_s1_e1_c16_nre",),
    ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"),
    ("ir_r3_k5_s2_e3_c40_se0.25_nre",),
    ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
    ("ir_r2_k3_s1_e6_c112_se0.25",),
    ("ir_r3_k5_s2_e6_c160_se0.25",),
    ("cn_r1_k1_s1_c960",),
)

MOBILENETV3_SMALL = (
    ("ds_r1_k3_s2_e1_c16_se0.25_nre",),
    ("ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"),
    ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"),
    ("ir_r2_k5_s1_e3_c48_se0.25",),
    ("ir_r3_k5_s2_e6_c96_se0.25",),
    ("cn_r1_k1_s1_c576",),
)


def mobilenetv2_spec(width: float = 1.0) -> NetSpec:
    """timm's ``_gen_mobilenet_v2``: ReLU6, no SE, stem 32 x width, head max(1280, 1280 x width)."""
    return NetSpec(
        stages=decode_stages(MOBILENETV2, width=width),
        stem=make_divisible(32 * width),
        head=max(1280, make_divisible(1280 * width)),
        act="relu6",
    )


def mobilenetv3_spec(size: str, width: float = 1.0) -> NetSpec:
    """timm's ``_gen_mobilenet_v3``: hard-swish, SE on the expanded width with a hard-sigmoid gate
    and ReLU inside, pooled head conv with bias and no BN (1280 large, 1024 small, unscaled)."""
    table = {"large": MOBILENETV3_LARGE, "small": MOBILENETV3_SMALL}[size]
    return NetSpec(
        stages=decode_stages(table, width=width),
        # timm keeps the 16-channel stem unscaled below width 0.75.
        stem=16 if width < 0.75 else make_divisible(16 * width),
        head=1280 if size == "large" else 1024,
        head_norm=False,
        head_bias=True,
        head_after_pool=True,
        act="hard_swish",
        se=SEConfig(gate="hard_sigmoid", act="relu", from_exp=True, divisor=8),
    )


for _w in ("050", "075", "100", "140"):
    _name = f"mobilenetv2_{_w}"
    register(
        ModelInfo(_name, "rgb", 224, TIMM, "REFERENCE 4; MobileNetV2 paper", _name),
        functools.partial(MBNet, mobilenetv2_spec(int(_w) / 100)),
    )
for _size in ("small", "large"):
    for _w in ("075", "100"):
        _name = f"mobilenetv3_{_size}_{_w}"
        register(
            ModelInfo(_name, "rgb", 224, TIMM, "REFERENCE 4; MobileNetV3 paper", _name),
            functools.partial(MBNet, mobilenetv3_spec(_size, int(_w) / 100)),
        )
