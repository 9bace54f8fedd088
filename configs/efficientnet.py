"""EfficientNet-B0/B1 RGB baselines on ImageNet (timm's RMSProp-TF recipe; FUN Table 2 baseline).

    python -m freqjax.main --config configs/efficientnet.py:efficientnet_b0 --workdir runs/b0

Expected top-1: EfficientNet-B0 77.4 % (FUN paper Table 2), B1 at 240 px 79.1 % (EfficientNet
paper). Recipe as eFUN's (configs/efun.py): RMSProp-TF (0.9, 0.9, eps 1e-3), lr 0.016 per 256
images, warm-up 3 epochs from 1e-6, x0.97 every 2.4 epochs, 450 epochs, weight decay 1e-5,
label smoothing 0.1, dropout 0.2, drop-path 0.2, EMA 0.9999, Inception crop + flip + colour
jitter 0.4. timm's published B0 trains with RandAugment and random erasing instead of colour
jitter: ``--config.augment=inception+rand-m9-mstd0.5+erase0.2 --config.colour_jitter=0``.
"""

import ml_collections

from freqjax.train.config import accelerator_variants, train_defaults

VARIANTS = ("efficientnet_b0", "efficientnet_b1")


@accelerator_variants
def get_config(arg: str = "efficientnet_b0") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/efficientnet.py variant must be one of {VARIANTS}, got {arg!r}")
    c = train_defaults()
    c.model = arg
    c.dataset = "tfds:imagenet2012"
    c.image_size = 240 if arg == "efficientnet_b1" else 224
    c.augment = "inception"
    c.colour_jitter = 0.4
    c.batch_size = 256
    c.num_epochs = 450.0
    c.optimizer = "rmsprop_tf"
    c.learning_rate = 0.016
    c.warmup_epochs = 3.0
    c.warmup_init_lr = 1e-6
    c.decay_epochs = 2.4
    c.decay_rate = 0.97
    c.weight_decay = 1e-5
    c.label_smoothing = 0.1
    c.drop_rate = 0.2
    c.drop_path_rate = 0.2
    c.ema_decay = 0.9999
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 100
    c.worker_count = 8
    return c
