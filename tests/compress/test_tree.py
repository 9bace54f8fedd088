"""DCT weight compression over whole variables trees: plans, reference counts, jit/grad, save/load, CLI.

The counts are docs/reference.md section 6.
"""

import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from freqjax.compress import (
    CompressedTensor,
    compress,
    count,
    decompress,
    finetune_apply,
    load,
    make_plan,
    merge,
    save,
    split,
)
from freqjax.compress.plan import LayerPlan, Plan
from freqjax.models import create_model


def abstract_variables(name):
    model = create_model(name)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


# docs/reference.md section 6: (model, g, r') -> (coefficients, index entries, total parameters).
REFERENCE_ROWS = [
    ("resnet50", 4, 0.125, 8_879_520, 6_373_376, 15_369_544),
    ("resnet50", 4, 0.25, 5_530_336, 6_373_376, 12_020_360),
    ("resnet50", 4, 1.0, 1_732_024, 6_373_376, 8_222_048),
    ("resnet50", 8, 0.5, 3_183_584, 3_186_688, 6_486_920),
    ("resnet50", 8, 1.0, 1_731_944, 3_186_688, 5_035_280),
    ("mobilenetv2_100", 4, 0.25, 1_723_820, 835_584, 2_756_052),
    ("mobilenetv2_100", 4, 0.5, 1_207_088, 835_584, 2_239_320),
    ("mobilenetv2_100", 4, 1.0, 768_060, 835_584, 1_800_292),
    ("mobilenetv2_100", 4, 2.0, 449_740, 835_584, 1_481_972),
    ("mobilenetv2_100", 4, 4.0, 247_216, 835_584, 1_279_448),
]


@pytest.fixture(scope="module")
def shapes():
    return {name: abstract_variables(name) for name in ("resnet50", "mobilenetv2_100")}


@pytest.mark.parametrize(("name", "g", "r_prime", "coefficients", "index", "total"), REFERENCE_ROWS)
def test_counts_reproduce_the_reference_table(shapes, name, g, r_prime, coefficients, index, total):
    plan = make_plan(shapes[name], name, "progressive_r", g=g, r_prime=r_prime)
    c = count(compress(shapes[name], plan))  # abstract leaves: shapes only, no ordering computed
    assert (c["coefficients"], c["index"], c["total"]) == (coefficients, index, total)
    uncompressed, bn_affine = {"resnet50": (10_408, 53_120), "mobilenetv2_100": (128_424, 34_112)}[name]
    assert (c["uncompressed"], c["bn_affine"], c["bn_stats"]) == (uncompressed, bn_affine, bn_affine)


def test_presets_select_the_reference_layers(shapes):
    r50 = make_plan(shapes["resnet50"], "resnet50", "uniform", g=4, r=2)
    names = [x.name for x in r50.layers]
    assert len(names) == 53 and "fc.weight" in names and "layer1.0.downsample.0.weight" in names
    assert "conv1.weight" not in names and not any("bn" in n or n.endswith("bias") for n in names)
    c = count(compress(shapes["resnet50"], r50))
    # docs/reference.md's "uniform g4 r2 = 12,810,280" is everything trainable: coefficients + conv1 +
    # fc bias + BN affine.
    assert c["coefficients"] == 12_746_752 and c["trainable"] == 12_810_280
    mb = make_plan(shapes["mobilenetv2_100"], "mobilenetv2_100", "uniform", g=4, r=2)
    names = [x.name for x in mb.layers]
    assert len(names) == 22 and names[0] == "blocks.3.1.conv_pw.weight"  # torchvision features.8
    assert "conv_head.weight" in names and "classifier.weight" in names
    assert not any("conv_dw" in n or n.startswith("blocks.3.0.") for n in names)
    assert all(x.ref_shape[2:] == (1, 1) for x in mb.layers if len(x.ref_shape) == 4)


