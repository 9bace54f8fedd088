"""Quick CPU training: a small CIFAR ResNet on CIFAR-10 JPEGs, or on procedural images offline.

    python -m freqjax.main --config configs/cifar_quick.py --workdir runs/cifar_quick
    python -m freqjax.main --config configs/cifar_quick.py:synthetic --workdir runs/quick_synthetic

``cifar10`` (default) reads ``folder:../shared/data/cifar10-jpeg`` (train/ and test/, 32x32 JPEGs),
trains ``cifar_resnet8`` (78k params, 12.5 MMACs) for 5 epochs with pad-4 crop + flip, Nesterov SGD
and a cosine schedule: on a 2-core EPYC it passes 70 % test top-1 after epoch 4 (about 2 min 50 s)
and ends at about 72 % in about 3 min 30 s; a 2-core Xeon took 5.5-6.5 min (docs/training.md).
``synthetic`` needs no data: the loss falls and accuracy rises on grating images within a couple
of minutes.
"""

import ml_collections

from freqjax.train.config import model_options, train_defaults

VARIANTS = ("cifar10", "synthetic")


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """``arg``: 'cifar10' (real data, default) or 'synthetic' (offline)."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/cifar_quick.py variant must be one of {VARIANTS}, got {arg!r}")
    c = train_defaults()
    c.model = "cifar_resnet8"
    c.model_options = model_options(c.model)  # e.g. --config.model_options.width=32
    c.image_size = 32
    c.augment = "cifar"
    c.colour_jitter = 0.0
    c.eval_augment = "none"
    c.optimizer = "nesterov"
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.schedule = "cosine"
    c.label_smoothing = 0.0
    c.drop_rate = 0.0
    c.worker_count = 1
    if arg == "cifar10":
        c.dataset = "folder:../shared/data/cifar10-jpeg"
        c.decode_cache = True  # decode the 60,000 JPEGs once, not every epoch (docs/training.md)
        c.batch_size = 128
        c.num_epochs = 5.0
        c.learning_rate = 0.1
        c.warmup_epochs = 0.2
        c.eval_every_steps = 390
        c.checkpoint_every_steps = 390
        c.log_every_steps = 20
    else:
        c.dataset = "synthetic"
        c.augment = "none"  # a horizontal flip turns a grating at angle t into one at pi - t: another class
        c.synthetic_size = 4096
        c.batch_size = 64
        c.num_train_steps = 300
        c.learning_rate = 0.05
        c.warmup_epochs = 0.5
        c.eval_every_steps = 100
        c.checkpoint_every_steps = 100
        c.log_every_steps = 20
        c.worker_count = 0
    return c
