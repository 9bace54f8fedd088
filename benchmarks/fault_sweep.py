"""Fault sweep: bad inputs and faults against freqjax's commands and API, as a new user meets them.

    python benchmarks/fault_sweep.py [--out runs/fault_sweep] [--only SUBSTRING]

Trains one tiny run (the synthetic quick config, 4 steps, checkpoints at 2 and 4), then tries each
case on a fresh copy of that workdir (or a fresh folder) and prints one row per case: what was
tried, the exit status, whether the error was one line (no traceback), whether any file that
existed before is gone or changed, and whether the outcome is the expected one. Writes the table
as ``fault_sweep.md`` and ``fault_sweep.json`` in ``--out``. Needs no data beyond what it makes.

Outcomes: ``error`` (non-zero exit or exception with a clear message), ``ok`` (the run goes on,
e.g. a damaged checkpoint moved aside and the previous one resumed). A case fails when it prints
a traceback, deletes or changes a pre-existing file it should not, or gives a silent wrong result.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config", "configs/cifar_quick.py:synthetic", "--config.image_size=16", "--config.batch_size=16",
    "--config.synthetic_size=128", "--config.eval_steps=1", "--config.progress_bar=False",
    "--config.eval_every_steps=1000", "--config.checkpoint_every_steps=2", "--config.num_train_steps=4",
]  # fmt: skip
RESUME = [*TINY, "--config.num_train_steps=6"]
DEMO = ["--config", "configs/dct_demo.py", "--config.num_images=2", "--config.image_size=32",
        "--config.batch_size=2", "--config.repeats=1"]  # fmt: skip


@dataclass
class Outcome:
    status: str  # 'error' or 'ok'
    message: str
    one_line: bool
    traceback: bool = False


@dataclass
class Case:
    name: str
    expect: str  # 'error' or 'ok'
    run: Callable[[Path], Outcome]
    must_say: str = ""  # a substring the message must contain (the clear error)
    workdir: bool = True  # work on a copy of the trained workdir
    changed_ok: tuple[str, ...] = field(default=())  # path prefixes a successful case may change


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def cli(*args: str, module: str = "freqjax.main", env: dict | None = None, timeout: int = 300) -> Outcome:
    out = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip
    err = [line for line in out.stderr.strip().splitlines() if line.strip()]
    # absl/orbax may log warnings; the user's error is the last line
    message = err[-1] if err else out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    traceback = "Traceback (most recent call last)" in out.stderr
    return Outcome("error" if out.returncode else "ok", message, one_line=not traceback, traceback=traceback)


def api(fn: Callable[[], object]) -> Outcome:
    try:
        fn()
    except (ValueError, TypeError, OSError) as err:
        return Outcome("error", f"{type(err).__name__}: {' '.join(str(err).split())}", one_line=True)
    except Exception as err:  # anything else is an unclear error
        return Outcome("error", f"{type(err).__name__}: {' '.join(str(err).split())}", one_line=False, traceback=True)
    return Outcome("ok", "", one_line=True)


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, options: str):
    """A tmpfs at ``mount`` for the block, or None where mounting is not allowed (needs root)."""
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=False).returncode:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def image_folder(root: Path, classes=("a", "b"), per_class=4, splits=("train", "test"), size=16) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(d / f"{i}.png")
    return root


def folder_run(root: Path, w: Path, *extra: str) -> Outcome:
    return cli(*TINY, f"--config.dataset=folder:{root}", "--config.num_classes=-1", *extra, "--workdir", str(w))


def damaged_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    mid = (data.find(b"\xff\xda") + data.rfind(b"\xff\xd9")) // 2
    data[mid : mid + 40] = b"\xff\xd0" * 20
    return bytes(data)


def cases() -> list[Case]:  # noqa: PLR0915 -- one table
    from freqjax import dct
    from freqjax.models import create_model
    from freqjax.train.checkpoint import is_intact

    c: list[Case] = []

    def add(name, expect, run, must_say="", *, workdir=True, changed_ok=()):
        c.append(Case(name, expect, run, must_say, workdir, changed_ok))

    # --- resuming a workdir with a changed flag (data-loss cases) --------------------------------
    for flag, field_name in [
        ("--config.model_options.width=32", "model_options.width"),
        ("--config.optimizer=adamw", "optimizer"),
        ("--config.batch_size=8", "batch_size"),
        ("--config.seed=1", "seed"),
        ("--config.synthetic_size=256", "synthetic_size"),
        ("--config.worker_count=1", "worker_count"),
        ("--config.image_size=32", "image_size"),
        ("--config.ema_decay=0.99", "ema_decay"),
    ]:
        add(f"resume with {flag}", "error", lambda w, f=flag: cli(*RESUME, f, "--workdir", str(w)), field_name)
    add("eval with --config.model_options.width=32", "error",
        lambda w: cli(*TINY, "--config.model_options.width=32", "--mode=eval", "--workdir", str(w)),
        "model_options.width")  # fmt: skip
    add("resume with a changed eval cadence and length", "ok",
        lambda w: cli(*RESUME, "--config.eval_steps=2", "--workdir", str(w)), changed_ok=("checkpoints/", "metrics",
        "tensorboard", "run_config.json", "run.lock"))  # fmt: skip
    add("resume with an allowed override (allow_config_change)", "ok",
        lambda w: cli(*RESUME, "--config.label_smoothing=0.1", "--config.allow_config_change=label_smoothing",
                      "--workdir", str(w)), changed_ok=("checkpoints/", "metrics", "tensorboard", "run_config.json",
                      "run.lock"))  # fmt: skip

    def second_run(w: Path) -> Outcome:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from freqjax.train.workdir import WorkdirLock; "
             "l = WorkdirLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(120)", str(w)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        holder.stdout.readline()
        try:
            return cli(*RESUME, "--workdir", str(w))
        finally:
            holder.kill()
            holder.wait()

    add("second run into a live workdir", "error", second_run, "is in use by pid", changed_ok=("run.lock",))

    def stray(w: Path) -> Outcome:
        (w / "checkpoints" / "99").mkdir()
        (w / "checkpoints" / "99" / "notes.txt").write_text("mine")
        return cli(*RESUME, "--workdir", str(w))

    add("stray folder checkpoints/99/", "error", stray, "has no freqjax_manifest.json")

    def truncated(w: Path) -> Outcome:
        files = [p for p in (w / "checkpoints" / "4").rglob("*") if p.is_file()]
        biggest = max(files, key=lambda p: p.stat().st_size)
        biggest.write_bytes(biggest.read_bytes()[:100])
        out = cli(*RESUME, "--workdir", str(w))
        if out.status == "ok" and not (w / "checkpoints_damaged" / "4").is_dir():
            return Outcome("error", "the damaged checkpoint was not kept", one_line=True)
        return out

    add("truncated newest checkpoint (moved aside, resume from 2)", "ok", truncated,
        changed_ok=("checkpoints/", "metrics", "tensorboard", "run_config.json", "run.lock"))  # fmt: skip
    add("eval of a workdir without checkpoints", "error",
        lambda w: cli(*TINY, "--mode=eval", "--workdir", str(w / "empty")), "no checkpoint")  # fmt: skip

    def sigint(w: Path) -> Outcome:
        proc = subprocess.Popen(
            [sys.executable, "-m", "freqjax.main", *TINY, "--config.num_train_steps=100000", "--workdir",
             str(w / "fresh")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for line in proc.stdout:
            if "starting at step" in line:
                break
        time.sleep(8)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        saved = "SIGINT: saved checkpoint" in out
        return Outcome("ok" if proc.returncode == 0 and saved else "error", (out + err).strip().splitlines()[-1],
                       one_line="Traceback" not in err, traceback="Traceback" in err)  # fmt: skip

    add("Ctrl-C (SIGINT) mid-run saves a checkpoint", "ok", sigint)

    # --- the workdir itself -------------------------------------------------------------------
    def workdir_file(w: Path) -> Outcome:
        (w / "afile").write_text("x")
        return cli(*TINY, "--workdir", str(w / "afile"))

    add("workdir is a file", "error", workdir_file, "is a file, not a directory")

    def checkpoints_file(w: Path) -> Outcome:
        (w / "new").mkdir()
        (w / "new" / "checkpoints").write_text("x")
        return cli(*TINY, "--workdir", str(w / "new"))

    add("WORKDIR/checkpoints is a file", "error", checkpoints_file, "keeps its checkpoints")

    def disk_full(w: Path) -> Outcome:
        with mounted_tmpfs(w / "small", "size=1200k") as mount:
            if mount is None:
                return Outcome("error", "skipped: mounting a small tmpfs needs root", one_line=True)
            out = cli(*TINY, "--config.num_train_steps=8", "--workdir", str(mount / "w"),
                      env={"FREQJAX_MIN_FREE_MB": "0"})  # fmt: skip
            saved = [p for p in (mount / "w" / "checkpoints").iterdir() if p.name.isdigit()]
            if not saved or not all(is_intact(p) for p in saved):
                return Outcome("ok", "no intact checkpoint left", one_line=False)
            return out

    add("disk full at a save (1.2 MB tmpfs)", "error", disk_full, "the disk is full")

    def read_only(w: Path) -> Outcome:
        with mounted_tmpfs(w / "ro", "ro,size=1m") as mount:
            if mount is None:
                return Outcome("error", "skipped: mounting a read-only tmpfs needs root", one_line=True)
            return cli(*TINY, "--workdir", str(mount))

    add("workdir on a read-only file system", "error", read_only, "is not writable")
    add("workdir that cannot be created (/proc)", "error", lambda w: cli(*TINY, "--workdir", "/proc/freqjax_run"),
        "cannot be created", workdir=False)  # fmt: skip

    # --- command lines and configs --------------------------------------------------------------
    bad_flags = [
        ("--config.nope=1", "unknown config field 'nope'"),
        ("--config.batchsize=3", "did you mean batch_size"),
        ("--config.model_options.width=-1", "option width must be a positive int"),
        ("--config.model_options.width=abc", "width"),
        ("--config.batch_size=abc", "invalid literal"),
        ("--config.num_train_steps=0", "num_train_steps"),
        ("--config.dataset=tfds:nope_dataset", "unknown tfds dataset"),
        ("--config.init_from=/no/such/run", "init_from"),
        ("--config.optimizer=adamm", "optimizer"),
        ("--config.allow_config_change=nope", "not a config field"),
        ("--mode=dct_demo", "mode must be one of"),
    ]
    for flag, say in bad_flags:
        add(f"main {flag}", "error", lambda w, f=flag: cli(*TINY, f, "--workdir", str(w / "new")), say, workdir=False)
    add("main --config configs/nope.py", "error", lambda w: cli("--config", "configs/nope.py", "--workdir", str(w)),
        "nope.py", workdir=False)  # fmt: skip
    add("main without --workdir", "error", lambda w: cli(*TINY), "--workdir is required", workdir=False)
    add("main without --config", "error", lambda w: cli("--workdir", str(w)), "--config is required", workdir=False)

    # --- data -------------------------------------------------------------------------------------
    def one_class(w: Path) -> Outcome:
        return folder_run(image_folder(w / "data", classes=("only",)), w / "run")

    add("folder dataset with one class", "error", one_class, "at least 2", workdir=False)

    def unknown_test_class(w: Path) -> Outcome:
        root = image_folder(w / "data")
        image_folder(root, classes=("zebra",), splits=("test",))
        return folder_run(root, w / "run")

    add("test/ split with a class train/ lacks", "error", unknown_test_class, "training split lacks", workdir=False)

    def zero_byte_class(w: Path) -> Outcome:
        root = image_folder(w / "data")
        (root / "train" / "empty").mkdir()
        for i in range(70):
            (root / "train" / "empty" / f"{i}.jpg").write_bytes(b"")
        return folder_run(root, w / "run")

    add("a class of 70 zero-byte files", "error", zero_byte_class, "unreadable", workdir=False)

    def broken_link_cache(w: Path) -> Outcome:
        root = image_folder(w / "data", per_class=8)
        (root / "train" / "a" / "zz.png").symlink_to(w / "gone.png")
        return folder_run(root, w / "run", "--config.decode_cache=True", "--config.num_train_steps=2")

    add("broken symlink with decode_cache=True (skipped)", "ok", broken_link_cache, workdir=False)
    add("folder dataset that does not exist", "error",
        lambda w: folder_run(w / "missing", w / "run"), "not an existing directory", workdir=False)  # fmt: skip

    # --- the DCT demo job ---------------------------------------------------------------------
    demo_bad = [
        ("--config.data=folder:/no/such/folder", "not an existing directory"),
        ("--config.data=skimage:nope", "nope"),
        ("--config.image_size=30", "multiple of 16"),
        ("--config.data=nonsense", "config.data must be"),
    ]
    for flag, say in demo_bad:
        add(f"dct_demo {flag}", "error", lambda w, f=flag: cli(*DEMO, f, "--workdir", str(w / "d")), say,
            workdir=False)  # fmt: skip

    def demo_unreadable(w: Path) -> Outcome:
        (w / "junk" / "x").mkdir(parents=True)
        for i in range(3):
            (w / "junk" / "x" / f"{i}.jpg").write_bytes(b"not a jpeg")
        return cli(*DEMO, f"--config.data=folder:{w / 'junk'}", "--workdir", str(w / "d"))

    add("dct_demo on a folder of unreadable files", "error", demo_unreadable, "readable", workdir=False)

    # --- compress CLI, interop ------------------------------------------------------------------
    def compress_with(w: Path, suffix: str, content: bytes) -> Outcome:
        path = w / f"weights{suffix}"
        path.write_bytes(content)
        return cli("--model", "resnet50", "--weights", str(path), module="freqjax.compress")

    add("compress --weights text.pth", "error", lambda w: compress_with(w, ".pth", b"hello"), "torch.load",
        workdir=False)  # fmt: skip
    add("compress --weights non-zip .npz", "error", lambda w: compress_with(w, ".npz", b"hello"), ".npz",
        workdir=False)  # fmt: skip
    add("compress --model nope", "error", lambda w: cli("--model", "nope", module="freqjax.compress"), "nope",
        workdir=False)  # fmt: skip
    add("compress --g 0", "error", lambda w: cli("--model", "resnet50", "--g", "0", module="freqjax.compress"),
        "positive", workdir=False)  # fmt: skip

    def from_torch_text(w: Path) -> Outcome:
        from freqjax.interop.torch_weights import from_torch

        return api(lambda: from_torch({"fc.weight": "abc"}, "resnet18"))

    add("from_torch with a non-tensor value", "error", from_torch_text, "must be a torch tensor", workdir=False)

    # --- API inputs -------------------------------------------------------------------------------
    unit = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    add("rgb_to_dct on 0..1 floats", "error", lambda w: api(lambda: dct.rgb_to_dct(unit)), "0..1 scale",
        workdir=False)  # fmt: skip
    add("dct_from_jpeg on a JPEG damaged mid-scan", "error", lambda w: api(lambda: dct.dct_from_jpeg(damaged_jpeg())),
        "damaged JPEG", workdir=False)  # fmt: skip

    def png_as_jpeg(w: Path) -> Outcome:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "PNG")
        return api(lambda: dct.dct_from_jpeg(buf.getvalue()))

    add("dct_from_jpeg on a PNG", "error", png_as_jpeg, "not a JPEG", workdir=False)
    add("rgb_to_dct on 30x30 images", "error", lambda w: api(lambda: dct.rgb_to_dct(np.zeros((30, 30, 3)))),
        "multiples of 16", workdir=False)  # fmt: skip
    for value, say in ((0, "positive int"), ("abc", "must be an int"), (True, "must be an int")):
        add(f"create_model('cifar_resnet8', width={value!r})", "error",
            lambda w, v=value: api(lambda: create_model("cifar_resnet8", width=v)), say, workdir=False)  # fmt: skip
    add("create_model('nope')", "error", lambda w: api(lambda: create_model("nope")), "nope", workdir=False)

    def sixteen_bit(w: Path) -> Outcome:
        from freqjax.data.sources import make_source

        root = image_folder(w / "data")
        grey = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 256).astype(np.uint16)
        Image.fromarray(grey).save(root / "train" / "a" / "deep.png")
        source = make_source(f"folder:{root}", True)
        i = next(k for k, f in enumerate(source.files) if f.endswith("deep.png"))
        image = source[i]["image"]
        if image.min() == 255:
            return Outcome("error", "16-bit PNG decoded all white (silent wrong result)", one_line=False)
        return Outcome("ok", f"decoded, range {image.min()}..{image.max()}", one_line=True)

    add("16-bit greyscale PNG in a folder dataset", "ok", sixteen_bit, workdir=False)
    add("msnet_sweep on a non-MSNet config", "error",
        lambda w: cli("--config", "configs/cifar_quick.py:synthetic", "--workdir", str(w / "s"),
                      module="freqjax.studies.msnet_sweep"), "must be an MSNet", workdir=False)  # fmt: skip
    add("rank_study --rtol 2", "error", lambda w: cli("--rtol", "2", module="freqjax.studies.rank_study"), "rtol",
        workdir=False)  # fmt: skip
    add("bench latency --models nope", "error", lambda w: cli("latency", "--models", "nope", module="freqjax.bench"),
        "nope", workdir=False)  # fmt: skip
    return c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/fault_sweep")
    p.add_argument("--only", default="", help="run the cases whose name contains this")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="fault_sweep_"))
    trained = base / "trained"
    start = time.perf_counter()
    first = cli(*TINY, "--workdir", str(trained))
    assert first.status == "ok", first.message
    print(f"trained the base run in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for case in cases():
        if args.only not in case.name:
            continue
        w = base / f"case{len(rows)}"
        if case.workdir:
            shutil.copytree(trained, w)
        else:
            w.mkdir()
        before = snapshot(w)
        t = time.perf_counter()
        outcome = case.run(w)
        after = snapshot(w)
        lost = sorted(
            k for k, v in before.items() if after.get(k) != v and not k.startswith(case.changed_ok or ("\0",))
        )
        clear = outcome.one_line and not outcome.traceback and case.must_say in outcome.message
        passed = outcome.status == case.expect and not lost and (clear or case.expect == "ok")
        rows.append(dict(case=case.name, expected=case.expect, got=outcome.status, one_line=outcome.one_line,
                         traceback=outcome.traceback, files_lost_or_changed=len(lost), message=outcome.message[:160],
                         passed=passed, seconds=round(time.perf_counter() - t, 1)))  # fmt: skip
        mark = "PASS" if passed else "FAIL"
        print(f"{mark} {case.name}: {outcome.status}, lost {len(lost)}: {outcome.message[:110]}", flush=True)
    shutil.rmtree(base, ignore_errors=True)
    lines = ["| case | expected | got | one line | files lost | pass | message |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        msg = r["message"].replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['expected']} | {r['got']} | {'yes' if r['one_line'] else 'NO'} | "
                     f"{r['files_lost_or_changed']} | {'yes' if r['passed'] else 'NO'} | {msg} |")  # fmt: skip
    summary = (
        f"{len(rows)} cases, {sum(r['passed'] for r in rows)} as expected; errors with a traceback: "
        f"{sum(r['traceback'] for r in rows)}; cases that lost or changed files: "
        f"{sum(r['files_lost_or_changed'] > 0 for r in rows)}; total {time.perf_counter() - start:.0f} s"
    )
    (out_dir / "fault_sweep.md").write_text("\n".join(lines) + "\n\n" + summary + "\n")
    (out_dir / "fault_sweep.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    print(summary)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
