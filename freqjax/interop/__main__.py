"""``python -m freqjax.interop export``: freqjax weights -> a PyTorch ``state_dict`` file.

Example::

    python -m freqjax.interop export --weights runs/mbv2 --out mbv2.pth --layout torchvision
    python -m freqjax.interop export --weights r50_g4.npz --model resnet50 --out r50.safetensors

``--weights`` is anything ``config.init_from`` takes (a training workdir or checkpoint, a
compressed ``.npz``, a PyTorch state dict in another layout). The model and its options come from
the workdir's ``run_config.json`` when ``--model`` is not given. ``--out`` (``.pth``, ``.pt`` or
``.safetensors``) is written whole or not at all and never overwrites a file. The result loads
with ``load_state_dict(..., strict=True)`` into :func:`freqjax.interop.torch_models.timm_model`
(``--layout`` default) or torchvision's model of the same name (``--layout torchvision``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["export", "main"]


def _run_config(weights: str) -> dict | None:
    """The run_config.json of the workdir that ``weights`` (workdir, checkpoints/, checkpoints/<step>) is in."""
    p = Path(weights).absolute()
    workdir = p.parent if p.name == "checkpoints" else p.parent.parent if p.parent.name == "checkpoints" else p
    path = workdir / "run_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def export(weights: str, out: str, *, model: str | None = None, layout: str | None = None) -> int:
    """Write ``weights`` (any ``init_from`` source) as a PyTorch state dict at ``out``; returns its bytes.

    Raises:
        ValueError: no model name (neither ``model`` nor a run_config.json), an existing ``out``,
            a bad suffix or layout, or weights that do not fit the model.
    """
    from freqjax.interop.layouts import layouts
    from freqjax.interop.torch_weights import STATE_DICT_SUFFIXES, save_state_dict
    from freqjax.models import model_info
    from freqjax.train.init_from import read_weights

    if os.path.exists(out):
        raise ValueError(f"--out {out!r} exists; choose a new file name (nothing is overwritten)")
    if os.path.splitext(out)[1] not in STATE_DICT_SUFFIXES:
        raise ValueError(f"--out {out!r} must end in one of {list(STATE_DICT_SUFFIXES)}")
    options: dict = {}
    saved = _run_config(weights) if os.path.isdir(weights) else None
    if model is None:
        if saved is None:
            raise ValueError(f"--model is needed: --weights {weights!r} is not a workdir with a run_config.json")
        model = saved["model"]
    model_info(model)
    if saved is not None and saved.get("model") == model:
        options = {k: v for k, v in saved.get("model_options", {}).items() if k in dict(model_info(model).options)}
    if layout is not None and layout not in layouts(model):
        raise ValueError(f"--layout must be one of {list(layouts(model))} for model {model!r}, got {layout!r}")
    variables = read_weights(weights, model, options, arg="--weights")
    return save_state_dict(variables, model, out, layout=layout, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freqjax.interop", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="freqjax weights -> a PyTorch state_dict file")
    e.add_argument("--weights", required=True, help="workdir, checkpoint, compressed .npz or state dict")
    e.add_argument("--out", required=True, help="the .pth / .pt / .safetensors file to write")
    e.add_argument("--model", default=None, help="registered model name (default: the workdir's run_config.json)")
    e.add_argument("--layout", default=None, help="PyTorch names: timm (default), torchvision or official")
    args = parser.parse_args(argv)
    try:
        size = export(args.weights, args.out, model=args.model, layout=args.layout)
    except (ValueError, TypeError, OSError) as err:
        if os.environ.get("FREQJAX_DEBUG") == "1":
            raise
        print(f"freqjax.interop: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