def test_progressive_g_and_r_follow_the_papers_formulas(shapes):
    v = shapes["resnet50"]
    plan = make_plan(v, "resnet50", "progressive_g", r=4)
    by_name = {x.name: x for x in plan.layers}
    assert by_name["layer1.0.conv1.weight"].g == 2  # the reference layer: max(2, 2^0)
    assert by_name["fc.weight"].g == 16  # sqrt(2048000) / 64 = 22.4
    assert by_name["layer4.0.conv2.weight"].g == 16  # sqrt(2359296) / 64 = 24
    assert by_name["layer2.0.conv1.weight"].g == 2  # sqrt(32768) / 64 = 2.83 -> 2
    assert all(x.t == int(x.size // x.g / 4) for x in plan.layers)
    pr = {x.name: x for x in make_plan(v, "resnet50", "progressive_r", g=4, r_prime=0.5).layers}
    assert pr["layer1.0.conv1.weight"].r == 1.5 and pr["layer4.0.conv2.weight"].r == 1 + 0.5 * 1536 / 64


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(16, (3, 3), use_bias=False, name="conv1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn1")(x))
        x = nn.Conv(32, (1, 1), use_bias=False, name="conv2")(x)
        return nn.Dense(10, name="fc")(x.mean((1, 2)))


@pytest.fixture(scope="module")
def tiny():
    model = Tiny()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)  # numpy values: eager init is slow on CPU
    variables = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.3 + 0.5, jnp.float32), shapes)
    return model, variables, x


def test_compress_decompress_r1_is_the_identity_and_jits(tiny):
    model, variables, x = tiny
    plan = make_plan(variables, ["conv1.weight", "conv2/kernel", "fc.weight"], "uniform", g=4, r=1)
    ctree = compress(variables, plan, workers=2)
    assert isinstance(ctree["params"]["conv1"]["kernel"], CompressedTensor)
    assert ctree["params"]["fc"]["bias"] is variables["params"]["fc"]["bias"]
    back = jax.jit(decompress)(ctree)
    for path in (("conv1", "kernel"), ("conv2", "kernel"), ("fc", "kernel")):
        a, b = variables["params"][path[0]][path[1]], back["params"][path[0]][path[1]]
        assert a.shape == b.shape and float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a)) < 1e-5
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(apply(back, x), apply(variables, x), atol=1e-4)
    abstract = compress(jax.eval_shape(lambda: variables), plan)
    assert count(abstract) == count(ctree)
    c = count(ctree)
    assert c["coefficients"] == 576 + 512 + 320 and c["index"] == (576 + 512 + 320) // 4
    assert c["uncompressed"] == 10 and c["bn_affine"] == 32 and c["bn_stats"] == 32


