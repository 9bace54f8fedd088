"""What freqjax does on this host's accelerator: backend, logits against the CPU, train-step and DCT speed.

    python launch/device_check.py --out runs/device_check.json   # an accelerator host, <= 8 minutes
    python launch/device_check.py --smoke                        # the CPU, tiny sizes (CI)

Needs jax (with the host's CUDA or TPU plugin), flax, optax, ml_collections and numpy; torch and
timm are optional (the PyTorch CUDA column). Method and tolerances: launch/README.md. Prints one
table, writes JSON with ``--out``, exits 1 when a logits check is outside its tolerance and 2 when
something it needs is missing or an argument is bad.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("freqjax") is None:  # run from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

LOGIT_MODELS = ("efun", "efficientnet_b0", "resnet50", "rexnet_100")
TRAIN_MODELS = ("efun_s_plus", "efficientnet_b0", "resnet50")
# --smoke: one DCT and one RGB network's logits and the quick CIFAR ResNet's step (CPU compile time).
SMOKE_LOGIT_MODELS = ("efun", "resnet50")
SMOKE_TRAIN_MODELS = ("cifar_resnet8",)
# What this check imports; freqjax's other dependencies are only reported.
NEEDED = ("jax", "flax", "optax", "ml_collections", "numpy")
# max |logit - CPU logit| / max |CPU logit|. GPUs run float32 convolutions in TF32 by default (10-bit
# mantissa); bfloat16 keeps 8 bits. On a CPU host float32 is compared with float32.
TOLERANCE = {"float32": 2e-2, "bfloat16": 1e-1, "float32_cpu": 1e-4}
SIZES = {
    "full": dict(size=224, logit_batch=8, train_batch=256, train_steps=10, dct_size=224, dct_batch=1024),
    "smoke": dict(size=32, logit_batch=2, train_batch=8, train_steps=2, dct_size=32, dct_batch=16),
}


def dependency_report() -> dict:
    """Installed versions of freqjax's declared dependencies (metadata or pyproject.toml) and torch/timm."""
    try:
        requires = importlib.metadata.requires("freqjax") or []
    except importlib.metadata.PackageNotFoundError:
        import tomllib

        requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    versions = {}
    for name in [*names, "torch", "timm"]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    missing = [n for n in names if versions[n] is None]
    return {"versions": versions, "missing": missing}


