"""ReXNet and ReXNet-lite (clovaai/rexnet, timm ``rexnet.py``) as builder tables.

From "Rethinking Channel Dimensions for Efficient Model Design" (Han et al.).

16 linear bottlenecks (kind ``rx``) whose output widths grow linearly with the block index, in
stages of [1, 2, 2, 3, 3, 5] blocks with first strides [1, 2, 2, 2, 1, 2]; expansion 1 for block
0 and 6 after. ReXNet: SiLU after the stem, the expansions and the head, ReLU6 after each
depthwise, SE (with BN inside) on blocks 3..15. ReXNet-lite: ReLU6 everywhere, no SE, widths
rounded to multiples of 8, and a pooled 1x1 conv to 1024 with BN before the classifier.
Widths below 1 keep the 32-channel stem and the 16-channel first block (the start is divided by
the width before scaling), as the reference code does.

ReXNet-plain (``rexnet_plain``, paper section 4.4: the linear channel parameterisation applied
to MobileNetV1, +2.3 pp over its 72.5 % re-trained baseline): MobileNetV1's 13 depthwise-separable
blocks without residuals whose output widths grow linearly. The paper's body text gives no
table for it; **Decision** (following the authors' published plain model): stem 3x3/2 to 32
-> BN -> SiLU; blocks 0..11 output 96 + 48 i (96 .. 624), block 12 outputs 1024; stride 2 at
blocks 0, 2, 4 and 10 (output stride 32); block = 3x3 depthwise (stride) -> BN -> ReLU6 -> 1x1 ->
BN -> SiLU (SiLU after the 1x1 as in ReXNet, the depthwise keeps ReLU6 by the paper's rule);
head 1x1 to 1280 -> BN -> SiLU -> pool -> dropout 0.2 -> classifier. 4,968,520 parameters and
0.442 GMACs at 224 px (1000 classes).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from freqjax.models.blocks import decode_stages
from freqjax.models.builder import MBNet, NetSpec
from freqjax.models.layers import DepthwiseConv, batch_norm, conv2d, make_divisible
from freqjax.models.registry import ModelInfo, register
from freqjax.models.staged import StagedNet, setup_bn, setup_conv

__all__ = [
    "PLAIN_STRIDES",
    "PLAIN_WIDTHS",
    "REPEATS",
    "REXNET_LITE_WIDTHS",
    "REXNET_WIDTHS",
    "STRIDES",
    "ReXNetPlain",
    "reference_to_freqjax_keys",
    "rexnet_channels",
    "rexnet_spec",
]

REXNET = "Rethinking Channel Dimensions for Efficient Model Design (Han et al., ReXNet)"
REPEATS = (1, 2, 2, 3, 3, 5)
STRIDES = (1, 2, 2, 2, 1, 2)
SE_STAGES = (False, False, True, True, True, True)
REXNET_WIDTHS = {"090": 0.9, "100": 1.0, "130": 1.3, "150": 1.5, "200": 2.0, "220": 2.2, "300": 3.0}
REXNET_LITE_WIDTHS = {"100": 1.0, "130": 1.3, "150": 1.5, "200": 2.0}
SE_RATIO = 1 / 12  # the reference's channels // 12


def _check_width(width: float) -> None:
    if isinstance(width, bool) or not isinstance(width, int | float) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")


def rexnet_channels(width: float = 1.0, lite: bool = False) -> tuple[int, tuple[int, ...], int]:
    """(stem width, the 16 block output widths, head width) of ReXNet or ReXNet-lite at ``width``.

    Follows the reference's float accumulation exactly: the start 16 (divided by ``width`` when
    it is below 1) grows by 180/16 per block (lite: 164/15, then ``make_divisible(., 8)``).
    """
    _check_width(width)
    n = sum(REPEATS)
    stem_base = 32 / width if width < 1.0 else 32
    planes = 16 / width if width < 1.0 else 16
    if lite:
        stem = make_divisible(round(stem_base * width), 8)
        outs = [make_divisible(round(planes * width), 8)]
        for _ in range(n - 1):
            planes += 164 / (n - 1)
            outs.append(make_divisible(round(planes * width), 8))
        head = int(1280 * width) if width > 1 else 1280
    else:
        stem = round(stem_base * width)
        outs = [round(planes * width)]
        for _ in range(n - 1):
            planes += 180 / n
            outs.append(round(planes * width))
        head = int(1280 * width)
    return stem, tuple(outs), head


def rexnet_table(width: float = 1.0, lite: bool = False) -> tuple[tuple[str, ...], ...]:
    """The stage table in block-string notation, one ``rx`` string per block (widths all differ)."""
    _, outs, _ = rexnet_channels(width, lite)
    table, i = [], 0
    for repeats, stride, se in zip(REPEATS, STRIDES, SE_STAGES, strict=True):
        stage = []
        for r in range(repeats):
            spec = f"rx_r1_k3_s{stride if r == 0 else 1}_e{1 if i == 0 else 6}_c{outs[i]}"
            stage.append(spec + (f"_se{SE_RATIO!r}" if se and not lite else ""))
            i += 1
        table.append(tuple(stage))
    return tuple(table)


def rexnet_spec(width: float = 1.0, lite: bool = False) -> NetSpec:
    """:class:`NetSpec` of ReXNet (``lite=False``) or ReXNet-lite at ``width``."""
    stem, _, head = rexnet_channels(width, lite)
    return NetSpec(
        stages=decode_stages(rexnet_table(width, lite), round_width=False),
        stem=stem,
        head=head,
        head_hidden=1024 if lite else None,
        act="relu6" if lite else "silu",
    )


# ReXNet-plain: 13 separable blocks, 96 + 48 i for i < 12 then 1024; stride 2 at blocks 0, 2, 4, 10
PLAIN_WIDTHS = (*(96 + 48 * i for i in range(12)), 1024)
PLAIN_STRIDES = (2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1)
_PLAIN_STAGES = ((0, 1), (2, 3), (4, 5, 6, 7, 8, 9), (10, 11, 12))  # blocks per output stride


class _PlainBlock(nn.Module):
    """3x3 depthwise (stride) -> BN -> ReLU6 -> 1x1 -> BN -> SiLU (no residual)."""

    out: int
    stride: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = DepthwiseConv(3, self.stride, dtype=self.dtype, name="conv_dw")(x)
        x = jax.nn.relu6(batch_norm(train, name="bn1", dtype=self.dtype)(x))
        x = conv2d(self.out, 1, name="conv_pw", dtype=self.dtype)(x)
        return jax.nn.silu(batch_norm(train, name="bn2", dtype=self.dtype)(x))


class ReXNetPlain(StagedNet):
    """ReXNet-plain (see the module docstring); stages split at the stride-2 blocks."""

    @property
    def num_stages(self) -> int:
        return len(_PLAIN_STAGES)

    def setup(self):
        self.conv_stem = setup_conv(32, 3, 2, self.dtype)
        self.bn1 = setup_bn(self.dtype)
        self.blocks = [[_PlainBlock(PLAIN_WIDTHS[i], PLAIN_STRIDES[i], self.dtype) for i in s] for s in _PLAIN_STAGES]
        self.conv_head = setup_conv(1280, 1, 1, self.dtype)
        self.bn2 = setup_bn(self.dtype)
        self.setup_head("classifier")

    def forward_stem(self, x: jax.Array, train: bool = False) -> jax.Array:
        """conv_stem (3x3/2) -> bn1 -> SiLU."""
        return jax.nn.silu(self.bn1(self.conv_stem(x), use_running_average=not train))

    def forward_stage(self, index: int, x: jax.Array, train: bool = False) -> jax.Array:
        """The separable blocks of stage ``index``."""
        for block in self.blocks[index]:
            x = block(x, train)
        return x

    def features_head(self, x: jax.Array, train: bool = False) -> jax.Array:
        """conv_head (1x1 to 1280) -> bn2 -> SiLU."""
        return jax.nn.silu(self.bn2(self.conv_head(x), use_running_average=not train))


def _block_positions() -> list[str]:
    """freqjax's module path ``blocks.{stage}.{block}`` of each of the 16 blocks, in order."""
    return [f"blocks.{i}.{j}" for i, r in enumerate(REPEATS) for j in range(r)]


