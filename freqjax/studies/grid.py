"""Grid runner: one training config repeated over config values and seeds, aggregated over seeds.

    python -m freqjax.studies.grid --config configs/xsepconv.py:cifar10 \\
        --set model=mobilenetv3_small_050_xsep,mobilenetv3_small_100_xsep --seeds 5 \\
        --out runs/grid_xsep [--processes N] [--config.field=value ...]

Each ``--set FIELD=V1,V2,...`` names any config field (``model_options.form``, ``learning_rate``,
``augment``, ...); several form their product, and ``--seeds N`` adds ``seed`` = 0..N-1 innermost
(XSepConv's tables are 5 seeds x 4 widths x variants). ``--config.field=value`` overrides apply
to every cell. Values are split on commas outside brackets (``--set dct_keep=(6,1,1),(64,64,64)``)
and parsed as ``--config.field=value`` is, by the field's type.

Each cell is a ``python -m freqjax.main`` training run in its own workdir ``OUT/<cell>/`` (its log
in ``OUT/<cell>/grid_log.txt``). ``--processes N`` runs N cells at once, each its own process
(default 1: one after another); ``--processes 0`` runs them one after another inside this process
(no interpreter start per cell; one cell's crash stops the grid).

**Resuming.** Rerun the same command: a cell is finished when ``OUT/<cell>/cell_result.json``
exists, which is written (atomically) only after its run reached its last step and was evaluated;
finished cells are never rerun. An unfinished cell restarts its run, which resumes from its own
newest checkpoint (:mod:`freqjax.train.loop`), so a grid killed at any moment loses at most the
steps since each running cell's last checkpoint. ``OUT/grid.json`` records the grid; rerunning
another grid into the same OUT is refused.

**Results.** ``OUT/grid.md`` and ``OUT/grid.csv``: per setting (the cell without its seed), the
number of seeds and mean +- sample standard deviation of the final evaluation top-1, top-5 and
loss (and the EMA weights' top-1 when the recipe keeps EMA), the final training loss and the
cells' wall time; ``OUT/cells.csv`` has every cell. They are rewritten after every finished cell.

Bad input (an unknown field, a value that does not parse or that the config rejects, a malformed
``--set``) is one line naming it, before anything is compiled or written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import dataclasses
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Cell", "GridError", "aggregate", "main", "parse_set", "plan_grid", "split_values"]

RESULT_FILE = "cell_result.json"
LOG_FILE = "grid_log.txt"
_TOTAL = re.compile(r"(?:starting|resumed) at step \d+ of (\d+)")
_METRICS = (("eval", "top1"), ("eval", "top5"), ("eval", "loss"), ("eval_ema", "top1"), ("train", "loss"))


class GridError(ValueError):
    """A bad grid command line: the message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid: its directory name, its grid values and the ``--config.x=y`` overrides it runs with."""

    name: str
    values: tuple[tuple[str, str], ...]
    overrides: tuple[str, ...]

    @property
    def setting(self) -> tuple[tuple[str, str], ...]:
        """The grid values without the seed (the cells averaged together)."""
        return tuple((k, v) for k, v in self.values if k != "seed")


def split_values(text: str) -> list[str]:
    """Split ``text`` on commas outside (), [] and {} (``'(6,1,1),(64,64,64)'`` -> two values)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [v.strip() for v in out]


def parse_set(arg: str) -> tuple[str, list[str]]:
    """``'FIELD=V1,V2'`` -> (FIELD, [V1, V2]); GridError for a malformed one."""
    field, sep, values = arg.partition("=")
    field = field.strip().removeprefix("config.")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", field):
        raise GridError(f"--set {arg!r}: expected FIELD=VALUE1,VALUE2,... with a config field name, e.g. seed=0,1,2")
    parts = split_values(values)
    if any(not v for v in parts):
        raise GridError(f"--set {arg!r}: an empty value; give FIELD=VALUE1,VALUE2,... without empty entries")
    if len(set(parts)) != len(parts):
        raise GridError(f"--set {arg!r}: a value appears twice")
    return field, parts


