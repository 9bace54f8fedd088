"""prepare and the prepared: source: the folder source's records and training, resume, layouts, errors."""

import json

import jax
import numpy as np
import pytest
from config_files import tiny_train_config
from PIL import Image

from freqjax.data import prepare as prep
from freqjax.data.prepared import INDEX, PreparedSource
from freqjax.data.sources import make_source


def _image(rng, size=16):
    return rng.integers(0, 256, (size, size, 3), np.uint8)


def _class_folder(root, per_class=6, size=16):
    """root/{train,test}/{a,b,c}/NN.jpg|png: JPEGs, PNGs, a grey and a palette image, and one garbage file."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c in "abc":
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(rng, size)).save(d / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    Image.fromarray(_image(rng, size)[..., 0]).save(root / "train" / "a" / "90.jpg")  # mode L
    Image.fromarray(_image(rng, size)).convert("P").save(root / "train" / "b" / "90.png")  # palette
    (root / "train" / "c" / "91.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def _same_records(a, b):
    assert len(a) == len(b) and a.num_classes == b.num_classes
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["label"] == y["label"] and x["skipped"] == y["skipped"], i
        assert x["image"].dtype == y["image"].dtype == np.uint8
        np.testing.assert_array_equal(x["image"], y["image"])


@pytest.mark.parametrize("store", prep.STORES)
def test_prepared_source_yields_the_folder_sources_records(tmp_path, store):
    src = _class_folder(tmp_path / "src")
    index = prep.prepare(src, tmp_path / "out", store=store, images_per_shard=5, workers=0, progress=False)
    assert index["complete"] and index["classes"] == ["a", "b", "c"]
    assert [s["images"] for s in index["splits"]["train"]["shards"]] == [5, 5, 5, 5, 1]  # 21 images
    for train in (True, False):
        folder, prepared = make_source(f"folder:{src}", train), make_source(f"prepared:{tmp_path / 'out'}", train)
        assert isinstance(prepared, PreparedSource) and prepared.split == ("train" if train else "test")
        _same_records(folder, prepared)
    unreadable = [f for s in index["splits"]["train"]["shards"] for f in s["unreadable"]]
    # 'pixels' decodes while preparing, so it knows; 'encoded' keeps the bytes and finds out while training
    assert unreadable == (["train/c/91.jpg"] if store == "pixels" else [])
    assert make_source(f"prepared:{tmp_path / 'out'}:train", False).split == "train"


def test_training_from_the_prepared_dataset_is_bitwise_the_same_as_from_the_folder(tmp_path):
    from freqjax.train import loop as train

    src = _class_folder(tmp_path / "src", per_class=8)
    prep.prepare(src, tmp_path / "prepared", images_per_shard=10, workers=0, progress=False)
    runs = {}
    for spec in (f"folder:{src}", f"prepared:{tmp_path / 'prepared'}"):
        config = tiny_train_config(
            dataset=spec, num_train_steps=4, log_every_steps=1, eval_every_steps=4, checkpoint_every_steps=4
        )
        workdir = tmp_path / spec.partition(":")[0]
        result = train.train_and_evaluate(config, str(workdir))
        lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        state, step = train.Setup(config, str(workdir)).restore_newest()
        runs[spec] = result, [m.get("train/loss") for m in lines], state.params, step
    (r1, loss1, p1, s1), (r2, loss2, p2, s2) = runs.values()
    assert s1 == s2 == 4 and sum(x is not None for x in loss1) == 4
    assert loss1 == loss2 and r1["eval"] == r2["eval"] and r1["train"]["skipped_total"] >= 0
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_interrupted_prepare_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
    src = _class_folder(tmp_path / "src")
    out = tmp_path / "out"
    real, calls = prep._record, []

    def dies_at_the_seventh(job):
        calls.append(job)
        if len(calls) == 7:
            raise KeyboardInterrupt  # as Ctrl-C (or a kill) in the middle of the second shard
        return real(job)

    monkeypatch.setattr(prep, "_record", dies_at_the_seventh)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(src, out, images_per_shard=4, workers=0, progress=False)
    first = out / "train-00000-of-00006.array_record"
    assert first.is_file() and (out / "train-00001-of-00006.array_record.partial").is_file()
    assert not (out / "train-00001-of-00006.array_record").exists()  # a half-written shard never looks complete
    with pytest.raises(ValueError, match=r"unfinished .* again with the same options \(--store encoded\) to finish"):
        make_source(f"prepared:{out}", True)
    mtime = first.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(prep, "_record", lambda job: (calls.append(job), real(job))[1])
    index = prep.prepare(src, out, images_per_shard=4, workers=0, progress=False)
    assert index["complete"] and first.stat().st_mtime_ns == mtime
    assert len(calls) == 21 + 9 - 4  # every image but the first shard's
    assert not list(out.glob("*.partial"))
    _same_records(make_source(f"folder:{src}", True), make_source(f"prepared:{out}", True))
    calls.clear()
    prep.prepare(src, out, images_per_shard=4, workers=0, progress=False)  # complete: nothing to do
    assert calls == []
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "train" / "a" / "50.png")  # the folder changed
    with pytest.raises(ValueError, match="prepared from other files or options; choose another out"):
        prep.prepare(src, out, images_per_shard=4, workers=0, progress=False)


def test_worker_processes_write_the_same_shards(tmp_path):
    src = _class_folder(tmp_path / "src")
    for workers in (0, 2):
        prep.prepare(src, tmp_path / f"w{workers}", store="pixels", images_per_shard=8, workers=workers, progress=False)
    for name in ("train-00000-of-00003.array_record", "test-00000-of-00002.array_record"):
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def _jpeg(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_image(rng)).save(path, "JPEG")


def test_imagenet_layout_with_a_val_labels_file(tmp_path):
    rng, src = np.random.default_rng(1), tmp_path / "imagenet"
    for wnid in ("n01440764", "n01443537"):
        for i in range(3):
            _jpeg(src / "train" / wnid / f"{wnid}_{i}.JPEG", rng)
    truth = {1: "n01443537", 2: "n01440764", 3: "n01443537"}
    for i in truth:
        _jpeg(src / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", rng)
    labels = tmp_path / "LOC_val_solution.csv"  # Kaggle's form: a header, then 'ImageId,wnid x y x y ...'
    labels.write_text("ImageId,PredictionString\n" + "".join(
        f"ILSVRC2012_val_{i:08d},{w} 1 2 3 4 {w} 5 6 7 8\n" for i, w in truth.items()
    ))  # fmt: skip
    with pytest.raises(ValueError, match=r"^--val-labels is required: src .* has a val/ folder without class"):
        prep.prepare(src, tmp_path / "out", workers=0, progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    prep.prepare(src, tmp_path / "out", val_labels=labels, workers=0, progress=False)
    val = make_source(f"prepared:{tmp_path / 'out'}", False)
    assert val.split == "val" and val.classes == ["n01440764", "n01443537"]
    assert [int(val[i]["label"]) for i in range(3)] == [1, 0, 1]
    with Image.open(src / "val" / "ILSVRC2012_val_00000002.JPEG") as im:
        np.testing.assert_array_equal(val[1]["image"], np.asarray(im.convert("RGB")))


def test_tiny_imagenet_layout_as_distributed(tmp_path):
    rng, src = np.random.default_rng(2), tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    for wnid in wnids:
        for i in range(2):
            _jpeg(src / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", rng)
        (src / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    annotations = []
    for i, wnid in enumerate(["n01641577", "n01443537", "n01629819", "n01443537"]):
        _jpeg(src / "val" / "images" / f"val_{i}.JPEG", rng)
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (src / "val" / "val_annotations.txt").write_text("".join(annotations))
    _jpeg(src / "test" / "images" / "test_0.JPEG", rng)  # no labels: skipped
    (src / "wnids.txt").write_text("\n".join(wnids))
    index = prep.prepare(src, tmp_path / "out", workers=0, progress=False)
    assert sorted(index["splits"]) == ["train", "val"] and any("test/" in n for n in index["notes"])
    train, val = make_source(f"prepared:{tmp_path / 'out'}", True), make_source(f"prepared:{tmp_path / 'out'}", False)
    assert len(train) == 6 and [int(train[i]["label"]) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert val.split == "val" and [int(val[i]["label"]) for i in range(4)] == [2, 0, 1, 0]


def test_bad_input_is_one_line_naming_the_argument(tmp_path, capsys):
    def refused(match, src, **kw):
        with pytest.raises(ValueError, match=match) as err:
            prep.prepare(src, tmp_path / "out", workers=0, progress=False, **kw)
        assert "\n" not in str(err.value)

    refused(r"^src '.*missing' is not an existing directory", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    refused(r"^src '.*empty' has no train/ folder", tmp_path / "empty")
    (tmp_path / "noimages" / "train" / "a").mkdir(parents=True)
    (tmp_path / "noimages" / "train" / "b").mkdir()
    refused(r"^src '.*noimages': train/ has no .jpg/.jpeg/.png files", tmp_path / "noimages")
    src = _class_folder(tmp_path / "src")
    refused(r"^--val-labels '.*nope.txt' is not an existing file", src, val_labels=tmp_path / "nope.txt")
    (tmp_path / "labels.txt").write_text("x.jpg a\n")
    refused(r"^--val-labels '.*labels.txt' was given, but src .* has no flat val/ folder", src,
            val_labels=tmp_path / "labels.txt")  # fmt: skip
    refused(r"^--store must be one of \['encoded', 'pixels'\], got 'png'", src, store="png")
    refused(r"^--images-per-shard must be a positive integer, got 0", src, images_per_shard=0)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("a user's file")
    refused(r"^out '.*out' is a non-empty folder that is not a prepared dataset", src)
    assert (tmp_path / "out" / "notes.txt").read_text() == "a user's file"
    # the command line: one 'error:' line, status 2
    assert prep.main([str(tmp_path / "missing"), str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m freqjax.data.prepare: error: src '") and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"^prepared dataset '.*missing' is not an existing directory"):
        make_source(f"prepared:{tmp_path / 'missing'}", True)
    with pytest.raises(ValueError, match=r"has no prepared.json; make one with `python -m freqjax.data.prepare"):
        make_source(f"prepared:{tmp_path / 'empty'}", True)


def test_index_is_readable_json_naming_every_shard(tmp_path):
    src = _class_folder(tmp_path / "src")
    prep.prepare(src, tmp_path / "out", images_per_shard=16, workers=0, progress=False)
    index = json.loads((tmp_path / "out" / INDEX).read_text())
    files = sorted(s["file"] for e in index["splits"].values() for s in e["shards"])
    assert files == sorted(p.name for p in (tmp_path / "out").glob("*.array_record"))
    assert all(s["bytes"] == (tmp_path / "out" / s["file"]).stat().st_size for e in index["splits"].values()
               for s in e["shards"])  # fmt: skip
