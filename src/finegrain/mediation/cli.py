"""``finegrain mediation ...``: causal mediation analysis (Vig et al. 2020); argument parsing only, the
work is :class:`finegrain.mediation.Mediation`'s. The printed table ends with the plausibility caveats."""

from __future__ import annotations

import argparse
from pathlib import Path

from finegrain.errors import ParameterError


def _lines(spec: str | None) -> list[str] | None:
    if spec is None or spec.startswith("builtin"):
        return None
    try:
        return [ln.rstrip("\n") for ln in Path(spec).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise ParameterError(f"cannot read {spec}: {e.strerror or e}") from e


def cmd_mediation(args) -> None:
    # heavy: imported when the command runs
    from finegrain.mediation import Mediation
    from finegrain.models import load_model

    model = load_model(args.model, task="causal-lm", device=args.device)
    med = Mediation(model, positions=args.positions, max_rows=args.max_rows, lstm_state=args.lstm_state,
                    word_boundary=False if args.no_word_boundary else None).fit(
        _lines(args.templates), _lines(args.professions), max_examples=args.max_examples)
    res = med.run(args.layers, heads=not args.no_heads, select_k=args.select_k, select_method=args.select)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res.to_csv(out / "effects.csv")
    res.to_json(out / "mediation.json")
    res.heatmap(out / "neurons.png", kind="neuron")
    if res.by_kind("head"):
        res.heatmap(out / "heads.png", kind="head")
    if med.skipped:
        print(f"{len(med.skipped)} prompts skipped (e.g. {med.skipped[0][0]!r}: {med.skipped[0][1]})")
    print(res.table())
    print(f"tables and heatmaps in {out}")


def register(subparsers) -> None:
    p = subparsers.add_parser("mediation", help="causal mediation analysis of neurons and heads (Vig et al. 2020)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="textgenrnn", help="textgenrnn or a local HF causal LM path")
    p.add_argument("--device", default="auto")
    p.add_argument("--templates", default="builtin:gender", help="builtin:gender or a file, one template per line "
                   "with a '{}' slot")
    p.add_argument("--professions", default="builtin", help="builtin or a file, one profession per line")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: hidden layers)")
    p.add_argument("--positions", choices=["last", "slot", "all"], default="last")
    p.add_argument("--lstm-state", choices=["hc", "h"], default="hc",
                   help="LSTM mediators: a unit's hidden and cell state together, or the hidden state alone")
    p.add_argument("--no-word-boundary", action="store_true",
                   help="character models: score ' he' as a prefix (also counting ' her') instead of a word")
    p.add_argument("--no-heads", action="store_true")
    p.add_argument("--select-k", type=int, default=0, help="also select a k-neuron set per layer")
    p.add_argument("--select", choices=["greedy", "topk"], default="greedy")
    p.add_argument("--max-examples", type=int, default=None)
    p.add_argument("--max-rows", type=int, default=256)
    p.add_argument("--out", default="mediation_out")
    p.set_defaults(func=cmd_mediation)
