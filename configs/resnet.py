"""ResNet-18/34/50 baselines on ImageNet (torchvision recipe; FUN Table 1, MSNet Table 1 baselines).

    python -m freqjax.main --config configs/resnet.py:resnet18 --workdir runs/resnet18

Expected top-1 (torchvision weights, the papers' baseline numbers): ResNet-18 69.8 %, ResNet-34
73.3 %, ResNet-50 76.1 %. Recipe: SGD momentum 0.9, lr 0.1 at batch 256, x0.1 at epochs 30 and
60, 90 epochs, weight decay 1e-4, Inception crop + flip; eval resize 256 -> centre crop 224.
"""

import ml_collections

from freqjax.train.config import accelerator_variants, imagenet_sgd_step_recipe

VARIANTS = ("resnet18", "resnet34", "resnet50")


@accelerator_variants
def get_config(arg: str = "resnet18") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/resnet.py variant must be one of {VARIANTS}, got {arg!r}")
    return imagenet_sgd_step_recipe(arg, num_epochs=90.0, boundaries=(30, 60), weight_decay=1e-4)
