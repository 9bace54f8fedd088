"""Data: sources (synthetic, folder, tfds mock), host augmentation, grain loaders (order, resume, shards)."""

import numpy as np
import pytest
from PIL import Image

from freqjax.data import augment
from freqjax.data.loader import eval_batches, local_batch_size, train_loader
from freqjax.data.sources import FolderSource, SyntheticSource, make_source, parse_dataset


def _folder(tmp_path, per_class=6, size=20, corrupt=()):
    """root/{train,test}/{a,b,c}/NN.png|jpg with class-coloured images; ``corrupt`` train files are garbage."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate("abc"):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                img = np.full((size, size + 4, 3), 40 * c, np.uint8) + rng.integers(
                    0, 20, (size, size + 4, 3), np.uint8
                )
                Image.fromarray(img).save(d / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    for rel in corrupt:
        (tmp_path / "train" / rel).write_bytes(b"\xff\xd8 not a jpeg")
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("synthetic", ("synthetic", "", None)),
        ("folder:/x/y", ("folder", "/x/y", None)),
        ("tfds:svhn_cropped:test", ("tfds", "svhn_cropped", "test")),
    ],
)
def test_parse_dataset(spec, expected):
    assert parse_dataset(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"), [("synthtic", "did you mean 'synthetic'"), ("folder:", "folder:PATH"), ("", "dataset must be")]
)
def test_parse_dataset_rejects(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_dataset(spec)


def test_synthetic_source_is_deterministic_and_splits_differ():
    train, test = (
        make_source("synthetic", True, image_size=16, synthetic_size=40),
        make_source("synthetic", False, image_size=16, synthetic_size=40),
    )
    assert isinstance(train, SyntheticSource) and len(train) == 40 and len(test) == 10
    np.testing.assert_array_equal(
        train[3]["image"], make_source("synthetic", True, image_size=16, synthetic_size=40)[3]["image"]
    )
    assert not np.array_equal(train[3]["image"], test[3]["image"])
    assert train[3]["image"].shape == (16, 16, 3) and train[3]["image"].dtype == np.uint8


def test_folder_source_labels_and_corrupt_images_are_skipped_and_counted(tmp_path):
    root = _folder(tmp_path, corrupt=("b/02.jpg", "b/03.png"))
    train = make_source(f"folder:{root}", True)
    assert isinstance(train, FolderSource) and train.classes == ["a", "b", "c"] and len(train) == 18
    assert train.num_classes == 3 and make_source(f"folder:{root}", False).num_classes == 3
    first_b = train.files.index(str(root / "train" / "b" / "00.jpg"))
    record = train[first_b + 2]  # b/02.jpg and b/03.png are garbage: b/04.jpg is returned instead
    assert record["skipped"] == 2 and record["label"] == 1
    np.testing.assert_array_equal(record["image"], train[first_b + 4]["image"])
    assert train[0]["skipped"] == 0 and train[0]["image"].shape == (20, 24, 3)


def test_folder_decode_cache_serves_the_same_records(tmp_path, monkeypatch):
    import pickle

    root = _folder(tmp_path / "data", corrupt=("b/02.jpg", "b/03.png"))
    monkeypatch.setenv("FREQJAX_CACHE_DIR", str(tmp_path / "cache"))
    plain = make_source(f"folder:{root}", True)
    cached = make_source(f"folder:{root}", True, decode_cache=True)
    assert cached.cache_file.parent == tmp_path / "cache" / "decoded"
    for i in range(len(plain)):  # same images, labels and skip counts (corrupt files included)
        a, b = plain[i], cached[i]
        assert a["skipped"] == b["skipped"] and a["label"] == b["label"]
        np.testing.assert_array_equal(a["image"], b["image"])
    mtime = cached.cache_file.stat().st_mtime_ns
    again = pickle.loads(pickle.dumps(make_source(f"folder:{root}", True, decode_cache=True)))  # as grain's workers
    assert again.cache_file == cached.cache_file and cached.cache_file.stat().st_mtime_ns == mtime  # reused
    np.testing.assert_array_equal(again[5]["image"], plain[5]["image"])
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "train" / "a" / "99.png")  # folder changed
    assert make_source(f"folder:{root}", True, decode_cache=True).cache_file != cached.cache_file
    assert not list((tmp_path / "cache" / "decoded").glob(".tmp-*"))  # no temporary files left


def test_folder_decode_cache_errors(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    monkeypatch.setenv("FREQJAX_CACHE_DIR", str(tmp_path / "cache"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "c" / "99.png")
    with pytest.raises(ValueError, match=r"one size: .*99.png' is \(8, 8\)"):
        make_source(f"folder:{root}", True, decode_cache=True)
    with pytest.raises(ValueError, match="folder: datasets only"):
        make_source("synthetic", True, decode_cache=True)


def test_folder_source_errors(tmp_path):
    with pytest.raises(ValueError, match="not an existing directory"):
        make_source(f"folder:{tmp_path / 'missing'}", True)
    (tmp_path / "only_val").mkdir()
    with pytest.raises(ValueError, match="none of the split folders"):
        make_source(f"folder:{tmp_path}", True)


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        source = make_source("tfds:cifar10", True)
        assert len(source) == 12 and source.num_classes == 10
        record = source[5]
        assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8 and 0 <= record["label"] < 10
        assert make_source("tfds:cifar10:test", False).split == "test"
        with pytest.raises(ValueError, match="did you mean cifar10"):
            make_source("tfds:cifar1O", True)


def test_random_resized_crop_and_centre_crop_shapes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 90, 3), np.uint8)
    for _ in range(5):
        assert augment.random_resized_crop(image, 24, rng).shape == (24, 24, 3)
    assert augment.centre_crop(image, 32).shape == (32, 32, 3)
    # at size / crop_pct = short side, the centre crop is a plain slice
    np.testing.assert_array_equal(augment.centre_crop(image, 56, crop_pct=56 / 60), image[2:58, 17:73])


def test_pad_crop_is_a_shifted_window_of_the_zero_padded_image():
    rng = np.random.default_rng(1)
    image = rng.integers(1, 255, (8, 8, 3), np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    out = augment.pad_crop(image, 8, 4, np.random.default_rng(5))
    top, left = np.random.default_rng(5).integers(0, 9, size=2)
    np.testing.assert_array_equal(out, padded[top : top + 8, left : left + 8])


def test_colour_jitter_zero_is_identity_and_nonzero_changes_colours():
    image = np.random.default_rng(2).integers(0, 255, (8, 8, 3), np.uint8)
    np.testing.assert_array_equal(augment.colour_jitter(image, 0.0, np.random.default_rng(0)), image)
    jittered = augment.colour_jitter(image, 0.4, np.random.default_rng(0))
    assert jittered.dtype == np.uint8 and not np.array_equal(jittered, image)


def test_transforms_reject_unknown_kinds():
    with pytest.raises(ValueError, match="augment must be one of"):
        augment.TrainTransform("randaug", 32)
    with pytest.raises(ValueError, match="eval_augment must be one of"):
        augment.EvalTransform("crop", 32)


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_train_loader_is_deterministic_reshuffles_per_epoch_and_resumes():
    source = SyntheticSource(16, 32, seed=3)
    make = lambda seed: train_loader(source, global_batch=8, image_size=16, augment="cifar", seed=seed)  # noqa: E731
    a, b = _batches(make(0), 8), _batches(make(0), 8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    epoch0 = np.concatenate([x["label"] for x in a[:4]])
    assert sorted(np.concatenate([x["label"] for x in a[4:]]).tolist()) == sorted(epoch0.tolist())
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a[:4], a[4:], strict=True))
    assert not np.array_equal(_batches(make(1), 1)[0]["image"], a[0]["image"])
    # checkpointable: restore the state after 3 batches and continue
    it = iter(make(0))
    for _ in range(3):
        next(it)
    state = it.get_state()
    resumed = iter(make(0))
    resumed.set_state(state)
    for expected in a[3:6]:
        np.testing.assert_array_equal(next(resumed)["image"], expected["image"])


def test_train_loader_shards_by_process_and_workers_are_deterministic():
    source = SyntheticSource(8, 16)
    shards = [
        _batches(
            train_loader(source, global_batch=4, image_size=8, augment="cifar", process_index=i, process_count=2), 6
        )
        for i in range(2)
    ]
    assert all(b["image"].shape == (2, 8, 8, 3) for s in shards for b in s)
    # each process gets its half of every global batch: together, exactly the one-process batches
    single = _batches(train_loader(source, global_batch=4, image_size=8, augment="cifar"), 6)
    for one, first, second in zip(single, *shards, strict=True):
        for key in ("image", "label"):
            np.testing.assert_array_equal(one[key], np.concatenate([first[key], second[key]]))
    # worker processes: deterministic for a given worker count (each worker batches its own records,
    # so the batches differ from in-process loading), and an epoch holds the same augmented images
    runs = [
        _batches(train_loader(source, global_batch=4, image_size=8, augment="cifar", worker_count=2), 4)
        for _ in range(2)
    ]
    for x, y in zip(*runs, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    in_process = _batches(train_loader(source, global_batch=4, image_size=8, augment="cifar", worker_count=0), 4)
    epoch = lambda bs: sorted(im.tobytes() for b in bs for im in b["image"])  # noqa: E731
    assert epoch(runs[0]) == epoch(in_process)


def test_eval_batches_pad_with_zero_mask_and_cover_every_record_once():
    source = SyntheticSource(8, 11)
    batches = list(eval_batches(source, global_batch=4, image_size=8, augment="none"))
    assert len(batches) == 3 and all(b["image"].shape == (4, 8, 8, 3) for b in batches)
    assert [float(b["mask"].sum()) for b in batches] == [4.0, 4.0, 3.0]
    labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(11)])
    # two processes: both yield the same number of batches; together they cover every record
    per_process = [
        list(eval_batches(source, global_batch=4, image_size=8, augment="none", process_index=i, process_count=2))
        for i in range(2)
    ]
    assert len(per_process[0]) == len(per_process[1]) == 3
    assert sum(float(b["mask"].sum()) for p in per_process for b in p) == 11


def test_local_batch_size_errors():
    assert local_batch_size(8, 2) == 4
    with pytest.raises(ValueError, match="not divisible by the process count 3"):
        local_batch_size(8, 3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        local_batch_size(0, 1)


def test_synthetic_images_are_deterministic_and_random_access():
    from freqjax.data import grating_image, grating_images

    a, la = grating_images(6, size=32, seed=1)
    b, lb = grating_images(3, size=32, seed=1, start=3)
    np.testing.assert_array_equal(a[3:], b)
    np.testing.assert_array_equal(la[3:], lb)
    c, _ = grating_images(6, size=32, seed=2)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    _, labels = grating_images(200, size=16, num_classes=10)
    assert set(labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="num_classes"):
        grating_image(0, num_classes=1)


def test_every_split_is_labelled_by_the_training_classes(tmp_path, capsys):
    root = _folder(tmp_path)
    import shutil

    shutil.rmtree(root / "test" / "b")  # test/ lacks class b: c must keep train's label 2, not become 1
    test = make_source(f"folder:{root}", False)
    assert test.classes == ["a", "b", "c"] and sorted(set(test.labels.tolist())) == [0, 2]
    assert "lacks 1 training classes: ['b']" in capsys.readouterr().out
    (root / "test" / "zebra").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "zebra" / "0.png")
    with pytest.raises(ValueError, match=r"classes the training split lacks: \['zebra'\]"):
        make_source(f"folder:{root}", False)


def test_a_training_folder_with_one_class_is_refused(tmp_path):
    d = tmp_path / "train" / "only"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "0.png")
    with pytest.raises(ValueError, match="has 1 class, a classifier needs at least 2"):
        make_source(f"folder:{tmp_path}", True)


def test_sixteen_bit_grey_png_keeps_its_values(tmp_path):
    root = _folder(tmp_path)
    grey = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
    Image.fromarray(grey).save(root / "train" / "a" / "deep.png")
    source = make_source(f"folder:{root}", True)
    i = next(k for k, f in enumerate(source.files) if f.endswith("deep.png"))
    image = source[i]["image"]
    assert source[i]["skipped"] == 0 and image.dtype == np.uint8 and image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image[..., 0], (grey >> 8).astype(np.uint8))  # not all white


def test_decode_cache_skips_a_broken_link_like_the_plain_folder(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    monkeypatch.setenv("FREQJAX_CACHE_DIR", str(tmp_path / "cache"))
    (root / "train" / "a" / "zz.png").symlink_to(tmp_path / "gone.png")
    plain = make_source(f"folder:{root}", True)
    cached = make_source(f"folder:{root}", True, decode_cache=True)
    i = next(k for k, f in enumerate(plain.files) if f.endswith("zz.png"))
    for source in (plain, cached):
        assert source[i]["skipped"] == 1
    np.testing.assert_array_equal(plain[i]["image"], cached[i]["image"])


def test_a_class_of_empty_files_is_refused_before_training(tmp_path):
    root = _folder(tmp_path)
    for i in range(10):
        (root / "train" / "c" / f"empty{i}.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"10 of the 16 files of class 'c' are empty"):
        make_source(f"folder:{root}", True)
