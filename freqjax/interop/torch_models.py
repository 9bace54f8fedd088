"""PyTorch/timm versions of freqjax models, for parity tests, weight import checks and latency.

Needs the ``[torch]`` extra (torch, torchvision, timm). Models with a timm name come from
``timm.create_model``; the eFUN family is timm's ``EfficientNet`` class built from the same stage
table with an identity stem (the FUN repository's construction); LeFUN puts its 8x8 stride-8
front in the stem's place (``conv_stem``).
"""

from __future__ import annotations

from typing import Any

from freqjax.models import model_info
from freqjax.models.efficientnet import EFUN_TABLES

__all__ = ["has_counterpart", "timm_model"]


def has_counterpart(name: str) -> bool:
    """Whether :func:`timm_model` can build a PyTorch twin of registered model ``name`` (no torch needed)."""
    info = model_info(name)
    return info.timm_name is not None or name in _BUILDERS or ("efun" if name == "lefun" else name) in EFUN_TABLES


def timm_model(name: str, num_classes: int = 1000, front: str = "grouped") -> Any:
    """A randomly initialised PyTorch model with the architecture and parameter names of ``name``.

    Returned in eval mode. Raises ValueError for models without a PyTorch counterpart.
    """
    import timm
    import torch
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    if not has_counterpart(name):
        raise ValueError(f"model {name!r} has no PyTorch counterpart in freqjax.interop.torch_models")
    info = model_info(name)
    if info.timm_name is not None:
        return timm.create_model(info.timm_name, num_classes=num_classes).eval()
    if name in _BUILDERS:
        return _BUILDERS[name](num_classes).eval()
    table, head = EFUN_TABLES["efun" if name == "lefun" else name]
    model = EfficientNet(
        block_args=decode_arch_def([list(stage) for stage in table]),
        num_features=head,
        stem_size=192,
        num_classes=num_classes,
        act_layer=torch.nn.SiLU,
    )
    model.bn1 = torch.nn.Identity()
    if name == "lefun":
        groups = {"grouped": 3, "full": 1}[front]
        model.conv_stem = torch.nn.Conv2d(3, 192, 8, stride=8, groups=groups, bias=False)
    else:
        model.conv_stem = torch.nn.Identity()
    return model.eval()


def _resfun(num_classes: int) -> Any:
    """timm's ResNet with bottleneck stages (4, 6, 3) x (128, 192, 256) on 192 channels, no stem."""
    import torch
    from timm.models.resnet import Bottleneck, ResNet, make_blocks

    model = ResNet(Bottleneck, (4, 6, 3), channels=(128, 192, 256), num_classes=num_classes)
    stages, _ = make_blocks((Bottleneck,) * 3, (128, 192, 256), (4, 6, 3), 192, norm_layer=torch.nn.BatchNorm2d)
    for stage_name, stage in stages:
        setattr(model, stage_name, stage)
    # timm's forward_features always calls layer4; ResFUN has three stages.
    model.conv1 = model.bn1 = model.act1 = model.maxpool = model.layer4 = torch.nn.Identity()
    return model


_BUILDERS: dict[str, Any] = {"resfun": _resfun}


def rexnet_reference(width: float, lite: bool = False, num_classes: int = 1000) -> Any:
    """ReXNet / ReXNet-lite in the official clovaai/rexnet module layout (``features.N...out.M``, ``output.M``).

    Built from the same channel rule as freqjax (:func:`freqjax.models.rexnet.rexnet_channels`);
    the layer order and the ``nn.Sequential`` indices are those of ``rexnetv1.py`` /
    ``rexnetv1_lite.py``, so its ``state_dict`` has the official checkpoints' names.
    """
    import torch
    from timm.models._efficientnet_builder import efficientnet_init_weights
    from torch import nn

    from freqjax.models.rexnet import REPEATS, STRIDES, rexnet_channels

    act = nn.ReLU6 if lite else nn.SiLU

    def conv_bn(cin, cout, k=1, s=1, *, groups=1, a=None):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([a()] if a else [])

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            r = c // 12
            self.fc = nn.Sequential(nn.Conv2d(c, r, 1), nn.BatchNorm2d(r), nn.ReLU(), nn.Conv2d(r, c, 1))

        def forward(self, x):
            return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    class Block(nn.Module):
        def __init__(self, cin, cout, t, stride, se):
            super().__init__()
            self.cin, self.shortcut, mid = cin, stride == 1 and cin <= cout, cin * t
            out = conv_bn(cin, mid, a=act) if t != 1 else []
            out += conv_bn(mid, mid, 3, stride, groups=mid, a=nn.ReLU6 if lite else None)
            out += ([SE(mid)] if se else []) + ([] if lite else [nn.ReLU6()]) + conv_bn(mid, cout)
            self.out = nn.Sequential(*out)

        def forward(self, x):
            y = self.out(x)
            return torch.cat([y[:, : self.cin] + x, y[:, self.cin :]], 1) if self.shortcut else y

    class ReXNetReference(nn.Module):
        def __init__(self):
            super().__init__()
            stem, outs, head = rexnet_channels(width, lite)
            strides = [s if j == 0 else 1 for r, s in zip(REPEATS, STRIDES, strict=True) for j in range(r)]
            cins = (stem, *outs[:-1])
            blocks = [
                Block(cins[k], outs[k], 1 if k == 0 else 6, strides[k], not lite and k >= 3) for k in range(len(outs))
            ]
            self.features = nn.Sequential(*conv_bn(3, stem, 3, 2, a=act), *blocks, *conv_bn(outs[-1], head, a=act))
            hidden = [nn.Conv2d(head, 1024, 1), nn.BatchNorm2d(1024), nn.ReLU6()] if lite else []
            self.output = nn.Sequential(*hidden, nn.Dropout(0.2), nn.Conv2d(1024 if lite else head, num_classes, 1))

        def forward(self, x):
            return self.output(self.features(x).mean((2, 3), keepdim=True)).flatten(1)

    model = ReXNetReference()
    efficientnet_init_weights(model)  # timm's initialiser: logits of a useful scale for parity tests
    return model


