"""Run the analysis and assemble the report: a composition of the same public calls as the command line,
each artefact computed once.

* one extraction per corpus (a store in ``OUT`` reused when it holds the same model, words and layers, or
  the store given with ``--store``, e.g. one written by ``finegrain extract``), read into memory once per
  process for all its properties (:class:`SplitMatrix`);
* per property, one :func:`~finegrain.probe.probe_layers` call (probe per layer, the majority / word-type
  baselines once, the control task with the identical probe) and one all-layers probe, trained once and
  used by the ranking (:func:`~finegrain.rank.probe_weight_ranking`) and the probe-side ablation
  (:func:`~finegrain.evaluate.probe_ablation`, other units at their training mean);
* one sentiment head for every section that explains predictions, cached in ``OUT/cache``;
* every step's result saved as JSON (``OUT/results/``, through the Result protocol), with a
  fingerprint of what it was computed from: ``reuse=True`` (``--reuse``) reads back the steps whose
  fingerprint matches and recomputes the others;
* on 2+ CPUs, two processes (:class:`Lane`, :mod:`finegrain.report.worker`): the second runs the sections on
  the sentiment head while this one extracts, then both take the remaining steps (one property's probing,
  one section, ...) from one queue, each on one thread while both run — the same calls with the same seeds
  and keys, so the same numbers as one process on one thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import finegrain
from finegrain.data import read_corpus
from finegrain.describe import describe_neurons, explain_neurons
from finegrain.errors import ParameterError, StoreError
from finegrain.evaluate import probe_ablation
from finegrain.extraction import extract
from finegrain.models import ModelAdapter, load_model
from finegrain.probe import (
    LinearProbe,
    classification_metrics,
    majority_label,
    paired_bootstrap,
    probe_layers,
    word_type_predictions,
)
from finegrain.rank import outlier_dimensions, probe_weight_ranking, probeless_ranking
from finegrain.report import html as H
from finegrain.report import sections as S
from finegrain.results import jsonable, write_text_atomic
from finegrain.store import ActivationStore
from finegrain.store.view import ArrayView
from finegrain.unsupervised import LatentConcepts, similarity_matrix

log = logging.getLogger(__name__)

DEFAULT_CORPUS = "builtin:ptb"
DEFAULT_GOLD_CORPUS = "builtin:synthetic"
#: PTB sentences analysed by default: 600 (12,532 words: 9,902 training, 1,282 dev and 1,348 test words).
#: Measured on MiniLM (pos, dep, ner; 7 layers + all, each beside majority / word-type with paired-bootstrap
#: intervals): at 1,000, 700 and 600 sentences exactly the same layers are above both baselines (all of pos
#: and dep; ner all but layers 0 and 6, which are within the word-type lookup at every size), the same best
#: layers (pos 2, dep 3, ner 3) and the all-layers probe is above both; the mean 95% interval vs the word type
#: widens from 0.023-0.037 to 0.035-0.052 (the sqrt(1000 / 600) expected), while the probing, which grows
#: linearly with the corpus, falls from 59 to 30 CPU seconds: the report runs in a minute on 2 cores
DEFAULT_PTB_SENTENCES = 600
DEFAULT_GOLD_SENTENCES = 500
PTB_PROPERTIES = ("pos", "dep", "ner")  # silver (spaCy) columns of builtin:ptb
GOLD_PROPERTIES = ("number", "tense", "negation")  # gold columns of the generated corpus
DEFAULT_PROPERTIES = ("pos", "number", "tense", "negation", "ner")  # any other corpus, where present
#: what each corpus's labels are, for the page
PTB_NOTES = ("Labels are silver: spaCy's en_core_web_sm run on the treebank's own tokens, not gold treebank "
             "annotation (docs/DATA.md). The text is the Mikolov et al. (2010) language-model version: lower-cased, "
             "no punctuation, numbers written as N and words outside the 10k vocabulary as <unk>, which spaCy "
             "labels from context; PROPN and NER are weaker on lower-cased text.")
GOLD_NOTES = ("Labels are gold: the generated corpus's grammar writes them with the words. It has no word-level "
              "agreement column (agreement is a relation between subject and verb, tested causally on the "
              "agreement corpus by finegrain.intervene); number, the feature agreement needs, is probed instead.")


@dataclass
class ReportConfig:
    """What the report analyses. Defaults: the embedded MiniLM on the Penn Treebank text (silver POS,
    dependency relation and NER) plus the generated corpus's gold number / tense / negation."""

    model: object = "minilm"  # a name/path for load_model, or an already-built ModelAdapter
    corpus: str | None = None  # a corpus file or builtin:NAME; None = builtin:ptb
    labels: str | None = None  # labels file (NeuroX parallel format)
    label: str | None = None  # label column to read from ``corpus``
    properties: Sequence[str] | None = None  # label columns to probe (default: PTB_PROPERTIES / DEFAULT_PROPERTIES)
    n_sentences: int | None = None  # sentences of a built-in corpus (None: DEFAULT_PTB_SENTENCES for ptb)
    gold_corpus: str | None = DEFAULT_GOLD_CORPUS  # a second corpus with gold labels (None: none)
    gold_sentences: int = DEFAULT_GOLD_SENTENCES
    gold_properties: Sequence[str] | None = None  # default GOLD_PROPERTIES
    store: str | None = None  # an existing store of ``corpus`` (e.g. from ``finegrain extract``) to analyse
    reuse: bool = False  # read back the sections of an earlier run in ``out`` whose fingerprint matches
    cache_dir: str | None = None  # where annotated corpora are cached (None: finegrain.data's default)
    layers: str | Sequence[str] = "hidden"
    aggregation: str = "mean"
    top_neurons: int = 3  # neurons described per property
    browser_examples: int = 6  # top words per neuron in the neuron browser
    browser_sentences: int | None = 400  # sentences the browser's examples come from (None: all)
    epochs: int | None = None  # probe options; None = LinearProbe's own defaults (epochs is a maximum)
    lr: float | None = None
    l1: float | None = None
    l2: float | None = None
    ablation_ks: Sequence[float] = (0.005, 0.02, 0.1)
    ablation_random: int = 3
    lm: object = "textgenrnn"  # the language model of the generation / mediation / steering sections
    seed: int = 0
    device: str = "auto"
    extras: bool = True  # similarity, latent concepts, attribution ... steering sections
    strict: bool = False  # raise instead of reporting a failed section
    progress: bool | None = None  # the report's progress bar (None: on a terminal)
    parallel: bool | None = None  # a second process for the extras and the gold probing (None: 2+ CPUs, models by name)
    sections: list[str] = field(default_factory=list)  # run only these extras (default: all)


