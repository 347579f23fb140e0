"""``examples/quickstart.ipynb`` runs end to end in a real kernel (nbclient + ipykernel), and its results show
themselves: the executed notebook holds PNG images (the render, the atlas unit) and HTML tables."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.integration
def test_the_quickstart_notebook_runs_and_shows_its_pictures(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # none committed
    with warnings.catch_warnings():  # jupyter_client's own deprecation notices are not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()  # raises CellExecutionError on any error
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    kinds = [kind for output in outputs for kind in output.get("data", {})]
    assert kinds.count("image/png") >= 3  # the render strip, the unit's render, its exemplar
    assert kinds.count("text/html") >= 3  # the ranking, the occlusion study, the atlas unit
    unit = outputs[-1]["data"]["text/html"]
    assert '<img src="data:image/png;base64,' in unit and "top exemplars by maximum" in unit
    assert not [o for o in outputs if o.output_type == "error"]
    assert (tmp_path / "quickstart-atlas" / "atlas.sqlite").is_file()
