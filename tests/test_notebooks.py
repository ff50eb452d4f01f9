"""Execute every notebook in ``notebooks/`` in QUICK mode and fail on any cell error.

Needs ``nbformat``, ``nbclient`` and ``ipykernel`` in the test environment; the module is
skipped where they are missing. The kernel is the ``python3`` kernel, which jupyter_client
resolves to the interpreter running the tests (ipykernel installed alongside).
"""

import os

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

# Only warnings raised in this (test) process can reach pytest's "error" filter; the ones
# jupyter_core / jupyter_client may emit while locating paths and starting the kernel:
pytestmark = [
    pytest.mark.filterwarnings("ignore:Jupyter is migrating its paths:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:Proactor event loop does not implement add_reader:RuntimeWarning"
    ),
]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL = 120  # seconds; each QUICK notebook takes about 10-45 s in total


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("PYMC_SGMCMC_QUICK", "1")
    # the kernel must import this checkout even where the package is not installed
    pythonpath = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in pythonpath if p))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT_PER_CELL,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
