"""Wall time from a training command's start until its test top-1 first reaches a target.

    python benchmarks/time_to_accuracy.py                      # configs/cifar_quick.py, 70 %
    python benchmarks/time_to_accuracy.py --target 0.72 --workdir runs/cifar_quick

Starts ``python -m freqjax.main --config CONFIG --workdir WORKDIR`` (the workdir is emptied
first, so nothing resumes; freqjax's decode cache is left as it is), polls the workdir's
``metrics.jsonl`` once a second for evaluation lines (``eval/top1``), prints each with the
seconds since the start, and at the end the time the target was first reached, the total time
and the median training images/s. The times include start-up, compilation and, with an empty
cache, the one-off JPEG decode.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _new_records(path: Path, seen: int) -> list[dict]:
    """Complete JSON lines of ``path`` after the first ``seen`` (a line being written is left for later)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines()[seen:]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/cifar_quick.py")
    parser.add_argument("--workdir", default="runs/cifar_quick")
    parser.add_argument("--target", type=float, default=0.70, help="test top-1 as a fraction")
    args = parser.parse_args()
    if not 0 < args.target <= 1:
        parser.error(f"--target must be a fraction in (0, 1], got {args.target}")
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "freqjax.main", "--config", args.config, "--workdir", str(workdir)]
    proc = subprocess.Popen(cmd)
    seen, reached, rates = 0, None, []
    while True:
        done = proc.poll() is not None
        records = _new_records(workdir / "metrics.jsonl", seen)
        seen += len(records)
        now = time.perf_counter() - start
        for r in records:
            if "train/images_per_s" in r:
                rates.append(r["train/images_per_s"])
            if "eval/top1" in r:
                print(f"{now:7.1f} s  step {r['step']}: test top-1 {100 * r['eval/top1']:.2f} %", flush=True)
                if reached is None and r["eval/top1"] >= args.target:
                    reached = now
        if done:
            break
        time.sleep(1.0)
    if proc.returncode != 0:
        sys.exit(f"the training command failed with exit code {proc.returncode}: {' '.join(cmd)}")
    hit = "not reached" if reached is None else f"reached after {reached:.1f} s"
    rate = f"{statistics.median(rates):,.0f}" if rates else "-"
    total = time.perf_counter() - start
    print(f"{100 * args.target:g} % {hit}; done in {total:.1f} s; median training {rate} images/s")


if __name__ == "__main__":
    main()
