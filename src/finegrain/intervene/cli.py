"""``finegrain ablate ...`` and ``finegrain steer ...`` (alias ``finegrain intervene``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _load(args):
    from finegrain.models import load_model

    return load_model(args.model, task=args.task, device=args.device)


def read_neurons(spec: str) -> list:
    """Neurons from a comma-separated list of addresses, a ranking JSON (``{"neurons": [...]}``,
    as ``finegrain.rank.Ranking.to_json`` writes), or a text file with one address per line."""
    from finegrain.neurons import parse_neurons

    p = Path(spec)
    if p.is_file():
        text = p.read_text()
        if p.suffix == ".json":
            d = json.loads(text)
            return parse_neurons(d["neurons"] if isinstance(d, dict) else d)
        return parse_neurons([ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")])
    return parse_neurons(spec)


def _texts_and_labels(args):
    from finegrain.data import read_corpus

    corpus = read_corpus(args.corpus)
    texts = corpus.texts()
    labels = corpus.sentence_labels(args.label_column) if args.label_column else None
    if args.max_sentences:
        texts = texts[: args.max_sentences]
        labels = None if labels is None else labels[: args.max_sentences]
    return texts, labels


def _objective(args, model):
    from finegrain.intervene import Accuracy, Agreement, LMLoss, simple_agreement_pairs

    if args.objective == "agreement":
        return Agreement(model, simple_agreement_pairs(args.max_sentences or 200), measure=args.measure)
    if not args.corpus:
        raise SystemExit(f"--objective {args.objective} needs --corpus")
    texts, labels = _texts_and_labels(args)
    if args.objective == "accuracy":
        if labels is None:
            raise SystemExit("--objective accuracy needs --label-column (a sentence label column)")
        return Accuracy(model, texts, list(labels))
    return LMLoss(model, texts)


def cmd_ablate(args) -> None:
    from finegrain.intervene import ablation_curve, single_unit_sweep

    model = _load(args)
    obj = _objective(args, model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        res = single_unit_sweep(model, args.sweep, obj, max_rows=args.max_rows)
        res.to_csv(out / "sweep.csv")
        res.to_json(out / "sweep.json")
        res.plot(out / "sweep.png")
        print(f"baseline {obj.name} = {res.baseline:.4f}; {res.seconds:.2f} s, {res.forwards} forward passes")
        for n, d in res.top(args.top):
            print(f"{n}\tdamage {d:+.4f}")
        return
    if not args.neurons:
        raise SystemExit("give --neurons (addresses or a ranking file) or --sweep LAYER")
    ks = [int(k) for k in args.ks.split(",")]
    curve = ablation_curve(model, read_neurons(args.neurons), obj, ks=ks, method=args.method,
                           reference=_texts_and_labels(args)[0] if args.method == "mean" else None)
    curve.to_csv(out / "ablation.csv")
    curve.to_json(out / "ablation.json")
    curve.plot(out / "ablation.png")
    print(curve.to_csv())


def _edits(args, model):
    import numpy as np

    from finegrain.intervene import Scale, Set, Steer, Zero

    edits = []
    for spec in args.set or []:
        addr, _, val = spec.partition("=")
        edits.append(Set(read_neurons(addr), float(val)))
    if args.zero:
        edits.append(Zero(read_neurons(args.zero)))
    for spec in args.scale or []:
        addr, _, val = spec.partition("=")
        edits.append(Scale(read_neurons(addr), float(val)))
    if args.vector:
        if not args.layer:
            raise SystemExit("--vector needs --layer")
        edits.append(Steer(layer=args.layer, vector=np.load(args.vector), alpha=args.alpha))
    return edits


def cmd_steer(args) -> None:
    from finegrain.intervene import expert_units_control

    model = _load(args)
    res = expert_units_control(model, _edits(args, model), prompts=args.prompt or [],
                               concept_words=args.concept_word or [], texts=args.text or [],
                               n_tokens=args.n_tokens)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        res.to_json(args.out)
    for p, a, b in zip(args.prompt or [], res.generations_before, res.generations_after):
        print(f"{p!r}\n  before: {a!r}\n  after:  {b!r}")
    if res.concept_logprob_before:
        print(f"concept log-prob gain: {res.concept_logprob_gain:+.4f}")
    if res.predictions_before:
        print(f"labels before {res.label_dist_before} after {res.label_dist_after}; flip rate {res.flip_rate:.3f}")


def _common(p) -> None:
    p.add_argument("--model", default="minilm", help="minilm, textgenrnn, or a local HF model path")
    p.add_argument("--task", default="causal-lm", help="HF task head (causal-lm, sequence-classification, ...)")
    p.add_argument("--device", default="auto")


def register(subparsers) -> None:
    p = subparsers.add_parser("ablate", help="ablate neurons of a ranking (top/random/bottom k) or sweep a layer",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p)
    p.add_argument("--neurons", help="addresses 'layer.3:5,layer.3:9', a ranking .json, or a file of addresses")
    p.add_argument("--sweep", metavar="LAYER", help="single-unit ablation sweep over this layer instead")
    p.add_argument("--corpus", help="corpus file (texts for lm-loss; labelled sentences for accuracy)")
    p.add_argument("--label-column", help="sentence label column for --objective accuracy")
    p.add_argument("--objective", choices=["lm-loss", "accuracy", "agreement"], default="lm-loss")
    p.add_argument("--measure", choices=["accuracy", "margin"], default="accuracy", help="agreement measure")
    p.add_argument("--ks", default="1,2,5,10,20")
    p.add_argument("--method", choices=["zero", "mean"], default="zero")
    p.add_argument("--max-sentences", type=int, default=200)
    p.add_argument("--max-rows", type=int, default=512, help="rows per batched sweep forward pass")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--out", default="ablation_out")
    p.set_defaults(func=cmd_ablate)

    s = subparsers.add_parser("steer", aliases=["intervene"], help="edit neurons and compare outputs",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(s)
    s.add_argument("--set", action="append", metavar="NEURONS=VALUE", help="set neurons to a value")
    s.add_argument("--zero", metavar="NEURONS")
    s.add_argument("--scale", action="append", metavar="NEURONS=FACTOR")
    s.add_argument("--vector", help=".npy steering vector added to --layer")
    s.add_argument("--layer")
    s.add_argument("--alpha", type=float, default=1.0)
    s.add_argument("--prompt", action="append", help="prompt to generate from (repeatable)")
    s.add_argument("--concept-word", action="append", help="word whose log-prob after each prompt is reported")
    s.add_argument("--text", action="append", help="text to classify before/after (classifiers)")
    s.add_argument("--n-tokens", type=int, default=20)
    s.add_argument("--out", help="write the result JSON here")
    s.set_defaults(func=cmd_steer)
