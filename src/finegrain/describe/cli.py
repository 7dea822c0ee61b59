"""``finegrain describe STORE NEURON...``, ``finegrain search STORE --words a,b | --regex R`` and
``finegrain heatmap STORE NEURON --sentences 0-9 --out h.html``."""

from __future__ import annotations

import argparse
import json
import sys

from finegrain.errors import ParameterError
from finegrain.neurons import parse_neurons


def _lexicon(arg: str):
    if arg == "builtin":
        return "builtin"
    if arg == "none":
        return None
    try:
        with open(arg, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ParameterError(f"--lexicon {arg}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise ParameterError(f"--lexicon {arg}: not JSON (line {e.lineno}: {e.msg})") from e


def _describe(args: argparse.Namespace) -> int:
    # heavy: imported when the command runs
    from finegrain.describe import describe_neurons, explain_neurons
    from finegrain.store import ActivationStore

    view = ActivationStore(args.store).view()
    neurons = parse_neurons(",".join(args.neuron))
    desc = describe_neurons(view, neurons, k=args.k, by=args.by, bins=args.bins, chunk_rows=args.chunk_rows)
    expl = None
    if args.explain:
        expl = explain_neurons(
            view, neurons, quantile=args.quantile, threshold=args.threshold, beam_width=args.beam_width,
            max_length=args.max_length, lexicons=_lexicon(args.lexicon), min_count=args.min_count,
            examples=args.examples, chunk_rows=args.chunk_rows,
        )
    if args.json:
        out = {d.neuron: d.to_dict() for d in desc}
        for e in expl or []:
            out[e.neuron]["explanation"] = e.to_dict()
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    for d in desc:
        print(f"== {d.stats.table()}")
        e = expl.get(d.neuron) if expl is not None else None
        if e is not None:
            print(f"   explanation: {e.formula}  (IoU {e.iou:.3f}, precision {e.precision:.3f}, "
                  f"recall {e.recall:.3f}; {e.threshold_text()})")
            for title, exs in (("matched", e.matched), ("missed", e.missed), ("false alarms", e.false_alarms)):
                if exs:
                    print(f"     {title}: " + " | ".join(f"{x.context} {x.activation:+.3g}" for x in exs))
        for title, exs in (("top", d.top), ("bottom", d.bottom)):
            print(f"   {title}:")
            for ex in exs:
                print(f"     {ex.activation:+9.4f}  {ex.context()}")
    return 0


def _search(args: argparse.Namespace) -> int:
    # heavy: imported when the command runs
    from finegrain.describe import neurons_for_words
    from finegrain.store import ActivationStore

    hits = neurons_for_words(
        ActivationStore(args.store).view(), words=args.words, regex=args.regex,
        layers=args.layers.split(",") if args.layers else None, top=args.top, direction=args.direction,
        case_sensitive=args.case_sensitive, chunk_rows=args.chunk_rows,
    )
    if args.json:
        json.dump([{k: v for k, v in h.to_dict().items() if k != "type"} for h in hits], sys.stdout, indent=1)
        print()
        return 0
    if hits:
        print(f"{hits[0].n_in} matching rows, {hits[0].n_out} others; score = Cohen's d")
    print(f"{'neuron':<24} {'d':>8} {'mean_in':>10} {'mean_out':>10}")
    for h in hits:
        print(f"{h.neuron:<24} {h.score:>+8.3f} {h.mean_in:>10.4g} {h.mean_out:>10.4g}")
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    # heavy: imported when the command runs
    from finegrain.describe import token_heatmap
    from finegrain.store import ActivationStore

    sep = {"auto": None, "none": "", "space": " "}[args.sep]
    out = token_heatmap(ActivationStore(args.store).view(), args.neuron, sentences=args.sentences, path=args.out,
                        sep=sep, vmax=args.vmax)
    if args.out is None:
        print(out)
    else:
        print(f"wrote {out}")
    return 0


def register(subparsers) -> None:
    """Add the ``describe``, ``search`` and ``heatmap`` subcommands."""
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
    p.add_argument("--threshold", type=float, default=None, help="absolute 'on' threshold instead of --quantile")
    p.add_argument("--beam-width", type=int, default=10)
    p.add_argument("--max-length", type=int, default=3)
    p.add_argument("--min-count", type=int, default=5, help="occurrences a word or affix needs to be a concept")
    p.add_argument("--lexicon", default="builtin",
                   help="lexicon concepts: 'builtin' (the generator's lexicon), 'none', or a JSON file "
                        "{category: [words]} (default builtin)")
    p.add_argument("--examples", type=int, default=5, help="matched / missed examples shown per formula")
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

    h = subparsers.add_parser(
        "heatmap", help="Karpathy-style heatmap of one neuron over sentences (characters of a token-level store)"
    )
    h.add_argument("store", help="activation store (NAME.fgstore); extract --aggregation token for characters")
    h.add_argument("neuron", help="neuron address, e.g. lstm.2:17")
    h.add_argument("--sentences", default="0-4", help="sentence ids: N, N-M or a comma-separated list (default 0-4)")
    h.add_argument("--out", default=None, help="write a page (.html), .svg or .png; default: print the HTML fragment")
    h.add_argument("--sep", choices=["auto", "none", "space"], default="auto",
                   help="between tokens: auto (none for character stores, whose spaces are rows), none, space")
    h.add_argument("--vmax", type=float, default=None, help="colour scale limit (default: max |activation| shown)")
    h.set_defaults(func=_heatmap)
