"""The analyst notebooks run top to bottom on the shipped sample (any cell error fails)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    # "python3" is ipykernel's own spec: the interpreter running the tests (the venv's).
    client = NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [
        output for cell in book.cells for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]
    assert not errors