REXNET_LITE_NAMES = ("100", "130", "150", "200")
XSEP_NAMES = ("050", "075", "100", "125")


def _timm_rexnet(width: float, num_classes: int) -> Any:
    from timm.models.rexnet import RexNet

    return RexNet(width_mult=width, num_classes=num_classes)


def xsep_reference(width: float, num_classes: int = 1000, padding: str = "improved") -> Any:
    """MobileNetV3-Small-XSep in PyTorch: timm's MobileNetV3-Small whose ``xs`` blocks get an XSepConv.

    The XSepConv module (``conv_2x2``/``bn_2x2``, ``conv_1xk``/``bn_1xk``, ``conv_kx1``/``bn_kx1``)
    takes the place of ``conv_dw`` and ``bn2`` (its BN and activation are inside); default options
    (k=5 / k=3, standard form, 2x2 padding strategy ``padding``). An independent implementation for parity tests.
    """
    import torch
    from timm.models.mobilenetv3 import _gen_mobilenet_v3
    from torch import nn
    from torch.nn import functional as tf

    from freqjax.models.mobilenet import mobilenetv3_small_xsep_spec
    from freqjax.models.xsepconv import DIRECTIONS, ORIGINAL_GROUP_PADDING, original_groups

    def pad_lrtb(p):  # ((top, bottom), (left, right)) -> F.pad's (left, right, top, bottom)
        return (p[1][0], p[1][1], p[0][0], p[0][1])

    class XSep(nn.Module):
        def __init__(self, c, k, padding, act):
            super().__init__()
            self.padding, self.act = padding, act
            self.conv_2x2 = nn.Conv2d(c, c, 2, groups=c, bias=False)
            self.conv_1xk = nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c, bias=False)
            self.conv_kx1 = nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c, bias=False)
            self.bn_2x2, self.bn_1xk, self.bn_kx1 = nn.BatchNorm2d(c), nn.BatchNorm2d(c), nn.BatchNorm2d(c)

        def two_by_two(self, x):
            if self.padding != "original":
                return self.conv_2x2(tf.pad(x, pad_lrtb(DIRECTIONS[self.padding])))
            outs, start, w = [], 0, self.conv_2x2.weight
            for size, p in zip(original_groups(x.shape[1]), ORIGINAL_GROUP_PADDING, strict=True):
                xg = tf.pad(x[:, start : start + size], pad_lrtb(p))
                outs.append(tf.conv2d(xg, w[start : start + size], groups=size))
                start += size
            return torch.cat(outs, 1)

        def forward(self, x):
            x = self.act(self.bn_2x2(self.two_by_two(x)))
            return self.act(self.bn_kx1(self.conv_kx1(self.act(self.bn_1xk(self.conv_1xk(x))))))

    model = _gen_mobilenet_v3("mobilenetv3_small_100", width, num_classes=num_classes)
    spec = mobilenetv3_small_xsep_spec(width, padding=padding)
    paddings = iter(spec.two_by_two_paddings())
    for i, stage in enumerate(spec.stages):
        for j, args in enumerate(stage):
            padding = next(paddings)
            if args.xsep:
                block = model.blocks[i][j]
                c = block.conv_dw.in_channels
                block.conv_dw = XSep(c, args.kernel, padding, block.bn2.act)
                block.bn2 = nn.Identity()
    return model


