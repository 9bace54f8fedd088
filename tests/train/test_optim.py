"""Recipes: TF-style RMSProp vs TF's equations and optax's rmsprop, schedules, weight-decay mask, losses, EMA."""

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from freqjax.models import create_model
from freqjax.train import optim
from freqjax.train.config import train_defaults

ROOT = Path(__file__).resolve().parents[2]


def _tf_rmsprop(grads, lrs, decay=0.9, momentum=0.9, eps=1e-3, w0=0.0):
    """TensorFlow's ApplyRMSProp kernel, written out: ms starts at 1, eps inside sqrt, lr inside mom."""
    w, ms, mom = np.float64(w0), np.ones_like(grads[0], np.float64), np.zeros_like(grads[0], np.float64)
    out = []
    for g, lr in zip(grads, lrs, strict=True):
        ms = decay * ms + (1 - decay) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        w = w - mom
        out.append(w)
    return out


def _run(tx, grads):
    params = jnp.zeros_like(grads[0])
    state, out = tx.init(params), []
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        out.append(np.asarray(params))
    return out


def test_rmsprop_tf_matches_tensorflows_equations_with_a_changing_learning_rate():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=5).astype(np.float32) * s for s in (1.0, 0.01, 3.0, 0.5, 2.0, 0.1)]
    lrs = [0.1, 0.2, 0.3, 0.3, 0.05, 0.01]
    expected = _tf_rmsprop(grads, lrs)
    got = _run(optim.rmsprop_tf(lambda step: jnp.asarray(lrs)[step]), grads)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-7)


def test_optax_rmsprop_differs_from_tf_as_documented():
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=5).astype(np.float32) for _ in range(4)]
    lrs = [0.1, 0.2, 0.4, 0.05]
    expected = _tf_rmsprop(grads, lrs)
    sched = lambda step: jnp.asarray(lrs)[step]  # noqa: E731
    # 1. optax's default accumulator starts at 0: the first step is about 1/sqrt(0.1) ~ 3x larger
    default = _run(optax.rmsprop(sched, decay=0.9, eps=1e-3, momentum=0.9), grads)
    ratio = np.abs(default[0]) / np.abs(expected[0])
    assert np.all(ratio > 2.5)
    # optax with TF's initial scale is TF's RMSProp (it, too, scales by lr before the momentum trace)
    tf_init = _run(optax.rmsprop(sched, decay=0.9, eps=1e-3, momentum=0.9, initial_scale=1.0), grads)
    for e, g in zip(expected, tf_init, strict=True):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-7)
    # PyTorch's order (lr applied after the trace): equal for a constant rate, different once it changes
    torch_order = lambda lr: optax.chain(  # noqa: E731
        optax.scale_by_rms(0.9, 1e-3, initial_scale=1.0), optax.trace(0.9), optax.scale_by_learning_rate(lr)
    )
    assert np.abs(_run(torch_order(sched), grads)[2] - expected[2]).max() > 1e-3
    np.testing.assert_allclose(_run(torch_order(0.1), grads)[-1], _tf_rmsprop(grads, [0.1] * 4)[-1], rtol=1e-5)


def _config(**kw):
    c = train_defaults()
    for k, v in kw.items():
        c[k] = v
    return c


def test_exponential_schedule_with_warmup():
    c = _config(
        learning_rate=0.1,
        schedule="exponential",
        warmup_epochs=2.0,
        warmup_init_lr=0.0,
        decay_epochs=2.4,
        decay_rate=0.5,
    )
    lr = optim.make_schedule(c, steps_per_epoch=10, total_steps=100)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 10, 19)], [0.0, 0.05, 0.095], rtol=1e-6)
    # after warm-up: 0.1 * 0.5 ** floor(step / 24), counted from step 0
    np.testing.assert_allclose(
        [float(lr(s)) for s in (20, 23, 24, 47, 48, 99)], [0.1, 0.1, 0.05, 0.05, 0.025, 0.00625], rtol=1e-6
    )


