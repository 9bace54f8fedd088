"""Compress a trained network with DCT weight reordering, fine-tune the kept values, report.

"Tensor Reordering for CNN Compression" (Ulicny, Krylov & Dahyot, ICASSP 2021)::

    python -m freqjax.main --config configs/compress.py:uniform --workdir runs/c \\
        --config.init_from=runs/cifar --config.dataset=folder:PATH/cifar10-jpeg
    python -m freqjax.studies.compression_curve --from runs/cifar --ratios 2,4,8 --out runs/curve

Variants: ``uniform``, ``progressive_r``, ``progressive_g`` (one epoch of fine-tuning, the paper's
recipe) and ``<plan>_long`` (its 20-epoch variant). ``--config.compression.method`` picks the
paper's reordered DCT (``dct``) or a baseline at the same kept values (``dct_no_reorder``,
``l1``). The defaults fit ``configs/cifar_quick.py``'s network (cifar_resnet8, 32 px, batch 128);
for another network set ``model``, ``dataset``, ``image_size``, ``batch_size`` and
``learning_rate`` (0.001 x batch_size / 256). What the job does and writes:
:mod:`freqjax.studies.compression`; results: docs/compression.md.

The paper's presets (section 4.2):

- ``uniform``: g = 4, r = 8 ("one epoch fine-tuning of a model uniformly compressed with g = 4,
  r = 8x allows to perform as well as the original model with only 38 % of its size").
- ``progressive_r``: g = 4, r' = 1 (the "comparable accuracy ... with 32 % of the parameters"
  model; r_l = 1 + r' sqrt(p_l / p_ref), p_ref the smallest compressed layer).
- ``progressive_g``: r = 8, g_l = max(2, 2^floor(log2 sqrt(p_l / p_ref))).

**Decision** (the paper gives no progressive_g operating point): r = 8, the uniform preset's rate.

Fine-tuning (section 4.2): one epoch "on central crops of the resized training images without
using any augmentation", learning rate 0.001 x batch_size / 256; the longer variant, 20 epochs
"decreasing the learning rate by 10 at epoch 15 and using standard augmentation".

**Decisions** where the paper is silent (taken from the reference's train.py where it has them):

- Optimiser: SGD, momentum 0.9, weight decay 1e-4 (the reference's defaults), decay on the kept
  values (2-D leaves); constant rate in the one-epoch recipe.
- What trains: ``compression.finetune='coefficients'`` (default) trains the kept DCT coefficients
  (or kept values of the l1 baseline) only, the paper's "#trainable"; 'all' also trains the
  uncompressed layers, biases and BatchNorm scales, as the reference's script does. BatchNorm
  runs in training mode in both (running statistics are updated, as PyTorch's model.train()).
- Layers: the reference's presets for resnet50 / mobilenetv2_100; any other network
  ``all_but_first``: every conv and dense kernel but the convs reading the image and depthwise
  ones ("we omit the first layer", "treat the output layer as a 1x1 convolutional layer").
- "Central crops of the resized images" is ``augment='none'`` (resize to ``image_size``; CIFAR's
  32 px images pass unchanged); "standard augmentation" is ``'cifar'`` (pad-4 crop + flip) here,
  ``'inception'`` for ImageNet.
- The CIFAR rate: 0.001 x 128 / 256 = 5e-4 (the paper's rule at this batch size).
"""

import ml_collections

from freqjax.studies.compression import VARIANTS, compress_config

__all__ = ["VARIANTS", "get_config"]


def get_config(arg: str = "uniform") -> ml_collections.ConfigDict:
    """``arg``: one of VARIANTS (``uniform``, ``progressive_r``, ``progressive_g``, each also ``_long``)."""
    return compress_config(arg)
