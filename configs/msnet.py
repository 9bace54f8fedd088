"""MSNet on ImageNet: two copies of a base network, low resolution + high-frequency residual.

From "High Frequency Residual Learning for Multi-Scale Image Classification" (Cheng et al.).

    python -m freqjax.main --config configs/msnet.py:msnet_resnet18 --workdir runs/msnet_resnet18
    python -m freqjax.main --config configs/msnet.py:msnet_resnet18 --workdir runs/msnet_resnet18 --mode eval

Training adds the cross-entropy losses of Network-L (image downsampled 2x) and Network-H; the
evaluation reports Network-H's top-1/top-5 (threshold 1: everything by H) and Network-L's top-1
as ``top1_exit0`` (threshold 0). The calibrated early-exit sweep over thresholds is
:mod:`freqjax.models.msnet_infer`. Paper results (Table 1-3): MS-ResNet-18 (128/256) 71.3 % at
threshold 0.66 (1,811 MMACs) and 71.9 % at 0.90; MS-MobileNet-0.25 +3.8 % over MobileNet-0.25 at
54 MMACs; MS-DenseNet-121 (112/224) 75.0 % at 0.60. Recipe (paper section 4): both networks
jointly from scratch, 120 epochs, SGD lr 0.1, x0.1 at epochs 30, 60 and 90. **Decisions**:
momentum 0.9, weight decay 1e-4 (4e-5 for MobileNet), batch 256, Inception crop + flip at the
model's resolution (256, DenseNet 224), eval resize / crop_pct 0.875.

Not in the paper: ``msnet_cifar_resnet8`` / ``msnet_cifar_resnet20``, MS-versions of the CIFAR
ResNets (Network-L on 16x16, Network-H on 32x32) trained with ``configs/cifar_quick.py``'s CIFAR-10
recipe (the same data, epochs and schedule as the plain ``cifar_resnet8`` run they are compared with).

The sweep (``python -m freqjax.studies.msnet_sweep --config configs/msnet.py:VARIANT --workdir RUN``,
docs/msnet.md) reads ``config.msnet_sweep``: ``base_from`` (the workdir of the plain base network's
run, e.g. ``runs/cifar_quick``; empty: the MSNet alone), ``base_sizes`` (the base's evaluation sides;
empty: half, three quarters and all of ``image_size``), ``calibration_fraction`` (the share of the
evaluation images thresholds are calibrated on; the rest report), ``threshold_step``.
"""

import importlib.util
from pathlib import Path

import ml_collections

from freqjax.train.config import accelerator_variants, imagenet_sgd_step_recipe

VARIANTS = (
    "msnet_resnet18",
    "msnet_mobilenetv1_100",
    "msnet_mobilenetv1_075",
    "msnet_mobilenetv1_050",
    "msnet_mobilenetv1_025",
    "msnet_densenet121",
    "msnet_cifar_resnet8",
    "msnet_cifar_resnet20",
)


@accelerator_variants
def get_config(arg: str = "msnet_resnet18") -> ml_collections.ConfigDict:
    """``arg``: one of :data:`VARIANTS`."""
    if arg not in VARIANTS:
        raise ValueError(f"configs/msnet.py variant must be one of {VARIANTS}, got {arg!r}")
    if "cifar" in arg:
        c = _cifar_quick().get_config("cifar10")
        c.model = arg
        c.model_options = ml_collections.ConfigDict()
    else:
        c = imagenet_sgd_step_recipe(
            arg,
            num_epochs=120.0,
            boundaries=(30, 60, 90),
            weight_decay=4e-5 if "mobilenet" in arg else 1e-4,
            image_size=224 if arg == "msnet_densenet121" else 256,
        )
    return c


def _cifar_quick():
    """configs/cifar_quick.py (configs are files, not a package): its CIFAR-10 recipe, one copy."""
    spec = importlib.util.spec_from_file_location("configs_cifar_quick", Path(__file__).with_name("cifar_quick.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
