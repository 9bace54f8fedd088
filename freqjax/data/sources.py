"""Random-access image sources for training: ``synthetic``, ``folder:PATH``, ``prepared:PATH`` and ``tfds:NAME``.

Every source has ``len(source)``, ``source[i]`` -> ``{'image': (H, W, 3) uint8, 'label': int32,
'skipped': int32}`` and ``source.num_classes``. Records are decoded on access (in grain's worker
processes), never on the device. A record that cannot be decoded is replaced by the next readable
one and its ``skipped`` field counts the unreadable files passed over, so the training loop can
log how many corrupt images it met without crashing.

Spec strings (``config.dataset``):

    synthetic                 procedural gratings (:mod:`freqjax.data.synthetic`), learnable, offline
    folder:PATH               PATH/<split>/<class>/*.jpg|jpeg|png (e.g. a CIFAR-10 JPEG folder)
    prepared:PATH[:SPLIT]     ArrayRecord shards that ``python -m freqjax.data.prepare SRC PATH`` wrote
                              from an image folder (class folders, ImageNet, Tiny-ImageNet): the same
                              records as ``folder:SRC``, read without a file open per image
                              (:mod:`freqjax.data.prepared`)
    tfds:NAME[:SPLIT]         ``tfds.data_source(NAME)`` (ArrayRecord files, no TensorFlow at train time)

``prepared`` and ``tfds`` train on ``config.train_split`` ('train') and evaluate on SPLIT, else
'test', else 'val' / 'validation'. TensorFlow is not a dependency: ``tfds:`` reads a data set
that is already built in ArrayRecord format (``tfds build`` needs TensorFlow for most data sets,
whose builders encode images with it); ``prepare`` makes an image folder trainable without it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from freqjax.data.decode import decode_image
from freqjax.data.folder import IMAGE_SUFFIXES
from freqjax.data.synthetic import grating_image
from freqjax.runtime import atomic_path, cache_dir

__all__ = [
    "SOURCES",
    "FolderSource",
    "SourceKind",
    "SyntheticSource",
    "TfdsSource",
    "class_folders",
    "make_source",
    "parse_dataset",
]

_MAX_SKIP = 64  # give up on a source whose next 64 records are all unreadable
_MAX_EMPTY_FRACTION = 0.5  # a class with more empty (0-byte) files than this is refused up front


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # a broken link: unreadable, but not empty; skipped when read
        return -1


def parse_dataset(spec: object) -> tuple[str, str, str | None]:
    """Split a dataset spec into (kind, name_or_path, split_or_None); the kinds are :data:`SOURCES`.

    Raises:
        ValueError: an empty or unknown spec, with the valid forms (and a close match if any).
    """
    forms = ", ".join(repr(k.form) for k in SOURCES.values())
    if isinstance(spec, str) and spec:
        kind, _, rest = spec.partition(":")
        entry = SOURCES.get(kind)
        if entry is not None and bool(rest) == (entry.form != kind):
            name, split = rest.partition(":")[::2] if entry.has_split else (rest, "")
            return kind, name, split or None
        close = difflib.get_close_matches(kind, list(SOURCES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close and close[0] != kind else ""
    else:
        hint = ""
    raise ValueError(f"dataset must be one of {forms}, got {spec!r}{hint}")


class SyntheticSource:
    """Grating images of :func:`freqjax.data.synthetic.grating_image`; split 'train' and 'test' differ by seed."""

    def __init__(self, size: int, num_records: int, num_classes: int = 10, seed: int = 0):
        if not isinstance(num_records, int) or num_records < 1:
            raise ValueError(f"num_records must be a positive integer, got {num_records!r}")
        self.size, self.num_records, self.num_classes, self.seed = size, num_records, num_classes, seed
        grating_image(0, size, num_classes, seed)  # validates size / num_classes now, not in a worker

    def __len__(self) -> int:
        return self.num_records

    def __getitem__(self, index: int) -> dict:
        image, label = grating_image(int(index), self.size, self.num_classes, self.seed)
        return {"image": image, "label": np.int32(label), "skipped": np.int32(0)}

    def __repr__(self) -> str:
        return f"SyntheticSource(size={self.size}, num_records={self.num_records}, seed={self.seed})"


def _readable_file(images_file: Path) -> Path:
    return images_file.with_suffix(".readable.npy")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` that readers never see half-written (:func:`freqjax.runtime.atomic_path`)."""
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)


