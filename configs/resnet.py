"""ResNet-18/34/50 baselines on ImageNet (torchvision recipe; FUN Table 1, MSNet Table 1 baselines).

    python -m freqjax.main --config configs/resnet.py:resnet18 --workdir runs/resnet18

Expected top-1 (torchvision weights, the papers' baseline numbers): ResNet-18 69.8 %, ResNet-34
73.3 %, ResNet-50 76.1 %. Recipe: SGD momentum 0.9, lr 0.1 at batch 256, x0.1 at epochs 30 and
60, 90 epochs, weight decay 1e-4, Inception crop + flip; eval resize 256 -> centre crop 224.
"""

import ml_collections

from freqjax.config import train_defaults

VARIANTS = ("resnet18", "resnet34", "resnet50")


def get_config(arg: str = "resnet18") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/resnet.py variant must be one of {VARIANTS}, got {arg!r}")
    c = train_defaults()
    c.model = arg
    c.dataset = "tfds:imagenet2012"
    c.image_size = 224
    c.augment = "inception"
    c.colour_jitter = 0.0
    c.batch_size = 256
    c.num_epochs = 90.0
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.1
    c.weight_decay = 1e-4
    c.schedule = "piecewise"
    c.boundaries = (30, 60)
    c.decay_rate = 0.1
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 100
    c.worker_count = 8
    return c
