"""A prepared dataset (``python -m freqjax.data.prepare``): its record format and its source.

A prepared dataset is a folder of ArrayRecord shards (``SPLIT-00000-of-00004.array_record``,
written with ``group_size:1`` for random access) and one index, ``prepared.json``: the class
names (label ``i`` is ``classes[i]``), each split's shards and record counts, and ``complete``,
which only a finished prepare sets. Records are read through grain's ``ArrayRecordDataSource``.

One record is one image file of the source folder, in the folder source's order:

    header  <iBIIH  label (int32), kind, height, width (uint32; 0 unless kind is 'pixels'),
                    length of the name (uint16)
    name    the file's path relative to the source folder, UTF-8 (for the unreadable-images log)
    data    kind 1 'encoded': the file's bytes as they were; kind 2 'pixels': height x width x 3
            uint8, decoded by :func:`freqjax.data.decode.decode_image`; kind 0: nothing (the
            file could not be read, or for 'pixels' not decoded)

Both kinds decode with the folder source's own function, so a prepared dataset yields the very
pixels ``folder:`` yields for the same files, and unreadable images are skipped and counted the
same way.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "INDEX", "KINDS", "PreparedSource", "decode_record", "encode_record", "read_index"]

FORMAT = "freqjax-prepared-1"
INDEX = "prepared.json"
KINDS = {"unreadable": 0, "encoded": 1, "pixels": 2}
_HEADER = struct.Struct("<iBIIH")
_MAX_SKIP = 64  # as the folder source: give up when the next 64 records are all unreadable


def encode_record(label: int, name: str, kind: str, data: bytes | np.ndarray = b"") -> bytes:
    """One record: ``data`` is the file's bytes ('encoded'), an (H, W, 3) uint8 array ('pixels'), or
    nothing ('unreadable')."""
    raw = name.encode()
    height = width = 0
    if kind == "pixels":
        height, width = data.shape[:2]
        data = np.ascontiguousarray(data, np.uint8).tobytes()
    return _HEADER.pack(int(label), KINDS[kind], height, width, len(raw)) + raw + bytes(data)


def decode_record(record: bytes) -> tuple[np.ndarray | None, int, str]:
    """(image or None if unreadable, label, name) of one record."""
    from freqjax.data.decode import decode_image

    label, kind, height, width, name_len = _HEADER.unpack_from(record)
    start = _HEADER.size + name_len
    name = bytes(record[_HEADER.size : start]).decode()
    if kind == KINDS["pixels"]:
        image = np.frombuffer(record, np.uint8, height * width * 3, start).reshape(height, width, 3).copy()
    elif kind == KINDS["encoded"]:
        try:
            image = decode_image(bytes(record[start:]))
        except (OSError, ValueError, SyntaxError):  # PIL's errors for truncated / non-image files
            image = None
    else:
        image = None
    return image, label, name


def read_index(path: str | os.PathLike) -> dict:
    """The index of the prepared dataset at ``path``.

    Raises:
        ValueError: no prepared dataset there, or an unfinished one (the line says how to finish it).
    """
    index_file = Path(path) / INDEX
    if not Path(path).is_dir():
        raise ValueError(f"prepared dataset {str(path)!r} is not an existing directory")
    if not index_file.is_file():
        raise ValueError(
            f"prepared dataset {str(path)!r} has no {INDEX}; make one with `python -m freqjax.data.prepare SRC {path}`"
        )
    index = json.loads(index_file.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"prepared dataset {str(path)!r} has format {index.get('format')!r}, this reader {FORMAT!r}")
    if not index["complete"]:
        raise ValueError(
            f"prepared dataset {str(path)!r} is unfinished (its prepare was interrupted); run "
            f"`python -m freqjax.data.prepare {index['source']} {path}` again with the same options "
            f"(--store {index['store']}) to finish it"
        )
    return index


class PreparedSource:
    """One split of a prepared dataset: ``source[i]`` is the folder source's record ``i`` of that split.

    The shards are opened lazily in each process (grain pickles the source into its workers).
    """

    def __init__(self, path: str | os.PathLike, split: str):
        index = read_index(path)
        if split not in index["splits"]:
            raise ValueError(f"prepared dataset {str(path)!r} has no split {split!r}; it has {sorted(index['splits'])}")
        entry = index["splits"][split]
        self.path, self.split, self.source_root = str(path), split, index["source"]
        self.classes = list(index["classes"])
        self.num_classes = len(self.classes)
        self.shards = [str(Path(path) / s["file"]) for s in entry["shards"]]
        self._len = int(entry["images"])
        self._data = None  # grain.ArrayRecordDataSource, opened on first access
        # a file that every unreadable image's path is appended to (the trainer sets it in the workdir)
        self.skip_log: str | None = None
        self._logged: set[int] = set()

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}

    def _records(self):
        if self._data is None:
            import grain.python as grain

            self._data = grain.ArrayRecordDataSource(self.shards)
            if len(self._data) != self._len:
                raise OSError(f"prepared dataset {self.path!r} split {self.split!r}: shards hold "
                              f"{len(self._data)} records, its index says {self._len}")  # fmt: skip
        return self._data

    def __getitem__(self, index: int) -> dict:
        for skipped in range(_MAX_SKIP):
            i = (int(index) + skipped) % self._len
            image, label, name = decode_record(self._records()[i])
            if image is None:
                self._log_unreadable(i, name)
                continue
            return {"image": image, "label": np.int32(label), "skipped": np.int32(skipped)}
        raise OSError(f"{_MAX_SKIP} consecutive unreadable images from record {int(index)} of {self!r}")

    def _log_unreadable(self, i: int, name: str) -> None:
        if self.skip_log is None or i in self._logged:
            return
        self._logged.add(i)  # once per process, as the folder source
        with open(self.skip_log, "a") as f:
            f.write(os.path.join(self.source_root, name) + "\n")

    def __repr__(self) -> str:
        return f"PreparedSource({self.path!r}, split={self.split!r}, {len(self)} images, {self.num_classes} classes)"
