"""Choosing MSNet's early-exit threshold on held-out images, and the points it is compared with.

From "High Frequency Residual Learning for Multi-Scale Image Classification" (Cheng et al.): an
image exits at Network-L when L's largest softmax probability exceeds the threshold; the paper
picks thresholds that match a base network's accuracy (0.48: 69.9 % at 77 % of ResNet-18's MACs)
or its MACs (0.66: +1.5 points at equal MACs). Here both choices are made on a calibration split
of the evaluation images and reported on the other images, so no number is tuned on the images
it is reported on. Pure numpy over per-image outputs; the networks ran once
(:mod:`freqjax.studies.msnet_sweep`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["ExitOutputs", "Point", "calibrate", "split_indices", "threshold_points"]


@dataclasses.dataclass(frozen=True)
class ExitOutputs:
    """Per-image MSNet outputs: L's largest probability, L's and H's predictions, the labels, and
    the MACs of Network-L alone and of Network-H (:func:`freqjax.models.msnet_infer.exit_macs`)."""

    confidence: np.ndarray
    pred_low: np.ndarray
    pred_high: np.ndarray
    labels: np.ndarray
    macs_low: float
    macs_high: float

    def at(self, threshold: float, index: np.ndarray) -> tuple[float, float, float]:
        """(top-1, average MACs per image, fraction exiting at L) over images ``index``."""
        exit_low = self.confidence[index] > threshold
        pred = np.where(exit_low, self.pred_low[index], self.pred_high[index])
        frac = float(exit_low.mean())
        top1 = float(np.mean(pred == self.labels[index]))
        return top1, self.macs_low + (1.0 - frac) * self.macs_high, frac


@dataclasses.dataclass(frozen=True)
class Point:
    """One accuracy/cost point: a threshold of the MSNet, or a plain network setting."""

    network: str
    setting: str
    macs: float
    top1: float
    threshold: float | None = None
    fraction_low: float | None = None


def split_indices(n: int, calibration_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, report) image indices: a seeded random ``calibration_fraction`` of ``range(n)``
    and the rest, each sorted. ``calibration_fraction`` 0: no calibration images, all report.

    Raises:
        ValueError: a fraction outside [0, 1), or a split that leaves either side empty.
    """
    fraction = calibration_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"msnet_sweep.calibration_fraction must be a number in [0, 1), got {fraction!r}")
    k = round(fraction * n)
    if calibration_fraction and k in (0, n):
        raise ValueError(
            f"msnet_sweep.calibration_fraction={calibration_fraction} of {n} evaluation images leaves one side "
            "empty; evaluate more images (config.eval_steps) or change the fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:k]), np.sort(order[k:])


def threshold_points(outputs: ExitOutputs, thresholds: Sequence[float], index: np.ndarray, name: str) -> list[Point]:
    """The MSNet at each threshold over images ``index``."""
    points = []
    for t in thresholds:
        top1, macs, frac = outputs.at(t, index)
        points.append(Point(name, f"threshold {t:.2f}", macs, top1, float(t), frac))
    return points


def calibrate(
    outputs: ExitOutputs,
    thresholds: Sequence[float],
    calibration: np.ndarray,
    report: np.ndarray,
    targets: Sequence[tuple[Point, Point]],
) -> list[dict]:
    """For each target (a base point on the calibration images, the same point on the report
    images): the threshold that matches its accuracy at the fewest MACs, and the one with the
    best accuracy at no more than its MACs, both chosen on ``calibration`` and reported on ``report``.

    Returns one dict per (target, criterion): target, criterion ('same accuracy' / 'same MACs'),
    threshold (None where no threshold meets the target on the calibration images), the MSNet's
    report top1 / macs / fraction_low, the target's report top1 / macs, and the differences.
    """
    cal = [(t, *outputs.at(t, calibration)) for t in thresholds]  # (t, top1, macs, frac)
    rows = []
    for on_calibration, on_report in targets:
        meets_accuracy = [c for c in cal if c[1] >= on_calibration.top1]
        within_macs = [c for c in cal if c[2] <= on_calibration.macs]
        choices = {
            "same accuracy": min(meets_accuracy, key=lambda c: (c[2], c[0])) if meets_accuracy else None,
            "same MACs": max(within_macs, key=lambda c: (c[1], -c[2])) if within_macs else None,
        }
        for criterion, choice in choices.items():
            row = dict(target=f"{on_report.network} {on_report.setting}", criterion=criterion,
                       target_top1=on_report.top1, target_macs=on_report.macs, threshold=None, top1=None,
                       macs=None, fraction_low=None, top1_gain=None, macs_ratio=None)  # fmt: skip
            if choice is not None:
                top1, macs, frac = outputs.at(choice[0], report)
                row.update(threshold=float(choice[0]), top1=top1, macs=macs, fraction_low=frac,
                           top1_gain=top1 - on_report.top1, macs_ratio=macs / on_report.macs)  # fmt: skip
            rows.append(row)
    return rows
