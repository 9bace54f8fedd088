"""Metrics sinks: JSONL (one object per line), TensorBoard event files, a console progress bar.

``python -m freqjax.train curve WORKDIR`` prints a run's curve from its ``metrics.jsonl`` (:func:`summarize`).

TensorBoard files are written directly (TFRecord framing + a hand-encoded ``Event`` protobuf with
scalar ``Summary`` values), so no TensorFlow or tensorboard package is needed to produce them;
``tensorboard --logdir WORKDIR`` reads them.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["JsonlWriter", "MetricWriter", "ProgressBar", "TensorBoardWriter", "crc32c", "summarize"]


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def _event(wall_time: float, step: int, *, file_version: str | None = None, scalars: dict | None = None) -> bytes:
    # Event: wall_time=1 (double), step=2 (int64), file_version=3 (string), summary=5 (Summary)
    msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        msg += _bytes_field(3, file_version.encode())
    if scalars:
        # Summary.value=1 (Value: tag=1 string, simple_value=2 float)
        values = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
            for tag, value in scalars.items()
        )
        msg += _bytes_field(5, values)
    return msg


class TensorBoardWriter:
    """Scalars to ``logdir/events.out.tfevents.<time>.<host>`` (readable by TensorBoard)."""

    def __init__(self, logdir: str | os.PathLike):
        Path(logdir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = Path(logdir) / name
        self._file = open(self.path, "ab")  # noqa: SIM115  (kept open for the run)
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, record: bytes) -> None:
        header = struct.pack("<Q", len(record))
        self._file.write(
            header + struct.pack("<I", _masked_crc(header)) + record + struct.pack("<I", _masked_crc(record))
        )

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One event with every finite scalar of ``scalars`` at ``step``."""
        clean = {k: float(v) for k, v in scalars.items() if isinstance(v, int | float) and math.isfinite(v)}
        if clean:
            self._write(_event(time.time(), step, scalars=clean))
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by a kill: drop it


class JsonlWriter:
    """Appends ``{"step": s, **metrics}`` lines to ``path``; ``drop_after`` first removes lines past that step."""

    def __init__(self, path: str | os.PathLike, drop_after: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if drop_after is not None and self.path.exists():
            # a resumed run repeats the steps after its checkpoint: drop the killed run's lines for them
            lines = self.path.read_text().splitlines(keepends=True)
            self.path.write_text("".join(line for line in lines if _step_of(line) <= drop_after))
        self._file = open(self.path, "a")  # noqa: SIM115

    def write(self, step: int, metrics: dict) -> None:
        """Write one line and flush it (a killed run keeps every line written)."""
        self._file.write(json.dumps({"step": step, **metrics}, allow_nan=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class MetricWriter:
    """JSONL + TensorBoard together; writes only on process 0 (no-ops elsewhere).

    ``resumed_at``: the checkpoint step a resumed run starts from; JSONL lines after it (written by
    the interrupted run, about to be recomputed) are dropped so the file holds one curve.
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True, resumed_at: int | None = None):
        self.enabled = enabled
        if enabled:
            self.jsonl = JsonlWriter(Path(workdir) / "metrics.jsonl", drop_after=resumed_at)
            self.tb = TensorBoardWriter(Path(workdir) / "tensorboard")

    def write(self, step: int, prefix: str, metrics: dict) -> None:
        """Record ``metrics`` at ``step`` under ``prefix`` ('train', 'eval', 'eval_ema')."""
        if not self.enabled:
            return
        self.jsonl.write(step, {f"{prefix}/{k}": v for k, v in metrics.items()})
        self.tb.write_scalars(step, {f"{prefix}/{k}": v for k, v in metrics.items()})

    def close(self) -> None:
        """Close both files."""
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


class ProgressBar:
    """tqdm bar over training steps showing loss and images/s; disabled off process 0 or when asked."""

    def __init__(self, total: int, initial: int, enabled: bool = True):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)

    def update(self, steps: int, **postfix) -> None:
        """Advance by ``steps`` and show ``postfix`` (e.g. loss=..., img_s=...)."""
        if self._bar is not None:
            self._bar.update(steps)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()


def summarize(workdir: str | os.PathLike) -> list[dict]:
    """One row per evaluation of a run: step, epoch, mean train loss/accuracy and images/s since the
    previous evaluation, eval top-1/top-5 (and EMA top-1), from ``WORKDIR/metrics.jsonl``.

    Raises:
        ValueError: no ``metrics.jsonl`` in ``workdir``.
    """
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"no metrics.jsonl in {str(workdir)!r}")
    rows, train = [], []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            train.append(record)
        elif "eval/top1" in record:
            row = {"step": record["step"], "eval_top1": record["eval/top1"], "eval_top5": record["eval/top5"]}
            if train:
                row["epoch"] = train[-1]["train/epoch"]
                for key in ("loss", "accuracy", "images_per_s"):
                    row[f"train_{key}"] = sum(t[f"train/{key}"] for t in train) / len(train)
            rows.append(row)
            train = []
        elif "eval_ema/top1" in record and rows and rows[-1]["step"] == record["step"]:
            rows[-1]["eval_ema_top1"] = record["eval_ema/top1"]
    return rows