class FolderSource:
    """Images in ``root/<class>/*.jpg|jpeg|png``; labels are the sorted class folder names' indices.

    ``cache_dir``: decode every image once into a uint8 array file there (all images must have
    one size, e.g. CIFAR's 32x32) and serve records from it, memory-mapped in each worker, instead
    of decoding JPEGs on every access. On a 2-core machine decoding is what limits small-image
    training (PIL takes ~0.2 ms per 32x32 JPEG, the augmentation ~0.03 ms). The file's name
    hashes the folder, file names, sizes and modification times, so a changed folder gets a new
    one; it is written to a temporary name and renamed, so processes never read a partial file.
    """

    def __init__(
        self, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None, classes: list[str] | None = None
    ):
        path = Path(root)
        if not path.is_dir():
            raise ValueError(f"dataset folder {str(root)!r} is not an existing directory")
        present = class_folders(path)
        if not present:
            raise ValueError(f"dataset folder {str(root)!r} has no class sub-folders (expected root/<class>/*.jpg)")
        if classes is None:  # the training split: its classes define the labels
            if len(present) < 2:
                raise ValueError(
                    f"dataset folder {str(root)!r} has {len(present)} class, a classifier needs at least 2"
                )
            classes = present
        else:  # another split: labels must mean the training split's classes
            unknown = sorted(set(present) - set(classes))
            if unknown:
                raise ValueError(
                    f"dataset folder {str(root)!r} has classes the training split lacks: {unknown[:5]}"
                    f"{' ...' if len(unknown) > 5 else ''}; its labels would not match the model's"
                )
            missing = sorted(set(classes) - set(present))
            if missing:
                print(
                    f"WARNING: dataset folder {root} lacks {len(missing)} training classes: {missing[:5]}", flush=True
                )
        self.classes = list(classes)
        files, labels = [], []
        for label, name in enumerate(self.classes):
            if not (path / name).is_dir():
                continue
            # one stat per file (~ seconds for ImageNet's 1.28 M) finds empty files before training
            found = sorted(str(p) for p in (path / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            empty = sum(1 for f in found if _size(f) == 0)
            if found and empty > _MAX_EMPTY_FRACTION * len(found):
                raise ValueError(
                    f"dataset folder {str(root)!r}: {empty} of the {len(found)} files of class {name!r} are "
                    "empty (0 bytes), unreadable; fix or remove them (a class that cannot be learned skews the run)"
                )
            files += found
            labels += [label] * len(found)
        if not files:
            raise ValueError(f"dataset folder {str(root)!r} has no {'/'.join(IMAGE_SUFFIXES)} files in its classes")
        self.root, self.files, self.labels = str(path), files, np.asarray(labels, np.int32)
        self.num_classes = len(self.classes)
        self.cache_file = None if cache_dir is None else self._build_cache(Path(cache_dir))
        self._cached: tuple[np.ndarray, np.ndarray] | None = None  # (images, readable), opened lazily
        # a file that every unreadable image's path is appended to (the trainer sets it in the workdir)
        self.skip_log: str | None = None
        self._logged: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, i: int) -> np.ndarray | None:
        """Image ``i`` decoded, or None if it cannot be read."""
        try:
            with open(self.files[i], "rb") as f:
                return decode_image(f.read())
        except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated / non-image files
            return None

    def _build_cache(self, cache_dir: Path) -> Path:
        key = hashlib.sha256(self.root.encode())
        for name in self.files:
            try:
                st = os.stat(name)
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError:  # a broken link: unreadable, skipped like without the cache
                stamp = "unreadable"
            key.update(f"\0{os.path.relpath(name, self.root)}\0{stamp}".encode())
        target = cache_dir / f"decoded-{key.hexdigest()[:16]}.npy"
        if target.exists() and _readable_file(target).exists():
            return target
        images, readable, shape = None, np.zeros(len(self.files), bool), None
        for i in range(len(self.files)):
            image = self._read(i)
            if image is None:
                continue
            if shape is None:
                shape = image.shape
                images = np.zeros((len(self.files), *shape), np.uint8)
            elif image.shape != shape:
                raise ValueError(
                    f"decode cache needs images of one size: {self.files[i]!r} is {image.shape[:2]}, earlier "
                    f"ones {shape[:2]}; turn the cache off (config.decode_cache=False) for this folder"
                )
            images[i], readable[i] = image, True
        if images is None:
            raise OSError(f"no readable image in dataset folder {self.root!r}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        # The readable flags first: the images file appearing (atomically) marks a complete cache.
        _save_atomic(_readable_file(target), readable)
        _save_atomic(target, images)
        return target

    def _open_cache(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None:
            readable = np.load(_readable_file(self.cache_file))
            self._cached = (np.load(self.cache_file, mmap_mode="r"), readable)
        return self._cached

    def __getstate__(self) -> dict:
        # grain pickles the source into its workers: each maps the cache file itself
        return {**self.__dict__, "_cached": None}

    def __getitem__(self, index: int) -> dict:
        for skipped in range(_MAX_SKIP):
            i = (int(index) + skipped) % len(self.files)
            if self.cache_file is not None:
                images, readable = self._open_cache()
                image = np.array(images[i]) if readable[i] else None
            else:
                image = self._read(i)
            if image is None:
                self._log_unreadable(i)
                continue
            return {"image": image, "label": self.labels[i], "skipped": np.int32(skipped)}
        raise OSError(f"{_MAX_SKIP} consecutive unreadable images from {self.files[int(index)]!r}")

    def _log_unreadable(self, i: int) -> None:
        if self.skip_log is None or i in self._logged:
            return
        self._logged.add(i)  # once per process (grain workers each have their own set)
        with open(self.skip_log, "a") as f:  # one short append: whole lines even from several workers
            f.write(self.files[i] + "\n")

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r}, {len(self)} images, {self.num_classes} classes)"


class TfdsSource:
    """A ``tfds.data_source`` (ArrayRecord) with 'image' and 'label' features."""

    def __init__(self, name: str, split: str, data_dir: str | None = None):
        import tensorflow_datasets as tfds

        known = tfds.core.registered.list_imported_builders()  # tfds.list_builders() would import TensorFlow
        if name.partition("/")[0] not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown tfds dataset {name!r}{hint}")
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown tfds dataset {name!r}{hint}") from None
        features = builder.info.features
        if "image" not in features or "label" not in features:
            raise ValueError(f"tfds dataset {name!r} has no 'image' and 'label' features: {list(features)}")
        self.name, self.split, self.data_dir = name, split, data_dir
        self.num_classes = int(features["label"].num_classes)
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as err:  # tfds raises assorted types for missing / unprepared data
            raise ValueError(
                f"tfds dataset {name!r} split {split!r} cannot be opened from {str(builder.data_dir)!r} "
                f"({type(err).__name__}: {' '.join(str(err).split())[:160]}); tfds reads only data sets already "
                "built in ArrayRecord format: set config.data_dir to the folder holding "
                f"{name}/ (built where TensorFlow is installed with `tfds build {name} --file_format=array_record`, "
                "then copied), or turn an image folder into a dataset without TensorFlow with "
                "`python -m freqjax.data.prepare SRC OUT` and set dataset='prepared:OUT'"
            ) from None

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        for skipped in range(_MAX_SKIP):
            i = (int(index) + skipped) % len(self._source)
            try:
                record = self._source[i]
            except (OSError, ValueError):
                continue
            image = np.asarray(record["image"])
            if image.ndim == 2 or image.shape[-1] == 1:  # grey-scale data sets (e.g. a few ImageNet JPEGs)
                image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
            return {"image": image, "label": np.int32(record["label"]), "skipped": np.int32(skipped)}
        raise OSError(f"{_MAX_SKIP} consecutive unreadable records in tfds {self.name}:{self.split} at {index}")

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} records)"


