"""ResFUN on ImageNet ("Rethinking FUN", section 4.1 and Table 1; docs/reference.md section 3).

    python -m freqjax.main --config configs/resfun.py --workdir runs/resfun

ResNet-50 bottlenecks on the 28x28x192 DCT input (stem, max-pool and conv2_x removed; stage
widths 512/768/1024): 10.4M parameters. Paper result: 72.8 % top-1 (ResNet-18 69.8 %, ResNet-34
73.3 %). Recipe (paper): SGD, lr 0.1 for 90 epochs, 0.01 for 20, 0.001 for 20 (130 epochs).
**Decisions** where the paper is silent: momentum 0.9, weight decay 1e-4 (kernels only), batch
256, Inception crop + flip without colour jitter, no label smoothing -- the torchvision ResNet
recipe the baselines were trained with.
"""

import ml_collections

from freqjax.train.config import accelerator_variants, imagenet_sgd_step_recipe


@accelerator_variants
def get_config(arg: str = "resfun") -> ml_collections.ConfigDict:
    """``arg``: 'resfun' (the only variant)."""
    if arg != "resfun":
        raise ValueError(f"configs/resfun.py variant must be 'resfun', got {arg!r}")
    return imagenet_sgd_step_recipe("resfun", num_epochs=130.0, boundaries=(90, 110), weight_decay=1e-4)