def _module_map(layout: str, lite: bool) -> dict[str, str]:
    """Reference module path -> freqjax module path, for layout 'timm' or 'official' (clovaai/rexnet)."""
    blocks = _block_positions()
    n = len(blocks)
    if layout == "timm":
        out = {"stem.conv": "conv_stem", "stem.bn": "bn1", f"features.{n}.conv": "conv_head"}
        out |= {f"features.{n}.bn": "bn2", "head.fc": "classifier"}
        for k, b in enumerate(blocks):
            for sub in ("conv_exp.conv", "conv_exp.bn", "conv_dw.conv", "conv_dw.bn", "conv_pwl.conv", "conv_pwl.bn"):
                out[f"features.{k}.{sub}"] = f"{b}.{sub}"
            out |= {f"features.{k}.se.{m}": f"{b}.se.{m}" for m in ("fc1", "bn", "fc2")}
        return out
    # The reference builds nn.Sequential lists: stem conv, BN, act at 0-2, blocks from 3, the head
    # conv and BN after them; inside a block, parameter-free activations also take an index.
    out = {"features.0": "conv_stem", "features.1": "bn1", f"features.{n + 3}": "conv_head"}
    out[f"features.{n + 4}"] = "bn2"
    out |= {"output.0": "pre_logits_conv", "output.1": "pre_logits_bn", "output.4": "classifier"} if lite else {}
    out |= {} if lite else {"output.1": "classifier"}
    for k, b in enumerate(blocks):
        se = not lite and k >= REPEATS[0] + REPEATS[1]
        subs = [] if k == 0 else [(0, "conv_exp.conv"), (1, "conv_exp.bn")]
        dw = 0 if k == 0 else 3
        subs += [(dw, "conv_dw.conv"), (dw + 1, "conv_dw.bn")]
        if se:
            subs += [(f"{dw + 2}.fc.0", "se.fc1"), (f"{dw + 2}.fc.1", "se.bn"), (f"{dw + 2}.fc.3", "se.fc2")]
        pwl = dw + 3 + se  # after the depthwise BN: [SE], ReLU6, then the projection
        subs += [(pwl, "conv_pwl.conv"), (pwl + 1, "conv_pwl.bn")]
        out |= {f"features.{k + 3}.out.{m}": f"{b}.{sub}" for m, sub in subs}
    return out


