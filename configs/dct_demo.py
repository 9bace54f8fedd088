"""DCT input demo (FUN paper, section 3.1 and Table 7).

python -m freqjax.main --config configs/dct_demo.py --workdir runs/dct_demo
python -m freqjax.main --config configs/dct_demo.py:cifar10 --workdir runs/dct_cifar
python -m freqjax.main --config configs/dct_demo.py --config.data=folder:/path/to/jpegs --workdir runs/x

(``python -m freqjax.studies.dct_demo`` takes the same flags.)
"""

import ml_collections


def get_config(arg: str = "synthetic") -> ml_collections.ConfigDict:
    """``arg``: 'synthetic' (offline, default) or 'cifar10' (../shared/data/cifar10-jpeg/test)."""
    if arg not in ("synthetic", "cifar10"):
        raise ValueError(f"configs/dct_demo.py takes 'synthetic' or 'cifar10', got {arg!r}")
    c = ml_collections.ConfigDict()
    c.mode = "dct_demo"
    c.data = "synthetic" if arg == "synthetic" else "folder:../shared/data/cifar10-jpeg/test"
    c.num_images = 64
    c.image_size = 224
    c.chroma = "420"
    c.batch_size = 64
    c.seed = 0
    c.repeats = 5
    return c
