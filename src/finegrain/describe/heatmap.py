"""One-call token heatmaps of a neuron over sentences of a store (Karpathy, Johnson & Fei-Fei 2015,
"Visualizing and Understanding Recurrent Networks").

:func:`token_heatmap` reads one neuron's column for the rows of a few sentences of a view (or store)
and colours every row's token by its activation, red positive, blue negative, on one symmetric scale
for all sentences. On a token-level store of a character model (``extract(...,
aggregation="token")``: one row per character, spaces included) this is Karpathy et al.'s character
heatmap; on a word store it is a word heatmap. Output: an HTML fragment, or a file (HTML page, SVG
or PNG by the path's extension).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from finegrain.describe.top import RowInfo, as_describe_view, parse_view_neurons, read_rows
from finegrain.errors import ParameterError
from finegrain.neurons import Neuron
from finegrain.results import HtmlFragment
from finegrain.store.view import StoreView, View
from finegrain.viz.heatmap import heatmap_html, heatmap_svg, save_html, save_svg

FORMATS = (".html", ".htm", ".svg", ".png")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def token_separator(source) -> str:
    """What goes between the tokens of a view's sentences when they are shown: ``""`` when the rows are
    the characters of a character model (their spaces are rows themselves), else ``" "``.

    The store's metadata decides when it records it (``token_sep``); otherwise a token-level store
    (``aggregation == "token"``) is a character store when a row's token is a space (word tokenizers
    never make one: BERT drops spaces, GPT-2 writes them as ``Ġ``, SentencePiece as ``▁``), or when
    it is an LSTM's store whose tokens are all single characters (sentences of one word have no
    space to tell)."""
    view = as_describe_view(source)
    if not isinstance(view, StoreView):
        return " "
    meta = view.store.meta
    if isinstance(meta.get("token_sep"), str):
        return meta["token_sep"]
    if meta.get("level") != "token" and meta.get("aggregation") != "token":
        return " "
    tokens = np.unique(RowInfo(view).words)
    if any(t != "" and t.isspace() for t in tokens.tolist()):
        return ""
    if meta.get("model_kind") == "lstm" and len(tokens) and all(len(t) == 1 for t in tokens.tolist()):
        return ""
    return " "


def parse_index_ranges(spec: str | int | Iterable[int]) -> list[int]:
    """Sentence ids from ``"0-9"``, ``"0,3,7-9"``, an int or an iterable of ints (order kept, each once)."""
    if isinstance(spec, int | np.integer):
        items: list[int] = [int(spec)]
    elif isinstance(spec, str):
        items = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            m = _RANGE.match(part)
            if not m:
                raise ParameterError(f"sentences {spec!r}: {part!r} is not N or N-M (e.g. 0-9 or 0,3,7-9)")
            lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
            if hi < lo:
                raise ParameterError(f"sentences {spec!r}: the range {part!r} runs backwards")
            items.extend(range(lo, hi + 1))
    else:
        try:
            items = [int(i) for i in spec]
        except (TypeError, ValueError):
            raise ParameterError(f"sentences must be ids, a range or a spec like '0-9', got {spec!r}") from None
    if not items:
        raise ParameterError(f"no sentences in {spec!r}")
    if min(items) < 0:
        raise ParameterError(f"sentence ids are >= 0, got {min(items)}")
    return list(dict.fromkeys(items))


def sentence_activations(source, neuron: Neuron | str, sentences: str | int | Iterable[int] = range(5)
                         ) -> tuple[list[int], list[list[str]], list[list[float]]]:
    """``(sentence ids, tokens, activations)``: for each sentence (a ``sent_id`` of the view's rows) its
    rows' tokens in order and the neuron's activation on each. Reads only those rows of that column."""
    view = as_describe_view(source)
    (n,) = parse_view_neurons(view, [neuron])
    info = RowInfo(view)
    if info.level == "sentence":
        raise ParameterError("a heatmap needs a word- or token-level store; this one has one row per sentence")
    ids = parse_index_ranges(sentences)
    rows = [info.sentence_rows(s) for s in ids]
    missing = [s for s, r in zip(ids, rows) if len(r) == 0]
    if missing:
        present = np.unique(info.sent_ids)
        have = f"{present.min()}..{present.max()}" if len(present) else "none"
        raise ParameterError(f"sentences {missing[:10]} have no rows in this view (its sentence ids: {have}, "
                             f"{len(present)} sentences)")
    allrows = np.unique(np.concatenate(rows))
    col = read_rows(view, [n], allrows)[:, 0]
    words = info.words
    tokens = [[str(w) for w in words[r]] for r in rows]
    values = [[float(v) for v in col[np.searchsorted(allrows, r)]] for r in rows]
    return ids, tokens, values


def token_heatmap(source: View | str | os.PathLike, neuron: Neuron | str,
                  sentences: str | int | Iterable[int] = range(5), path: str | os.PathLike | None = None,
                  sep: str | None = None, vmax: float | None = None, title: str | None = None,
                  captions: bool = True) -> HtmlFragment | Path:
    """Heatmap of ``neuron`` on ``sentences`` of a view or store (Karpathy et al. 2015): every row's
    token coloured by the neuron's activation on one symmetric scale for all sentences (``vmax``:
    default max |activation| shown), the value in each token's tooltip.

    ``sentences``: sentence ids (``range(5)``, ``[3, 8]``, ``"0-9"``, ``"0,3,7-9"``). ``sep`` between
    tokens: default :func:`token_separator` (``""`` for a character store, whose spaces are rows, so
    each character is one coloured box and the spaces keep their own colour; ``" "`` for words).
    ``path=None`` returns the HTML fragment (a ``str`` that a notebook shows as the heatmap); with a path
    the heatmap is written as a standalone HTML page (``.html``), SVG (``.svg``) or PNG (``.png``) and the
    path is returned."""
    view = as_describe_view(source)
    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise ParameterError(f"{path}: a heatmap is written as {', '.join(FORMATS)} (by the extension)")
    (n,) = parse_view_neurons(view, [neuron])
    ids, tokens, values = sentence_activations(view, n, sentences)
    sep = token_separator(view) if sep is None else sep
    title = f"{n}: activation on {len(ids)} sentence(s)" if title is None else title
    caps = [f"#{i}" for i in ids] if captions else None
    suffix = None if path is None else Path(path).suffix.lower()
    if suffix == ".svg":
        return save_svg(heatmap_svg(tokens, values, title=title, vmax=vmax, sep=sep), path)
    if suffix == ".png":
        from finegrain.viz.describe import plot_token_heatmap  # heavy: matplotlib, imported to draw a PNG

        return plot_token_heatmap(tokens, values, path, title=title, vmax=vmax, sep=sep, captions=caps)
    fragment = heatmap_html(tokens, values, title=title, vmax=vmax, captions=caps, sep=sep)
    if path is None:
        return HtmlFragment(fragment)  # a str that a notebook shows as the heatmap
    return save_html(fragment, path, title=title)
