"""Config defaults and checks: unknown keys and bad values fail early, with a clear one-line message.

Training configs (``configs/*.py``) start from :func:`train_defaults` and change the fields their
recipe fixes; :func:`validate_train_config` runs before anything is compiled or loaded.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable

import ml_collections

__all__ = [
    "accelerator_variants",
    "check_choice",
    "check_keys",
    "check_positive_int",
    "imagenet_sgd_step_recipe",
    "model_options",
    "train_defaults",
    "validate_train_config",
]


def check_keys(config: ml_collections.ConfigDict, allowed: Iterable[str], where: str = "config") -> None:
    """Raise ValueError naming any key of ``config`` that is not in ``allowed`` (with close matches)."""
    allowed = set(allowed)
    unknown = sorted(set(config.keys()) - allowed)
    if unknown:
        hints = [f"{k!r} -> {m[0]!r}" for k in unknown if (m := difflib.get_close_matches(k, allowed, n=1))]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ValueError(f"{where} has unknown field(s) {unknown}{hint}; valid fields: {sorted(allowed)}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices`` (naming a close match if there is one)."""
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"config.{name} must be one of {choices}, got {value!r}{hint}")


def check_positive_int(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"config.{name} must be a positive integer, got {value!r}")


def _check_number(name: str, value: object, low: float, high: float = float("inf"), high_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bound = f"[{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"config.{name} must be a number in {bound}, got {value!r}")


_INF = float("inf")
# (field, low, high, high excluded) of every plain numeric field
_RANGES = (
    ("learning_rate", 0.0, _INF, False),
    ("crop_pct", 1e-3, 1.0, False),
    ("colour_jitter", 0.0, 1.0, False),
    ("momentum", 0.0, 1.0, True),
    ("rmsprop_decay", 0.0, 1.0, True),
    ("rmsprop_eps", 0.0, _INF, False),
    ("weight_decay", 0.0, _INF, False),
    ("warmup_epochs", 0.0, _INF, False),
    ("warmup_init_lr", 0.0, _INF, False),
    ("decay_epochs", 1e-9, _INF, False),
    ("decay_rate", 0.0, 1.0, False),
    ("min_lr", 0.0, _INF, False),
    ("label_smoothing", 0.0, 1.0, True),
    ("ema_decay", 0.0, 1.0, True),
    ("grad_clip_norm", 0.0, _INF, False),
    ("drop_path_rate", 0.0, 1.0, True),
)


_POSITIVE = (
    "batch_size",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "synthetic_size",
)


def _data_defaults(c: ml_collections.ConfigDict) -> None:
    c.dataset = "synthetic"
    c.data_dir = ""  # tfds data_dir ('' = tfds default)
    c.train_split = "train"  # tfds training split, e.g. 'train+extra' (SVHN)
    c.image_size = 224
    c.augment = "inception"  # base kind [+rand-mM-nN-mstdS | +auto][+eraseP]: freqjax/data/augment.py
    c.colour_jitter = 0.4
    c.eval_augment = "centre"
    c.crop_pct = 0.875
    c.synthetic_size = 4096
    c.worker_count = 0
    c.decode_cache = False  # folder: datasets of one image size: decode once into freqjax's cache dir


ACCELERATOR_SUFFIX = ":bf16"


def accelerator_variants(get_config):
    """Decorate a recipe's ``get_config``: ``VARIANT:bf16`` is ``VARIANT`` with ``half_precision``
    (bfloat16 compute, float32 master weights), the variant for GPUs and TPUs.

    ``--config configs/efun.py:efun_s_plus:bf16`` (ml_collections passes everything after the
    file's ``:`` as the argument); the float32 recipe stays the default, exact on a CPU.
    """

    @functools.wraps(get_config)
    def with_precision(arg: str | None = None) -> ml_collections.ConfigDict:
        half = isinstance(arg, str) and arg.endswith(ACCELERATOR_SUFFIX)
        if half:
            arg = arg[: -len(ACCELERATOR_SUFFIX)]
        c = get_config() if arg is None else get_config(arg)
        c.half_precision = half
        return c

    return with_precision


def train_defaults() -> ml_collections.ConfigDict:
    """Every field a training config has, with neutral defaults (recipes override them)."""
    c = ml_collections.ConfigDict()
    c.mode = "train"
    # model
    c.model = "efun"
    c.model_options = ml_collections.ConfigDict()  # model-specific create_model arguments (model_info.options)
    c.num_classes = -1  # -1: from the dataset (folder/tfds) or 10 (synthetic)
    c.drop_rate = -1.0  # -1: the model's default
    c.drop_path_rate = 0.0
    c.half_precision = False  # bfloat16 compute, float32 parameters
    c.dct_keep = (64, 64, 64)  # lowest zigzag frequencies kept of Y/Cb/Cr (DCT models)
    _data_defaults(c)
    # optimisation
    c.batch_size = 256  # global, over all devices and processes
    c.eval_batch_size = -1  # -1: batch_size
    c.num_epochs = 1.0
    c.num_train_steps = -1  # -1: from num_epochs
    c.optimizer = "rmsprop_tf"
    c.learning_rate = 0.016
    c.momentum = 0.9
    c.rmsprop_decay = 0.9
    c.rmsprop_eps = 1e-3
    c.weight_decay = 1e-5
    c.schedule = "exponential"
    c.warmup_epochs = 0.0
    c.warmup_init_lr = 1e-6
    c.decay_epochs = 2.4
    c.decay_rate = 0.97
    c.boundaries = (30, 60, 90)  # epochs, for schedule='piecewise'
    c.min_lr = 0.0
    c.label_smoothing = 0.0
    c.ema_decay = 0.0  # 0: no EMA
    c.trainable = ""  # regex over parameter paths ('blocks_0_0/conv_pw/kernel'): only matches train; '' = all
    # Weights a fresh run starts from (and --mode eval evaluates when WORKDIR has no checkpoint): a
    # freqjax workdir or checkpoints/<step> dir, a PyTorch state dict (.pth/.pt/.safetensors) or a
    # compressed freqjax file (.npz); see freqjax/train/init_from.py and docs/transfer.md.
    c.init_from = ""
    c.init_head = "load"  # the classifier: 'load' init_from's (same class count) or 'reinit' a fresh one
    c.grad_clip_norm = 0.0  # 0: no clipping
    c.seed = 0
    # loop
    c.eval_every_steps = 1000
    c.eval_steps = -1  # -1: the whole evaluation set
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.log_every_steps = 50
    c.progress_bar = True
    c.inject_nan_at_step = -1  # fault-test hook: make the loss NaN at this step (-1: never)
    c.allow_config_change = ""  # comma-separated fields a resume may change beyond the usual (train/workdir.py)
    # --mode msnet_sweep (freqjax/studies/msnet_sweep.py): the plain base run to compare with, its sides
    # (empty: 1/2, 3/4 and all of image_size), the share of eval images thresholds are calibrated on
    c.msnet_sweep = ml_collections.ConfigDict(
        dict(base_from="", base_sizes=(), calibration_fraction=0.5, threshold_step=0.05)
    )
    # --mode input_channels (freqjax/studies/input_channels.py, FUN Table 7): (y, cb, cr) rows kept, an RGB
    # run to compare with, fine-tuning steps per row (0: none) and their learning rate (-1: a tenth of the run's)
    c.input_channels = ml_collections.ConfigDict(
        dict(
            keep=((64, 64, 64), (64, 12, 12), (44, 10, 10), (32, 8, 8), (14, 5, 5)),
            rgb_from="",
            fine_tune_steps=0,
            fine_tune_learning_rate=-1.0,
        )
    )
    return c


def imagenet_sgd_step_recipe(
    model: str, *, num_epochs: float, boundaries: tuple[int, ...], weight_decay: float, image_size: int = 224
) -> ml_collections.ConfigDict:
    """The torchvision-style ImageNet recipe the ResNet, ResFUN, MobileNetV1 and MSNet configs share.

    SGD momentum 0.9, lr 0.1 at batch 256, x0.1 at each epoch in ``boundaries``, Inception crop +
    flip without colour jitter, on ``tfds:imagenet2012``; config files set what differs after it.
    """
    c = train_defaults()
    c.model = model
    c.dataset = "tfds:imagenet2012"
    c.image_size = image_size
    c.augment = "inception"
    c.colour_jitter = 0.0
    c.batch_size = 256
    c.num_epochs = float(num_epochs)
    c.optimizer = "sgd"
    c.momentum = 0.9
    c.learning_rate = 0.1
    c.weight_decay = weight_decay
    c.schedule = "piecewise"
    c.boundaries = tuple(boundaries)
    c.decay_rate = 0.1
    c.eval_every_steps = 5000
    c.checkpoint_every_steps = 2000
    c.log_every_steps = 100
    c.worker_count = 8
    return c


def model_options(model: str, **overrides) -> ml_collections.ConfigDict:
    """The model's ``create_model`` options with their defaults (``model_info(model).options``), updated.

    Config files set ``config.model_options = model_options(name, ...)`` so that every option can
    then be overridden on the command line (``--config.model_options.form=behind``).

    Raises:
        ValueError: an override that is not one of the model's options.
    """
    from freqjax.models import model_info

    options = ml_collections.ConfigDict(dict(model_info(model).options))
    check_keys(ml_collections.ConfigDict(overrides), options.keys(), where=f"model_options of {model!r}")
    options.update(overrides)
    return options


def _check_trainable(config: ml_collections.ConfigDict) -> None:
    if not config.trainable:
        return
    try:
        re.compile(config.trainable)
    except re.error as err:
        raise ValueError(f"config.trainable must be a regular expression, got {config.trainable!r} ({err})") from None
    if not config.init_from:
        raise ValueError(
            f"config.trainable={config.trainable!r} freezes the other parameters, so config.init_from must name "
            "the run (workdir or checkpoint) whose weights they keep"
        )


def _check_data_fields(config: ml_collections.ConfigDict) -> None:
    from freqjax.data.sources import parse_dataset

    kind = parse_dataset(config.dataset)[0]
    if not isinstance(config.train_split, str) or not config.train_split:
        raise ValueError(
            f"config.train_split must be a non-empty split name such as 'train', got {config.train_split!r}"
        )
    if not isinstance(config.worker_count, int) or config.worker_count < 0:
        raise ValueError(f"config.worker_count must be an integer >= 0, got {config.worker_count!r}")
    if not isinstance(config.decode_cache, bool):
        raise ValueError(f"config.decode_cache must be True or False, got {config.decode_cache!r}")
    if config.decode_cache and kind != "folder":
        raise ValueError(f"config.decode_cache=True needs a folder: dataset, got dataset={config.dataset!r}")


def _check_allow_config_change(config: ml_collections.ConfigDict) -> None:
    value = config.allow_config_change
    if not isinstance(value, str):
        raise ValueError(f"config.allow_config_change must be comma-separated field names, got {value!r}")
    fields = train_defaults().keys()
    for name in filter(None, (f.strip() for f in value.split(","))):
        if name.split(".")[0] not in fields:
            close = difflib.get_close_matches(name, fields, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"config.allow_config_change names {name!r}, which is not a config field{hint}")


def validate_train_config(config: ml_collections.ConfigDict) -> None:
    """Check every training field's type and range; unknown fields are errors with close matches.

    Raises:
        ValueError: the first bad field, naming it, its value and what is valid.
    """
    from freqjax.data.augment import EVAL_AUGMENTS, parse_train_augment
    from freqjax.models import model_info
    from freqjax.train.init_from import INIT_HEADS
    from freqjax.train.optim import OPTIMIZERS, SCHEDULES

    check_keys(config, train_defaults().keys())
    info = model_info(config.model)
    check_keys(config.model_options, dict(info.options), where=f"config.model_options of {config.model!r}")
    _check_data_fields(config)
    check_positive_int("image_size", config.image_size)
    if info.input_kind == "dct" and config.image_size % 16:
        raise ValueError(
            f"config.image_size must be a multiple of 16 for DCT model {config.model!r}, got {config.image_size}"
        )
    if info.input_kind == "ycbcr" and config.image_size % 8:
        raise ValueError(f"config.image_size must be a multiple of 8 for {config.model!r}, got {config.image_size}")
    for name in _POSITIVE:
        check_positive_int(name, config[name])
    for name in ("num_classes", "eval_batch_size", "num_train_steps", "eval_steps"):  # -1 means "automatic"
        if config[name] != -1:
            check_positive_int(name, config[name])
    if config.num_train_steps == -1:
        _check_number("num_epochs", config.num_epochs, 1e-9)
    parse_train_augment(config.augment)
    check_choice("eval_augment", config.eval_augment, EVAL_AUGMENTS)
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_choice("schedule", config.schedule, SCHEDULES)
    for name, low, high, high_open in _RANGES:
        _check_number(name, config[name], low, high, high_open)
    if config.drop_rate != -1:
        _check_number("drop_rate", config.drop_rate, 0.0, 1.0, high_open=True)
    if sorted(config.boundaries) != list(config.boundaries) or any(b <= 0 for b in config.boundaries):
        raise ValueError(f"config.boundaries must be increasing positive epochs, got {config.boundaries!r}")
    _check_trainable(config)
    check_choice("init_head", config.init_head, INIT_HEADS)
    _check_allow_config_change(config)
    keep = tuple(config.dct_keep)
    if len(keep) != 3 or not all(isinstance(k, int) and 1 <= k <= 64 for k in keep):
        raise ValueError(f"config.dct_keep must be three integers in 1..64 (Y, Cb, Cr), got {config.dct_keep!r}")