def reference_to_freqjax_keys(state_dict: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Rename a ReXNet ``state_dict`` from timm's or the official repository's layout to freqjax's.

    timm: ``stem.conv``, ``features.{k}.conv_exp.conv``, ``features.16``, ``head.fc``. Official
    (clovaai/rexnet ``rexnetv1.py`` / ``rexnetv1_lite.py``): ``features.{N}``,
    ``features.{3+k}.out.{M}``, ``output.{M}`` with a 1x1-conv classifier, here reshaped to a
    linear weight. A state_dict already in freqjax's layout passes through; keys that match no
    rule are kept as they are, so the strict loader reports them.
    """
    keys = set(state_dict)
    if "stem.conv.weight" in keys:
        layout = "timm"
    elif "features.0.weight" in keys:
        layout = "official"
    else:
        return dict(state_dict)
    mapping = _module_map(layout, lite=name.startswith("rexnet_lite"))
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        target = mapping.get(module)
        if target is None:
            out[key] = value
            continue
        if target == "classifier" and len(getattr(value, "shape", ())) == 4:
            out[f"{target}.{leaf}"] = value.reshape(value.shape[:2])  # official 1x1-conv classifier
        else:
            out[f"{target}.{leaf}"] = value
    return out


for _w, _width in REXNET_WIDTHS.items():
    _name = f"rexnet_{_w}"
    _timm = _name if _w in ("100", "130", "150", "200", "300") else None
    register(
        ModelInfo(
            _name,
            "rgb",
            224,
            REXNET,
            "docs/reference.md §8; paper Table 5, README",
            _timm,
            variant_of=None if _w == "100" else "rexnet_100",
        ),
        functools.partial(MBNet, rexnet_spec(_width)),
    )
for _w, _width in REXNET_LITE_WIDTHS.items():
    _name = f"rexnet_lite_{_w}"
    register(
        ModelInfo(
            _name,
            "rgb",
            224,
            REXNET,
            "docs/reference.md §8; rexnetv1_lite.py, README",
            variant_of=None if _w == "100" else "rexnet_lite_100",
        ),
        functools.partial(MBNet, rexnet_spec(_width, lite=True)),
    )
register(
    ModelInfo(
        "rexnet_plain",
        "rgb",
        224,
        REXNET,
        "section 4.4 (ReXNet (plain) over MobileNetV1); docs/models.md",
        None,
        0.2,
    ),
    ReXNetPlain,
)
