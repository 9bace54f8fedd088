"""LeFUN as published: front init dct | random, frozen parts frozen (BatchNorm too), both stages end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from config_files import config_module

from freqjax.models import create_model
from freqjax.models.builder import dct_front_init
from freqjax.train import loop as train
from freqjax.train.checkpoint import load_weights
from freqjax.train.steps import frozen_batch_norm


def test_front_init_random_is_not_the_dct():
    # front_init='dct' (the default) is tests/models/test_models.py's test_lefun_front_starts_as_the_block_dct
    model = create_model("lefun", num_classes=3, front_init="random")
    random = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]["dct_front"]["kernel"]
    dct = dct_front_init("grouped")(None, random.shape)
    assert not np.allclose(random, dct)
    std = (2 / (8 * 8 * 192)) ** 0.5  # freqjax's conv init: He normal over flax's fan-out
    assert abs(float(jnp.std(random)) - std) < 0.05 * std
    with pytest.raises(ValueError, match=r"front_init must be one of \('dct', 'random'\), got 'learned'"):
        create_model("lefun", front_init="learned")


@pytest.mark.parametrize(("name", "channels"), [("cifar_resnet8", 3), ("efun_s_plus", 192)])
def test_frozen_batch_norm_keeps_statistics_and_normalises_as_in_evaluation(name, channels):
    # cifar_resnet8 passes use_running_average at call time, the builder's networks as a field
    model = create_model(name, num_classes=3, drop_rate=0.0, drop_path_rate=0.0)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, channels))
    variables = model.init(jax.random.key(0), x)
    head = "^fc/" if name.startswith("cifar") else "^classifier/"
    with frozen_batch_norm(head):
        out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], variables["batch_stats"])
    np.testing.assert_array_equal(out, model.apply(variables, x, train=False))
    with frozen_batch_norm(""):  # nothing frozen: training-mode statistics, updated
        out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(out, model.apply(variables, x, train=False))
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), updates["batch_stats"], variables["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_configs_are_the_papers_two_ways():
    efun = config_module("efun")
    lefun, e2e = efun.get_config("lefun"), efun.get_config("lefun_e2e")
    assert lefun.model == e2e.model == "lefun"
    assert lefun.model_options.front_init == e2e.model_options.front_init == "random"
    assert lefun.trainable == "^dct_front/" and lefun.init_from == "runs/efun" and lefun.init_head == "load"
    assert e2e.trainable == "" and e2e.init_from == "" and e2e.num_epochs == 450.0


def _tiny(config, **kw):
    config.update(
        dataset="synthetic",
        image_size=32,
        batch_size=16,
        synthetic_size=32,
        num_train_steps=2,
        eval_steps=1,
        eval_every_steps=2,
        checkpoint_every_steps=2,
        worker_count=0,
        progress_bar=False,
        warmup_epochs=0.0,
        **kw,
    )
    return config


def _flat(tree):
    return {"/".join(str(k.key) for k in p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_two_stages_end_to_end_leave_the_frozen_efun_bitwise_unchanged(tmp_path):
    efun = config_module("efun")
    stage1 = _tiny(efun.get_config("efun"))
    train.train_and_evaluate(stage1, str(tmp_path / "efun"))
    # a learning rate that moves the front visibly in two steps; EMA on, as in the recipe
    stage2 = _tiny(efun.get_config("lefun"), init_from=str(tmp_path / "efun"), learning_rate=0.05)
    result = train.train_and_evaluate(stage2, str(tmp_path / "lefun"))
    assert result["step"] == 2 and np.isfinite(result["train"]["loss"])

    before, after = load_weights(tmp_path / "efun"), load_weights(tmp_path / "lefun")
    params, stats = _flat(after["params"]), _flat(after["batch_stats"])
    front = params.pop("dct_front/kernel")
    assert set(params) == set(_flat(before["params"]))
    for name, value in _flat(before["params"]).items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)
    assert _flat(before["batch_stats"]).keys() == stats.keys()
    for name, value in _flat(before["batch_stats"]).items():
        np.testing.assert_array_equal(stats[name], value, err_msg=name)
    # the front trained from its random start
    start = create_model("lefun", num_classes=10, front_init="random").init(
        jax.random.PRNGKey(stage2.seed), jnp.zeros((1, 32, 32, 3))
    )["params"]["dct_front"]["kernel"]
    assert not np.allclose(front, start)
