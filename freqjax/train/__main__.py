"""``python -m freqjax.train curve WORKDIR [WORKDIR ...]``: print each run's curve from its ``metrics.jsonl``.

One row per evaluation: step, epoch, mean train loss / accuracy / images/s since the previous
evaluation, eval top-1 / top-5 and EMA top-1 (:func:`freqjax.train.writers.summarize`). Training
itself is ``python -m freqjax.main --config ... --workdir ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from freqjax.train.writers import summarize


def _print_curve(workdir: str) -> None:
    nan = float("nan")
    print(f"{'step':>8} {'epoch':>7} {'loss':>8} {'acc':>7} {'img/s':>8} {'top1':>7} {'top5':>7} {'ema top1':>8}")
    for r in summarize(workdir):
        print(
            f"{r['step']:>8} {r.get('epoch', nan):>7.2f} {r.get('train_loss', nan):>8.4f} "
            f"{r.get('train_accuracy', nan):>7.4f} {r.get('train_images_per_s', nan):>8.1f} "
            f"{r['eval_top1']:>7.4f} {r['eval_top5']:>7.4f} {r.get('eval_ema_top1', nan):>8.4f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m freqjax.train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    curve = sub.add_parser("curve", help="print a run's curve from WORKDIR/metrics.jsonl")
    curve.add_argument("workdirs", nargs="+", metavar="WORKDIR")
    args = p.parse_args(argv)
    for i, workdir in enumerate(args.workdirs):
        if len(args.workdirs) > 1:
            print(("\n" if i else "") + workdir)
        try:
            _print_curve(workdir)
        except ValueError as err:  # no metrics.jsonl: one line, not a traceback
            p.exit(2, f"{p.prog}: error: {err}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
