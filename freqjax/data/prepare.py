"""Turn an image folder into a prepared dataset the trainer reads fast, without TensorFlow.

    python -m freqjax.data.prepare SRC OUT [--store encoded|pixels] [--val-labels FILE]

then train with ``dataset='prepared:OUT'``. SRC is one of

    class folders   SRC/train/<class>/*.jpg|jpeg|png and SRC/test/<class>/... (or val/,
                    validation/): e.g. a CIFAR JPEG folder, or ImageNet with val/ sorted into
                    class folders
    ImageNet        SRC/train/<wnid>/*.JPEG and a flat SRC/val/*.JPEG whose labels come from
                    ``--val-labels FILE``: lines '<image name> <wnid>' (spaces, tabs or commas; a
                    header line is skipped), e.g. Kaggle's LOC_val_solution.csv
    Tiny-ImageNet   as distributed: SRC/train/<wnid>/images/*.JPEG, SRC/val/images/*.JPEG with
                    SRC/val/val_annotations.txt (found without --val-labels); the unlabelled
                    test/ is skipped

Labels are the sorted training class folders' indices, as the ``folder:`` source gives them, and
each split keeps the folder source's image order, so training from OUT is the same as training
from SRC. ``--store encoded`` (default) keeps each file's bytes (decoded while training, the
size of the JPEGs); ``--store pixels`` decodes once here and stores uint8 pixels (no decoding
while training; H x W x 3 bytes per image: for small images such as CIFAR or Tiny-ImageNet).

The write is resumable: shards are written under a ``.partial`` name and renamed when closed, and
the index records each finished shard, so an interrupted prepare run again with the same
arguments skips the finished shards; the index says ``complete`` only at the end, and the reader
refuses an unfinished dataset. Files are read by ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path

from freqjax.data.folder import IMAGE_SUFFIXES
from freqjax.data.prepared import FORMAT, INDEX, encode_record
from freqjax.runtime import atomic_path

__all__ = ["STORES", "Split", "find_splits", "main", "prepare"]

STORES = ("encoded", "pixels")
EVAL_SPLITS = ("test", "val", "validation")  # the order the trainer picks an evaluation split in
_WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: random access; JPEGs do not compress


@dataclasses.dataclass
class Split:
    """One split to write: image files (absolute) and their labels, in the folder source's order."""

    name: str
    files: list[str]
    labels: list[int]


