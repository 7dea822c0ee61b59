"""``finegrain describe STORE NEURON...`` and ``finegrain search STORE --words a,b | --regex R``."""

from __future__ import annotations

import argparse
import json
import sys

from finegrain.neurons import parse_neurons
from finegrain.store import ActivationStore


def _context(words: list[str], pos: int, width: int = 8) -> str:
    if pos < 0 or pos >= len(words):
        return " ".join(words)
    lo, hi = max(0, pos - width), min(len(words), pos + width + 1)
    left = ("... " if lo > 0 else "") + " ".join(words[lo:pos])
    right = " ".join(words[pos + 1 : hi]) + (" ..." if hi < len(words) else "")
    return f"{left} [{words[pos]}] {right}".strip()


def _describe(args: argparse.Namespace) -> int:
    from . import describe_neurons, explain_neurons

    store = ActivationStore(args.store)
    neurons = parse_neurons(",".join(args.neuron))
    desc = describe_neurons(store, neurons, k=args.k, by=args.by, bins=args.bins, chunk_rows=args.chunk_rows)
    expl = {}
    if args.explain:
        lexicons = None
        if args.lexicon:
            with open(args.lexicon, encoding="utf-8") as f:
                lexicons = json.load(f)
        expl = explain_neurons(
            store, neurons, quantile=args.quantile, beam_width=args.beam_width, max_length=args.max_length,
            lexicons=lexicons, chunk_rows=args.chunk_rows,
        )
    if args.json:
        out = {name: d.to_dict() for name, d in desc.items()}
        for name, e in expl.items():
            out[name]["explanation"] = e.to_dict()
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    for name, d in desc.items():
        s = d.stats
        print(f"== {name}  (n={s.n}, mean={s.mean:.4g}, std={s.std:.4g}, min={s.min:.4g}, max={s.max:.4g})")
        print("   quantiles: " + "  ".join(f"{q:g}:{v:.4g}" for q, v in s.quantiles.items()))
        if name in expl:
            e = expl[name]
            print(f"   explanation: {e.formula}  (IoU {e.iou:.3f}, {e.n_on} rows on, threshold {e.threshold:.4g})")
        for title, exs in (("top", d.top), ("bottom", d.bottom)):
            print(f"   {title}:")
            for ex in exs:
                print(f"     {ex.activation:+9.4f}  {_context(ex.sentence, ex.word_pos)}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from . import neurons_for_words

    store = ActivationStore(args.store)
    hits = neurons_for_words(
        store, words=args.words, regex=args.regex, layers=args.layers.split(",") if args.layers else None,
        top=args.top, direction=args.direction, case_sensitive=args.case_sensitive, chunk_rows=args.chunk_rows,
    )
    if args.json:
        json.dump([h.to_dict() for h in hits], sys.stdout, indent=1)
        print()
        return 0
    if hits:
        print(f"{hits[0].n_in} matching rows, {hits[0].n_out} others; score = Cohen's d")
    print(f"{'neuron':<24} {'d':>8} {'mean_in':>10} {'mean_out':>10}")
    for h in hits:
        print(f"{h.neuron:<24} {h.score:>+8.3f} {h.mean_in:>10.4g} {h.mean_out:>10.4g}")
    return 0


def register(subparsers) -> None:
    """Add the ``describe`` and ``search`` subcommands."""
    p = subparsers.add_parser(
        "describe", help="top-activating words/sentences, statistics and compositional explanation of neurons"
    )
    p.add_argument("store", help="activation store (NAME.fgstore)")
    p.add_argument("neuron", nargs="+", help="neuron address(es), e.g. layer.3:117 (comma-separated ok)")
    p.add_argument("-k", type=int, default=10, help="number of top examples (default 10)")
    p.add_argument("--by", choices=["word", "sentence"], default="word")
    p.add_argument("--bins", type=int, default=50, help="histogram bins")
    p.add_argument("--explain", action="store_true", help="compositional explanation (Mu & Andreas 2020)")
    p.add_argument("--quantile", type=float, default=0.995, help="activation quantile a neuron is 'on' above")
    p.add_argument("--beam-width", type=int, default=10)
    p.add_argument("--max-length", type=int, default=3)
    p.add_argument("--lexicon", help="JSON file {category: [words]} of extra concepts")
    p.add_argument("--chunk-rows", type=int, default=8192)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_describe)

    s = subparsers.add_parser("search", help="neurons that respond to a word list or regular expression")
    s.add_argument("store", help="activation store (NAME.fgstore)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--words", help="comma-separated words")
    g.add_argument("--regex", help="regular expression searched in each word")
    s.add_argument("--layers", help="comma-separated layers (default: all)")
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--direction", choices=["both", "up", "down"], default="both")
    s.add_argument("--case-sensitive", action="store_true")
    s.add_argument("--chunk-rows", type=int, default=8192)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_search)
