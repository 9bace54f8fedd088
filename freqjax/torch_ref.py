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

__all__ = ["timm_model"]


def timm_model(name: str, num_classes: int = 1000, front: str = "grouped") -> Any:
    """A randomly initialised PyTorch model with the architecture and parameter names of ``name``.

    Returned in eval mode. Raises ValueError for models without a PyTorch counterpart.
    """
    import timm
    import torch
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    info = model_info(name)
    if info.timm_name is not None:
        return timm.create_model(info.timm_name, num_classes=num_classes).eval()
    table_name = "efun" if name == "lefun" else name
    if table_name not in EFUN_TABLES:
        raise ValueError(f"model {name!r} has no PyTorch counterpart in freqjax.torch_ref")
    table, head = EFUN_TABLES[table_name]
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
