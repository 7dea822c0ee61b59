"""Output: terminal tables, self-contained HTML word heatmaps laid out as Captum's visualisation records
(per example: true label, predicted label and probability, the attribution's target, its total, the
completeness check and the coloured words), interaction heatmaps (PNG) and JSON.

Every user-supplied string (words, labels, targets) is escaped with ``html.escape``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finegrain.errors import ParameterError
from finegrain.results import HtmlFragment, Result, ResultList, jsonable, result_from_dict, write_text_atomic
from finegrain.viz.heatmap import heatmap_html
from finegrain.viz.html import escape, page, table


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def completeness_note(att) -> str:
    """``delta`` and its share of the gap with the verdict of the stated criterion."""
    if att.delta is None:
        return "delta=n/a (no completeness property)"
    gap = att.f_x - att.f_baseline
    share = f"{abs(att.delta) / abs(gap):.2%} of |f(x)-f(x')|" if gap else "gap 0"
    if att.complete:
        return f"delta={_fmt(att.delta)} ({share}: complete)"
    return (f"delta={_fmt(att.delta)} (INCOMPLETE: {share} > {att.delta_tolerance:.0%}; the scores do not add up to "
            "the change they explain)")


def text_table(att) -> str:
    """Word table with scores and a bar, the target in words, f(x), f(x'), delta and evaluations."""
    scores = np.asarray(att.word_scores, dtype=float)
    top = float(np.max(np.abs(scores))) if len(scores) else 0.0
    width = max([4] + [len(w) for w in att.words])
    steps = f"  steps={att.n_steps}" if att.n_steps is not None else ""
    lines = [f"method={att.method}  target={att.target}  baseline={att.baseline}{steps}"]
    if att.description is not None:
        lines.append(f"explains: {att.description.text}")
    if att.true_label is not None:
        lines.append(f"true label: {att.true_label}")
    lines.append(f"{'word'.ljust(width)}  {'score':>10}  ")
    for w, s in zip(att.words, scores):
        n = int(round(10 * abs(s) / top)) if top > 0 else 0
        bar = ("+" if s >= 0 else "-") * n
        lines.append(f"{w.ljust(width)}  {s:>10.4g}  {bar}")
    other = f"  not in words={_fmt(att.other_score)}" if att.other_score else ""
    lines.append(f"sum={_fmt(float(scores.sum()))}{other}  f(x)={_fmt(att.f_x)}  f(x')={_fmt(att.f_baseline)}  "
                 f"f(x)-f(x')={_fmt(att.f_x - att.f_baseline)}  {completeness_note(att)}  "
                 f"evaluations={att.n_evaluations}")
    return "\n".join(lines)


def interaction_cost(inter) -> str:
    """What an interaction result cost, in words: steps, samples or exactness, and evaluations."""
    if inter.n_steps is not None:
        return (f"steps={inter.n_steps} ({inter.n_steps}x{inter.n_steps} grid)  evaluations={inter.n_evaluations} "
                "(each a forward, a backward and a second-order backward per word)")
    if inter.exact is not None:
        how = "exact over all subsets" if inter.exact else f"sampled: {inter.n_samples} orderings"
        return f"{how}  evaluations={inter.n_evaluations}"
    return f"evaluations={inter.n_evaluations}"


def interaction_table(inter, k: int = 10) -> str:
    lines = [f"method={inter.method}  target={inter.target}  f(x)={_fmt(inter.f_x)}  "
             f"f(x')={_fmt(inter.f_baseline)}  delta={_fmt(inter.delta)}  {interaction_cost(inter)}"]
    if inter.description is not None:
        lines.append(f"explains: {inter.description.text}")
    lines.append("main effects:")
    width = max([4] + [len(w) for w in inter.words])
    for w, s in zip(inter.words, inter.main):
        lines.append(f"  {w.ljust(width)}  {s:>10.4g}")
    if inter.sets:
        lines.append("sets (ArchAttribute):")
        for s, sc in zip(inter.sets, inter.set_scores):
            lines.append(f"  {{{', '.join(inter.words[i] for i in s)}}}  {sc:.4g}")
    lines.append("strongest pairs:")
    for a, b, v in inter.pairs(k):
        lines.append(f"  {a} x {b}  {v:.4g}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
@dataclass
class VisualizationRecord(Result):
    """One example as Captum's ``VisualizationDataRecord``: the words and their scores, the model's
    predicted label and probability, the true label (when given), the attribution's target label,
    the total attribution and the completeness check. ``level="token"`` records keep tokens
    (characters of a character model) instead of words."""

    words: list[str]
    scores: list[float]
    predicted_label: str | None
    predicted_probability: float | None
    true_label: str | None
    target_label: str
    target_probability: float | None
    total: float
    method: str
    target: str
    delta: float | None = None
    complete: bool | None = None
    level: str = "word"

    @classmethod
    def from_attribution(cls, att, true_label: str | None = None, level: str = "word") -> VisualizationRecord:
        if level not in ("word", "token"):
            raise ParameterError(f"level must be 'word' or 'token', got {level!r}")
        d = att.description
        words, scores = (att.words, att.word_scores) if level == "word" else (att.tokens, att.token_scores)
        return cls(list(words), [float(s) for s in scores], d.predicted if d else None,
                   d.predicted_probability if d else None,
                   true_label if true_label is not None else att.true_label,
                   d.label if d else att.target, d.probability if d else None, float(att.total), att.method,
                   d.text if d else att.target, att.delta, att.complete, level)

    def table(self) -> str:
        return records_table([self])

    def _repr_html_(self) -> str:
        return records_html([self])

    @staticmethod
    def _repr_html_list_(records: Sequence[VisualizationRecord]) -> str:
        """A list of records in a notebook: one Captum-style table, one colour scale."""
        return records_html(records)


def visualization_records(attributions: Sequence, true_labels: Sequence[str | None] | str | None = None,
                          level: str = "word") -> ResultList:
    """Captum-style visualisation records of attributions (``true_labels``: one per attribution)."""
    atts = list(attributions)
    if true_labels is None or isinstance(true_labels, str):
        true_labels = [true_labels] * len(atts)
    if len(true_labels) != len(atts):
        raise ParameterError(f"{len(true_labels)} true labels for {len(atts)} attributions")
    return ResultList(VisualizationRecord.from_attribution(a, t, level) for a, t in zip(atts, true_labels))


def _label(label, prob) -> str:
    if label is None:
        return "n/a"
    return f"{label!r} ({prob:.2f})" if prob is not None else repr(label)


def records_table(records: Sequence[VisualizationRecord]) -> str:
    """The records as a terminal table: true / predicted / target label, total, completeness, words."""
    lines = []
    for r in records:
        check = "" if r.complete is None else ("  complete" if r.complete else "  INCOMPLETE")
        lines.append(f"true={r.true_label if r.true_label is not None else 'n/a'}  "
                     f"predicted={_label(r.predicted_label, r.predicted_probability)}  "
                     f"target={_label(r.target_label, r.target_probability)}  total={r.total:.4g}{check}")
        lines.append("  " + " ".join(f"{w}({s:+.2g})" for w, s in zip(r.words, r.scores)))
    return "\n".join(lines)


_TD = "border:1px solid #ddd;padding:4px 8px;vertical-align:top"


def records_html(records: Sequence[VisualizationRecord], title: str | None = None,
                 legend: bool = True) -> HtmlFragment:
    """An HTML fragment: one table row per record, as Captum's ``visualize_text`` (escaped)."""
    head = ["True Label", "Predicted Label", "Attribution Label", "Attribution Score", "Completeness",
            "Word Importance"]
    rows = []
    vmax = max([abs(s) for r in records for s in r.scores] + [0.0]) or 1.0
    for i, r in enumerate(records):
        heat = heatmap_html([list(r.words)], [list(r.scores)], vmax=vmax, value_name="attribution",
                            legend=legend and i == 0)
        if r.complete is None:
            check = "n/a"
        elif r.complete:
            check = f"delta {r.delta:.3g}: complete"
        else:
            check = HtmlFragment(f'<b style="color:#b2182b">INCOMPLETE</b> (delta {r.delta:.3g})')
        target = HtmlFragment(f'{escape(_label(r.target_label, r.target_probability))}<br>'
                              f'<span style="color:#666;font-size:11px">{escape(r.method)}: {escape(r.target)}</span>')
        rows.append([r.true_label if r.true_label is not None else "n/a",
                     _label(r.predicted_label, r.predicted_probability), target, f"{r.total:.3f}", check,
                     HtmlFragment(heat)])
    return table(head, rows, cell_style=_TD, caption=title, cls="fg-attributions",
                 style="border-collapse:collapse;font-family:sans-serif;font-size:13px")


def html_heatmap(atts: Sequence, title: str = "finegrain attributions", true_labels=None, level: str = "word",
                 standalone: bool = True) -> str:
    """Self-contained HTML of attributions as visualisation records (red +, blue -); ``standalone=False``
    gives the fragment for embedding in a page."""
    body = f"<h3>{escape(title)}</h3>{records_html(visualization_records(atts, true_labels, level), title=None)}"
    return page(body, title, body_style="font-family:sans-serif") if standalone else body


def save_interaction_png(inter, path: str | Path) -> Path:
    """Heatmap image of an interaction matrix (diverging colours, symmetric scale)."""
    return inter.plot(path)


def save_json(items, path: str | Path) -> Path:
    """Results as a JSON list of their ``to_dict()`` at ``path`` (written atomically); read back with
    :func:`load_json`."""
    items = [items] if isinstance(items, Result) and not isinstance(items, list) else list(items)
    return write_text_atomic(path, json.dumps([jsonable(x) for x in items], indent=1, allow_nan=False))


def load_json(path: str | Path) -> ResultList:
    """Results written by :func:`save_json` (or a ``ResultList.to_json`` file)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("items", [data])
    return ResultList(result_from_dict(d) for d in data)
