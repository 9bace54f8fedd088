"""EfficientNet-B0/B1 (timm), the eFUN family and its ablations, and LeFUN ("Rethinking FUN").

All are :class:`~freqjax.models.builder.MBNet` tables. eFUN models have no stem: the first
inverted-residual block takes the 28x28x192 DCT input of :func:`freqjax.dct.rgb_to_dct`.
Channel counts pass through ``make_divisible(c, 8)`` as in timm 0.2.2, on which the FUN code is
built, so the paper's "c180" is 184 and "c140" is 144.
"""

from __future__ import annotations

import functools

from freqjax.models.blocks import decode_stages
from freqjax.models.builder import FRONT_INITS, FRONTS, MBNet, NetSpec
from freqjax.models.layers import make_divisible
from freqjax.models.registry import ModelInfo, register

__all__ = ["EFFICIENTNET_B0", "EFUN_TABLES", "efficientnet_spec", "efun_spec"]

FUN = "Rethinking FUN: Frequency-Domain Utilization Networks (Goldberg et al.)"
TIMM = "timm (pytorch-image-models 1.0)"

EFFICIENTNET_B0 = (
    ("ds_r1_k3_s1_e1_c16_se0.25",),
    ("ir_r2_k3_s2_e6_c24_se0.25",),
    ("ir_r2_k5_s2_e6_c40_se0.25",),
    ("ir_r3_k3_s2_e6_c80_se0.25",),
    ("ir_r3_k5_s1_e6_c112_se0.25",),
    ("ir_r4_k5_s2_e6_c192_se0.25",),
    ("ir_r1_k3_s1_e6_c320_se0.25",),
)

# (stage table, head width). Only one stride-2 stage: 28x28 in, 14x14 out.
EFUN_TABLES = {
    "efun": (
        (("ir_r3_k5_s1_e4_c128_se0.25",), ("ir_r6_k5_s2_e4_c160_se0.25",), ("ir_r1_k3_s1_e6_c192_se0.25",)),
        1280,
    ),
    "efun_l": (
        (
            ("ir_r3_k5_s1_e4_c144_se0.25",),
            ("ir_r2_k5_s1_e5_c180_se0.25",),
            ("ir_r5_k5_s2_e4_c180_se0.25",),
            ("ir_r2_k3_s1_e6_c216_se0.25",),
        ),
        1280,
    ),
    "efun_s": (
        (("ir_r3_k5_s1_e3_c120_se0.25",), ("ir_r5_k5_s2_e4_c140_se0.25",), ("ir_r1_k3_s1_e5_c192_se0.25",)),
        1280,
    ),
    "efun_s_plus": (
        (("ir_r3_k5_s1_e4_c96_se0.25",), ("ir_r4_k5_s2_e4_c120_se0.25",), ("ir_r1_k3_s1_e6_c192_se0.25",)),
        960,
    ),
    # Paper Table 4: B0 without its stem, the strides of stages 2 and 3 removed.
    "efun_variant_a": (
        (
            ("ds_r1_k3_s1_e1_c16_se0.25",),
            ("ir_r2_k3_s1_e6_c24_se0.25",),
            ("ir_r2_k5_s1_e6_c40_se0.25",),
            *EFFICIENTNET_B0[3:],
        ),
        1280,
    ),
    # Paper Table 5: the DCT input fed straight into B0's stages 4..7 (the 28x28-input stages).
    "efun_variant_b": (EFFICIENTNET_B0[3:], 1280),
}


def efficientnet_spec(width: float = 1.0, depth: float = 1.0) -> NetSpec:
    """timm's ``_gen_efficientnet``: SiLU, SE from the block input, stem 32 and head 1280 scaled."""
    return NetSpec(
        stages=decode_stages(EFFICIENTNET_B0, width=width, depth=depth),
        stem=make_divisible(32 * width),
        head=make_divisible(1280 * width),
    )


def efun_spec(name: str, front: str | None = None, front_init: str = "dct") -> NetSpec:
    """The eFUN table ``name`` on DCT input (``front=None``) or on YCbCr behind LeFUN's front."""
    table, head = EFUN_TABLES[name]
    return NetSpec(
        stages=decode_stages(table),
        in_channels=192 if front is None else 3,
        stem=None,
        front=front,
        front_init=front_init,
        head=head,
    )


def _lefun(front: str, front_init: str, **common) -> MBNet:
    if front not in FRONTS:
        raise ValueError(f"lefun front must be one of {FRONTS}, got {front!r}")
    if front_init not in FRONT_INITS:
        raise ValueError(f"lefun front_init must be one of {FRONT_INITS}, got {front_init!r}")
    return MBNet(efun_spec("efun", front=front, front_init=front_init), **common)


register(
    ModelInfo("efficientnet_b0", "rgb", 224, TIMM, "docs/reference.md §4; EfficientNet paper", "efficientnet_b0"),
    functools.partial(MBNet, efficientnet_spec()),
)
register(
    ModelInfo(
        "efficientnet_b1",
        "rgb",
        240,
        TIMM,
        "docs/reference.md §4; depth x1.1 at 240 px",
        "efficientnet_b1",
        variant_of="efficientnet_b0",
    ),
    functools.partial(MBNet, efficientnet_spec(depth=1.1)),
)
for _name, _table in (
    ("efun", "Table 2"),
    ("efun_l", "Table 2"),
    ("efun_s", "Table 2"),
    ("efun_s_plus", "Table 2"),
    ("efun_variant_a", "Table 4 / 6"),
    ("efun_variant_b", "Table 5 / 6"),
):
    # every eFUN table runs the same stemless DCT-input builder with inverted-residual blocks
    _variant_of = None if _name == "efun" else "efun"
    register(
        ModelInfo(_name, "dct", 224, FUN, _table, variant_of=_variant_of), functools.partial(MBNet, efun_spec(_name))
    )

# LeFUN (Table 8). The text says each 8x8x1 block of a plane becomes 1x1x64 (grouped per plane,
# 12,288 weights: 4,245,736 parameters); the table's 4.3M fits a full 192->192 layer better
# (36,864 weights: 4,270,312). Grouped is the default, 'full' an option. front_init: 'dct' starts
# the front at the exact DCT (LeFUN then equals eFUN on 4:4:4 input), 'random' as any other conv
# (the paper's learned-front question; configs/efun.py's lefun variants use it).
register(
    ModelInfo("lefun", "ycbcr", 224, FUN, "Table 8", options=(("front", "grouped"), ("front_init", "dct"))), _lefun
)
