"""eFUN family on ImageNet ("Rethinking FUN: Frequency-Domain Utilization Networks", section 4).

Architectures and sizes: docs/reference.md section 2.

    python -m freqjax.main --config configs/efun.py --workdir runs/efun                  # eFUN
    python -m freqjax.main --config configs/efun.py:efun_s_plus --workdir runs/efun_s_plus
    python -m freqjax.main --config configs/efun.py:efun_l --workdir runs/efun_l
    # offline smoke run on procedural images:
    python -m freqjax.main --config configs/efun.py:efun_s_plus --config.dataset=synthetic \\
        --config.num_train_steps=20 --config.batch_size=16 --workdir runs/efun_smoke

Variants (``:name``): efun, efun_s, efun_s_plus, efun_l, efun_variant_a, efun_variant_b (paper
Tables 4-5 ablations), lefun, lefun_e2e (section 4.6, Table 8; below).

LeFUN (section 4.6) replaces the fixed DCT by a learned 8x8 stride-8 convolution on YCbCr, in two
ways. ``lefun`` is the two-stage one: stage 1 trains eFUN (``:efun``), stage 2 adds the front and
trains only it, the eFUN behind it frozen (its parameters and its BatchNorm statistics: frozen
BatchNorm layers normalise with their running statistics in training, freqjax.train.steps)::

    python -m freqjax.main --config configs/efun.py:efun --workdir runs/efun           # stage 1
    python -m freqjax.main --config configs/efun.py:lefun --workdir runs/lefun \
        --config.init_from=runs/efun                                                   # stage 2

``init_from`` may also be the FUN repository's PyTorch eFUN checkpoint (``efun.pth``): its weights
load into everything but the front. ``lefun_e2e`` trains front and eFUN together from scratch.

Paper results (ImageNet top-1, Table 2 / Table 8): eFUN 77.0 %, eFUN-S 75.6 %, eFUN-S+ 73.3 %,
eFUN-L 78.8 %, variant A 75 %, variant B 74.9 %, LeFUN 72.8 %, LeFUN_e2e 77.2 %.

Recipe: RMSProp TF-style (decay 0.9, momentum 0.9, eps 1e-3), warm-up 3 epochs from 1e-6, lr x0.97
every 2.4 epochs, 450 epochs, weight decay 1e-5 on kernels only, label smoothing 0.1, dropout 0.2,
drop-path 0.2 (0.3 for eFUN-L), EMA 0.9999, Inception crop 224 + flip + colour jitter 0.4; eval
resize 256 bicubic -> centre crop 224. **Decision**: the paper's lr 0.048 is timm's 0.016 per 256
images at a global batch of 768 (6 GPUs x 128); scale it linearly if you change ``batch_size``.
The warm-up is linear per step (timm steps it per epoch).

**Decision** (LeFUN front init; the paper does not say): both LeFUN variants start the front at
random (``model_options.front_init='random'``, He normal as every conv). LeFUN scores 4.2 points
below the eFUN it is put in front of and its learned filters look "rather different than those of
the DCT" (Fig. 7): a front started at the exact DCT would begin at eFUN's accuracy. Set
``--config.model_options.front_init=dct`` to ask the other question. **Decision** (front shape):
'grouped', each 8x8x1 block of a plane to 64 outputs as the text says (4.25M parameters; the
table's 4.3M fits ``front='full'``, 4.27M, better). **Decision** (``lefun`` schedule, not given):
the eFUN recipe for 30 epochs, without dropout and drop-path (nothing behind the front trains, so
they would only add noise to its gradient). **Decision** (``lefun_e2e``): from scratch with the
full 450-epoch eFUN recipe ("training the entire network end-to-end").
"""

import ml_collections

from freqjax.train.config import accelerator_variants, model_options, train_defaults

VARIANTS = ("efun", "efun_s", "efun_s_plus", "efun_l", "efun_variant_a", "efun_variant_b", "lefun", "lefun_e2e")


@accelerator_variants
def get_config(arg: str = "efun") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/efun.py variant must be one of {VARIANTS}, got {arg!r}")
    c = train_defaults()
    c.model = "lefun" if arg.startswith("lefun") else arg
    c.dataset = "tfds:imagenet2012"
    c.image_size = 224
    c.augment = "inception"
    c.colour_jitter = 0.4
    c.eval_augment = "centre"
    c.crop_pct = 0.875
    c.batch_size = 768
    c.num_epochs = 450.0
    c.optimizer = "rmsprop_tf"
    c.learning_rate = 0.048
    c.momentum = 0.9
    c.rmsprop_decay = 0.9
    c.rmsprop_eps = 1e-3
    c.weight_decay = 1e-5
    c.schedule = "exponential"
    c.warmup_epochs = 3.0
    c.warmup_init_lr = 1e-6
    c.decay_epochs = 2.4
    c.decay_rate = 0.97
    c.label_smoothing = 0.1
    c.drop_rate = 0.2
    c.drop_path_rate = 0.3 if arg == "efun_l" else 0.2
    c.ema_decay = 0.9999
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 100
    c.worker_count = 8
    if arg.startswith("lefun"):
        c.model_options = model_options("lefun", front="grouped", front_init="random")
    if arg == "lefun":
        c.trainable = "^dct_front/"  # everything else (parameters and BatchNorm statistics) is frozen
        c.init_from = "runs/efun"
        c.init_head = "load"
        c.num_epochs = 30.0
        c.drop_rate = 0.0
        c.drop_path_rate = 0.0
    return c
