"""The tfds: source on a real ArrayRecord data set (built here without TensorFlow), not only mock_data."""

import io

import numpy as np
import pytest
from PIL import Image

from freqjax.data.sources import TfdsSource, make_source

tfds = pytest.importorskip("tensorflow_datasets")


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def _images(split: str, n: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(len(split))
    return [(rng.integers(0, 256, (12, 10, 3), np.uint8), i % 3) for i in range(n)]


class FreqjaxTestShapes(tfds.core.GeneratorBasedBuilder):
    """A 3-class image data set. tfds encodes numpy images with TensorFlow; given PNG bytes, it
    writes ArrayRecord files without it."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"image": tfds.features.Image(shape=(12, 10, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples("train", 9), "test": self._generate_examples("test", 4)}

    def _generate_examples(self, split, n):
        for i, (image, label) in enumerate(_images(split, n)):
            yield i, {"image": _png(image), "label": label}


def test_tfds_source_reads_a_built_array_record_dataset(tmp_path):
    FreqjaxTestShapes(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    assert list((tmp_path / "freqjax_test_shapes" / "1.0.0").glob("*.array_record-*"))
    train = make_source("tfds:freqjax_test_shapes", True, data_dir=str(tmp_path))
    test = make_source("tfds:freqjax_test_shapes", False, data_dir=str(tmp_path))
    assert isinstance(train, TfdsSource) and len(train) == 9 and len(test) == 4 and train.num_classes == 3
    # tfds shuffles records while writing: compare as sets of (label, pixels)
    for source, split, n in ((train, "train", 9), (test, "test", 4)):
        written = sorted((label, image.tobytes()) for image, label in _images(split, n))
        read = []
        for i in range(n):
            record = source[i]
            assert record["image"].shape == (12, 10, 3) and record["image"].dtype == np.uint8
            assert record["label"].dtype == np.int32 and record["skipped"] == 0
            read.append((int(record["label"]), record["image"].tobytes()))
        assert sorted(read) == written


def test_an_unbuilt_tfds_dataset_says_what_works_without_tensorflow(tmp_path):
    with pytest.raises(ValueError, match=r"cannot be opened .*python -m freqjax.data.prepare SRC OUT") as err:
        make_source("tfds:freqjax_test_shapes", True, data_dir=str(tmp_path / "empty"))
    assert "config.data_dir" in str(err.value) and "\n" not in str(err.value)
