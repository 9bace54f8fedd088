"""MobileNetV1 baselines on ImageNet with MSNet's recipe (MSNet paper, Table 2).

    python -m freqjax.main --config configs/mobilenet.py:mobilenetv1_100 --workdir runs/mbv1

Expected top-1 (MobileNet paper, the MSNet baselines): 1.0 70.6 %, 0.75 68.4 %, 0.5 63.7 %,
0.25 50.6 % at 224 px. Recipe (MSNet, section 4): SGD momentum 0.9, lr 0.1 at batch 256, x0.1 at
epochs 30, 60 and 90, 120 epochs. **Decision**: weight decay 4e-5 (the MobileNet paper's "very
little"), Inception crop + flip. MobileNetV2/V3 names also run (``--config.model=mobilenetv2_100``)
but their published numbers come from longer RMSProp recipes (use configs/efficientnet.py's).
"""

import ml_collections

from freqjax.train.config import accelerator_variants, imagenet_sgd_step_recipe

VARIANTS = ("mobilenetv1_100", "mobilenetv1_075", "mobilenetv1_050", "mobilenetv1_025")


@accelerator_variants
def get_config(arg: str = "mobilenetv1_100") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/mobilenet.py variant must be one of {VARIANTS}, got {arg!r}")
    return imagenet_sgd_step_recipe(arg, num_epochs=120.0, boundaries=(30, 60, 90), weight_decay=4e-5)
