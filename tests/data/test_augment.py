"""RandAugment, AutoAugment, random erasing: the ``augment`` grammar, per-record determinism, bitwise resume."""

import jax
import numpy as np
import pytest
from config_files import tiny_train_config
from PIL import Image

from freqjax.data import augment
from freqjax.data.autoaugment import AUTOAUGMENT_IMAGENET, RAND_OPS, apply_op, random_erasing
from freqjax.data.loader import train_loader
from freqjax.data.sources import SyntheticSource
from freqjax.train import loop as train
from freqjax.train.checkpoint import Checkpointer
from freqjax.train.config import validate_train_config

IMAGE = np.random.default_rng(0).integers(0, 256, (24, 20, 3), np.uint8)


def test_grammar_parses_policies_and_names_the_bad_part():
    spec = augment.parse_train_augment("inception+rand-m9-mstd0.5+erase0.2")
    assert spec == augment.AugmentSpec("inception", rand=(2, 9.0, 0.5), erase=0.2)
    assert augment.parse_train_augment("cifar+auto") == augment.AugmentSpec("cifar", auto=True)
    assert augment.parse_train_augment("none+rand-n3-m5").rand == (3, 5.0, 0.0)
    for value, part in (
        ("randaug", "got 'randaug'"),
        ("inception+rand-n2", "'rand-n2': RandAugment needs -mM"),
        ("inception+rand-m11", "0 <= m <= 10"),
        ("cifar+erase1.5", "'erase1.5': the erasing probability must be in"),
        ("cifar+auto+rand-m9", "not both"),
        ("cifar+erase0.1+erase0.2", "erase appears twice"),
        ("cifar+mixup", "'mixup' is not a policy"),
    ):
        with pytest.raises(ValueError, match=r"config\.augment must be one of") as err:
            augment.parse_train_augment(value)
        assert part in str(err.value)
    # the training config's validation uses the same parser: a bad policy fails before anything is built
    with pytest.raises(ValueError, match="'rand-x' is not a policy"):
        validate_train_config(tiny_train_config(augment="cifar+rand-x"))
    validate_train_config(tiny_train_config(augment="cifar+auto+erase0.25"))


@pytest.mark.parametrize("name", [*RAND_OPS, "PosterizeOriginal"])
def test_every_op_keeps_shape_and_dtype_and_changes_the_image_at_its_strongest_level(name):
    # solarize and posterize grow milder with the level in timm's maps (at 10: threshold 256, 8 bits)
    strongest = 0 if name in ("Solarize", "PosterizeOriginal") else 10
    out = np.asarray(apply_op(Image.fromarray(IMAGE), name, strongest, np.random.default_rng(1)))
    assert out.shape == IMAGE.shape and out.dtype == np.uint8
    assert not np.array_equal(out, IMAGE), name


def test_op_arguments_follow_timms_level_maps():
    pil = Image.fromarray(IMAGE)
    np.testing.assert_array_equal(apply_op(pil, "Posterize", 5, None), IMAGE & 0b11000000)  # int(4 * 0.5) bits
    np.testing.assert_array_equal(apply_op(pil, "PosterizeOriginal", 5, None), IMAGE & 0b11111100)  # 4 + 2 bits
    solar = np.where(IMAGE >= 128, 255 - IMAGE, IMAGE)  # threshold int(256 * 0.5)
    np.testing.assert_array_equal(apply_op(pil, "Solarize", 5, None), solar)
    np.testing.assert_array_equal(apply_op(pil, "Brightness", 5, None), IMAGE)  # factor 0.1 + 1.8 * 0.5 = 1
    assert np.asarray(apply_op(pil, "Brightness", 10, None)).mean() > IMAGE.mean()  # factor 1.9
    with pytest.raises(ValueError, match="augmentation op must be one of"):
        apply_op(pil, "Warp", 5, None)


