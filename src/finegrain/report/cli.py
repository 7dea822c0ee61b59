"""``finegrain report``: the whole analysis as one HTML page."""

from __future__ import annotations


def _run(args) -> int:
    from finegrain.report import ReportConfig, build_report  # heavy: every analysis, torch, matplotlib

    cfg = ReportConfig(
        model=args.model, corpus=args.corpus, labels=args.labels, label=args.label,
        properties=args.properties.split(",") if args.properties else None, n_sentences=args.n_sentences,
        layers=args.layers, top_neurons=args.top_neurons, device=args.device, extras=not args.no_extras,
        strict=args.strict, parallel=False if args.sequential else None,
    )
    path = build_report(args.out, cfg)
    print(f"report written to {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="run the full analysis and write a self-contained HTML report")
    p.add_argument("--model", default="minilm", help="minilm | textgenrnn | local HF model directory")
    p.add_argument("--corpus", default=None,
                   help="corpus file or builtin:NAME (default: builtin:ptb, beside the generated gold corpus)")
    p.add_argument("--labels", default=None, help="labels file (NeuroX parallel format)")
    p.add_argument("--label", default=None, help="label column to read (e.g. upos, feats:Number)")
    p.add_argument("--properties", default=None, help="comma-separated label columns to probe")
    p.add_argument("--n-sentences", type=int, default=None,
                   help="sentences of a built-in corpus (default: 600 of builtin:ptb, 1000 of another)")
    p.add_argument("--layers", default="hidden", help="'hidden', 'all' or comma-separated layer names")
    p.add_argument("--top-neurons", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-extras", action="store_true", help="skip similarity, concepts, attribution sections")
    p.add_argument("--strict", action="store_true", help="fail instead of noting a failed optional section")
    p.add_argument("--sequential", action="store_true",
                   help="run every step in this process (default: a second process runs the extras beside the "
                        "probing on 2+ CPUs)")
    p.add_argument("--out", default="out/report")
    p.set_defaults(func=_run)
