"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, and is committed without outputs.

Each notebook runs once, from an empty working directory that is neither the repository root nor
notebooks/: a notebook that reads or writes a path relative to where it was started fails there, so
the one run covers both places users open it from (and nothing may be left in that directory).
"""

import glob
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
CELL_TIMEOUT = 600
TRAIN_IMAGES = 2000


def _names(paths):
    return [os.path.basename(p) for p in paths]


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_names(NOTEBOOKS))
def test_notebook_committed_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    stale = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not stale, f"{os.path.basename(path)}: code cells {stale} hold outputs; clear them before committing"


def _kernel_path(tmp_path):
    """A `python3` kernelspec that runs this interpreter (the venv), first on JUPYTER_PATH."""
    kernel_dir = tmp_path / "jupyter" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (tfprune tests)", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    return str(tmp_path / "jupyter")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_names(NOTEBOOKS))
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    jupyter_path = _kernel_path(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([jupyter_path, os.environ.get("JUPYTER_PATH", "")]))
    monkeypatch.setenv("TFPRUNE_NOTEBOOK_DIR", str(tmp_path / "outputs"))
    # Every cell runs; training sees a quarter of the images, which is all that changes.
    monkeypatch.setenv("TFPRUNE_NOTEBOOK_TRAIN_IMAGES", str(TRAIN_IMAGES))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("TFPRUNE_INTERACTIVE", raising=False)
    # The kernel imports this checkout's tfprune whatever its working directory.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in [ROOT, os.environ.get("PYTHONPATH")] if p))
    working_dir = tmp_path / "cwd"
    working_dir.mkdir()
    notebooks_before = sorted(os.listdir(NOTEBOOK_DIR))

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(working_dir)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{os.path.basename(path)} failed in a cell:\n{str(err)[-3000:]}")
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.output_type == "error"]
    assert not errors
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert images, "the notebook drew no plots"
    # Outputs went to TFPRUNE_NOTEBOOK_DIR, not to the working directory or next to the notebook.
    assert os.path.isdir(tmp_path / "outputs") and os.listdir(tmp_path / "outputs")
    assert not os.listdir(working_dir), os.listdir(working_dir)
    assert sorted(os.listdir(NOTEBOOK_DIR)) == notebooks_before
