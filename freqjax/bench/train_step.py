"""Training-step throughput: freqjax's CPU path, XLA's own convolutions and PyTorch, side by side.

:func:`bench_train_step` times one model's full SGD training step (forward in train mode with
batch statistics, softmax cross-entropy, backward, momentum update) along several paths, in one
process, on the same random batch and the same CPU threads:

- ``freqjax``: the default path (:mod:`freqjax.ops.backend`: on an AVX-512 CPU the native conv
  kernels of :mod:`freqjax.ops.native`, elsewhere the :mod:`freqjax.ops.conv` formulations);
- ``freqjax_native``: the same model traced under ``conv_impl('native')`` (the native kernels
  wherever they apply, also on CPUs where they are not the default);
- ``freqjax_cpu``: the same model traced under ``conv_impl('cpu')``: the XLA-op formulations
  only, no native kernels (optional, to see what the kernels add);
- ``freqjax_xla``: the same model traced under ``conv_impl('xla')``, i.e. XLA's own
  convolutions everywhere (grouped conv for depthwise, conv for 1x1);
- ``torch``: the :func:`freqjax.interop.torch_models.timm_model` counterpart in train mode, channels-last
  (PyTorch's fastest CPU layout), ``torch.optim.SGD`` with momentum.

Figures are warm medians (after compilation and warm-up steps) in images per second.
``python -m freqjax.bench train-step`` is the CLI. Process-wide settings matter on CPU: the
CLI runs with :data:`freqjax.runtime.MALLOC_TUNABLES` (``FREQJAX_MALLOC_TUNING=0`` opts out,
which gives plain JAX's allocator behaviour) and reports which it ran with.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence

import numpy as np

from freqjax.bench.timing import time_calls_interleaved

__all__ = [
    "DEFAULT_PATHS",
    "PATHS",
    "bench_train_step",
    "default_batch",
    "default_size",
    "input_shape",
    "make_freqjax_step",
    "random_batch",
    "run_train_step",
]

PATHS = ("freqjax", "freqjax_native", "freqjax_cpu", "freqjax_xla", "torch")
DEFAULT_PATHS = ("freqjax", "freqjax_xla", "torch")
_PATH_IMPL = {"freqjax": None, "freqjax_native": "native", "freqjax_cpu": "cpu", "freqjax_xla": "xla"}
NUM_CLASSES = 10


def default_size(name: str) -> int:
    """Image side for the benchmark: the model's own if <= 64 (CIFAR), 112 for DCT models, else 64."""
    from freqjax.models import model_info

    info = model_info(name)
    if info.resolution <= 64:
        return info.resolution
    return 112 if info.input_kind == "dct" else 64


def default_batch(name: str) -> int:
    """128 for 32-pixel models (the quick CIFAR config's batch), 64 otherwise."""
    return 128 if default_size(name) <= 32 else 64