def test_compressed_leaves_round_trip_in_the_reference_layout_on_mobilenetv2(shapes):
    # Real model tree, a few layers, r = 1: the transposes to (out, in, kh, kw) and back are exact,
    # and the ordering is the one Algorithm 1 gives on the PyTorch-layout tensor.
    from freqjax.compress import greedy_order
    from freqjax.models import random_variables

    variables = random_variables(shapes["mobilenetv2_100"], seed=0)
    patterns = ["blocks.6.0.conv_p*.weight", "conv_head.weight", "classifier.weight"]
    plan = make_plan(variables, patterns, "uniform", g=4, r=1)
    assert len(plan.layers) == 4
    ctree = compress(variables, plan)
    back = jax.jit(decompress)(ctree)
    for layer in plan.layers:
        a, b = variables["params"], back["params"]
        for key in layer.path:
            a, b = a[key], b[key]
        assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a)) < 1e-5, layer.name
    w = np.asarray(variables["params"]["conv_head"]["kernel"]).transpose(3, 2, 0, 1)  # PyTorch layout
    order = greedy_order(w.reshape(4, -1))
    index = np.asarray(ctree["params"]["conv_head"]["kernel"].index)
    assert np.array_equal(index[order], np.arange(w.size // 4))


def test_finetuning_updates_coefficients_never_orderings(tiny):
    model, variables, x = tiny
    ctree = compress(variables, make_plan(variables, ["conv*.weight", "fc.weight"], "uniform", g=4, r=2))
    params, frozen = split(ctree)
    assert all(jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(params))
    assert set(frozen["index"]) == {"conv1/kernel", "conv2/kernel", "fc/kernel"}
    apply = finetune_apply(model.apply)
    y = jnp.arange(2) % 10

    def loss(p):
        logits, _ = apply(p, frozen, x, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = optax.adam(1e-2)
    state = opt.init(params)
    assert sum(a.size for a in jax.tree.leaves(state)) == 2 * sum(a.size for a in jax.tree.leaves(params)) + 1
    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert float(jnp.abs(grads["conv1"]["kernel"].coef).sum()) > 0
    updates, state = opt.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    rebuilt = merge(new, frozen)
    assert rebuilt["params"]["conv1"]["kernel"].index is frozen["index"]["conv1/kernel"]
    assert float(loss(new)) < float(loss(params))


def test_save_load_round_trip_with_smallest_index_dtype(tiny, tmp_path):
    _, variables, _ = tiny
    ctree = compress(variables, make_plan(variables, ["conv1.weight", "fc.weight"], "uniform", g=2, r=2))
    path = tmp_path / "tiny.npz"
    size = save(ctree, path)
    assert size == os.path.getsize(path) and os.listdir(tmp_path) == ["tiny.npz"]
    with np.load(path) as data:
        assert data["params/conv1/kernel#index"].dtype == np.uint16  # 288 columns
        assert data["params/fc/kernel#index"].dtype == np.uint8  # 160 columns
    back = load(path)
    assert jax.tree.structure(back) == jax.tree.structure(ctree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(ctree), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back["params"]["fc"]["kernel"].r == 2.0


def test_save_writes_nothing_on_error(tiny, tmp_path):
    _, variables, _ = tiny
    plan = make_plan(variables, "fc.weight", "uniform", g=2, r=2)
    params, _ = split(compress(variables, plan))
    with pytest.raises(ValueError, match="not a concrete compressed tensor"):
        save({"params": params}, tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"not a concrete compressed tensor|must be an array"):
        save(compress(jax.eval_shape(lambda: variables), plan), tmp_path / "y.npz")
    with pytest.raises(ValueError, match="does not exist"):
        save(variables, tmp_path / "missing" / "z.npz")
    assert os.listdir(tmp_path) == []


def test_bad_input(tiny, shapes):
    _, variables, _ = tiny
    with pytest.raises(ValueError, match="matches no leaf"):
        make_plan(variables, ["conv1.weight", "conv9.weight"], "uniform", r=2)
    with pytest.raises(ValueError, match=r"selects BatchNorm leaf 'bn1\.(bias|weight)'"):
        make_plan(variables, "bn1.*", "uniform", r=2)
    with pytest.raises(ValueError, match="only conv"):
        make_plan(variables, "fc.bias", "uniform", r=2)
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_plan(variables, "fc.weight", "progressive", r=2)
    with pytest.raises(ValueError, match="g=7 does not divide"):
        make_plan(variables, "fc.weight", "uniform", g=7, r=2)
    with pytest.raises(ValueError, match="r must be a number >= 1"):
        make_plan(variables, "fc.weight", "uniform", r=0.5)
    with pytest.raises(ValueError, match="r_prime must be a number > 0"):
        make_plan(variables, "fc.weight", "progressive_r")
    with pytest.raises(ValueError, match=r"'progressive_g' takes only r; got g=4"):
        make_plan(variables, "fc.weight", "progressive_g", g=4, r=2)
    with pytest.raises(ValueError, match=r"'uniform' takes only g, r; got r_prime=1.0"):
        make_plan(variables, "fc.weight", "uniform", r=2, r_prime=1.0)
    with pytest.raises(TypeError, match="rule must be"):
        make_plan(variables, 3, "uniform", r=2)
    other = make_plan(shapes["resnet50"], "resnet50", "uniform", r=2)
    with pytest.raises(ValueError, match=r"leaf 'fc.weight' has shape \(32, 10\), the plan expects \(2048, 1000\)"):
        compress(variables, other)
    missing = Plan((LayerPlan(("conv9", "kernel"), "conv9.weight", (1, 1, 4, 4), (4, 4, 1, 1), 4, 2.0, 2),), "uniform")
    with pytest.raises(ValueError, match=r"plan names leaf 'conv9\.weight'"):
        compress(variables, missing)
    bn = Plan((LayerPlan(("bn1", "scale"), "bn1.weight", (16,), (16,), 4, 2.0, 2),), "uniform")
    with pytest.raises(ValueError, match="BatchNorm"):
        compress(variables, bn)


def test_cli_compresses_and_reports(tmp_path, capsys):
    from freqjax.compress.cli import main

    out, report = tmp_path / "mb.npz", tmp_path / "report"
    argv = ["--model", "mobilenetv2_100", "--strategy", "progressive_r", "--r-prime", "4"]
    main([*argv, "--out", str(out), "--report", str(report), "--verify-columns", "6144"])
    text = capsys.readouterr().out
    assert "blocks.3.1.conv_pw.weight" in text and "nSSE=" in text and "compressed in" in text
    rep = json.loads((report / "report.json").read_text())
    assert rep["counts"]["total"] == 1_279_448 and len(rep["layers"]) == 22
    assert rep["verified_against_brute_force"]  # the small layers, re-ordered by brute force
    assert set(rep["curves"]["nsse"]) == {"none", "g=64", "g=16", "g=4"}
    assert (report / "nsse_curves.svg").read_text().startswith("<svg")
    assert count(load(out)) == rep["counts"] and rep["checkpoint_bytes"] == os.path.getsize(out)
    with pytest.raises(SystemExit):
        main([*argv[:-2], "--r-prime", "-1", "--out", str(tmp_path / "bad.npz")])
    with pytest.raises(SystemExit):
        main(["--model", "mobilenetv2_100", "--g", "7", "--r", "2", "--out", str(tmp_path / "bad.npz")])
    assert not (tmp_path / "bad.npz").exists() and math.isfinite(rep["compress_seconds"])


def test_cli_reads_pytorch_weights(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    from freqjax.compress.cli import main

    sd = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()
    torch.save(sd, tmp_path / "mb.pth")
    w = sd["conv_head.weight"].numpy()
    main(
        [
            "--model",
            "mobilenetv2_100",
            "--weights",
            str(tmp_path / "mb.pth"),
            "--rule",
            "conv_head.weight",
            "--r",
            "1",
            "--out",
            str(tmp_path / "c.npz"),
        ]
    )
    assert "conv_head.weight" in capsys.readouterr().out
    node = load(tmp_path / "c.npz")["params"]["conv_head"]["kernel"]
    back = np.asarray(node.weight()).transpose(3, 2, 0, 1)  # Flax layout -> PyTorch layout
    assert np.linalg.norm(back - w) / np.linalg.norm(w) < 1e-5


def test_cli_reads_freqjax_npz_weights(shapes, tmp_path, capsys):
    from freqjax.compress.cli import main
    from freqjax.models import random_variables

    variables = random_variables(shapes["mobilenetv2_100"], seed=3)
    save(variables, tmp_path / "mb.npz")
    argv = ["--model", "mobilenetv2_100", "--rule", "conv_head.weight", "--r", "1"]
    main([*argv, "--weights", str(tmp_path / "mb.npz"), "--out", str(tmp_path / "c.npz")])
    node = load(tmp_path / "c.npz")["params"]["conv_head"]["kernel"]
    w = variables["params"]["conv_head"]["kernel"]
    assert np.linalg.norm(np.asarray(node.weight()) - w) / np.linalg.norm(w) < 1e-5
    with pytest.raises(SystemExit):  # an already compressed checkpoint is refused, nothing written
        main([*argv, "--weights", str(tmp_path / "c.npz"), "--out", str(tmp_path / "again.npz")])
    assert "already compressed" in capsys.readouterr().err and not (tmp_path / "again.npz").exists()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("w.pth", b"hello", "is not a file torch.load can read"),
    ("w.npz", b"hello", "is not a readable .npz archive"),
])  # fmt: skip
def test_cli_weights_that_are_not_checkpoints_are_one_line(tmp_path, capsys, name, content, message):
    from freqjax.compress.cli import main

    (tmp_path / name).write_bytes(content)
    with pytest.raises(SystemExit):
        main(["--model", "resnet50", "--weights", str(tmp_path / name), "--out", str(tmp_path / "c.npz")])
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "c.npz").exists()