def test_autoaugment_policy_is_the_papers_imagenet_table():
    assert len(AUTOAUGMENT_IMAGENET) == 25 and all(len(sub) == 2 for sub in AUTOAUGMENT_IMAGENET)
    assert AUTOAUGMENT_IMAGENET[0] == (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9))
    assert all(0 <= p <= 1 and 0 <= m <= 10 for sub in AUTOAUGMENT_IMAGENET for _, p, m in sub)


def test_random_erasing_fills_one_box_with_noise_or_leaves_the_image():
    assert random_erasing(IMAGE, 0.0, np.random.default_rng(0)) is IMAGE
    flat = np.full((32, 32, 3), 7, np.uint8)
    out = random_erasing(flat, 1.0, np.random.default_rng(3))
    changed = np.argwhere((out != 7).any(-1))
    top, left = changed.min(0)
    bottom, right = changed.max(0) + 1
    area = (bottom - top) * (right - left)
    assert 0.02 * 32 * 32 * 0.5 <= area <= 32 * 32 / 3 * 1.5  # one box of 2..33 % of the image (rounding)
    assert (out[top:bottom, left:right] != 7).mean() > 0.9  # filled with noise, not a constant
    assert (np.delete(out, np.s_[top:bottom], axis=0) == 7).all()


@pytest.mark.parametrize("kind", ["inception+rand-m9-mstd0.5+erase0.5", "cifar+auto+erase0.5"])
def test_same_record_generator_gives_the_same_image_and_seeds_differ(kind):
    t = augment.TrainTransform(kind, 16)
    outs = [t.random_map({"image": IMAGE}, np.random.default_rng(s))["image"] for s in (0, 0, 1, 2, 3)]
    assert all(o.shape == (16, 16, 3) and o.dtype == np.uint8 for o in outs)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len({o.tobytes() for o in outs[1:]}) == 4


@pytest.mark.parametrize("kind", ["cifar+rand-m9-mstd0.5+erase0.5", "cifar+auto+erase0.5"])
def test_loader_batches_resume_from_the_iterator_state_with_policies_on(kind):
    source = SyntheticSource(16, 64, 10, seed=0)
    make = lambda: train_loader(source, global_batch=8, image_size=16, augment=kind, seed=3)  # noqa: E731
    whole = iter(make())
    expected = [next(whole)["image"] for _ in range(6)]
    first = iter(make())
    for _ in range(3):
        next(first)
    resumed = iter(make())
    resumed.set_state(first.get_state())
    for want in expected[3:]:
        np.testing.assert_array_equal(next(resumed)["image"], want)
    plain = iter(train_loader(source, global_batch=8, image_size=16, augment="cifar", seed=3))
    assert not np.array_equal(next(plain)["image"], expected[0])  # the policies did act


def _final_params(workdir):
    s = train.Setup(tiny_train_config(), str(workdir))  # any config with the same model restores the state
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        state, step = ckpt.restore_latest(s.abstract_state(), None)
    finally:
        ckpt.close()
    return int(step), jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))


def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(tmp_path):
    # the whole loop with RandAugment and erasing (AutoAugment's data resume: the loader test above)
    common = dict(
        augment="flip+rand-m9-mstd0.5+erase0.5",
        synthetic_size=64,
        eval_steps=1,
        checkpoint_every_steps=2,
        log_every_steps=1,
    )
    train.train_and_evaluate(tiny_train_config(num_train_steps=4, **common), str(tmp_path / "whole"))
    train.train_and_evaluate(tiny_train_config(num_train_steps=2, **common), str(tmp_path / "cut"))
    resumed = train.train_and_evaluate(tiny_train_config(num_train_steps=4, **common), str(tmp_path / "cut"))
    assert resumed["step"] == 4
    (step_a, a), (step_b, b) = _final_params(tmp_path / "whole"), _final_params(tmp_path / "cut")
    assert step_a == step_b == 4 and len(a) == len(b)
    for (path, x), (_, y) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