def test_piecewise_and_cosine_schedules():
    c = _config(learning_rate=0.1, schedule="piecewise", boundaries=(90, 110), decay_rate=0.1)
    lr = optim.make_schedule(c, steps_per_epoch=2, total_steps=260)  # ResFUN: 90 / 20 / 20 epochs
    np.testing.assert_allclose(
        [float(lr(s)) for s in (0, 179, 180, 219, 220, 259)], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5
    )
    c = _config(learning_rate=0.35, schedule="cosine", warmup_epochs=5.0, warmup_init_lr=0.0, min_lr=0.0)
    lr = optim.make_schedule(c, steps_per_epoch=10, total_steps=450)
    np.testing.assert_allclose(float(lr(25)), 0.175, rtol=1e-6)  # half-way through the warm-up
    np.testing.assert_allclose(float(lr(50)), 0.35, rtol=1e-6)
    np.testing.assert_allclose(float(lr(250)), 0.35 * 0.5 * (1 + math.cos(math.pi * 0.5)), atol=1e-7)
    assert float(lr(450)) == pytest.approx(0.0, abs=1e-9)


def _load_config(name, arg):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("variant", ["efun", "efun_s_plus", "efun_l"])
def test_efun_config_learning_rate_follows_the_paper_schedule(variant):
    c = _load_config("efun", variant)
    # paper: RMSProp-TF decay 0.9 momentum 0.9 eps 1e-3, wd 1e-5, smoothing 0.1, EMA 0.9999, 450 epochs
    assert (c.optimizer, c.rmsprop_decay, c.momentum, c.rmsprop_eps) == ("rmsprop_tf", 0.9, 0.9, 1e-3)
    assert (c.weight_decay, c.label_smoothing, c.ema_decay, c.num_epochs, c.drop_rate) == (
        1e-5,
        0.1,
        0.9999,
        450.0,
        0.2,
    )
    assert c.drop_path_rate == (0.3 if variant == "efun_l" else 0.2)
    spe = 1281167 // c.batch_size  # ImageNet-1k train images per epoch at the config's batch
    lr = optim.make_schedule(c, spe, round(450 * spe))
    base = 0.048
    checks = {
        0: 1e-6,  # warm-up starts at 1e-6 ...
        round(1.5 * spe): 1e-6 + (base - 1e-6) * round(1.5 * spe) / round(3 * spe),  # ... rises linearly ...
        round(3 * spe): base * 0.97 ** math.floor(3 / 2.4),  # ... for 3 epochs, then x0.97 every 2.4 epochs
        round(10 * spe): base * 0.97**4,
        round(100 * spe): base * 0.97**41,
        round(449.9 * spe): base * 0.97**187,
    }
    for step, expected in checks.items():
        np.testing.assert_allclose(float(lr(step)), expected, rtol=2e-5, err_msg=f"step {step}")


def test_weight_decay_mask_skips_batchnorm_and_biases():
    model = create_model("cifar_resnet8", num_classes=10)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))["params"]
    mask = optim.weight_decay_mask(params)
    flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["conv1/kernel"] and flat["layer2_0/downsample_0/kernel"] and flat["fc/kernel"]
    assert not flat["bn1/scale"] and not flat["bn1/bias"] and not flat["fc/bias"]
    # zero gradients: only kernels move (L2 decay), BN and biases stay put
    c = _config(optimizer="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.1, schedule="constant")
    tx = optim.make_optimizer(c, optim.make_schedule(c, 1, 1))
    p = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,)), "bn": {"scale": jnp.ones((3,))}}
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, p), tx.init(p), p)
    np.testing.assert_allclose(updates["kernel"], -0.1 * np.ones((3, 3)), rtol=1e-6)
    assert float(jnp.abs(updates["bias"]).max()) == 0.0 and float(jnp.abs(updates["bn"]["scale"]).max()) == 0.0


def test_gradient_clipping_and_nesterov():
    c = _config(
        optimizer="nesterov", learning_rate=1.0, momentum=0.9, weight_decay=0.0, grad_clip_norm=1.0, schedule="constant"
    )
    tx = optim.make_optimizer(c, optim.make_schedule(c, 1, 1))
    p = {"w": jnp.zeros(2)}
    updates, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(p), p)
    # clipped to norm 1 -> (0.6, 0.8); nesterov first step: g + 0.9 * g
    np.testing.assert_allclose(updates["w"], -1.9 * np.array([0.6, 0.8]), rtol=1e-6)


def test_cross_entropy_label_smoothing_and_ema():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    logp = jax.nn.log_softmax(logits)[0]
    np.testing.assert_allclose(optim.cross_entropy(logits, jnp.array([0]))[0], -logp[0], rtol=1e-6)
    target = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    np.testing.assert_allclose(optim.cross_entropy(logits, jnp.array([0]), 0.1)[0], -(target * logp).sum(), rtol=1e-6)
    ema = optim.ema_update({"a": jnp.array(1.0)}, {"a": jnp.array(3.0)}, 0.75)
    assert float(ema["a"]) == pytest.approx(1.5)
