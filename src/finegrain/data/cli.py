"""``finegrain corpus ...`` subcommands: generate, annotate, info.

Only argument parsing lives here; spaCy is imported by :func:`finegrain.data.annotate` when a command
annotates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finegrain.data.annotate import ANNOTATION_COLUMNS, DEFAULT_COLUMNS, DEFAULT_MODEL, annotate
from finegrain.data.corpus import Corpus
from finegrain.data.generate import BUILTIN_CORPORA, builtin_corpus
from finegrain.data.load import read_corpus
from finegrain.data.readers import write_parallel


def corpus_summary(corpus: Corpus, top: int | None = None) -> dict:
    """Sentence/word counts and label counts per column (most frequent first)."""

    def counts(col: str, level: str) -> dict[str, int]:
        return dict(corpus.label_counts(col, level=level).most_common(top))

    return {
        "name": corpus.name,
        "sentences": len(corpus),
        "words": corpus.n_words,
        "word_labels": {c: counts(c, "word") for c in corpus.label_columns},
        "sentence_labels": {c: counts(c, "sentence") for c in corpus.sentence_label_columns},
    }


def _print_written(written: dict[str, Path]) -> None:
    for key, path in written.items():
        print(f"{key}\t{path}")


def _generate(args: argparse.Namespace) -> None:
    options = {} if args.cache_dir is None else {"cache_dir": args.cache_dir}
    corpus = builtin_corpus(args.name, n_sentences=args.n, seed=args.seed, **options)
    written = write_parallel(corpus, args.out)
    if "pairs" in corpus.meta:
        pairs = Path(args.out) / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(p) + "\n" for p in corpus.meta["pairs"]), encoding="utf-8")
        written["pairs"] = pairs
    _print_written(written)


def _annotate(args: argparse.Namespace) -> None:
    corpus = read_corpus(args.input, format=args.format)
    annotated = annotate(corpus, columns=args.columns, batch_size=args.batch_size, model=args.model)
    _print_written(write_parallel(annotated, args.out))


def _info(args: argparse.Namespace) -> None:
    summary = corpus_summary(read_corpus(args.path, format=args.format), top=args.top)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['name']}: {summary['sentences']} sentences, {summary['words']} words")
    for kind in ("word_labels", "sentence_labels"):
        for col, counts in summary[kind].items():
            print(f"{kind[:-7]} column {col!r} ({len(counts)} labels shown):")
            for lab, n in counts.items():
                print(f"  {lab}\t{n}")


def register(subparsers) -> None:
    """Add ``corpus generate|annotate|info`` to the top-level ``finegrain`` parser."""
    p = subparsers.add_parser("corpus", help="generate, annotate and inspect corpora")
    sub = p.add_subparsers(dest="corpus_command", required=True)

    g = sub.add_parser("generate", help="write a built-in corpus (generated, or embedded real text) as NeuroX files")
    g.add_argument(
        "--name",
        default="synthetic",
        help=f"one of {', '.join(BUILTIN_CORPORA)}, optionally with options, e.g. ptb:n=5000,split=valid",
    )
    g.add_argument(
        "--n", type=int, default=None, help="sentences (default: 2000; agreement: 900 pairs; ptb: 3000; wnut16: all)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the generated corpora")
    g.add_argument(
        "--cache-dir",
        default=None,
        help="ptb: cache of the spaCy labels (default: $FINEGRAIN_CACHE/corpora, else ~/.cache/finegrain/corpora)",
    )
    g.add_argument("--out", required=True, type=Path, help="output directory")
    g.set_defaults(func=_generate)

    a = sub.add_parser("annotate", help="add spaCy silver labels on the corpus's own tokens")
    a.add_argument("input", help="corpus file or directory (any readable format; text: one sentence a line)")
    a.add_argument("--out", required=True, type=Path, help="output directory")
    a.add_argument("--format", default="auto")
    a.add_argument("--columns", nargs="+", default=list(DEFAULT_COLUMNS), choices=ANNOTATION_COLUMNS)
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--model", default=DEFAULT_MODEL)
    a.set_defaults(func=_annotate)

    i = sub.add_parser("info", help="sentence/word counts and counts per label")
    i.add_argument("path", help="corpus file, directory or builtin:<name>")
    i.add_argument("--format", default="auto")
    i.add_argument("--top", type=int, default=20, help="labels shown per column")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)
