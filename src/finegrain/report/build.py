"""Run the analysis pipeline and assemble the report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finegrain.report import html as H

log = logging.getLogger(__name__)

DEFAULT_PROPERTIES = ("pos", "number", "tense", "negation", "ner")


@dataclass
class ReportConfig:
    """What the report analyses. Defaults: the embedded MiniLM on the built-in gold corpus."""

    model: object = "minilm"  # a name/path for load_model, or an already-built ModelAdapter
    corpus: str | None = None  # a corpus file; None = built-in generated corpus
    labels: str | None = None  # labels file (NeuroX parallel format)
    label: str | None = None  # label column to read from ``corpus``
    properties: Sequence[str] | None = None  # label columns to probe (default: all, or DEFAULT_PROPERTIES)
    n_sentences: int = 1000
    layers: str | Sequence[str] = "hidden"
    aggregation: str = "mean"
    top_neurons: int = 5  # neurons described per property
    browser_examples: int = 6  # top words per neuron in the neuron browser
    epochs: int = 10
    seed: int = 0
    device: str = "auto"
    extras: bool = True  # similarity, latent concepts, attribution, mediation sections
    strict: bool = False  # raise instead of reporting a failed section
    sections: list[str] = field(default_factory=list)


def _load_corpus(cfg: ReportConfig):
    from finegrain.data import read_corpus
    from finegrain.data.generate import generate_corpus

    if cfg.corpus is None or cfg.corpus == "builtin:synthetic":
        return generate_corpus(n_sentences=cfg.n_sentences, seed=cfg.seed)
    return read_corpus(cfg.corpus, labels=cfg.labels, label=cfg.label)


class _Steps:
    """A progress bar over report steps; a failing optional step becomes a visible note."""

    def __init__(self, total: int, strict: bool):
        self.bar = tqdm(total=total, desc="report", unit="step")
        self.strict = strict
        self.timings: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def run(self, name: str, fn: Callable, *args, optional: bool = False, **kwargs):
        self.bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except ImportError as e:
            if not optional:
                raise
            self.errors[name] = f"not available: {e}"
            return None
        except Exception as e:
            if self.strict or not optional:
                raise
            log.warning("report step %s failed: %s", name, e)
            self.errors[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            return None
        finally:
            self.timings[name] = time.perf_counter() - t0
            self.bar.update(1)

    def close(self):
        self.bar.close()


def build_report(out: str | os.PathLike = "out/report", config: ReportConfig | None = None, **kw) -> Path:
    """Run the whole analysis and write ``out/index.html`` (plus the activation store and JSON results).

    Keyword arguments override :class:`ReportConfig` fields (e.g. ``model="path/to/model"``).
    """
    import finegrain
    from finegrain.extraction import extract
    from finegrain.models import ModelAdapter, load_model
    from finegrain.store import ActivationStore, StoreError

    cfg = config or ReportConfig()
    for k, v in kw.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown report option {k!r}")
        setattr(cfg, k, v)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    steps = _Steps(total=11, strict=cfg.strict)
    try:
        if isinstance(cfg.model, ModelAdapter):
            model = steps.run("load model", lambda: cfg.model)
        else:
            model = steps.run("load model", load_model, cfg.model, device=cfg.device)
        corpus = steps.run("load corpus", _load_corpus, cfg)
        store_path = out / "activations.fgstore"
        store = None
        if store_path.exists():
            try:
                st = ActivationStore(store_path)
                if st.meta.get("weights_hash") == model.weights_hash() and st.meta.get("n_sentences") == len(corpus):
                    store = st
            except StoreError:
                store = None
        if store is None:
            store = steps.run(
                "extract", extract, model, corpus, store_path, layers=cfg.layers, aggregation=cfg.aggregation,
                dtype="float32", overwrite=True,
            )
        else:
            steps.run("extract (reused)", lambda: store)
        props = _properties(cfg, store)
        probing = steps.run("probe layers", _probing, store, props, cfg)
        neurons = steps.run("describe neurons", _describe, store, probing, cfg)
        browser = steps.run("neuron browser", _browser_data, store, cfg, neurons)
        extras = {}
        if cfg.extras:
            extras["similarity"] = steps.run("layer similarity", _similarity, store, out, optional=True)
            extras["concepts"] = steps.run("latent concepts", _concepts, store, props, cfg, optional=True)
            extras["attribution"] = steps.run("attribution", _attribution, model, cfg, optional=True)
            if extras["attribution"]:
                from finegrain.report.sections import concept_section

                extras["explain"] = steps.run("concept explanations", concept_section,
                                              extras["attribution"]["head"], cfg, optional=True)
            from finegrain.report.sections import mediation_section

            extras["mediation"] = steps.run("causal mediation", mediation_section, cfg, optional=True)
        page = H.render(
            title=f"finegrain report: {model.name}",
            model=_model_summary(model),
            corpus=_corpus_summary(corpus, store, props),
            probing=probing,
            neurons=neurons,
            browser=browser,
            extras=extras,
            errors=steps.errors,
            timings=steps.timings,
            version=finegrain.__version__,
            total_s=time.perf_counter() - t_start,
        )
    finally:
        steps.close()
    tmp = out / "index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out / "index.html")
    config = {k: str(v) if k == "model" else v for k, v in asdict(cfg).items()}
    results = {"config": config, "probing": _jsonable(probing), "timings": steps.timings, "errors": steps.errors}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return out / "index.html"


# ---------------------------------------------------------------------------------------------
def _properties(cfg: ReportConfig, store) -> list[str]:
    if cfg.properties:
        missing = [p for p in cfg.properties if p not in store.label_columns]
        if missing:
            raise ValueError(f"properties {missing} are not label columns of the corpus ({store.label_columns})")
        return list(cfg.properties)
    default = [p for p in DEFAULT_PROPERTIES if p in store.label_columns]
    return default or list(store.label_columns)


def _model_summary(model) -> dict:
    n_params = sum(p.numel() for p in model.model.parameters())
    return {"name": model.name, "kind": model.kind, "parameters": n_params, "layers": model.layers(),
            "device": str(model.device)}


def _corpus_summary(corpus, store, props) -> dict:
    counts = {}
    for p in props:
        vals, cnt = np.unique(store.labels(p).astype(str), return_counts=True)
        order = np.argsort(-cnt)
        counts[p] = {str(vals[i]): int(cnt[i]) for i in order}
    return {"name": corpus.name, "sentences": len(corpus), "words": int(store.n_rows), "labels": counts,
            "examples": [" ".join(s.words) for s in corpus.sentences[:5]]}


def _probing(store, props: list[str], cfg: ReportConfig) -> dict:
    """Layer-wise probes + control-task selectivity, a global ranking over all layers, ablation."""
    from finegrain.evaluate import probe_ablation, selectivity_layers
    from finegrain.probe import LinearProbe, probe_layers
    from finegrain.rank import probe_weight_ranking, probeless_ranking

    layers = list(store.layers)
    train, dev, test = store.split((0.8, 0.1, 0.1), seed=cfg.seed)
    splits = (train, dev, test)
    template = LinearProbe(epochs=cfg.epochs, random_state=cfg.seed)
    result: dict = {}
    index = store.neuron_index(layers)
    for prop in tqdm(props, desc="properties", leave=False):
        y = store.labels(prop).astype(str)
        if len(np.unique(y[train])) < 2:
            log.warning("property %s has a single class: skipped", prop)
            continue
        # the all-layers probe is trained once below (and reused for the ranking), not also in probe_layers
        lp = probe_layers(store, prop, layers=layers, probe=template, splits=splits, include_all=False, control=False)
        sel = selectivity_layers(store, prop, layers=layers, probe=template, splits=splits, seed=cfg.seed)
        Xtr, Xte = store.matrix(layers, rows=train), store.matrix(layers, rows=test)
        probe = template.clone().fit(Xtr, y[train])
        ranking = probe_weight_ranking(probe, index)
        probeless = probeless_ranking(Xtr, y[train], index)
        abl = probe_ablation(store.view(layers, label=prop, rows=train), store.view(layers, label=prop, rows=test),
                             ranking, ks=[0.005, 0.02, 0.1], probe=probe, modes=("keep", "retrain"), n_random=1,
                             seed=cfg.seed)
        acc = lp.accuracy("test")
        full_acc = probe.score(Xte, y[test])
        result[prop] = {
            "layer_acc": {k: v for k, v in acc.items() if k in layers},
            "all_acc": full_acc,
            "control_acc": {r["layer"]: r["control_acc"] for r in sel.rows},
            "selectivity": {r["layer"]: r["selectivity"] for r in sel.rows},
            "majority": float(max(np.mean(y[test] == c) for c in np.unique(y[test]))),
            "classes": [str(c) for c in probe.classes_],
            "ranking": [str(n) for n in ranking.neurons[:50]],
            "ranking_layers": ranking.by_layer(k=max(1, len(ranking.neurons) // 20)),
            "probeless_top": [str(n) for n in probeless.neurons[:10]],
            "per_class_top": {str(c): [str(n) for n in ranking.top_per_class(c, 3)] for c in probe.classes_[:12]},
            "ablation": abl.to_dict(),
            "full_acc": full_acc,
            "rows": lp.rows,
        }
        result[prop]["best_layer"] = max(result[prop]["layer_acc"], key=result[prop]["layer_acc"].get)
    return result


def _describe(store, probing: dict, cfg: ReportConfig) -> dict:
    """Top examples + statistics + compositional explanation of the top neurons of every property."""
    from finegrain.describe import describe_neurons, explain_neurons

    chosen: dict[str, list[str]] = {}
    for prop, r in probing.items():
        chosen[prop] = r["ranking"][: cfg.top_neurons]
    unique = list(dict.fromkeys(n for ns in chosen.values() for n in ns))
    if not unique:
        return {"by_property": chosen, "neurons": {}}
    desc = describe_neurons(store, unique, k=8, by="sentence", bottom=False)
    expl = explain_neurons(store, unique, quantile=0.99, max_length=3, progress=False)
    neurons = {}
    for n in unique:
        d = desc[n].to_dict()
        e = expl.get(n)
        d["formula"] = None if e is None else e.formula
        d["iou"] = None if e is None else float(e.iou)
        d["per_length"] = None if e is None else _jsonable(e.per_length)
        neurons[n] = d
    return {"by_property": chosen, "neurons": neurons}


def _browser_data(store, cfg: ReportConfig, described: dict) -> dict:
    """Compact per-neuron data for the in-page neuron browser (every neuron of every layer)."""
    from finegrain.describe import describe_neurons

    data: dict[str, dict] = {}
    for layer, size in store.layers.items():
        ns = [f"{layer}:{u}" for u in range(size)]
        desc = describe_neurons(store, ns, k=cfg.browser_examples, by="word", bottom=False, with_context=True,
                                bins=24)
        for n in ns:
            d = desc[n]
            st = d.stats
            data[n] = {
                "mean": round(st.mean, 4), "std": round(st.std, 4), "min": round(st.min, 4), "max": round(st.max, 4),
                "hist": st.hist_counts,
                "edges": [round(float(st.hist_edges[0]), 4), round(float(st.hist_edges[-1]), 4)],
                "top": [
                    {"w": e.word, "a": round(e.activation, 3), "s": e.sentence,
                     "v": [round(float(v), 3) for v in (e.sentence_activations or [])], "p": e.word_pos}
                    for e in d.top
                ],
            }
            if n in described.get("neurons", {}):
                data[n]["formula"] = described["neurons"][n]["formula"]
                data[n]["iou"] = described["neurons"][n]["iou"]
    return {"layers": dict(store.layers), "neurons": data}


def _similarity(store, out: Path) -> dict:
    from finegrain.unsupervised import similarity_matrix

    layers = [lay for lay in store.layers if not lay.endswith((".mlp", ".attn"))]
    sm = similarity_matrix([store], layers=layers, method="cka")
    return {"layers": layers, "values": np.asarray(sm.values).round(4).tolist(), "method": "linear CKA"}


def _concepts(store, props, cfg: ReportConfig) -> dict:
    from finegrain.unsupervised import LatentConcepts

    layer = list(store.layers)[-1]
    lc = LatentConcepts(n_clusters=24, method="kmeans", max_per_type=10, max_tokens=8000)
    lc.fit(store, layer, label_columns=props)
    clusters = []
    for c in lc.clusters:
        d = c.to_dict() if hasattr(c, "to_dict") else asdict(c)
        clusters.append(_jsonable(d))
    return {"layer": layer, "clusters": clusters}


def _attribution(model, cfg: ReportConfig) -> dict:
    from finegrain.report.sections import attribution_section

    return attribution_section(model, cfg)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return str(x)


def clean(out: str | os.PathLike) -> None:
    shutil.rmtree(out, ignore_errors=True)
