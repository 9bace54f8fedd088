"""Every notebook in notebooks/ executes headless (nbclient, a real ipykernel) at its reduced sizes."""

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def small(notebook):
    """The notebook with its cell tagged 'parameters' set to ``SMALL = True`` (CI's sizes)."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "each notebook has one parameter cell, tagged 'parameters'"
    assert "SMALL = False" in cells[0].source
    cells[0].source = cells[0].source.replace("SMALL = False", "SMALL = True")
    return notebook


def test_notebooks_are_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "compression.ipynb",
        "msnet_early_exit.ipynb",
        "quick_start.ipynb",
        "rexnet_xsepconv.ipynb",
    ]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    # the kernel inherits this environment: one CPU device, fast compiles (tests/conftest.py), no display
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = small(nbformat.read(path, as_version=4))
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