def _synthetic(name: str, split: str | None, train: bool, options: dict) -> SyntheticSource:
    size = options["synthetic_size"] if train else max(1, options["synthetic_size"] // 4)
    return SyntheticSource(options["image_size"], size, options["num_classes"], options["seed"] + (not train))


def class_folders(root: Path) -> list[str]:
    """The class folder names under ``root``, sorted: the labels 0, 1, ... in this order."""
    return sorted(d.name for d in root.iterdir() if d.is_dir())


def _folder(name: str, split: str | None, train: bool, options: dict) -> FolderSource:
    if not Path(name).is_dir():
        raise ValueError(f"dataset folder {name!r} (from dataset='folder:{name}') is not an existing directory")
    candidates = ("train",) if train else ("test", "val", "validation")
    # every split is labelled by the training split's classes (a split lacking one must not shift the rest)
    classes = None if train or not (Path(name) / "train").is_dir() else class_folders(Path(name) / "train")
    cache = cache_dir() / "decoded" if options["decode_cache"] else None
    for sub in candidates:
        if (Path(name) / sub).is_dir():
            return FolderSource(Path(name) / sub, cache, classes=classes)
    raise ValueError(f"dataset folder {name!r} has none of the split folders {list(candidates)}")


def _prepared(name: str, split: str | None, train: bool, options: dict):
    from freqjax.data.prepared import PreparedSource, read_index

    if train:
        return PreparedSource(name, options["train_split"])
    if split is None:
        splits = read_index(name)["splits"]
        found = [s for s in ("test", "val", "validation") if s in splits]
        if not found:
            raise ValueError(
                f"prepared dataset {name!r} has no evaluation split (test, val or validation), only {sorted(splits)}"
            )
        split = found[0]
    return PreparedSource(name, split)


def _tfds(name: str, split: str | None, train: bool, options: dict) -> TfdsSource:
    data_dir = options["data_dir"]
    if train:
        return TfdsSource(name, options["train_split"], data_dir)
    if split is None:
        import tensorflow_datasets as tfds

        splits = tfds.builder(name, data_dir=data_dir).info.splits  # empty until the data set is prepared
        split = "validation" if splits and "test" not in splits else "test"
    return TfdsSource(name, split, data_dir)


@dataclasses.dataclass(frozen=True)
class SourceKind:
    """One kind of data source: ``build(name, split, train, options)``, its spec form, and whether
    the spec may end in ``:SPLIT``."""

    build: Callable[[str, str | None, bool, dict], Any]
    form: str
    has_split: bool = False


# kind (the spec before the first ':') -> how to build it.
SOURCES: dict[str, SourceKind] = {
    "synthetic": SourceKind(_synthetic, "synthetic"),
    "folder": SourceKind(_folder, "folder:PATH"),
    "prepared": SourceKind(_prepared, "prepared:PATH[:SPLIT]", has_split=True),
    "tfds": SourceKind(_tfds, "tfds:NAME[:SPLIT]", has_split=True),
}


def make_source(
    spec: str,
    train: bool,
    *,
    image_size: int = 224,
    num_classes: int = 10,
    synthetic_size: int = 4096,
    seed: int = 0,
    data_dir: str | None = None,
    train_split: str = "train",
    decode_cache: bool = False,
):
    """Build the training (``train=True``) or evaluation source named by ``spec``.

    Args:
        spec: 'synthetic', 'folder:PATH' (uses PATH/train and PATH/test, or PATH/val),
            'prepared:PATH[:SPLIT]' (a dataset of :mod:`freqjax.data.prepare`; SPLIT as for tfds,
            default 'test', else 'val' or 'validation') or 'tfds:NAME[:SPLIT]' (SPLIT overrides the
            split for the evaluation source only; default 'train' / 'test', or 'validation' when
            the data set has no 'test').
        train: which split.
        image_size: side of synthetic images.
        num_classes: classes of the synthetic source (folder/tfds sources know their own).
        synthetic_size: number of synthetic training images (evaluation gets a quarter).
        seed: synthetic data seed (the evaluation split uses ``seed + 1``).
        data_dir: tfds data directory.
        train_split: the tfds or prepared training split (e.g. 'train+extra' for SVHN).
        decode_cache: folder sources only: decode every image once into
            ``freqjax.runtime.cache_dir()/decoded`` and read records from there (images of one size).
    """
    kind, name, split = parse_dataset(spec)
    if decode_cache and kind != "folder":
        raise ValueError(f"decode_cache applies to folder: datasets only, not {spec!r}")
    options = dict(
        image_size=image_size, num_classes=num_classes, synthetic_size=synthetic_size, seed=seed,
        data_dir=data_dir, train_split=train_split, decode_cache=decode_cache,
    )  # fmt: skip
    return SOURCES[kind].build(name, split, train, options)