def _cell_name(values: tuple[tuple[str, str], ...]) -> str:
    # directory-safe: field=value joined by '__'; other characters become '_'
    return "__".join(re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{k}={v}") for k, v in values)


def plan_grid(sets: list[tuple[str, list[str]]], seeds: int | None) -> list[Cell]:
    """The cells of the product of ``sets`` (in order) with ``seed`` = 0..seeds-1 innermost."""
    fields = [f for f, _ in sets]
    if len(set(fields)) != len(fields):
        raise GridError(f"--set names a field twice: {fields}")
    if seeds is not None:
        if "seed" in fields:
            raise GridError("--seeds and --set seed=... both set the seed; use one")
        sets = [*sets, ("seed", [str(s) for s in range(seeds)])]
    if not sets:
        raise GridError("nothing to run: give at least one --set FIELD=V1,V2 or --seeds N")
    cells = []
    for combo in itertools.product(*(values for _, values in sets)):
        values = tuple(zip((f for f, _ in sets), combo, strict=True))
        overrides = tuple(f"--config.{k}={v}" for k, v in values)
        cells.append(Cell(_cell_name(values), values, overrides))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise GridError("two cells would share a directory name; use values that differ in letters or digits")
    return cells


# ----------------------------------------------------------------------------- config checks


def _config_for(spec: str, overrides: list[str]):
    """The ConfigDict ``freqjax.main`` would run for ``--config spec`` and ``overrides`` (its own flag parser)."""
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    argv = ["grid", f"--config={spec}", *overrides]
    try:
        # ml_collections defines the --config.x override flags from the argv it is given
        holder = config_flags.DEFINE_config_file(
            "config", None, "config", flag_values=values, lock_config=True, sys_argv=argv
        )
        values(argv)
        config = holder.value
        config.get("mode")  # ml_collections defers a missing file's error to first use
        return config
    except Exception as err:  # ml_collections raises many kinds; each becomes one line
        raise GridError(_flag_error(err, argv)) from None


def _flag_error(err: BaseException, argv: list[str]) -> str:
    from freqjax.main import unknown_field_message

    inner = err
    while True:  # ml_collections wraps the user's error once or twice
        if inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
        elif inner.__cause__ or inner.__context__:
            inner = inner.__cause__ or inner.__context__
        else:
            break
    message = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    if isinstance(inner, KeyError | AttributeError):
        return unknown_field_message(argv, message)
    if "Traceback (most recent call last)" in message:
        message = message.strip().splitlines()[-1]
    flag = next((a for a in argv[2:] if a.partition("=")[2] and f"'{a.partition('=')[2]}'" in message), None)
    return " ".join(f"{flag}: {message}".split() if flag else message.split())


def check_cells(spec: str, cells: list[Cell], overrides: list[str]) -> None:
    """Build and validate every cell's config (nothing compiled); GridError naming the first bad one."""
    from freqjax.train.config import validate_train_config

    for cell in cells:
        try:
            config = _config_for(spec, [*overrides, *cell.overrides])
        except GridError as err:  # name the --set the value came from
            message = str(err)
            for (k, v), flag in zip(cell.values, cell.overrides, strict=True):
                message = message.replace(f"{flag}:", f"--set {k}={v}:")
            raise GridError(message) from None
        if config.get("mode", "train") != "train":
            raise GridError(f"--config {spec}: the grid trains, but this config's mode is {config.mode!r}")
        try:
            validate_train_config(config)
        except ValueError as err:
            raise GridError(f"cell {cell.name}: {err}") from None


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every cell of one grid shares: the config file, the common overrides, OUT and the environment."""

    spec: str
    overrides: tuple[str, ...]
    out: Path
    env: dict


def cell_done(out: Path, cell: Cell) -> dict | None:
    """The cell's recorded result if it finished (a readable ``cell_result.json``), else None."""
    try:
        return json.loads((out / cell.name / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def _result_of(output: str) -> tuple[dict | None, int | None]:
    """(the RESULT dict, the planned total steps) printed by a freqjax.main training run."""
    result = None
    for line in output.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    totals = _TOTAL.findall(output)
    return result, int(totals[-1]) if totals else None


def _finish(job: _Job, cell: Cell, result: dict | None, total: int | None, *, wall: float, evaluate) -> str | None:
    """Record a cell whose run ended; returns why it is not finished (None when it is)."""
    if result is None or total is None:
        return "no result (see its log)"
    if result.get("step") != total:
        return f"stopped at step {result.get('step')} of {total} (a signal); rerun to resume it"
    if "eval" not in result:  # its run had already ended before: evaluate the last checkpoint
        result = evaluate()
        if result is None or "eval" not in result:
            return "its evaluation failed (see its log)"
    _write_json(job.out / cell.name / RESULT_FILE, {"values": dict(cell.values), "result": result, "wall_s": wall})
    return None


def _die_with_parent() -> None:
    # a cell must not outlive a killed grid (it would hold its workdir's lock): SIGTERM, which saves
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _command(job: _Job, cell: Cell, mode: str = "train") -> list[str]:
    return [
        sys.executable,
        "-m",
        "freqjax.main",
        f"--config={job.spec}",
        "--config.progress_bar=False",  # a log file, not a terminal
        *job.overrides,
        *cell.overrides,
        f"--workdir={job.out / cell.name}",
        f"--mode={mode}",
    ]


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def _run_in_process(job: _Job, cell: Cell) -> str | None:
    from freqjax.train.loop import evaluate_checkpoint, train_and_evaluate

    workdir = job.out / cell.name
    workdir.mkdir(parents=True, exist_ok=True)
    config = _config_for(job.spec, ["--config.progress_bar=False", *job.overrides, *cell.overrides])
    start = time.perf_counter()
    with open(workdir / LOG_FILE, "a") as log:
        captured = io.StringIO()
        with contextlib.redirect_stdout(_Tee(sys.stdout, log, captured)):
            result = train_and_evaluate(config, str(workdir))
            print("RESULT " + json.dumps(result), flush=True)
    _, total = _result_of(captured.getvalue())
    wall = time.perf_counter() - start
    return _finish(job, cell, result, total, wall=wall, evaluate=lambda: evaluate_checkpoint(config, str(workdir)))


@dataclasses.dataclass
class _Running:
    cell: Cell
    proc: subprocess.Popen
    log: object
    start: float
    offset: int  # where this attempt's output starts in the cell's log


def _start(job: _Job, cell: Cell, mode: str = "train") -> _Running:
    (job.out / cell.name).mkdir(parents=True, exist_ok=True)
    log = open(job.out / cell.name / LOG_FILE, "a")  # noqa: SIM115 - closed when the process ends
    offset = log.tell()
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(_command(job, cell, mode))}\n")
    log.flush()
    proc = subprocess.Popen(
        _command(job, cell, mode),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=job.env,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, safe between fork and exec
    )
    return _Running(cell, proc, log, time.perf_counter(), offset)


def _log_text(out: Path, cell: Cell, since: int) -> str:
    with open(out / cell.name / LOG_FILE) as f:
        f.seek(since)
        return f.read()


def _run_processes(job: _Job, cells: list[Cell], processes: int, report) -> dict[str, str]:
    """Run ``cells`` ``processes`` at a time; returns {cell name: why it did not finish}."""
    failed: dict[str, str] = {}
    queue, running = list(cells), []
    stop = {"signal": None}
    handlers = {
        sig: signal.signal(sig, lambda signum, _: stop.update(signal=signum)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while queue or running:
            while queue and len(running) < processes and not stop["signal"]:
                cell = queue.pop(0)
                running.append(_start(job, cell))
                report(f"started {cell.name}")
            if stop["signal"]:
                for run in running:  # each cell saves a checkpoint on SIGTERM and exits
                    run.proc.send_signal(signal.SIGTERM)
                queue.clear()
            time.sleep(0.2)
            for run in [r for r in running if r.proc.poll() is not None]:
                running.remove(run)
                run.log.close()
                why = _after(job, run)
                if why:
                    failed[run.cell.name] = why
                report(f"{run.cell.name}: {why or 'finished'}")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stop["signal"]:
        failed["(grid)"] = f"stopped by {signal.Signals(stop['signal']).name}; rerun to resume"
    return failed


def _after(job: _Job, run: _Running) -> str | None:
    wall = time.perf_counter() - run.start
    text = _log_text(job.out, run.cell, run.offset)
    if run.proc.returncode != 0:
        last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
        return f"exit {run.proc.returncode}: {last[0][:300]}"
    result, total = _result_of(text)

    def evaluate():
        ev = _start(job, run.cell, mode="eval")
        ev.proc.wait()
        ev.log.close()
        return _result_of(_log_text(job.out, run.cell, ev.offset))[0] if ev.proc.returncode == 0 else None

    return _finish(job, run.cell, result, total, wall=wall, evaluate=evaluate)


# ----------------------------------------------------------------------------- aggregation


def _metric(result: dict, group: str, name: str) -> float | None:
    value = result.get(group, {}).get(name)
    return float(value) if isinstance(value, int | float) else None


def _mean_std(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return mean, std


def _present(results: dict[str, dict]) -> list[tuple[str, str]]:
    """The (group, metric) pairs of :data:`_METRICS` that some finished cell has."""
    return [(g, m) for g, m in _METRICS if any(_metric(r["result"], g, m) is not None for r in results.values())]


def aggregate(cells: list[Cell], results: dict[str, dict]) -> tuple[list[str], list[list]]:
    """(header, rows): per setting, seeds finished and mean / std of each final metric (std: sample, n-1)."""
    metrics = _present(results)
    fields = [k for k, _ in cells[0].setting] if cells else []
    header = [*fields, "cells", "finished"]
    for g, m in metrics:
        header += [f"{g}_{m}_mean", f"{g}_{m}_std"]
    header += ["wall_s_mean"]
    rows, settings = [], list(dict.fromkeys(c.setting for c in cells))
    for setting in settings:
        members = [c for c in cells if c.setting == setting]
        done = [results[c.name] for c in members if c.name in results]
        row = [v for _, v in setting] + [len(members), len(done)]
        for g, m in metrics:
            xs = [x for r in done if (x := _metric(r["result"], g, m)) is not None]
            row += list(_mean_std(xs)) if xs else [float("nan"), float("nan")]
        row.append(_mean_std([r["wall_s"] for r in done])[0] if done else float("nan"))
        rows.append(row)
    return header, rows


def _fmt(x) -> str:
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def write_tables(out: Path, cells: list[Cell], command: str) -> dict[str, dict]:
    """Rewrite grid.md, grid.csv and cells.csv from the finished cells; returns their results."""
    results = {c.name: r for c in cells if (r := cell_done(out, c)) is not None}
    header, rows = aggregate(cells, results)
    with open(out / "grid.csv.tmp", "w", newline="") as f:
        csv.writer(f).writerows([header, *[[_fmt(x) for x in row] for row in rows]])
    os.replace(out / "grid.csv.tmp", out / "grid.csv")
    metrics = _present(results)
    cell_header = ["cell", *(k for k, _ in cells[0].values), *(f"{g}_{m}" for g, m in metrics), "wall_s"]
    cell_rows = []
    for c in cells:
        if c.name in results:
            r = results[c.name]
            got = [_metric(r["result"], g, m) for g, m in metrics]
            got = [float("nan") if x is None else x for x in got]
            cell_rows.append([c.name, *(v for _, v in c.values), *got, r["wall_s"]])
    with open(out / "cells.csv.tmp", "w", newline="") as f:
        csv.writer(f).writerows([cell_header, *[[_fmt(x) for x in row] for row in cell_rows]])
    os.replace(out / "cells.csv.tmp", out / "cells.csv")
    md = [f"# Grid: {len(results)} of {len(cells)} cells finished", "", f"    {command}", ""]
    md += ["Final metrics, mean +- sample std over the finished seeds of each setting.", ""]
    shown = [h for h in header if not h.endswith("_std")]
    md += ["| " + " | ".join(h.removesuffix("_mean") for h in shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells_md = []
        for h, x in zip(header, row, strict=True):
            if h.endswith("_std"):
                continue
            if h.endswith("_mean") and h != "wall_s_mean":
                std = row[header.index(h[: -len("_mean")] + "_std")]
                text = "" if math.isnan(x) else (f"{x:.4f}" if math.isnan(std) else f"{x:.4f} +- {std:.4f}")
                cells_md.append(text)
            else:
                cells_md.append(_fmt(x))
        md.append("| " + " | ".join(cells_md) + " |")
    (out / "grid.md.tmp").write_text("\n".join(md) + "\n")
    os.replace(out / "grid.md.tmp", out / "grid.md")
    return results


# ----------------------------------------------------------------------------- command line


def _parse_args(argv: list[str]):
    overrides = [a for a in argv if a.startswith("--config.")]
    for a in overrides:
        if "=" not in a:
            raise GridError(f"{a}: give overrides as --config.FIELD=VALUE")
    parser = argparse.ArgumentParser(
        prog="python -m freqjax.studies.grid", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--config", required=True, help="configs/FILE.py[:VARIANT]")
    parser.add_argument("--set", action="append", default=[], help="FIELD=V1,V2,... (repeat for a product)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per setting")
    parser.add_argument("--out", required=True, help="the grid's directory")
    parser.add_argument("--processes", type=int, default=1, help="cells at once, each a process (0: in this one)")
    args, rest = parser.parse_known_args([a for a in argv if not a.startswith("--config.")])
    if rest:
        raise GridError(f"unexpected arguments {rest}; see --help")
    if args.seeds is not None and args.seeds < 1:
        raise GridError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.processes < 0:
        raise GridError(f"--processes must be 0 (in this process) or a positive integer, got {args.processes}")
    return args, overrides


def _check_out(out: Path, record: dict) -> None:
    if out.exists() and not out.is_dir():
        raise GridError(f"--out {str(out)!r} is a file; give a directory (created if missing)")
    grid_file = out / "grid.json"
    if grid_file.exists():
        try:
            old = json.loads(grid_file.read_text())
        except ValueError:
            raise GridError(f"{grid_file} is not readable JSON; move it away or choose another --out") from None
        if old != record:
            raise GridError(
                f"--out {str(out)!r} holds another grid ({grid_file}: {json.dumps(old)}); "
                "rerun that grid's command to resume it, or choose another --out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise GridError(f"--out {str(out)!r} has files but no grid.json; choose a new or empty directory")


def main(argv: list[str] | None = None) -> int:
    """Run the grid command line; returns the exit status (2: bad input, 1: a cell did not finish)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = _parse_args(argv)
        cells = plan_grid([parse_set(s) for s in args.set], args.seeds)
        out = Path(args.out)
        record = {"config": args.config, "set": args.set, "seeds": args.seeds, "overrides": overrides}
        _check_out(out, record)
        check_cells(args.config, cells, overrides)
    except GridError as err:
        print(f"freqjax.studies.grid: error: {err}", file=sys.stderr, flush=True)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "grid.json", record)
    command = "python -m freqjax.studies.grid " + " ".join(argv)
    todo = [c for c in cells if cell_done(out, c) is None]
    print(f"grid {out}: {len(cells)} cells, {len(cells) - len(todo)} finished before, {len(todo)} to run", flush=True)

    def report(line: str) -> None:
        print(f"[grid] {line}", flush=True)
        write_tables(out, cells, command)

    env = dict(os.environ)
    if args.processes > 1:  # accelerators: the cells share the device memory instead of each taking 75 %
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / args.processes:.3f}")
    job = _Job(args.config, tuple(overrides), out, env)
    failed: dict[str, str] = {}
    if args.processes == 0:
        for cell in todo:
            report(f"started {cell.name}")
            try:
                why = _run_in_process(job, cell)
            except (ValueError, TypeError, OSError, RuntimeError) as err:  # the cell's own one-line errors
                why = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            if why:
                failed[cell.name] = why
            report(f"{cell.name}: {why or 'finished'}")
    else:
        failed = _run_processes(job, todo, args.processes, report)
    results = write_tables(out, cells, command)
    print(f"grid {out}: {len(results)} of {len(cells)} cells finished; tables in {out / 'grid.md'}", flush=True)
    for name, why in failed.items():
        print(f"  {name}: {why}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    from freqjax.runtime import reexec_with_malloc_tuning

    reexec_with_malloc_tuning()
    sys.exit(main())
