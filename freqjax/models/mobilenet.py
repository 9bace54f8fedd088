"""MobileNetV2 and MobileNetV3 (timm definitions) and MobileNetV3-Small-XSep (XSepConv paper), as builder tables.

MobileNetV3-Small-XSep (XSepConv paper, section 4.2): the stride-1 5x5 depthwise convs of the 40-
and 48-channel stages become XSepConv k=5 and the stride-1 ones after the last downsampling
(96 channels) XSepConv k=3; the stride-2 depthwise convs stay. That makes N = 6 2x2 layers.
Options: ``kernel=7`` (the "larger kernels" experiment: those 5x5 become 7x7, replaced by k=7),
``downsample=True`` (the first 5x5 stride-2 depthwise enlarged to 7x7 and replaced by the
downsampling XSepConv k=7, N = 7), ``form`` / ``padding`` (ablations), and the small-input
settings ``cifar`` (32x32: stem and first block stride 1, final map 4x4) and ``tiny_imagenet`` (the same strides
on 56x56 crops).
"""

from __future__ import annotations

import functools

from freqjax.models.blocks import SEConfig, decode_stages
from freqjax.models.builder import MBNet, NetSpec
from freqjax.models.layers import make_divisible
from freqjax.models.registry import ModelInfo, register

__all__ = [
    "MOBILENETV2",
    "MOBILENETV3_LARGE",
    "MOBILENETV3_SMALL",
    "XSEP_WIDTHS",
    "mobilenetv2_spec",
    "mobilenetv3_small_xsep_spec",
    "mobilenetv3_small_xsep_table",
    "mobilenetv3_spec",
]

TIMM = "timm (pytorch-image-models 1.0)"
XSEP = "XSepConv: Extremely Separated Convolution"
XSEP_WIDTHS = {"050": 0.5, "075": 0.75, "100": 1.0, "125": 1.25}

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


def mobilenetv3_spec(size: str, width: float = 1.0, table=None, **spec_fields) -> NetSpec:
    """timm's ``_gen_mobilenet_v3``: hard-swish, SE on the expanded width with a hard-sigmoid gate
    and ReLU inside, pooled head conv with bias and no BN (1280 large, 1024 small, unscaled).

    ``table`` replaces the stage table (the XSep variants); ``spec_fields`` go to :class:`NetSpec`.
    """
    table = table or {"large": MOBILENETV3_LARGE, "small": MOBILENETV3_SMALL}[size]
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
        **spec_fields,
    )


def mobilenetv3_small_xsep_table(
    kernel: int = 5, downsample: bool = False, xsep: bool = True, first_stride: int = 2
) -> tuple[tuple[str, ...], ...]:
    """MobileNetV3-Small's stage table with XSepConv (``xsep=False``: the same experiment's DW baseline).

    Args:
        kernel: 5 (paper Table 1) or 7 ("larger kernels": the middle stages' depthwise convs are
            7x7 in the baseline, XSepConv k=7 here).
        downsample: the first 5x5 stride-2 depthwise becomes 7x7 (baseline) or the downsampling
            XSepConv k=7.
        xsep: False gives the depthwise baseline of the same experiment (``kernel=5``,
            ``downsample=False``: exactly MobileNetV3-Small).
        first_stride: stride of the first (DS) block; 1 in the CIFAR setting.
    """
    if kernel not in (5, 7):
        raise ValueError(f"kernel must be 5 (paper Table 1) or 7 (larger-kernel experiment), got {kernel!r}")
    if first_stride not in (1, 2):
        raise ValueError(f"first_stride must be 1 or 2, got {first_stride!r}")
    xs = "_xs" if xsep else ""
    down = f"ir_r1_k{7 if downsample else 5}_s2_e4_c40_se0.25" + (xs if downsample else "")
    return (
        (f"ds_r1_k3_s{first_stride}_e1_c16_se0.25_nre",),
        MOBILENETV3_SMALL[1],
        (down, f"ir_r2_k{kernel}_s1_e6_c40_se0.25{xs}"),
        (f"ir_r2_k{kernel}_s1_e3_c48_se0.25{xs}",),
        # XSepConv k=3 (10 weights/channel) replaces the last stage's stride-1 5x5 (25).
        ("ir_r1_k5_s2_e6_c96_se0.25", "ir_r2_k3_s1_e6_c96_se0.25_xs" if xsep else "ir_r2_k5_s1_e6_c96_se0.25"),
        MOBILENETV3_SMALL[5],
    )


