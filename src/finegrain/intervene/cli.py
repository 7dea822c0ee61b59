"""``finegrain ablate ...`` and ``finegrain steer ...`` (alias ``finegrain intervene``): argument parsing
only; the work is :mod:`finegrain.intervene`'s (``model_ablation_curve``, ``single_unit_sweep``,
``expert_units_from_texts``, ``concept_control``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finegrain.errors import ParameterError
from finegrain.neurons import parse_neurons


def _adapter(args):
    # heavy: imported when the command runs
    from finegrain.attribute import head_adapter
    from finegrain.models import load_model

    if args.head:
        return head_adapter(args.head, args.model, cache_dir=args.head_cache, device=args.device)
    return load_model(args.model, task=args.task, device=args.device)


def read_neurons(spec: str) -> list:
    """Neurons from a comma-separated list of addresses, a ranking JSON (``{"neurons": [...]}``,
    as ``finegrain.rank.Ranking.to_json`` writes), or a text file with one address per line."""
    p = Path(spec)
    try:
        if p.is_file():
            text = p.read_text(encoding="utf-8")
            if p.suffix == ".json":
                d = json.loads(text)
                return parse_neurons(d["neurons"] if isinstance(d, dict) else d)
            return parse_neurons([ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")])
        return parse_neurons(spec)
    except (ValueError, KeyError) as e:
        raise ParameterError(f"cannot read neurons from {spec!r}: {e}") from e


def _texts_and_labels(args):
    # heavy: imported when the command runs
    from finegrain.attribute import builtin_sentiment
    from finegrain.data import read_corpus

    if not args.corpus:
        if args.head and args.head.startswith("builtin:sentiment"):
            data = builtin_sentiment(seed=args.seed)[: args.max_sentences or None]
            return [t for t, _ in data], [y for _, y in data]
        raise ParameterError(f"--objective {args.objective} needs --corpus (or --head builtin:sentiment, whose "
                             "sentences it then uses)")
    corpus = read_corpus(args.corpus)
    texts = corpus.texts()
    labels = corpus.sentence_labels(args.label_column) if args.label_column else None
    if args.max_sentences:
        texts = texts[: args.max_sentences]
        labels = None if labels is None else labels[: args.max_sentences]
    return texts, None if labels is None else list(labels)


def _objective(args, model):
    # heavy: imported when the command runs
    from finegrain.intervene import Accuracy, Agreement, LMLoss, simple_agreement_pairs

    if args.objective == "agreement":
        return Agreement(model, simple_agreement_pairs(args.max_sentences or 200, seed=args.seed),
                         measure=args.measure)
    texts, labels = _texts_and_labels(args)
    if args.objective == "accuracy":
        if labels is None:
            raise ParameterError("--objective accuracy needs --label-column (a sentence label column of --corpus)")
        return Accuracy(model, texts, labels)
    return LMLoss(model, texts)


def cmd_ablate(args) -> None:
    # heavy: imported when the command runs
    from finegrain.intervene import model_ablation_curve, single_unit_sweep

    if not args.sweep and not args.neurons:
        raise ParameterError("give --neurons (addresses or a ranking file) or --sweep LAYER")
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise ParameterError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    model = _adapter(args)
    obj = _objective(args, model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        res = single_unit_sweep(model, args.sweep, obj, method=args.method, max_rows=args.max_rows,
                                reference=_texts_and_labels(args)[0] if args.method == "mean" else None,
                                share_prefix=not args.no_share)
        name = "sweep"
    else:
        res = model_ablation_curve(model, read_neurons(args.neurons), obj, ks=ks, method=args.method,
                                   reference=_texts_and_labels(args)[0] if args.method == "mean" else None,
                                   random_state=args.seed, random_repeats=args.random)
        name = "ablation"
    res.to_csv(out / f"{name}.csv")
    res.to_json(out / f"{name}.json")
    res.plot(out / f"{name}.png")
    print(res.table())
    print(f"table, JSON and plot in {out}")


def _edits(args):
    # heavy: imported when the command runs
    import numpy as np

    from finegrain.intervene import Scale, Set, Steer, Zero

    def pair(spec: str, flag: str):
        addr, sep, val = spec.rpartition("=")
        try:
            return read_neurons(addr), float(val)
        except ValueError:
            raise ParameterError(f"{flag} needs NEURONS=NUMBER, got {spec!r}") from None

    edits = [Set(*pair(s, "--set")) for s in args.set or []]
    if args.zero:
        edits.append(Zero(read_neurons(args.zero)))
    edits += [Scale(*pair(s, "--scale")) for s in args.scale or []]
    if args.vector:
        if not args.layer:
            raise ParameterError("--vector needs --layer")
        edits.append(Steer(layer=args.layer, vector=np.load(args.vector), alpha=args.alpha))
    return edits


def cmd_steer(args) -> None:
    # heavy: imported when the command runs
    from finegrain.intervene import concept_control, concept_sentences, concept_words, expert_units_from_texts
    from finegrain.intervene.control import NEUTRAL_PROMPTS

    model = _adapter(args)
    words = list(args.concept_word or [])
    if args.experts:
        texts, positive = concept_sentences(args.experts, args.sentences, seed=args.seed)
        units = expert_units_from_texts(model, texts, positive, layers=args.expert_layers, k=args.k,
                                        concept=args.experts)
        print(units.table())
        words = words or concept_words(args.experts)
    else:
        units = _edits(args)
        if not units:
            raise ParameterError("give edits (--set, --zero, --scale, --vector) or --experts CONCEPT")
    n_random = 0 if args.vector else args.random
    # concept words without prompts: score them after neutral prompts (the texts alone need none)
    prompts = args.prompt or (list(NEUTRAL_PROMPTS) if words and not args.text else [])
    res = concept_control(model, units, prompts=prompts, concept_words=words,
                          control_words=args.control_word or [], texts=args.text or [], n_random=n_random,
                          random_state=args.seed, n_tokens=args.n_tokens)
    print(res.table())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        res.to_json(args.out)
    if args.plot:
        res.plot(args.plot)


def _common(p) -> None:
    p.add_argument("--model", default="minilm", help="minilm, textgenrnn, or a local HF model path")
    p.add_argument("--task", default="causal-lm", help="HF task head (causal-lm, sequence-classification, ...)")
    p.add_argument("--head", default=None,
                   help="a classification head on the encoder: builtin:sentiment (trained on the fly) or a saved "
                        "head .pt (replaces --task)")
    p.add_argument("--head-cache", default=None, help="directory to keep trained heads in")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="random units, data order")


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
    p.add_argument("--random", type=int, default=3, help="random draws per k")
    p.add_argument("--max-sentences", type=int, default=200)
    p.add_argument("--max-rows", type=int, default=512, help="rows per batched sweep forward pass")
    p.add_argument("--no-share", action="store_true", help="recompute the layers below the swept one per pass")
    p.add_argument("--out", default="ablation_out")
    p.set_defaults(func=cmd_ablate)

    s = subparsers.add_parser("steer", aliases=["intervene"], help="edit neurons and compare outputs, against "
                              "random units of the same size", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(s)
    s.add_argument("--experts", metavar="CONCEPT",
                   help="Suau et al. 2020: find the expert units of a lexicon noun class (animal, person, place, "
                        "thing) and set them to their median response on sentences with such nouns")
    s.add_argument("--k", type=int, default=10, help="number of expert units")
    s.add_argument("--expert-layers", default=None, help="layers to search for experts (default: hidden layers)")
    s.add_argument("--sentences", type=int, default=200, help="generated sentences to find experts on")
    s.add_argument("--set", action="append", metavar="NEURONS=VALUE", help="set neurons to a value")
    s.add_argument("--zero", metavar="NEURONS")
    s.add_argument("--scale", action="append", metavar="NEURONS=FACTOR", help="multiply neurons (Bau et al. 2019)")
    s.add_argument("--vector", help=".npy steering vector added to --layer (no random control)")
    s.add_argument("--layer")
    s.add_argument("--alpha", type=float, default=1.0)
    s.add_argument("--prompt", action="append",
                   help="prompt to score words after and generate from (repeatable; default with concept words: "
                        "'I saw a', 'She has a', 'There is a')")
    s.add_argument("--concept-word", action="append",
                   help="word whose log-prob after each prompt is reported (default with --experts: the concept's)")
    s.add_argument("--control-word", action="append", help="non-concept word scored the same way (specificity)")
    s.add_argument("--text", action="append", help="text to classify before/after (classifiers)")
    s.add_argument("--n-tokens", type=int, default=20, help="tokens to generate per prompt (0: none)")
    s.add_argument("--random", type=int, default=10, help="random unit sets of the same size")
    s.add_argument("--out", help="write the result JSON here")
    s.add_argument("--plot", help="write the edit-vs-random plot (PNG) here")
    s.set_defaults(func=cmd_steer)