def input_shape(name: str, size: int) -> tuple[int, int, int]:
    from freqjax.models import model_info

    info = model_info(name)
    if info.input_kind == "dct":
        if size % 8:
            raise ValueError(f"size for DCT model {name!r} must be a multiple of 8 pixels, got {size}")
        return (size // 8, size // 8, info.input_shape[-1])
    return (size, size, info.input_shape[-1])


def random_batch(
    name: str, batch: int | None = None, size: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A standard-normal float32 input batch for model ``name`` (``batch`` x its input at ``size``;
    defaults :func:`default_batch`, :func:`default_size`) and cyclic labels of :data:`NUM_CLASSES`."""
    batch = batch or default_batch(name)
    shape = input_shape(name, size or default_size(name))
    x = np.random.default_rng(seed).standard_normal((batch, *shape), dtype=np.float32)
    return x, np.arange(batch, dtype=np.int32) % NUM_CLASSES


def make_freqjax_step(name: str, x: np.ndarray, y: np.ndarray, *, impl: str | None = None) -> Callable[[], None]:
    """A compiled SGD-momentum train step of model ``name`` on the batch ``(x, y)`` under conv
    implementation ``impl``, as a function that runs one step (updating its own state) and blocks."""
    import jax
    import jax.numpy as jnp
    import optax

    from freqjax.models import create_model
    from freqjax.ops import conv_impl

    model = create_model(name, num_classes=NUM_CLASSES, drop_rate=0.0)
    tx = optax.sgd(0.01, momentum=0.9)

    def step(params, batch_stats, opt_state, xb, yb):
        def loss_fn(p):
            logits, updates = model.apply(
                {"params": p, "batch_stats": batch_stats}, xb, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), updates["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    with conv_impl(impl):
        variables = jax.jit(lambda xb: model.init(jax.random.key(0), xb, train=False))(xj)
        state = [variables["params"], variables.get("batch_stats", {}), None]
        state[2] = tx.init(state[0])
        compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state, xj, yj).compile()

    def one_step():
        state[0], state[1], state[2], loss = compiled(*state, xj, yj)
        jax.block_until_ready(loss)

    return one_step


def _make_torch_step(name: str, x: np.ndarray, y: np.ndarray, *, threads: int) -> Callable[[], None]:
    import torch

    from freqjax.interop.torch_models import timm_model

    torch.set_num_threads(threads)
    model = timm_model(name, num_classes=NUM_CLASSES).train().to(memory_format=torch.channels_last)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(memory_format=torch.channels_last)
    yt = torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def one_step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()

    return one_step


def bench_train_step(
    name: str,
    batch: int | None = None,
    size: int | None = None,
    *,
    paths: Sequence[str] = DEFAULT_PATHS,
    repeats: int = 5,
    warmup: int = 8,
    threads: int | None = None,
    seed: int = 0,
) -> dict:
    """Train-step images/s of model ``name`` along ``paths`` (a subset of :data:`PATHS`): the
    median over ``repeats`` steps of each path, taken one step of each path in turn
    (:func:`freqjax.bench.timing.time_calls_interleaved`) after ``warmup`` steps of each.

    Returns ``{model, batch, size, <path>_images_per_s, <path>_ms_per_step, ...}`` plus
    ``speedup_vs_xla`` (freqjax / freqjax_xla) and ``ratio_vs_torch`` (freqjax / torch, > 1 when
    freqjax is faster) where both were timed, and ``torch_note`` if torch was asked for but is
    not installed. Raises ValueError for an unknown model, path or a bad size.
    """
    from freqjax.bench.timing import available_cpus, torch_missing

    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise ValueError(f"paths must be a non-empty subset of {PATHS}, got {list(paths)}")
    batch = batch or default_batch(name)
    size = size or default_size(name)
    threads = threads or available_cpus()
    x, y = random_batch(name, batch, size, seed)
    result: dict = {"model": name, "batch": batch, "size": size, "input_shape": list(x.shape[1:]), "threads": threads}
    steps = {}
    for path in paths:
        if path == "torch":
            note = torch_missing()
            if note:
                result["torch_note"] = note
                continue
            steps[path] = _make_torch_step(name, x, y, threads=threads)
        else:
            steps[path] = make_freqjax_step(name, x, y, impl=_PATH_IMPL[path])
    # One step of each path in turn, so that all of them meet the same moments of a noisy machine.
    for path, times in time_calls_interleaved(steps, repeats, warmup).items():
        median = statistics.median(times)
        result[f"{path}_ms_per_step"] = round(1e3 * median, 1)
        result[f"{path}_images_per_s"] = round(batch / median, 1)
    ours = result.get("freqjax_images_per_s")
    if ours and result.get("freqjax_xla_images_per_s"):
        result["speedup_vs_xla"] = round(ours / result["freqjax_xla_images_per_s"], 2)
    if ours and result.get("torch_images_per_s"):
        result["ratio_vs_torch"] = round(ours / result["torch_images_per_s"], 2)
    return result


_HEADERS = {
    "freqjax": "freqjax",
    "freqjax_native": "freqjax, native kernels",
    "freqjax_cpu": "freqjax, no native kernels",
    "freqjax_xla": "freqjax, XLA convs",
    "torch": "PyTorch",
}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def run_train_step(
    models: Sequence[str],
    batch: int | None = None,
    size: int | None = None,
    *,
    paths: Sequence[str] = DEFAULT_PATHS,
    repeats: int = 5,
    warmup: int = 8,
    threads: int | None = None,
    as_json: bool = False,
) -> list[dict]:
    """Run :func:`bench_train_step` for each model and print a table (or JSON lines)."""
    import json

    from freqjax.bench.timing import malloc_note

    if not as_json:
        tunables = os.environ.get("GLIBC_TUNABLES") or "(unset: glibc defaults)"
        print(
            f"train step (SGD momentum, batch statistics, float32), images/s, median of {repeats} steps "
            "per path, one step of each path in turn"
        )
        print(f"GLIBC_TUNABLES={tunables}")
        note = malloc_note()
        if note:
            print(f"note: {note}")
        shown = [p for p in PATHS if p in paths]
        headers = " | ".join(_HEADERS[p] for p in shown)
        print(f"| model | batch | size | {headers} | freqjax / XLA | freqjax / PyTorch |")
        print("|---" * (len(shown) + 5) + "|")
    results = []
    for name in models:
        r = bench_train_step(name, batch, size, paths=paths, repeats=repeats, warmup=warmup, threads=threads)
        results.append(r)
        if as_json:
            print(json.dumps(r), flush=True)
            continue
        cells = [_fmt(r.get(f"{p}_images_per_s")) for p in PATHS if p in paths]
        speed, ratio = r.get("speedup_vs_xla"), r.get("ratio_vs_torch")
        print(
            f"| {name} | {r['batch']} | {r['size']} | {' | '.join(cells)} | "
            f"{'-' if speed is None else f'{speed:.2f}x'} | {'-' if ratio is None else f'{ratio:.2f}x'} |",
            flush=True,
        )
        if "torch_note" in r:
            print(f"  ({r['torch_note']})")
    return results
