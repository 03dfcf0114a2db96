"""notebooks/explore_outputs.ipynb run headlessly (nbclient): on the tiny end-to-end outputs it shows
the component table, a histogram and the causal numbers; on a folder without outputs it prints one
line saying what to run and nothing else."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_outputs.ipynb"


def _execute(outputs: Path, monkeypatch):
    """Run the notebook from notebooks/ with DARKMATTER_OUTPUTS set (the kernel inherits the
    environment); returns the executed notebook."""
    monkeypatch.setenv("DARKMATTER_OUTPUTS", str(outputs))
    monkeypatch.delenv("DARKMATTER_COMPONENT", raising=False)
    # the kernelspec runs "python": make it this interpreter (the venv's)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    return nb


def _outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
            parts.append(o["data"].get("text/html", ""))
    return "\n".join(parts)


def test_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebook_on_tiny_run(tiny_run, monkeypatch):
    nb = _execute(tiny_run, monkeypatch)
    outs = _outputs(nb)
    assert not [o for o in outs if o["output_type"] == "error"]
    text = _text(nb)
    for header in ("stability", "excess kurtosis", "novelty", "candidate", "why not", "linear share",
                   "gap closed (add-back)"):
        assert header in text, header
    assert any("image/png" in o.get("data", {}) for o in outs), "no histogram"
    assert "top contexts of component" in text and "[[" in text
    # the component's causal numbers (the tiny run has a model, so they exist) and causal.json's table
    assert "gap closed (add-back):" in text and "closes gap:" in text
    assert "ablation divergence" in text and "ablation loss change" in text
    assert "logit effect" in text
    assert "loss recovered" in text and "97.5%" in text and "ica − baseline" in text
    assert "draws per baseline: {'null': 10, 'PCA': 1}" in text  # one row per m and registered causal baseline


@pytest.mark.parametrize("missing", [False, True])
def test_notebook_without_outputs(tmp_path, monkeypatch, missing):
    folder = tmp_path / "nothing_here" if missing else tmp_path
    nb = _execute(folder, monkeypatch)
    outs = _outputs(nb)
    assert not [o for o in outs if o["output_type"] == "error" or o.get("name") == "stderr"]
    lines = [line for line in _text(nb).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"no pipeline outputs in {folder.resolve()}")
    assert "python scripts/run_pipeline.py" in lines[0] and "DARKMATTER_OUTPUTS" in lines[0]
