"""ReXNet's rank study: how much does a nonlinearity lift the rank?

From "Rethinking Channel Dimensions for Efficient Model Design" (Han et al.), section 3, Figure 1.

Random single layers map ``d_in`` input channels to ``d_out`` output channels, with ``d_out``
drawn at random and ``d_in = ratio * d_out``; the output feature matrix (one row per sample and
position, ``N > d_out`` rows) goes through BN and one nonlinearity, and the study reports the
mean *rank ratio* rank(f(BN(WX))) / d_out per ratio. Layers (paper Fig. 1 a-d):

- ``conv1x1``: a 1x1 conv (a plain matrix product);
- ``conv3x3``: a 3x3 conv ('same' padding) on random images;
- ``ir_conv3x3`` / ``ir_dw3x3``: an inverted bottleneck, input ``d_in`` -> 1x1 expand to ``d_out``
  -> BN -> f -> 3x3 conv / depthwise -> BN -> f -> 1x1 project -> BN, plus ReXNet's partial
  shortcut (the input added to the first ``d_in`` channels): its expansion ratio is 1 / ratio.

What the paper fixes (section 3.2 "Materials", Fig. 1 caption, footnotes 1-2): the feature is
f(WX) with W in R^(d_out x d_in), X in R^(d_in x N), f one of seven nonlinearities applied with BN,
N (the batch size) > d_out > d_in, d_out random and d_in = ratio * d_out for ratios in [0.1, 1];
the rank ratio is rank(f(WX)) / d_out, averaged over 1,000 random-sized networks, and a linear
layer's rank is d_in ("the rank is originally bounded to the input dimension"). The paper gives
no tolerance, no distribution for W or X, no d_out range and no appendix on the study, and no
code for it is public: the official repository (clovaai/rexnet) holds only the model files
(rexnetv1.py, rexnetv1_lite.py), and no public reproduction turned up.

The rank here is therefore the plain matrix rank as the libraries compute it by default
(``numpy.linalg.matrix_rank``, ``torch.linalg.matrix_rank`` and the old ``torch.matrix_rank``):
singular values above sigma_max * max(M, N) * eps, with eps the machine epsilon of the dtype,
here float32 (``dtype``), PyTorch's default and so what a PyTorch pipeline like the paper's
(its models are PyTorch) computes. It is the one reading that needs no invented constant, and the
one that keeps the paper's linear baseline: rank(WX) = d_in up to d_in = d_out. A coarse relative
cut does not (``rtol=0.1`` gives a random square layer 0.81 and puts SoftPlus below linear at
every ratio from 0.6); ``rtol`` (a float) keeps that measure available for comparison.
Our own choices, none of them in the paper: W and X standard normal, training-mode BN with
scale 1 and bias 0, N = ``rows_per_channel`` * d_out, and the presets' d_out ranges.

What it shows (small preset, see docs/rexnet_xsepconv.md): every nonlinearity lifts the 1x1 rank far above
d_in / d_out, but the rank saturates, so the activations differ only at the smallest ratio
(d_in of 2-5): there ELU (0.987) > ReLU6 (0.982), while SiLU (0.895) < ReLU6 in float32. SiLU's
trailing singular values (1e-9 to 1e-7 of the largest) sit below the float32 cut; in float64
both ELU and SiLU reach 1.000 against ReLU6's 0.982, whose missing dimensions are exact zeros
(piecewise-linear and positively homogeneous, ReLU6 on 2-D inputs loses whole directions). From
ratio 0.2 every nonlinearity is at full rank, and in the 3x3 layers (9 * d_in inputs per output)
every nonlinearity is at full rank from ratio 0.1.

CLI: ``python -m freqjax.studies.rank_study --preset small --out runs/rank`` writes ``rank_study.csv``
and ``rank_study.png`` (one panel per layer, like the paper's figure).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ACTIVATIONS", "LAYERS", "PRESETS", "RankStudyConfig", "plot", "rank_study", "write_csv"]

LAYERS = ("conv1x1", "conv3x3", "ir_conv3x3", "ir_dw3x3")


def _elu(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "relu6": lambda z: np.clip(z, 0.0, 6.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": _elu,
    "softplus": lambda z: np.logaddexp(0.0, z),
    "hard_swish": lambda z: z * np.clip(z + 3.0, 0.0, 6.0) / 6.0,
    "silu": lambda z: z / (1.0 + np.exp(-z)),
}


@dataclasses.dataclass(frozen=True)
class RankStudyConfig:
    """One study. ``d_out_range`` is inclusive; every (layer, ratio) draws ``samples`` networks."""

    layers: tuple[str, ...] = LAYERS
    activations: tuple[str, ...] = tuple(ACTIVATIONS)
    ratios: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
    samples: int = 20
    d_out_range: tuple[int, int] = (16, 64)
    rows_per_channel: int = 2  # N = rows_per_channel * d_out samples x positions (N > d_out)
    image_size: int = 8  # spatial side for the 3x3 layers
    rtol: float | None = None  # None: matrix_rank's default tolerance (see numerical_rank)
    dtype: str = "float32"  # the precision the layer is computed and ranked in
    seed: int = 0

    def __post_init__(self):
        for name in self.layers:
            if name not in LAYERS:
                raise ValueError(f"layers must be drawn from {LAYERS}, got {name!r}")
        for name in self.activations:
            if name not in ACTIVATIONS:
                raise ValueError(f"activations must be drawn from {tuple(ACTIVATIONS)}, got {name!r}")
        if not self.ratios or not all(0.0 < r <= 1.0 for r in self.ratios):
            raise ValueError(f"ratios must be a non-empty sequence in (0, 1], got {self.ratios!r}")
        lo, hi = self.d_out_range
        if not (isinstance(lo, int) and isinstance(hi, int) and 2 <= lo <= hi):
            raise ValueError(f"d_out_range must be (lo, hi) ints with 2 <= lo <= hi, got {self.d_out_range!r}")
        if self.samples < 1 or self.rows_per_channel < 2 or self.image_size < 3:
            raise ValueError(
                f"need samples >= 1, rows_per_channel >= 2 and image_size >= 3, got {self.samples}, "
                f"{self.rows_per_channel}, {self.image_size}"
            )
        if self.rtol is not None and not 0.0 < self.rtol < 1.0:
            raise ValueError(f"rtol must be None or in (0, 1), got {self.rtol!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


PRESETS = {
    "small": RankStudyConfig(samples=8, d_out_range=(16, 48), ratios=(0.1, 0.2, 0.4, 0.6, 0.8, 1.0)),
    "paper": RankStudyConfig(samples=100, d_out_range=(32, 256)),
}


def _bn(y: np.ndarray) -> np.ndarray:
    """Training-mode BN (scale 1, bias 0): statistics over every axis but the last (channels)."""
    axes = tuple(range(y.ndim - 1))
    return (y - y.mean(axes)) / np.sqrt(y.var(axes) + 1e-5)


def _conv3x3(x: np.ndarray, w: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """'same' 3x3 conv of (n, h, w, c) ``x``; ``w`` (3, 3, c_in, c_out), or (3, 3, c) when depthwise."""
    _, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = [xp[:, i : i + h, j : j + wd] for i in range(3) for j in range(3)]
    if depthwise:
        return sum(t * w[i // 3, i % 3] for i, t in enumerate(taps))
    return np.concatenate(taps, axis=-1) @ w.reshape(-1, w.shape[-1])


def _features(layer: str, f, d_in: int, d_out: int, *, cfg: RankStudyConfig, rng: np.random.Generator) -> np.ndarray:
    """The (rows, d_out) output feature matrix of one random layer with nonlinearity ``f``."""
    rows = cfg.rows_per_channel * d_out

    def normal(*shape):
        return rng.standard_normal(shape).astype(cfg.dtype)

    if layer == "conv1x1":
        x = normal(rows, d_in)
        return f(_bn(x @ normal(d_in, d_out)))
    side = cfg.image_size
    n = -(-rows // (side * side))
    x = normal(n, side, side, d_in)
    if layer == "conv3x3":
        y = f(_bn(_conv3x3(x, normal(3, 3, d_in, d_out))))
        return y.reshape(-1, d_out)
    y = f(_bn(x @ normal(d_in, d_out)))
    if layer == "ir_dw3x3":
        y = _conv3x3(y, normal(3, 3, d_out), depthwise=True)
    else:
        y = _conv3x3(y, normal(3, 3, d_out, d_out))
    y = _bn(f(_bn(y)) @ normal(d_out, d_out))
    y[..., :d_in] += x  # ReXNet's partial shortcut
    return y.reshape(-1, d_out)


def numerical_rank(m: np.ndarray, rtol: float | None = None) -> int:
    """Singular values of ``m`` above a tolerance, in ``m``'s own precision.

    ``rtol=None`` is the tolerance of ``numpy.linalg.matrix_rank`` and ``torch.linalg.matrix_rank``
    (and the old ``torch.matrix_rank``) by default: largest singular value x max(m.shape) x the
    machine epsilon of ``m``'s dtype. A float ``rtol`` counts the singular values above ``rtol``
    times the largest instead.
    """
    m = np.asarray(m)
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)
    s = np.linalg.svd(m, compute_uv=False)
    if s.size == 0 or s[0] <= 0:
        return 0
    tol = s[0] * max(m.shape) * np.finfo(m.dtype).eps if rtol is None else rtol * s[0]
    return int((s > tol).sum())


def rank_study(config: RankStudyConfig | str = "small") -> list[dict]:
    """Run the study; one row per (layer, activation, ratio) with the mean rank ratio.

    Args:
        config: a :class:`RankStudyConfig` or a preset name ('small', 'paper').

    Returns:
        Rows ``{'layer', 'activation', 'ratio', 'rank_ratio', 'std', 'samples', 'tolerance',
        'dtype'}``, ``tolerance`` being 'matrix_rank' (the default) or 'rtol=<rtol>'. Every
        activation of a (layer, ratio, sample) sees the same random sizes, weights and inputs.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {config!r}")
        config = PRESETS[config]
    if not isinstance(config, RankStudyConfig):
        raise TypeError(f"config must be a RankStudyConfig or a preset name, got {type(config).__name__}")
    rng = np.random.default_rng(config.seed)
    out = []
    for layer in config.layers:
        for ratio in config.ratios:
            values: dict[str, list[float]] = {a: [] for a in config.activations}
            for _ in range(config.samples):
                d_out = int(rng.integers(config.d_out_range[0], config.d_out_range[1] + 1))
                d_in = max(1, round(ratio * d_out))
                seed = int(rng.integers(2**31))
                for act in config.activations:
                    rng_act = np.random.default_rng(seed)
                    feats = _features(layer, ACTIVATIONS[act], d_in, d_out, cfg=config, rng=rng_act)
                    values[act].append(numerical_rank(feats, config.rtol) / d_out)
            for act, v in values.items():
                out.append(
                    {
                        "layer": layer,
                        "activation": act,
                        "ratio": ratio,
                        "rank_ratio": float(np.mean(v)),
                        "std": float(np.std(v)),
                        "samples": config.samples,
                        "tolerance": "matrix_rank" if config.rtol is None else f"rtol={config.rtol:g}",
                        "dtype": config.dtype,
                    }
                )
    return out


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write :func:`rank_study` rows to a CSV file."""
    if not rows:
        raise ValueError("rows is empty: nothing to write")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """One panel per layer: rank ratio vs d_in / d_out, one line per activation (paper Fig. 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.6), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for act in dict.fromkeys(r["activation"] for r in rows):
            pts = [(r["ratio"], r["rank_ratio"]) for r in rows if r["layer"] == layer and r["activation"] == act]
            style = {"color": "black", "linestyle": "--"} if act == "linear" else {}
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=act, **style)
        ax.set(title=layer, xlabel="dimension ratio d_in / d_out", ylabel="rank ratio", ylim=(0, 1.05))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m freqjax.studies.rank_study", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--out", default="runs/rank_study", help="output directory (created)")
    p.add_argument("--layers", nargs="+", choices=LAYERS, help="subset of layers")
    p.add_argument("--activations", nargs="+", choices=list(ACTIVATIONS), help="subset of activations")
    p.add_argument("--samples", type=int, help="random networks per (layer, ratio)")
    p.add_argument(
        "--rtol",
        type=float,
        help="count singular values above RTOL x the largest instead of matrix_rank's default tolerance",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), help="precision of the layers and the rank")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    overrides = {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in vars(args).items()
        if k in ("layers", "activations", "samples", "rtol", "dtype", "seed") and v is not None
    }
    try:
        config = dataclasses.replace(PRESETS[args.preset], **overrides)
    except ValueError as err:
        p.error(str(err))
    os.makedirs(args.out, exist_ok=True)
    rows = rank_study(config)
    write_csv(rows, os.path.join(args.out, "rank_study.csv"))
    plot(rows, os.path.join(args.out, "rank_study.png"))
    for layer in config.layers:
        print(layer)
        for act in config.activations:
            vals = " ".join(f"{r['rank_ratio']:.3f}" for r in rows if r["layer"] == layer and r["activation"] == act)
            print(f"  {act:11s} {vals}")
    print(f"wrote {args.out}/rank_study.csv and rank_study.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
