"""MobileNetV3-Small-XSep on CIFAR-10/100, SVHN and Tiny-ImageNet (XSepConv paper, section 4).

From "XSepConv: Extremely Separated Convolution".

    python -m freqjax.main --config configs/xsepconv.py:cifar10 --workdir runs/xsep_cifar10
    python -m freqjax.main --config configs/xsepconv.py:tiny_imagenet \\
        --config.dataset=folder:/data/tiny-imagenet-200 --workdir runs/xsep_tiny
    # width 0.5 and the ablations: --config.model=mobilenetv3_small_050_xsep --config.model_options.form=behind

Variants: cifar10, cifar100 (tfds, 32 px, pad-4 crop + flip), svhn (tfds svhn_cropped,
train+extra, no augmentation), tiny_imagenet (a folder PATH/train|val/CLASS/*.JPEG, 64 px images,
Inception crop to 56 + flip; eval centre 56 of 64). The model runs with the paper's small-input
strides (``model_options.cifar`` / ``tiny_imagenet``: stem and first block stride 1).
Recipe (paper section 4.1): SGD momentum 0.9, weight decay 6e-5, batch 128, cosine with 5 warm-up
epochs; lr 0.35 for 400 epochs (CIFAR) or 20 (SVHN); 0.15 for 200 epochs (Tiny-ImageNet).
Expected (paper Table 1 and Fig. 3): XSepConv beats the 5x5 depthwise MobileNetV3-Small on all
four data sets with fewer parameters and FLOPs (e.g. +0.5 % top-1 on Tiny-ImageNet at 4.75 % fewer
FLOPs); each number is a mean over 5 seeds (``--config.seed``). The depthwise baseline of the
same experiment (same strides, 5x5 / 3x3 depthwise instead of XSepConv): ``--config.model_options.xsep=False``.
"""

import ml_collections

from freqjax.train.config import accelerator_variants, model_options, train_defaults

VARIANTS = ("cifar10", "cifar100", "svhn", "tiny_imagenet")


@accelerator_variants
def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/xsepconv.py variant must be one of {VARIANTS}, got {arg!r}")
    c = train_defaults()
    c.model = "mobilenetv3_small_100_xsep"
    c.model_options = model_options(c.model, cifar=arg != "tiny_imagenet", tiny_imagenet=arg == "tiny_imagenet")
    c.batch_size = 128
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.weight_decay = 6e-5
    c.schedule = "cosine"
    c.warmup_epochs = 5.0
    c.warmup_init_lr = 0.0
    c.label_smoothing = 0.0
    c.colour_jitter = 0.0
    c.eval_augment = "none"
    c.learning_rate = 0.35
    c.num_epochs = 400.0
    c.image_size = 32
    c.augment = "cifar"
    if arg in ("cifar10", "cifar100"):
        c.dataset = f"tfds:{arg}"
    elif arg == "svhn":
        c.dataset = "tfds:svhn_cropped"
        c.train_split = "train+extra"
        c.augment = "none"
        c.num_epochs = 20.0
    else:
        c.dataset = "folder:data/tiny-imagenet-200"
        c.image_size = 56
        c.augment = "inception"
        c.eval_augment = "centre"
        c.crop_pct = 56 / 64
        c.learning_rate = 0.15
        c.num_epochs = 200.0
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 100
    c.worker_count = 4
    return c
