"""configs/transfer.py: every variant is a valid config with a fresh head and its paper's recipe."""

import pytest
from config_files import config_module

from freqjax.train.config import validate_train_config

transfer = config_module("transfer")


@pytest.mark.parametrize("variant", transfer.VARIANTS)
def test_every_variant_validates_with_a_new_head(variant):
    c = transfer.get_config(variant)
    validate_train_config(c)
    assert c.init_head == "reinit" and c.init_from == f"runs/{c.model}"
    fun = variant.startswith(("efun", "fun_"))
    assert c.optimizer == ("rmsprop_tf" if fun else "nesterov")
    assert c.label_smoothing == (0.1 if fun else 0.0) and c.ema_decay == (0.999 if fun else 0.0)


def test_the_papers_datasets_and_class_counts():
    assert transfer.get_config("efun_cifar100").num_classes == 100
    assert transfer.get_config("efun_s_plus_cars").dataset == "tfds:cars196"
    assert transfer.get_config("rexnet_100_flowers102").train_split == "train+validation"
    assert transfer.get_config("fun_efficientnet_b0_aircraft").optimizer == "rmsprop_tf"
    assert transfer.get_config("efficientnet_b0_aircraft").optimizer == "nesterov"
    with pytest.raises(ValueError, match="variant must be one of"):
        transfer.get_config("efun_imagenet")