# Stem stride, first-block stride. Decision (docs/reference.md section 7): 32x32 CIFAR input keeps stride 1 in
# both (final map 4x4). Tiny-ImageNet (56x56 crops) uses the same strides: it is the setting in
# which XSepConv saves the paper's 4.75 % of the MACs (stride-2 stem: 3.7 % or 4.2 %).
_SETTINGS = {"imagenet": (2, 2), "cifar": (1, 1), "tiny_imagenet": (1, 1)}


def mobilenetv3_small_xsep_spec(
    width: float = 1.0,
    *,
    kernel: int = 5,
    downsample: bool = False,
    form: str = "standard",
    padding: str = "improved",
    setting: str = "imagenet",
    xsep: bool = True,
) -> NetSpec:
    """MobileNetV3-Small-XSep (or, with ``xsep=False``, its depthwise baseline) at ``width``.

    ``setting`` is 'imagenet' (224 px), 'cifar' (32 px) or 'tiny_imagenet' (56 px crops).
    ``form`` and ``padding`` choose the XSepConv ablation and the 2x2 padding strategy.
    """
    if setting not in _SETTINGS:
        raise ValueError(f"setting must be one of {tuple(_SETTINGS)}, got {setting!r}")
    stem_stride, first_stride = _SETTINGS[setting]
    table = mobilenetv3_small_xsep_table(kernel, downsample, xsep, first_stride)
    return mobilenetv3_spec("small", width, table, stem_stride=stem_stride, xsep_form=form, xsep_padding=padding)


def _xsep_model(
    width: float,
    *,
    kernel: int,
    downsample: bool,
    form: str,
    padding: str,
    cifar: bool,
    tiny_imagenet: bool,
    xsep: bool,
    **common,
) -> MBNet:
    flags = (("downsample", downsample), ("cifar", cifar), ("tiny_imagenet", tiny_imagenet), ("xsep", xsep))
    for arg, value in flags:
        if not isinstance(value, bool):
            raise TypeError(f"{arg} must be a bool, got {value!r}")
    if cifar and tiny_imagenet:
        raise ValueError("cifar and tiny_imagenet are exclusive settings; pick one")
    setting = "cifar" if cifar else "tiny_imagenet" if tiny_imagenet else "imagenet"
    spec = mobilenetv3_small_xsep_spec(
        width, kernel=kernel, downsample=downsample, form=form, padding=padding, setting=setting, xsep=xsep
    )
    return MBNet(spec, **common)


for _w in ("050", "075", "100", "140"):
    _name = f"mobilenetv2_{_w}"
    _variant_of = None if _w == "100" else "mobilenetv2_100"
    register(
        ModelInfo(_name, "rgb", 224, TIMM, "docs/reference.md §4; MobileNetV2 paper", _name, variant_of=_variant_of),
        functools.partial(MBNet, mobilenetv2_spec(int(_w) / 100)),
    )
for _size in ("small", "large"):
    for _w in ("075", "100"):
        _name = f"mobilenetv3_{_size}_{_w}"
        _variant_of = None if _w == "100" else f"mobilenetv3_{_size}_100"
        register(
            ModelInfo(
                _name, "rgb", 224, TIMM, "docs/reference.md §4; MobileNetV3 paper", _name, variant_of=_variant_of
            ),
            functools.partial(MBNet, mobilenetv3_spec(_size, int(_w) / 100)),
        )
_XSEP_OPTIONS = (
    ("kernel", 5),
    ("downsample", False),
    ("form", "standard"),
    ("padding", "improved"),
    ("cifar", False),
    ("tiny_imagenet", False),
    ("xsep", True),  # False: the same experiment's depthwise baseline (same strides and kernels)
)
for _w, _width in XSEP_WIDTHS.items():
    _name = f"mobilenetv3_small_{_w}_xsep"
    _variant_of = None if _w == "100" else "mobilenetv3_small_100_xsep"
    register(
        ModelInfo(
            _name,
            "rgb",
            224,
            XSEP,
            "docs/reference.md §7; paper Table 1, Fig. 3",
            options=_XSEP_OPTIONS,
            variant_of=_variant_of,
        ),
        functools.partial(_xsep_model, _width),
    )