_BUILDERS |= {
    **{f"mobilenetv3_small_{w}_xsep": lambda n, w=w: xsep_reference(int(w) / 100, n) for w in XSEP_NAMES},
    "rexnet_090": lambda n: _timm_rexnet(0.9, n),
    "rexnet_220": lambda n: _timm_rexnet(2.2, n),
    **{f"rexnet_lite_{w}": lambda n, w=w: rexnet_reference(int(w) / 100, True, n) for w in REXNET_LITE_NAMES},
}


def _timm_mobilenetv1(width: float, num_classes: int) -> Any:
    """timm's MobileNetV1 generator at any channel multiplier (timm registers only 1.0 and 1.25)."""
    from timm.models.efficientnet import _gen_mobilenet_v1

    return _gen_mobilenet_v1("mobilenetv1_100", width, num_classes=num_classes)


_BUILDERS |= {f"mobilenetv1_{w}": lambda n, w=w: _timm_mobilenetv1(int(w) / 100, n) for w in ("025", "050", "075")}


def msnet_reference(base: str, num_classes: int = 1000) -> Any:
    """PyTorch MSNet (docs/reference.md section 5) over two timm/torchvision-named copies of ``base``.

    Written independently of :mod:`freqjax.models.msnet` for parity: ``low`` runs on the 2x2
    average-pooled image, ``high`` adds ``low``'s nearest-upsampled output (cropped or zero-padded
    bottom/right) after the stem and every stage; ``forward`` returns (logits_low, logits_high).
    """
    import torch
    from torch import nn
    from torch.nn import functional

    def parts(m: nn.Module):
        """(stem, stages, head) of a timm ResNet / MobileNetV1 (EfficientNet class) / DenseNet."""
        if hasattr(m, "layer1"):
            stem = nn.Sequential(m.conv1, m.bn1, m.act1, m.maxpool)
            return stem, [m.layer1, m.layer2, m.layer3, m.layer4], m.forward_head
        if hasattr(m, "blocks"):
            return nn.Sequential(m.conv_stem, m.bn1), list(m.blocks), m.forward_head
        f = m.features
        stages = [f.denseblock1]
        stages += [nn.Sequential(getattr(f, f"transition{i}"), getattr(f, f"denseblock{i + 1}")) for i in (1, 2, 3)]
        return nn.Sequential(f.conv0, f.norm0, f.pool0), stages, lambda x: m.forward_head(f.norm5(x))

    def fuse(h: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        u = functional.interpolate(low, scale_factor=2, mode="nearest")[:, :, : h.shape[2], : h.shape[3]]
        return h + functional.pad(u, (0, h.shape[3] - u.shape[3], 0, h.shape[2] - u.shape[2]))

    class MSNetReference(nn.Module):
        def __init__(self):
            super().__init__()
            self.low, self.high = timm_model(base, num_classes), timm_model(base, num_classes)

        def forward(self, x):
            (ls, lstages, lhead), (hs, hstages, hhead) = parts(self.low), parts(self.high)
            lo = ls(functional.avg_pool2d(x, 2))
            h = fuse(hs(x), lo)
            for lstage, hstage in zip(lstages, hstages, strict=True):
                lo = lstage(lo)
                h = fuse(hstage(h), lo)
            return lhead(lo), hhead(h)

    return MSNetReference()


_BUILDERS |= {
    f"msnet_{b}": lambda n, b=b: msnet_reference(b, n)
    for b in ("resnet18", "mobilenetv1_025", "mobilenetv1_050", "mobilenetv1_075", "mobilenetv1_100", "densenet121")
}


def _cifar_resnet(blocks_per_stage: int, num_classes: int, width: int = 16) -> Any:
    """The CIFAR ResNets of :mod:`freqjax.models.cifar` from torchvision's ``BasicBlock``."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        rest = [BasicBlock(cout, cout) for _ in range(blocks_per_stage - 1)]
        return nn.Sequential(BasicBlock(cin, cout, stride, down), *rest)

    class CifarResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = stage(width, width, 1)
            self.layer2 = stage(width, 2 * width, 2)
            self.layer3 = stage(2 * width, 4 * width, 2)
            self.fc = nn.Linear(4 * width, num_classes)

        def forward(self, x):
            x = nn.functional.relu(self.bn1(self.conv1(x)))
            return self.fc(self.layer3(self.layer2(self.layer1(x))).mean((2, 3)))

    return CifarResNet()


_BUILDERS |= {f"cifar_resnet{d}": lambda n, d=d: _cifar_resnet((d - 2) // 6, n) for d in (8, 14, 20)}