def _median_rate(fn, n_items: int, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_items / statistics.median(times)


def _images(batch: int, size: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def check_logits(name: str, size: int, batch: int) -> dict:
    """Logits on the default device (float32, bfloat16) against the CPU with XLA convolutions (float32).

    Random He-normal weights (:func:`freqjax.models.random_variables`) and BatchNorm at its initial
    statistics keep every layer near unit scale; eval mode, so tiny smoke batches do not matter.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from freqjax.models import abstract_variables, create_model, model_info, random_variables
    from freqjax.ops import conv_impl
    from freqjax.train.steps import to_model_input

    kind = model_info(name).input_kind
    images = _images(batch, size)

    def logits(dtype, device, impl):
        model = create_model(name, num_classes=1000, drop_rate=0.0, dtype=dtype)
        x = jax.device_put(images, device)
        shape = jax.eval_shape(lambda im: to_model_input(im, kind), x).shape
        variables = jax.device_put(random_variables(abstract_variables(model, shape)), device)

        def forward(v, im):
            out = model.apply(v, to_model_input(im, kind, dtype), train=False)
            return out.astype(jnp.float32)

        with conv_impl(impl):
            return np.asarray(jax.jit(forward)(variables, x))

    cpu = jax.devices("cpu")[0]
    reference = logits(jnp.float32, cpu, "xla")
    on_cpu = jax.default_backend() == "cpu"
    row = {"model": name, "size": size, "batch": batch, "reference": "cpu float32, conv_impl('xla')"}
    scale = float(np.abs(reference).max())
    ok = True
    for dtype in ("float32", "bfloat16"):
        out = logits(jnp.dtype(dtype), jax.devices()[0], None)
        rel = float(np.abs(out - reference).max()) / scale
        tol = TOLERANCE["float32_cpu" if on_cpu and dtype == "float32" else dtype]
        row[f"{dtype}_rel_error"], row[f"{dtype}_tolerance"] = rel, tol
        row[f"{dtype}_top1_agree"] = float(np.mean(out.argmax(-1) == reference.argmax(-1)))
        ok &= bool(np.isfinite(rel) and rel <= tol)
    row["ok"] = ok
    return row


def train_step_rate(name: str, size: int, batch: int, steps: int, dtype_name: str) -> float:
    """Images/s of freqjax's training step (uint8 images in, SGD momentum) over every local device."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from freqjax.models import create_model, model_info
    from freqjax.train import parallel
    from freqjax.train import steps as train_steps

    dtype = jnp.dtype(dtype_name)
    kind = model_info(name).input_kind
    model = create_model(name, num_classes=1000, drop_rate=0.0, dtype=dtype)
    schedule = optax.constant_schedule(0.01)
    tx = optax.sgd(schedule, momentum=0.9)
    mesh = parallel.make_mesh()
    rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
    sample = train_steps.to_model_input(jnp.zeros((1, size, size, 3), jnp.uint8), kind, dtype)
    init = functools.partial(train_steps.init_state, model, tx, seed=0, ema=False)
    state = jax.jit(init, out_shardings=rep)(sample)
    step = jax.jit(
        functools.partial(
            train_steps.train_step, model=model, tx=tx, schedule=schedule, input_kind=kind, seed=0, dtype=dtype
        ),
        in_shardings=(rep, data),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    labels = np.arange(batch, dtype=np.int32) % 1000
    host = {"image": _images(batch, size), "label": labels, "skipped": np.zeros(batch, np.int32)}
    batch_arrays = jax.device_put(host, data)
    holder = [state]

    def one():
        holder[0], metrics = step(holder[0], batch_arrays)
        jax.block_until_ready(metrics["loss"])

    return _median_rate(one, batch, steps)


def torch_train_rate(name: str, size: int, batch: int, steps: int, amp: bool) -> float | None:
    """Images/s of the timm counterpart on CUDA (channels-last; bfloat16 autocast if ``amp``), None without CUDA."""
    import torch

    from freqjax.interop.torch_models import has_counterpart, timm_model

    if not torch.cuda.is_available() or not has_counterpart(name):
        return None
    model = timm_model(name, num_classes=1000).cuda().train().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.arange(batch, device="cuda") % 1000
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def one():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()

    return _median_rate(one, batch, steps)


def dct_rate(size: int, batch: int, steps: int) -> float:
    import jax

    from freqjax import dct

    x = jax.device_put(_images(batch, size))
    fn = jax.jit(dct.rgb_to_dct)
    return _median_rate(lambda: jax.block_until_ready(fn(x)), batch, steps)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2e}" if v < 0.1 else f"{v:,.1f}"
    return str(v)


def print_table(report: dict) -> None:
    """One table: a row per environment fact, logits check, train-step model and the DCT."""
    env = report["environment"]
    rows = [("check", "item", "float32", "bfloat16", "torch f32", "torch AMP", "status")]
    rows.append(("env", "backend", env["backend"], f"{env['device_count']} x {env['device_kind']}", "", "", ""))
    rows.append(("env", "jax / jaxlib", env["jax"], env["jaxlib"], env["torch"] or "-", env["timm"] or "-", ""))
    missing = ", ".join(env["missing_dependencies"]) or "none"
    rows.append(
        ("env", "missing freqjax deps", missing, "", "", "", "(training needs them)" if missing != "none" else "")
    )
    for r in report["logits"]:
        status = "ok" if r["ok"] else "FAIL"
        tol = f"tol {r['float32_tolerance']:.0e}/{r['bfloat16_tolerance']:.0e}"
        rows.append(
            (
                "logits",
                f"{r['model']} rel err",
                _fmt(r["float32_rel_error"]),
                _fmt(r["bfloat16_rel_error"]),
                "",
                "",
                f"{status} ({tol})",
            )
        )
    for r in report["train_step"]:
        item = f"{r['model']} b{r['batch']} {r['size']}px img/s"
        cells = [_fmt(r.get(k)) for k in ("float32", "bfloat16", "torch_float32", "torch_amp")]
        rows.append(("train", item, *cells, r.get("note", "")))
    d = report["dct"]
    rows.append(("dct", f"rgb_to_dct b{d['batch']} {d['size']}px img/s", _fmt(d["images_per_s"]), "", "", "", ""))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="32 px, tiny batches, fewer models: a CPU run of about a minute"
    )
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    parser.add_argument("--logit-models", default=None, help=f"comma-separated (default {','.join(LOGIT_MODELS)})")
    parser.add_argument("--train-models", default=None, help=f"comma-separated (default {','.join(TRAIN_MODELS)})")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch CUDA column")
    return parser.parse_args(argv)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deps = dependency_report()
    missing_needed = [n for n in NEEDED if not _importable(n)]
    if missing_needed:
        print(
            f"device_check.py: needs {', '.join(missing_needed)} (pip install {' '.join(missing_needed)}); "
            f"freqjax dependencies not installed: {', '.join(deps['missing']) or 'none'}",
            file=sys.stderr,
        )
        return 2
    import jax

    from freqjax.models import list_models

    sizes = SIZES["smoke" if args.smoke else "full"]
    known = set(list_models())
    logit_models = SMOKE_LOGIT_MODELS if args.smoke else LOGIT_MODELS
    train_models = SMOKE_TRAIN_MODELS if args.smoke else TRAIN_MODELS
    logit_models = tuple(args.logit_models.split(",")) if args.logit_models else logit_models
    train_models = tuple(args.train_models.split(",")) if args.train_models else train_models
    for flag, names in (("--logit-models", logit_models), ("--train-models", train_models)):
        unknown = [n for n in names if n not in known]
        if unknown:
            print(
                f"device_check.py: {flag} has unknown models {unknown}; valid: names of freqjax.models.list_models()",
                file=sys.stderr,
            )
            return 2
    devices = jax.devices()
    env = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": deps["versions"].get("jaxlib"),
        "torch": deps["versions"]["torch"],
        "timm": deps["versions"]["timm"],
        "backend": jax.default_backend(),
        "device_count": len(devices),
        "device_kind": devices[0].device_kind,
        "process_count": jax.process_count(),
        "missing_dependencies": deps["missing"],
        "smoke": args.smoke,
    }
    report: dict = {"environment": env, "sizes": sizes, "logits": [], "train_step": []}
    start = time.perf_counter()
    for name in logit_models:
        report["logits"].append(check_logits(name, sizes["size"], sizes["logit_batch"]))
    torch_ok = not args.no_torch and deps["versions"]["torch"] and deps["versions"]["timm"]
    for name in train_models:
        row = {"model": name, "batch": sizes["train_batch"], "size": sizes["size"]}
        for dtype in ("float32", "bfloat16"):
            row[dtype] = train_step_rate(name, sizes["size"], sizes["train_batch"], sizes["train_steps"], dtype)
        if torch_ok:
            for key, amp in (("torch_float32", False), ("torch_amp", True)):
                row[key] = torch_train_rate(name, sizes["size"], sizes["train_batch"], sizes["train_steps"], amp)
            if row["torch_float32"] is None:
                row["note"] = "torch: no CUDA"
        else:
            row["note"] = "torch/timm not installed" if not args.no_torch else "--no-torch"
        report["train_step"].append(row)
    rate = dct_rate(sizes["dct_size"], sizes["dct_batch"], sizes["train_steps"] + 3)
    report["dct"] = {"size": sizes["dct_size"], "batch": sizes["dct_batch"], "images_per_s": rate}
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(r["ok"] for r in report["logits"])
    print_table(report)
    print(f"{'all checks passed' if report['ok'] else 'A CHECK FAILED'} in {report['seconds']} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