def _fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(jsonable(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rss_mb() -> float | None:
    """Peak resident set of this process so far, in MB. Linux: ``VmHWM``, which starts afresh at exec;
    ``ru_maxrss`` (the fallback elsewhere) survives fork and exec, so the report's second process would
    report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource  # platform: Unix only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "section"


class _Runner:
    """Runs the report's steps: a progress bar, per-step wall / CPU time and peak RSS, a failing optional
    step as a visible note, and saved results read back under ``reuse`` when their fingerprint matches."""

    def __init__(self, out: Path, cfg: ReportConfig):
        self.dir = out / "results"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reuse, self.strict = cfg.reuse, cfg.strict
        self.bar = tqdm(desc="report", unit="step", disable=None if cfg.progress is None else not cfg.progress)
        self.timings: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        self.before_step: Callable[[_Runner], None] | None = None  # e.g. Lane.poll: record finished steps

    def _cached(self, name: str, fp: str):
        path = self.dir / f"{_safe(name)}.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return saved.get("value") if saved.get("fingerprint") == fp else None

    def run(self, name: str, fn: Callable, *args, key=None, optional: bool = False, **kwargs):
        """``fn(*args, **kwargs)``; with ``key`` (what the value is computed from) the value — JSON data — is
        saved in ``results/<name>.json`` and, under ``reuse``, read back when the key is the same."""
        if self.before_step is not None:
            self.before_step(self)
        self.bar.set_postfix_str(name)
        fp = None if key is None else _fingerprint(key)
        t0, c0 = time.perf_counter(), time.process_time()
        reused = False
        try:
            if fp is not None and self.reuse:
                value = self._cached(name, fp)
                if value is not None:
                    reused = True
                    return value
            value = fn(*args, **kwargs)
            if fp is not None and value is not None:
                write_text_atomic(self.dir / f"{_safe(name)}.json",
                                  json.dumps({"fingerprint": fp, "value": jsonable(value)}, allow_nan=False))
            return value
        except Exception as e:
            if self.strict or not optional:
                raise
            log.warning("report step %s failed: %s", name, e)
            self.errors[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            return None
        finally:
            self.timings[name] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                                  "rss_mb": _rss_mb(), "reused": reused}
            self.bar.update(1)

    def record(self, name: str, timing: dict, error: str | None = None) -> None:
        """A step another process ran (:class:`Lane`): its timing (marked with the process) and error."""
        self.timings[name] = {**timing, "process": "second"}
        if error:
            self.errors[name] = error
        self.bar.update(1)

    def close(self):
        self.bar.close()


# -- corpora and stores ---------------------------------------------------------------------------------
@dataclass
class CorpusData:
    """One analysed corpus: its store (extracted once), the properties probed on it and its summary."""

    name: str
    kind: str  # "silver", "gold" or "file"
    store: ActivationStore
    properties: list[str]
    notes: tuple[str, ...] = ()
    main: bool = True
    display: dict[str, str] = field(default_factory=dict)  # the page's name of each property (unique over corpora)

    def summary(self) -> dict:
        counts = {}
        for p in self.properties:
            vals, cnt = np.unique(self.store.labels(p).astype(str), return_counts=True)
            order = np.argsort(-cnt)[:40]
            counts[p] = {str(vals[i]): int(cnt[i]) for i in order}
        sent, words = self.store.sent_ids, self.store.words
        starts = np.flatnonzero(np.r_[True, sent[1:] != sent[:-1]])
        ends = np.r_[starts[1:], len(sent)]
        examples = [" ".join(str(w) for w in words[a:b]) for a, b in zip(starts[:5], ends[:5])]
        return {"name": self.name, "kind": self.kind, "sentences": int(len(starts)), "words": int(self.store.n_rows),
                "labels": counts, "examples": examples, "notes": list(self.notes)}

    def key(self) -> dict:
        """What this corpus's results depend on: the extraction's fingerprint and the labels probed."""
        h = hashlib.sha1()
        for p in self.properties:
            h.update(p.encode())
            h.update("\x1f".join(self.store.labels(p).astype(str).tolist()).encode())
        return {"store": self.store.meta.get("fingerprint"), "labels": h.hexdigest(), "properties": self.properties}


def _builtin_name(spec: str) -> str:
    return spec.split(":", 2)[1] if spec.startswith("builtin:") else ""


def _load_corpus(spec: str, n_sentences: int | None, cfg: ReportConfig, labels=None, label=None):
    name = _builtin_name(spec)
    if not name:
        return read_corpus(spec, labels=labels, label=label)
    opts = {}
    if name == "ptb" and cfg.cache_dir is not None:
        opts["cache_dir"] = cfg.cache_dir
    if "n=" not in spec:
        opts["n_sentences"] = n_sentences
    return read_corpus(spec, seed=cfg.seed, **opts)


def _matching_store(path: Path, model: ModelAdapter, corpus, cfg: ReportConfig) -> ActivationStore | None:
    """The store at ``path`` if it holds this model's activations of exactly these words (same
    aggregation, every requested layer); ``None`` otherwise."""
    if not path.exists():
        return None
    try:
        st = ActivationStore(path)
    except StoreError:
        return None
    if st.meta.get("weights_hash") != model.weights_hash() or st.meta.get("aggregation") != cfg.aggregation:
        return None
    if set(model.resolve_layers(cfg.layers)) - set(st.layers):
        return None
    words = [w for s in corpus.sentences for w in s.words]
    if st.n_rows != len(words) or [str(w) for w in st.words] != words:
        return None
    if set(corpus.label_columns) - set(st.label_columns):
        return None
    return st


def _given_store(path: str, model: ModelAdapter) -> ActivationStore:
    st = ActivationStore(path)
    if st.meta.get("weights_hash") not in (None, model.weights_hash()):
        raise ParameterError(f"--store {path}: the store holds activations of {st.meta.get('model')!r} (weights "
                             f"{str(st.meta.get('weights_hash'))[:12]}), not of {model.name} "
                             f"({model.weights_hash()[:12]}); extract it with this model")
    if st.level != "word":
        raise ParameterError(f"--store {path}: the report analyses word-level stores, this one is {st.level}-level")
    return st


def _pick_properties(asked, default, store: ActivationStore, where: str) -> list[str]:
    if asked:
        missing = [p for p in asked if p not in store.label_columns]
        if missing:
            raise ParameterError(f"properties {missing} are not label columns of the {where} "
                                 f"({store.label_columns})")
        return list(asked)
    return [p for p in default if p in store.label_columns] or list(store.label_columns)


def prepare_main(model: ModelAdapter, cfg: ReportConfig, out: Path) -> CorpusData:
    """The main corpus's store: the one given, one in ``out`` made by an earlier run, or a new extraction."""
    spec = cfg.corpus or DEFAULT_CORPUS
    is_ptb = _builtin_name(spec) == "ptb"
    kind = "silver" if is_ptb else "gold" if spec.startswith("builtin:") else "file"
    default_props = PTB_PROPERTIES if is_ptb else DEFAULT_PROPERTIES
    if cfg.store:
        st = _given_store(cfg.store, model)
        name = str(st.meta.get("corpus") or Path(cfg.store).stem)
        return CorpusData(name, "store", st, _pick_properties(cfg.properties, default_props, st, "store"),
                          PTB_NOTES if name == "ptb" else ())
    n = cfg.n_sentences if cfg.n_sentences is not None else (DEFAULT_PTB_SENTENCES if is_ptb else 1000)
    corpus = _load_corpus(spec, n, cfg, cfg.labels, cfg.label)
    st = _store_for(model, corpus, cfg, out, "main")
    props = _pick_properties(cfg.properties, default_props, st, "corpus")
    notes = PTB_NOTES if is_ptb else GOLD_NOTES if kind == "gold" and _builtin_name(spec) == "synthetic" else ()
    return CorpusData(corpus.name, kind, st, props, (notes,) if isinstance(notes, str) else notes)


def prepare_gold(model: ModelAdapter, cfg: ReportConfig, out: Path, main: CorpusData) -> CorpusData:
    corpus = _load_corpus(cfg.gold_corpus, cfg.gold_sentences, cfg)
    st = _store_for(model, corpus, cfg, out, "gold")
    props = _pick_properties(cfg.gold_properties, GOLD_PROPERTIES, st, "gold corpus")
    notes = (GOLD_NOTES,) if _builtin_name(cfg.gold_corpus) == "synthetic" else ()
    name = corpus.name if corpus.name != main.name else f"{corpus.name}-gold"
    taken = set(main.properties)
    return CorpusData(name, "gold", st, props, notes, main=False,
                      display={p: (p if p not in taken else f"{p}@{name}") for p in props})


def _store_for(model: ModelAdapter, corpus, cfg: ReportConfig, out: Path, role: str) -> ActivationStore:
    path = out / f"activations-{role}-{_safe(corpus.name)}.fgstore"
    st = _matching_store(path, model, corpus, cfg)
    if st is None:
        st = extract(model, corpus, path, layers=cfg.layers, aggregation=cfg.aggregation, dtype="float32",
                     overwrite=True, progress=False)
    return st


def display_names(cd: CorpusData) -> dict[str, str]:
    return cd.display or {p: p for p in cd.properties}


# -- model summary ----------------------------------------------------------------------------------------
def model_summary(model: ModelAdapter, cd: CorpusData) -> dict:
    n_params = sum(p.numel() for p in model.model.parameters())
    od = outlier_dimensions(cd.store.view(list(cd.store.layers)), factor=5)
    outliers = {**od.to_dict(), "store": cd.name}
    return {"name": model.name, "kind": model.kind, "parameters": int(n_params), "layers": model.layers(),
            "device": str(model.device), "outliers": outliers}


# -- probing ----------------------------------------------------------------------------------------------
def probe_template(cfg: ReportConfig) -> LinearProbe:
    """The probe every layer, property and ablation shares: LinearProbe's own (converging) defaults, with
    the options the configuration sets."""
    opts = {k: getattr(cfg, k) for k in ("epochs", "lr", "l1", "l2") if getattr(cfg, k) is not None}
    return LinearProbe(random_state=cfg.seed, progress=False, **opts)


@dataclass
class SplitMatrix:
    """A corpus's activations of every layer read from its store once, the rows in split order (train, dev,
    test, each in store order): the layer probes, the all-layers probe, its ranking and its ablation of every
    property read this one matrix (the splits and the rows do not depend on the property), the splits as
    slices of it."""

    X: np.ndarray
    index: object  # the NeuronIndex of the columns
    order: np.ndarray  # store row of each matrix row
    sent_ids: np.ndarray
    words: np.ndarray
    bounds: tuple[tuple[int, int], ...]  # (start, stop) of train, dev, test

    @classmethod
    def read(cls, store: ActivationStore, layers: list[str], splits) -> SplitMatrix:
        order = np.concatenate(splits)
        edges = np.cumsum([0, *(len(s) for s in splits)])
        views = [store.view(layers, rows=rows) for rows in splits]  # a view sorts its rows: one per split
        X = np.empty((len(order), views[0].n_features), np.float32)
        for start, v in zip(edges, views):
            for a, b in v.bounds():  # block by block: no second copy of the matrix
                X[start + a : start + b] = v.read(a, b)
        return cls(X, views[0].index, order, np.asarray(store.sent_ids)[order],
                   np.asarray(store.words).astype(str)[order], tuple(zip(edges[:-1], edges[1:])))

    def splits(self) -> tuple[np.ndarray, ...]:
        return tuple(np.arange(a, b) for a, b in self.bounds)

    def labelled(self, y: np.ndarray, label: str) -> ArrayView:
        """All rows with the labels ``y`` (one per store row), for :func:`probe_layers` with :meth:`splits`."""
        return ArrayView(self.X, y[self.order], index=self.index, sent_ids=self.sent_ids, words=self.words,
                         label=label)

    def part(self, k: int, y: np.ndarray) -> ArrayView:
        """Split ``k`` (0 train, 1 dev, 2 test) with the labels ``y`` (one per store row): a slice, no copy."""
        a, b = self.bounds[k]
        return ArrayView(self.X[a:b], y[self.order[a:b]], index=self.index, sent_ids=self.sent_ids[a:b])


def _all_layers_row(probe, parts: dict, words: np.ndarray, splits, seed: int) -> dict:
    """The row of the all-layers probe with the same baselines as probe_layers' rows (majority and word
    type, paired bootstrap over test sentences); its control task is not run (it would double the most
    expensive fit of the report)."""
    tr, dv, te = parts["train"], parts["dev"], parts["test"]
    y_tr, y_te = tr.labels(), te.labels()
    pred = probe.predict(te)
    correct = pred == y_te
    groups = te.sent_ids
    base = {"majority": np.full(len(y_te), majority_label(y_tr), dtype=y_tr.dtype),
            "word_type": word_type_predictions(words[splits[0]], y_tr, words[splits[-1]])}
    row = {"layer": "all", "n_neurons": int(tr.n_features), "train_acc": probe.score(tr, y_tr),
           "dev_acc": probe.score(dv, dv.labels()), "test_acc": float(np.mean(correct)),
           "test_macro_f1": classification_metrics(y_te, pred, labels=probe.classes_)["macro_f1"],
           "n_epochs": getattr(probe, "n_epochs_", None), "best_epoch": getattr(probe, "best_epoch_", None),
           "converged": getattr(probe, "converged_", None), "control_acc": None, "selectivity": None}
    for name, b in base.items():
        row[f"vs_{name}"] = paired_bootstrap(correct, b == y_te, groups=groups, seed=seed)
    row["above_baseline"] = all(row[f"vs_{n}"]["low"] > 0 for n in base)
    return row


def corpus_splits(cd: CorpusData, cfg: ReportConfig) -> tuple[np.ndarray, ...]:
    return cd.store.split((0.8, 0.1, 0.1), seed=cfg.seed)


def corpus_matrix(cd: CorpusData, cfg: ReportConfig) -> SplitMatrix:
    """The matrix every property of ``cd`` is probed on (read once per process)."""
    return SplitMatrix.read(cd.store, list(cd.store.layers), corpus_splits(cd, cfg))


def probe_property(cd: CorpusData, prop: str, cfg: ReportConfig, ctx: S.Context, matrix: SplitMatrix) -> dict:
    """One property: the layer-wise probes with baselines and control task, the all-layers probe (trained
    once), its ranking, the probeless ranking and the probe-side ablation of the ranking; ``{}`` when the
    training split has a single class."""
    store = cd.store
    layers = list(store.layers)
    splits = corpus_splits(cd, cfg)
    template = probe_template(cfg)
    words = np.asarray(store.words).astype(str)
    y = store.labels(prop).astype(str)
    if len(np.unique(y[splits[0]])) < 2:
        log.warning("property %s has a single class in the training split: skipped", prop)
        return {}
    lp = probe_layers(matrix.labelled(y, prop), layers=layers, probe=template, splits=matrix.splits(),
                      include_all=False, control=True, seed=cfg.seed, progress=False)
    parts = {k: matrix.part(i, y) for i, k in enumerate(("train", "dev", "test"))}
    # the all-layers probe: trained once, read by the ranking and the ablation
    probe = template.clone().fit(parts["train"], parts["train"].labels(), dev=(parts["dev"], parts["dev"].labels()))
    all_row = _all_layers_row(probe, parts, words, splits, cfg.seed)
    ranking = probe_weight_ranking(probe)
    probeless = probeless_ranking(parts["train"])
    abl = probe_ablation(parts["train"], parts["test"], ranking, ks=list(cfg.ablation_ks), probe=probe,
                         modes=("keep", "remove"), n_random=cfg.ablation_random, seed=cfg.seed, dev=parts["dev"])
    name = display_names(cd)[prop]
    stem = f"{_safe(cd.name)}-{_safe(prop)}"
    for kind, res in (("probing", lp), ("ranking", ranking), ("probeless", probeless), ("ablation", abl)):
        ctx.save(f"{kind}-{stem}", res)
    figures = {"layers": ctx.figure(f"probing-{stem}", lp.plot, f"{name}: accuracy per layer with baselines"),
               "ablation": ctx.figure(f"ablation-{stem}", abl.plot, f"{name}: ablation of the ranking")}
    best = lp.best_layer()
    classes = [str(c) for c in probe.classes_]
    return {name: {
        "property": prop, "corpus": cd.name, "labels": cd.kind, "probe": repr(template),
        "rows": [*lp.rows, all_row], "baselines": lp.baselines, "split_sizes": lp.split_sizes,
        "layer_acc": lp.accuracy("test"),
        "control_acc": {r["layer"]: r.get("control_acc") for r in lp.rows},
        "selectivity": {r["layer"]: r.get("selectivity") for r in lp.rows},
        "majority": lp.baselines.get("majority"), "all_acc": all_row["test_acc"], "full_acc": abl.full_acc,
        "best_layer": best, "best_layer_reason": lp.best_layer_reason(),
        "all_above": all_row["above_baseline"], "all_reason": _all_reason(all_row),
        "classes": classes, "ranking": [str(n) for n in ranking.neurons[:50]],
        "ranking_layers": ranking.by_layer(k=max(1, len(ranking.neurons) // 20)),
        "probeless_top": [str(n) for n in probeless.neurons[:10]],
        "per_class_top": {c: [str(n) for n in ranking.top_per_class(c, 3)] for c in classes[:12]},
        "ablation": abl.to_dict(), "figures": figures,
    }}


def probe_corpus(cd: CorpusData, cfg: ReportConfig, ctx: S.Context) -> dict:
    """:func:`probe_property` of every property of ``cd``, on one matrix."""
    matrix = corpus_matrix(cd, cfg)
    result: dict = {}
    for prop in cd.properties:
        result.update(probe_property(cd, prop, cfg, ctx, matrix))
    return result


def _all_reason(row: dict) -> str:
    vm, vw = row["vs_majority"], row["vs_word_type"]
    state = "is" if row["above_baseline"] else "is NOT"
    return (f"the all-layers probe ({row['test_acc']:.4f}) {state} above its baselines: "
            f"{vm['diff']:+.4f} [{vm['low']:+.4f}, {vm['high']:+.4f}] over the majority class, "
            f"{vw['diff']:+.4f} [{vw['low']:+.4f}, {vw['high']:+.4f}] over the word-type lookup")


# -- neurons ------------------------------------------------------------------------------------------------
def describe_top(corpora: Sequence[CorpusData], probing: dict, cfg: ReportConfig, ctx: S.Context) -> dict:
    """Top examples, statistics and compositional explanation (with its matched / missed / false-alarm
    examples) of the top-ranked neurons of every property, on the corpus the property was probed on."""
    by_property: dict[str, list[str]] = {}
    keys: dict[str, list[str]] = {}
    described: dict[str, dict] = {}
    warnings: dict[str, str] = {}
    for cd in corpora:
        props = [(p, r) for p, r in probing.items() if r.get("corpus") == cd.name]
        if not props:
            continue
        chosen = {p: r["ranking"][: cfg.top_neurons] for p, r in props}
        unique = list(dict.fromkeys(n for ns in chosen.values() for n in ns))
        if not unique:
            continue
        view = cd.store.view(list(cd.store.layers))
        desc = describe_neurons(view, unique, k=5, by="sentence", bottom=False)
        expl = explain_neurons(view, unique, examples=3, progress=False)
        ctx.save(f"neurons-{_safe(cd.name)}", desc)
        ctx.save(f"formulas-{_safe(cd.name)}", expl)
        for p, r in props:
            by_property[p] = chosen[p]
            keys[p] = [n if cd.main else f"{n} @{cd.name}" for n in chosen[p]]
            if r.get("all_above") is False:
                warnings[p] = (f"These neurons are the top of a ranking whose probe is not above its baselines "
                               f"({r.get('all_reason')}): they describe that probe, not evidence that the model "
                               f"encodes {p}.")
        for n in unique:
            d = desc[n].to_dict()
            e = expl.get(n)
            if e is not None:
                d.update(formula=e.formula, iou=float(e.iou), explanation={
                    "precision": e.precision, "recall": e.recall, "threshold_text": e.threshold_text(),
                    "n_concepts": e.n_concepts, "per_length": e.per_length,
                    **{k: [x.to_dict() for x in getattr(e, k)] for k in ("matched", "missed", "false_alarms")}})
            else:
                d.update(formula=None, iou=None)
            described[n if cd.main else f"{n} @{cd.name}"] = d
    return {"by_property": by_property, "keys": keys, "neurons": described, "warnings": warnings}


def browser_data(cd: CorpusData, cfg: ReportConfig) -> dict:
    """Compact per-neuron data for the in-page neuron browser: every neuron of every layer, its statistics
    and top words in context over the first ``browser_sentences`` sentences (the formulas of the described
    neurons are added by :func:`with_formulas`: this part needs no probe)."""
    store = cd.store
    rows = None
    sent = store.sent_ids
    if cfg.browser_sentences is not None and len(np.unique(sent)) > cfg.browser_sentences:
        first = np.unique(sent)[: cfg.browser_sentences]
        rows = np.flatnonzero(np.isin(sent, first))
    view = store.view(list(store.layers), rows=rows)
    desc = describe_neurons(view, None, k=cfg.browser_examples, by="word", bottom=False, with_context=True, bins=24)
    data: dict[str, dict] = {}
    for d in desc:
        st = d.stats
        data[d.neuron] = {
            "mean": round(st.mean, 4), "std": round(st.std, 4), "min": round(st.min, 4), "max": round(st.max, 4),
            "hist": st.hist_counts, "edges": [round(float(st.hist_edges[0]), 4), round(float(st.hist_edges[-1]), 4)],
            "top": [{"w": e.word, "a": round(e.activation, 3), "s": e.sentence,
                     "v": [round(float(v), 3) for v in (e.sentence_activations or [])], "p": e.word_pos}
                    for e in d.top],
        }
    n_rows = len(view)
    note = (f"Statistics and top words of every neuron over the first {cfg.browser_sentences} sentences "
            f"({n_rows:,} words) of {cd.name}." if rows is not None else
            f"Statistics and top words of every neuron over all {n_rows:,} words of {cd.name}.")
    return {"layers": dict(store.layers), "neurons": data, "note": note}


def with_formulas(browser: dict, described: dict) -> dict:
    """The browser's data with the formula and IoU of every neuron :func:`describe_top` explained."""
    neurons = dict(browser["neurons"])
    for n, d in described.get("neurons", {}).items():
        if n in neurons:
            neurons[n] = {**neurons[n], "formula": d.get("formula"), "iou": d.get("iou")}
    return {**browser, "neurons": neurons}


# -- layer-level extras -----------------------------------------------------------------------------------
def similarity_section(cd: CorpusData, ctx: S.Context) -> dict:
    layers = [lay for lay in cd.store.layers if not lay.endswith((".mlp", ".attn"))]
    sm = similarity_matrix([cd.store.view(layers)], layers=layers, method="cka")
    ctx.save("similarity", sm)
    img = ctx.figure("similarity", sm.plot, "linear CKA between layers")
    return {"id": "similarity", "html": H.section("similarity", "Representation similarity between layers", (
        f"<p>Linear CKA (Kornblith et al. 2019, as used by Wu et al. 2020) of every pair of layers on "
        f"{H.esc(cd.name)}, in one streaming pass over the store.</p>{img}")),
        "values": np.asarray(sm.values).round(4).tolist(), "layers": layers}


def concepts_section(cd: CorpusData, ctx: S.Context, seed: int) -> dict:
    layer = list(cd.store.layers)[-1]
    lc = LatentConcepts(n_clusters=24, method="kmeans", max_per_type=10, max_tokens=8000, seed=seed)
    lc.fit(cd.store, layer, label_columns=cd.properties)
    ctx.save("latent-concepts", lc)
    rows = []
    for c in lc.clusters:
        words = ", ".join(w for w, _ in c.words[:10])
        aligned = "; ".join(f"{k}={a.majority} ({a.purity:.2f})" for k, a in c.alignment.items() if a.purity >= 0.5)
        rows.append([c.id, c.size, words, aligned or "-"])
    body = (f"<p>k-means clusters of {H.esc(layer)}'s word representations on {H.esc(cd.name)} (Dalvi et al. 2022); "
            "each cluster with its most frequent words and the labels it aligns with (majority label and purity "
            "&ge; 0.5).</p>" + H.table(["cluster", "tokens", "words", "aligned labels (purity)"], rows))
    return {"id": "concepts", "html": H.section("concepts", f"Latent concepts in {layer}", body)}


# -- the report -----------------------------------------------------------------------------------------------
EXTRAS = ("similarity", "concepts", "attribution", "patching", "attention", "sweep", "explain", "generation",
          "mediation", "steering")
STORE_EXTRAS = ("similarity", "concepts")  # the extras that read the main corpus's store
#: the steps on the sentiment head and the language model: (label, section function of ``ctx``)
MODEL_EXTRAS = {"attribution": ("attribution", S.attribution_section),
                "patching": ("activation patching", S.patching_section),
                "attention": ("attention", S.attention_section), "sweep": ("single-unit sweep", S.sweep_section),
                "explain": ("concept explanations", S.concept_section),
                "generation": ("generation attribution", S.generation_section),
                "mediation": ("causal mediation", S.mediation_section), "steering": ("steering", S.steering_section)}
#: the extras on the sentiment head: one process trains it (attribution, first) and runs them all
HEAD_EXTRAS = ("attribution", "patching", "sweep", "explain")


def wanted_extras(cfg: ReportConfig) -> list[str]:
    return [s for s in EXTRAS if not cfg.sections or s in cfg.sections] if cfg.extras else []


def extra_step(name: str, ctx: S.Context, main: CorpusData | None, cfg: ReportConfig,
               base_key: dict) -> tuple[str, Callable, list]:
    """``(label, fn, key)`` of one extra section (``main`` is read by :data:`STORE_EXTRAS` only)."""
    if name == "similarity":
        return "layer similarity", lambda: similarity_section(main, ctx), [base_key, main.key()]
    if name == "concepts":
        return "latent concepts", lambda: concepts_section(main, ctx, cfg.seed), [base_key, main.key(), cfg.seed]
    label, fn = MODEL_EXTRAS[name]
    return label, lambda: fn(ctx), [base_key, ctx.lm_key(), cfg.seed]


def extra_value(name: str, label: str, value, errors: dict) -> dict:
    """A section's fragment, or for one that failed its stub in the same place, with why."""
    if value is not None:
        return value
    reason = errors.get(label, "not computed").splitlines()[0]
    return {"id": name, "html": H.stub(name, S.TITLES.get(name, label), reason)}


def probe_key(cfg: ReportConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("epochs", "lr", "l1", "l2", "seed", "ablation_ks", "ablation_random")}


class Steps:
    """The report's steps after the extraction, as tasks one process or the other runs (:class:`Lane`):
    ``("probe", corpus, property)``, ``("summary",)``, ``("browser",)`` and ``("extra", section)``. Each
    task has its label, function and key (the key of its saved result) here, the same in both processes; a
    corpus's matrix is read once per process, for all its properties."""

    def __init__(self, model: ModelAdapter, ctx: S.Context, cfg: ReportConfig, base_key: dict,
                 corpora: Sequence[CorpusData] | None = None):
        self.model, self.ctx, self.cfg, self.base_key = model, ctx, cfg, base_key
        self.corpora = list(corpora) if corpora is not None else None
        self._matrices: dict[int, SplitMatrix] = {}

    def matrix(self, i: int) -> SplitMatrix:
        if i not in self._matrices:
            self._matrices[i] = corpus_matrix(self.corpora[i], self.cfg)
        return self._matrices[i]

    def needs_stores(self, task) -> bool:
        return task[0] != "extra" or task[1] in STORE_EXTRAS

    def step(self, task) -> tuple[str, Callable, list, bool]:
        """``(label, fn, key, optional)`` of ``task``."""
        kind, cfg, bk = task[0], self.cfg, self.base_key
        if kind == "probe":
            i, prop = int(task[1]), task[2]
            cd = self.corpora[i]
            return (f"probing {cd.name}: {prop}", lambda: probe_property(cd, prop, cfg, self.ctx, self.matrix(i)),
                    [bk, cd.key(), probe_key(cfg), prop, display_names(cd)[prop]], False)
        if kind == "summary":
            main = self.corpora[0]
            return "model summary", lambda: model_summary(self.model, main), [bk, main.key()], False
        if kind == "browser":
            main = self.corpora[0]
            return ("neuron browser", lambda: browser_data(main, cfg),
                    [bk, main.key(), cfg.browser_examples, cfg.browser_sentences], False)
        label, fn, key = extra_step(task[1], self.ctx, self.corpora[0] if self.corpora else None, cfg, bk)
        return label, fn, key, True


#: the shared queue's order, longest steps first (so that neither process is left with a long one at the end):
#: ranks measured on MiniLM + textgenrnn at the default sizes (probing a main-corpus property 8-12 CPU s,
#: steering 6, mediation 6, the browser 5, a gold property 4, generation 3.5, similarity 3, concepts 2, ...)
COST_RANK = {"probe-main": 0, "steering": 1, "mediation": 2, "browser": 3, "probe-gold": 4, "generation": 5,
             "similarity": 6, "concepts": 7, "summary": 8, "attention": 9}


def _cost_rank(task: tuple) -> int:
    name = {"probe": "probe-main" if task[0] == "probe" and task[1] == 0 else "probe-gold"}.get(task[0], task[-1])
    return COST_RANK.get(name, len(COST_RANK))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # platform: no affinity call (macOS, Windows)
        return os.cpu_count() or 1


def _parallel(cfg: ReportConfig) -> bool:
    """Whether a second process shares the steps (``cfg.parallel``; ``None``: where the models are given by
    name, so that the second process can load them, and there are 2+ CPUs)."""
    by_name = isinstance(cfg.model, str) and isinstance(cfg.lm, str)
    if cfg.parallel is False or not by_name:
        return False
    work = bool(wanted_extras(cfg)) or bool(cfg.gold_corpus and not cfg.store)
    return work and (cfg.parallel is True or _cpus() >= 2)


def build_report(out: str | os.PathLike = "out/report", config: ReportConfig | None = None, **kw) -> Path:
    """Run the whole analysis and write ``out/index.html`` (plus the activation stores, ``results.json`` and
    every section's results under ``out/results``). Keyword arguments override :class:`ReportConfig` fields
    (e.g. ``model="path/to/model"``).

    With ``parallel`` (the default on 2+ CPUs when the models are given by name) a second process
    (:mod:`finegrain.report.worker`) shares the work: it runs the sections on the sentiment head (it trains
    the head) while this one extracts the stores, then both take the remaining steps — one property's
    probing, the model summary, the neuron browser's data, one section — from one queue until it is empty,
    each process on one thread while both run. Every step is the same call with the same seeds and keys as
    in one process (the numbers are those of a one-thread run; with two threads only float32 rounding
    differs)."""
    cfg = config or ReportConfig()
    for k, v in kw.items():
        if not hasattr(cfg, k):
            raise ParameterError(f"unknown report option {k!r}")
        setattr(cfg, k, v)
    bad = set(cfg.sections) - set(EXTRAS)
    if bad:
        raise ParameterError(f"unknown report sections {sorted(bad)}; choose from {list(EXTRAS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    run = _Runner(out, cfg)
    wanted = wanted_extras(cfg)
    lane = Lane(cfg, out, [n for n in wanted if n in HEAD_EXTRAS]) if _parallel(cfg) else None
    try:
        if lane is not None:
            run.before_step = lane.poll
            lane.start()
        if isinstance(cfg.model, ModelAdapter):
            model = run.run("load model", lambda: cfg.model)
        else:
            model = run.run("load model", load_model, cfg.model, device=cfg.device)
        ctx = S.Context(model, cfg, out)
        main = run.run("corpus and store (main)", prepare_main, model, cfg, out)
        corpora = [main]
        if cfg.gold_corpus and not cfg.store:
            corpora.append(run.run("corpus and store (gold)", prepare_gold, model, cfg, out, main))
        base_key = {"version": finegrain.__version__, "weights": model.weights_hash()}
        steps = Steps(model, ctx, cfg, base_key, corpora)
        tasks = [*(("probe", i, p) for i, cd in enumerate(corpora) for p in cd.properties), ("summary",),
                 ("browser",)]
        values = {}
        if lane is None:
            for task in [*tasks, *(("extra", n) for n in wanted)]:
                label, fn, key, optional = steps.step(task)
                values[task] = run.run(label, fn, key=key, optional=optional)
        else:
            # the head's sections are the second process's; every other step goes to whichever is free
            queue = TaskQueue(sorted([*tasks, *(("extra", n) for n in wanted if n not in HEAD_EXTRAS)], key=_cost_rank))
            lane.serve(queue, corpora)
            while (task := queue.take("main")) is not None:
                label, fn, key, optional = steps.step(task)
                values[task] = run.run(label, fn, key=key, optional=optional)
            lane.main_done(run)  # the second process may use every thread now
            for task in [*(("extra", n) for n in lane.fixed), *queue.taken_by("second")]:
                label, fn, key, optional = steps.step(task)
                value = lane.value(run, label)
                if value is Lane.MISSING:  # the second process ended without it: computed here
                    value = run.run(label, fn, key=key, optional=optional)
                values[task] = value
            lane.finish(run)
        probing: dict = {}
        for i, cd in enumerate(corpora):
            for p in cd.properties:
                probing.update(values[("probe", i, p)])
        neuron_key = [base_key, [cd.key() for cd in corpora], probe_key(cfg), cfg.top_neurons]
        neurons = run.run("top neurons", describe_top, corpora, probing, cfg, ctx, key=neuron_key)
        summary, browser = values[("summary",)], with_formulas(values[("browser",)], neurons)
        extras = {}
        for name in wanted:
            label = steps.step(("extra", name))[0]
            extras[name] = extra_value(name, label, values[("extra", name)], run.errors)
        timings = _in_page_order(run.timings, [steps.step(t)[0] for t in tasks])
        peak = {"main": _rss_mb(), "second": lane.peak_rss_mb} if lane is not None else _rss_mb()
        page = H.render(
            title=f"finegrain report: {model.name}", model=summary, corpus=[cd.summary() for cd in corpora],
            probing=probing, neurons=neurons, browser=browser, extras=extras, errors=run.errors,
            timings=timings, version=finegrain.__version__, total_s=time.perf_counter() - t_start,
            peak_rss=peak)
    finally:
        if lane is not None:
            lane.close()
        run.close()
    write_text_atomic(out / "index.html", page)
    config_dict = {k: (v if isinstance(v, str | int | float | bool | type(None) | list | tuple) else str(v))
                   for k, v in asdict(cfg).items()}
    results = {"config": config_dict, "model": summary,
               "corpora": [cd.summary() for cd in corpora],
               "probing": {p: {k: v for k, v in r.items() if k != "figures"} for p, r in probing.items()},
               "timings": timings, "errors": run.errors, "total_s": time.perf_counter() - t_start,
               "peak_rss_mb": _rss_mb(), "peak_rss_mb_second_process": lane.peak_rss_mb if lane else None,
               "parallel": lane is not None,
               "sections": {k: v.get("summary") for k, v in extras.items() if v}}
    write_text_atomic(out / "results.json", json.dumps(jsonable(results), indent=1, allow_nan=False))
    return out / "index.html"


def _in_page_order(timings: dict, task_labels: Sequence[str]) -> dict:
    """The steps in the order of the page (the two processes finish them in their own order)."""
    first = ["load model", "load model (second process)", "corpus and store (main)", "corpus and store (gold)",
             *task_labels, "top neurons"]
    labels = ["layer similarity", "latent concepts", *(label for label, _ in MODEL_EXTRAS.values())]
    order = {k: i for i, k in enumerate([*first, *labels])}
    return dict(sorted(timings.items(), key=lambda kv: order.get(kv[0], len(order))))


class TaskQueue:
    """The tasks both processes take from, first come first served (thread-safe: the second process's
    requests are answered by the thread that reads its messages)."""

    def __init__(self, tasks):
        self._tasks = [tuple(t) for t in tasks]
        self._owner: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> tuple | None:
        with self._lock:
            if not self._tasks:
                return None
            task = self._tasks.pop(0)
            self._owner[task] = who
            return task

    def taken_by(self, who: str) -> list[tuple]:
        with self._lock:
            return [t for t, w in self._owner.items() if w == who]


class Lane:
    """The second process of a parallel report (``python -m finegrain.report.worker``). It is handed the
    configuration and its own steps (the sections on the sentiment head) at once; once the stores are
    written (:meth:`serve`) it asks for one task of the shared :class:`TaskQueue` at a time. It runs every
    step with the same calls and keys as this process would (results saved and reused the same way) and
    streams each step's value, timing and error back as one JSON line. A step it does not deliver (it
    failed to start, crashed, or a step that must not fail failed there) is computed here, as without it."""

    MISSING = object()

    def __init__(self, cfg: ReportConfig, out: Path, fixed: list[str]):
        self.cfg, self.out, self.fixed = cfg, out, list(fixed)
        self.proc: subprocess.Popen | None = None
        self.queue: TaskQueue | None = None
        self.messages: dict[str, dict] = {}
        self.recorded: set[str] = set()
        self.ended = False
        self.asking = False  # the second process waits for a task
        self.fatal: str | None = None
        self.peak_rss_mb: float | None = None
        self.cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._threads: int | None = None
        self._blas = None

    # -- the process -------------------------------------------------------------------------------
    def start(self) -> None:
        config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()}
        spec = {"out": str(self.out), "config": config, "fixed": self.fixed, "threads": 1}
        # one thread per process while both run (OpenMP threads that wait for a descheduled peer spin)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        env.setdefault("MPLBACKEND", "Agg")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "finegrain.report.worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8")
        except OSError as e:
            log.warning("report: the second process did not start (%s); running every step here", e)
            self.ended = True
            return
        self._send({"spec": spec})
        threading.Thread(target=self._read, name="finegrain-report-lane", daemon=True).start()
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self._blas = threadpool_limits(1, user_api="blas")

    def _send(self, msg: dict) -> None:
        with self._send_lock:
            if self.proc is None or self.proc.poll() is not None:
                return
            try:
                self.proc.stdin.write(json.dumps(jsonable(msg)) + "\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):  # the process has ended: what it did not deliver is computed here
                pass

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                with self.cond:
                    if "step" in msg:
                        self.messages[msg["step"]] = msg
                    elif "next" in msg:
                        self.asking = True
                    elif "fatal" in msg:
                        self.fatal = msg["fatal"]
                    elif "done" in msg:
                        self.peak_rss_mb = msg.get("peak_rss_mb")
                    self.cond.notify_all()
                self._answer()
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def _answer(self) -> None:
        """Give the waiting second process the next task (``None``: there is none left)."""
        with self.cond:
            if not self.asking or self.queue is None:
                return
            self.asking = False
            task = self.queue.take("second")
        self._send({"task": task})

    def serve(self, queue: TaskQueue, corpora: Sequence[CorpusData]) -> None:
        """Hand the written stores to the second process and let it take tasks from ``queue``."""
        self._send({"stores": [{"name": cd.name, "kind": cd.kind, "path": str(cd.store.path),
                                "properties": cd.properties, "notes": list(cd.notes), "main": cd.main,
                                "display": cd.display} for cd in corpora]})
        with self.cond:
            self.queue = queue
        self._answer()

    def main_done(self, run: _Runner) -> None:
        """This process has only the second's results to wait for: that one may use every thread."""
        self._send({"threads": self._threads or torch.get_num_threads()})
        self.poll(run)

    # -- results -------------------------------------------------------------------------------------
    def poll(self, run: _Runner) -> None:
        """Record the steps the second process has finished (timings, errors, the progress bar); once it
        has ended, this process gets its threads back."""
        with self.cond:
            new = [m for k, m in self.messages.items() if k not in self.recorded]
            ended = self.ended
        for msg in new:
            self.recorded.add(msg["step"])
            run.record(msg["step"], msg.get("timing") or {}, msg.get("error"))
        if ended:
            self._restore_threads()

    def value(self, run: _Runner, label: str):
        """The value of step ``label`` from the second process (waiting for it), or :attr:`MISSING`."""
        with self.cond:
            while label not in self.messages and not self.ended:
                self.cond.wait(1.0)
            msg = self.messages.get(label)
        self.poll(run)
        if msg is None:
            if self.fatal:
                log.warning("report: the second process failed (%s); computing %s here",
                            self.fatal.strip().splitlines()[-1], label)
            return self.MISSING
        return msg.get("value")

    def finish(self, run: _Runner) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        with self.cond:
            while not self.ended:
                self.cond.wait(1.0)
        self.poll(run)

    def _restore_threads(self) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None

    def close(self) -> None:
        """End the second process if it still runs (this one failed or was interrupted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._restore_threads()


def clean(out: str | os.PathLike) -> None:
    shutil.rmtree(out, ignore_errors=True)