def _images(folder: Path, recursive: bool) -> list[str]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(str(p) for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def _class_split(name: str, folder: Path, classes: list[str]) -> Split:
    """``folder/<class>/**/*.jpg``: direct children as the folder source, or Tiny-ImageNet's ``<class>/images/``."""
    unknown = sorted(set(d.name for d in folder.iterdir() if d.is_dir()) - set(classes))
    if unknown:
        raise ValueError(
            f"src split {str(folder)!r} has classes the training split lacks: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}; its labels would not match the model's"
        )
    files, labels = [], []
    for label, cls in enumerate(classes):
        if (folder / cls).is_dir():
            found = _images(folder / cls, recursive=True)
            files += found
            labels += [label] * len(found)
    return Split(name, files, labels)


def _read_labels(labels_file: Path, classes: list[str], arg: str) -> dict[str, int]:
    """``{image name without suffix: label}`` from '<image name> <class>' lines (a header line is skipped)."""
    index = {c: i for i, c in enumerate(classes)}
    table = {}
    for number, line in enumerate(labels_file.read_text().splitlines(), 1):
        fields = [f for f in re.split(r"[\s,]+", line.strip()) if f]
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            if number == 1:  # a header such as 'ImageId,PredictionString'
                continue
            raise ValueError(
                f"{arg} {str(labels_file)!r} line {number}: class {fields[1]!r} is not a training class folder"
            )
        table[Path(fields[0]).stem] = index[fields[1]]
    if not table:
        raise ValueError(f"{arg} {str(labels_file)!r} has no '<image name> <class>' lines")
    return table


def _flat_split(name: str, folder: Path, classes: list[str], labels_file: Path | None, arg: str) -> Split:
    """Images directly in ``folder`` (or ``folder/images``, Tiny-ImageNet) labelled by ``labels_file``."""
    table = _read_labels(labels_file, classes, arg)
    files = _images(folder / "images" if (folder / "images").is_dir() else folder, recursive=False)
    missing = [f for f in files if Path(f).stem not in table]
    if missing:
        raise ValueError(
            f"{arg} {str(labels_file)!r} lacks the labels of {len(missing)} of the {len(files)} images in "
            f"{str(folder)!r}, e.g. {Path(missing[0]).name!r}"
        )
    return Split(name, files, [table[Path(f).stem] for f in files])


def _is_flat(folder: Path) -> bool:
    """No class folders: images directly in ``folder`` or in ``folder/images`` (Tiny-ImageNet's val/)."""
    return not any(d.is_dir() and d.name != "images" for d in folder.iterdir())


def _eval_split(src: Path, name: str, classes: list[str], labels_file: Path | None) -> Split | None:
    """The evaluation split ``src/name`` (None: unlabelled, skipped); layouts in the module docstring."""
    folder = src / name
    if not _is_flat(folder):
        split = _class_split(name, folder, classes)
    elif name != "test" and labels_file is not None:
        split = _flat_split(name, folder, classes, labels_file, "--val-labels")
    elif (folder / "val_annotations.txt").is_file():  # Tiny-ImageNet
        split = _flat_split(name, folder, classes, folder / "val_annotations.txt", "labels file")
    elif name == "test":  # ImageNet's and Tiny-ImageNet's test images have no public labels
        return None
    else:
        raise ValueError(
            f"--val-labels is required: src {str(src)!r} has a {name}/ folder without class folders "
            "(ImageNet's layout); give a file of '<image name> <wnid>' lines, e.g. LOC_val_solution.csv"
        )
    if not split.files:
        raise ValueError(f"src {str(src)!r}: {name}/ has no {'/'.join(IMAGE_SUFFIXES)} files")
    return split


def find_splits(
    src: str | os.PathLike, val_labels: str | os.PathLike | None = None
) -> tuple[list[str], list[Split], list[str]]:
    """(classes, splits, notes) of the image folder ``src``; the layouts are in the module docstring.

    Raises:
        ValueError: one line naming the argument (src, --val-labels) and what is wrong with it.
    """
    root = Path(src)
    if not root.is_dir():
        raise ValueError(f"src {str(src)!r} is not an existing directory")
    if not (root / "train").is_dir():
        raise ValueError(f"src {str(src)!r} has no train/ folder (expected SRC/train/<class>/*.jpg)")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ValueError(f"src {str(src)!r}: train/ has {len(classes)} class folders, a classifier needs at least 2")
    labels_file = None if val_labels is None else Path(val_labels)
    if labels_file is not None and not labels_file.is_file():
        raise ValueError(f"--val-labels {str(val_labels)!r} is not an existing file")
    if labels_file is not None and not any((root / n).is_dir() and _is_flat(root / n) for n in ("val", "validation")):
        raise ValueError(f"--val-labels {str(val_labels)!r} was given, but src {str(src)!r} has no flat val/ folder")
    splits, notes = [_class_split("train", root / "train", classes)], []
    if not splits[0].files:
        raise ValueError(f"src {str(src)!r}: train/ has no {'/'.join(IMAGE_SUFFIXES)} files in its class folders")
    for name in EVAL_SPLITS:
        if (root / name).is_dir():
            split = _eval_split(root, name, classes, labels_file)
            if split is None:
                notes.append(f"{name}/: no class folders and no labels file, skipped")
            else:
                splits.append(split)
    return classes, splits, notes


def _plan(src: Path, classes: list[str], splits: list[Split], store: str, per_shard: int) -> dict:
    """The index to write, with ``plan``: a hash of everything that decides the shards' contents."""
    key = hashlib.sha256(json.dumps([FORMAT, store, per_shard, classes]).encode())
    index = {"format": FORMAT, "source": str(src), "store": store, "classes": classes, "complete": False}
    index["splits"] = {}
    for split in splits:
        for name, label in zip(split.files, split.labels, strict=True):
            try:
                st = os.stat(name)
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError:
                stamp = "unreadable"
            key.update(f"\0{split.name}\0{os.path.relpath(name, src)}\0{label}\0{stamp}".encode())
        n = len(split.files)
        count = max(1, -(-n // per_shard))
        shards = [f"{split.name}-{i:05d}-of-{count:05d}.array_record" for i in range(count)]
        index["splits"][split.name] = {
            "images": n,
            "shards": [{"file": f, "images": min(per_shard, n - i * per_shard)} for i, f in enumerate(shards)],
        }
    index["plan"] = key.hexdigest()
    return index


def _record(job: tuple[str, str, int, str]) -> tuple[bytes, bool]:
    """(record, readable) of one image file; runs in the worker processes."""
    from freqjax.data.decode import decode_image

    path, name, label, store = job
    try:
        with open(path, "rb") as f:
            data = f.read()
        if store == "pixels":
            return encode_record(label, name, "pixels", decode_image(data)), True
        return encode_record(label, name, "encoded", data), True
    except (OSError, ValueError, SyntaxError):  # unreadable file, or (pixels) not an image PIL decodes
        return encode_record(label, name, "unreadable"), False


def _save_index(out: Path, index: dict) -> None:
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(out / INDEX) as tmp:
        Path(tmp).write_text(json.dumps(index, indent=1))
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file, not mkstemp's owner-only mode


def _start(out: Path, plan: dict) -> dict:
    """The index to continue from: ``plan``, or the interrupted prepare's index with the same plan."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a directory")
    if (out / INDEX).is_file():
        index = json.loads((out / INDEX).read_text())
        if index.get("plan") != plan["plan"]:
            raise ValueError(
                f"out {str(out)!r} holds a dataset prepared from other files or options; choose another out "
                "folder (or remove that one)"
            )
        return index
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"out {str(out)!r} is a non-empty folder that is not a prepared dataset; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    _save_index(out, plan)
    return plan


def _finished(out: Path, shard: dict) -> bool:
    return shard.get("bytes") is not None and (out / shard["file"]).is_file()


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    val_labels: str | os.PathLike | None = None,
    store: str = "encoded",
    images_per_shard: int = 1024,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write the prepared dataset of image folder ``src`` to ``out`` (or finish an interrupted one); returns its index.

    Args:
        src: the image folder (layouts in the module docstring).
        out: a new or empty folder, or one an interrupted prepare of the same src and options left.
        val_labels: labels of a flat ImageNet val/ folder ('<image name> <wnid>' lines).
        store: 'encoded' (the files' bytes) or 'pixels' (decoded uint8).
        images_per_shard: records per ArrayRecord file (the unit an interrupted prepare resumes at).
        workers: processes reading (and for 'pixels' decoding) files; None = one per CPU, 0 = none.
        progress: show a progress bar.

    Raises:
        ValueError: bad arguments or folder layout, one line naming the argument, before anything is written.
    """
    from array_record.python.array_record_module import ArrayRecordWriter
    from tqdm import tqdm

    if store not in STORES:
        raise ValueError(f"--store must be one of {list(STORES)}, got {store!r}")
    if not isinstance(images_per_shard, int) or images_per_shard < 1:
        raise ValueError(f"--images-per-shard must be a positive integer, got {images_per_shard!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ValueError(f"--workers must be an integer >= 0, got {workers!r}")
    src, out = Path(src).absolute(), Path(out).absolute()
    classes, splits, notes = find_splits(src, val_labels)
    index = _start(out, _plan(src, classes, splits, store, images_per_shard))
    index["notes"] = notes
    if index["complete"]:
        print(f"{out} is already prepared from {src}; nothing to do", flush=True)
        return index
    total = sum(len(s.files) for s in splits)
    done = sum(s["images"] for e in index["splits"].values() for s in e["shards"] if _finished(out, s))
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    # spawn: the caller may hold JAX's threads, which a forked child must not inherit
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers else None
    bar = tqdm(total=total, initial=done, unit="img", desc=f"prepare {out.name}", disable=not progress)
    start = time.perf_counter()
    try:
        for split in splits:
            begin = 0
            for shard in index["splits"][split.name]["shards"]:
                end = begin + shard["images"]
                if not _finished(out, shard):
                    jobs = [(f, os.path.relpath(f, src), lab, store) for f, lab in
                            zip(split.files[begin:end], split.labels[begin:end], strict=True)]  # fmt: skip
                    records = pool.imap(_record, jobs, chunksize=16) if pool else map(_record, jobs)
                    partial = out / (shard["file"] + ".partial")
                    writer = ArrayRecordWriter(str(partial), _WRITER_OPTIONS)
                    unreadable = []
                    for job, (record, readable) in zip(jobs, records, strict=True):
                        writer.write(record)
                        if not readable:
                            unreadable.append(job[1])
                        bar.update(1)
                    writer.close()
                    os.replace(partial, out / shard["file"])  # complete under its own name only once closed
                    shard.update(bytes=(out / shard["file"]).stat().st_size, unreadable=unreadable)
                    _save_index(out, index)
                begin = end
    finally:
        bar.close()
        if pool:
            pool.terminate()
    index["complete"] = True
    _save_index(out, index)
    print(summary(index, out, time.perf_counter() - start, total - done), flush=True)
    return index


def summary(index: dict, out: Path, seconds: float, written: int) -> str:
    """Lines naming the images, classes and bytes of each split and in all."""
    lines = [f"prepared {out} from {index['source']} (store {index['store']!r}, {len(index['classes'])} classes)"]
    total_images = total_bytes = 0
    for name, entry in index["splits"].items():
        size = sum(s["bytes"] for s in entry["shards"])
        bad = [f for s in entry["shards"] for f in s["unreadable"]]
        line = f"  {name:<10} {entry['images']:>9} images {size / 1e6:>10.1f} MB in {len(entry['shards'])} shards"
        lines.append(line + (f", {len(bad)} unreadable (skipped when training), e.g. {bad[0]!r}" if bad else ""))
        total_images, total_bytes = total_images + entry["images"], total_bytes + size
    lines += [f"  note: {n}" for n in index.get("notes", [])]
    lines.append(
        f"  total      {total_images:>9} images {total_bytes / 1e6:>10.1f} MB; wrote {written} in {seconds:.1f} s; "
        f"train with dataset='prepared:{out}'"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m freqjax.data.prepare", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    parser.add_argument("src", help="the image folder")
    parser.add_argument("out", help="the prepared dataset's folder (new, empty, or an interrupted prepare's)")
    parser.add_argument("--store", choices=STORES, default="encoded", help="the files' bytes, or decoded pixels")
    parser.add_argument("--val-labels", default=None, help="labels of a flat ImageNet val/ ('<image> <wnid>' lines)")
    parser.add_argument("--images-per-shard", type=int, default=1024, help="records per ArrayRecord file")
    parser.add_argument("--workers", type=int, default=None, help="reading processes (default: one per CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        prepare(
            args.src, args.out, val_labels=args.val_labels, store=args.store,
            images_per_shard=args.images_per_shard, workers=args.workers, progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
