"""DCT weight compression by tensor reordering (Ulicny, Krylov & Dahyot, ICASSP 2021), as pure functions.

Example::

    from freqjax.compress import make_plan, compress, decompress, count
    plan = make_plan(variables, "resnet50", "progressive_r", g=4, r_prime=1.0)
    ctree = compress(variables, plan)          # CompressedTensor nodes in place of the kernels
    # baselines at the same kept values: compress(variables, plan, scheme="l1" | "dct_no_reorder")
    logits = model.apply(decompress(ctree), x)  # decompress is jit-able and differentiable
    count(ctree)  # {'coefficients', 'index', 'uncompressed', 'bn_affine', 'bn_stats', 'total'}
"""

from freqjax.compress.codec import dct_ortho, decode, encode, idct_ortho, l1_prune, nsse
from freqjax.compress.ordering import greedy_order
from freqjax.compress.plan import PRESETS, STRATEGIES, LayerPlan, Plan, make_plan
from freqjax.compress.schemes import SCHEMES
from freqjax.compress.storage import load, save
from freqjax.compress.tree import (
    CompressedTensor,
    check_plan,
    compress,
    count,
    decompress,
    finetune_apply,
    merge,
    split,
)

__all__ = [
    "PRESETS",
    "SCHEMES",
    "STRATEGIES",
    "CompressedTensor",
    "LayerPlan",
    "Plan",
    "check_plan",
    "compress",
    "count",
    "dct_ortho",
    "decode",
    "decompress",
    "encode",
    "finetune_apply",
    "greedy_order",
    "idct_ortho",
    "l1_prune",
    "load",
    "make_plan",
    "merge",
    "nsse",
    "save",
    "split",
]
