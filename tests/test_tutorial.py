"""examples/tutorial.ipynb runs from top to bottom (on tiny settings), so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


def _text(cell) -> str:
    """What a code cell printed."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_the_committed_notebook_is_valid_and_holds_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code) >= 10
    assert all(not c.outputs and c.execution_count is None for c in code)
    # The settings cell comes first and reads the switch the test sets.
    assert "PAIRFLOW_TUTORIAL" in code[0].source and "PAIRFLOW_DATA" in code[0].source


@pytest.mark.slow
def test_every_cell_runs_on_tiny_settings(tiny_mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PAIRFLOW_TUTORIAL", "tiny")  # the kernel inherits the environment
    monkeypatch.setenv("PAIRFLOW_DATA", str(tiny_mnist_root))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # its working folder
    )
    client.execute()  # raises CellExecutionError, with the cell, where one fails

    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    printed = "".join(_text(c) for c in code)
    assert f"Root location: {tiny_mnist_root}" in printed  # the tiny root, not ./data
    assert "Number of pairs: 128" in printed  # the tiny settings
    assert "exact round trip: True" in printed  # decode(encode(x)) == x
    assert "after 3 steps" in printed
    assert "FD to 64 test pairs, 32 pairs of real train pairs (the floor)" in printed
    assert "shipped multiscale-cond" in printed
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 6  # the pairs, the curve, three sample grids, the bits/dim bars
