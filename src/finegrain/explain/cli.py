"""``finegrain explain``: the concepts behind a prediction, from the command line.

``finegrain explain --model minilm --head builtin:sentiment --text "This movie was not good at all ."``
trains (or loads from the cache) the sentiment head, extracts a small activation store of the
built-in generated corpus at the chosen layer (cached), builds supervised concepts (probe rankings
per label of each property), latent concepts and concept directions of that layer, and prints the
top concepts with their tokens and neurons.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a prediction by the concepts (probed neuron sets, latent clusters) it relied on",
        description="Concept-based explanation: attribution mass of each concept's neurons at a layer vs random "
                    "neuron sets of the same size (z, p), with causal confirmation by ablation.",
    )
    p.add_argument("--model", default="minilm", help="minilm or a local HF model path")
    p.add_argument("--task", default="base", help="HF task when loading a path")
    p.add_argument("--head", default=None, help="builtin:sentiment (trained on the fly, cached) or a saved head .pt")
    p.add_argument("--text", action="append", required=True, help="input text (repeatable)")
    p.add_argument("--target", default=None, help="pred | class:K | prob:K | next:TOK | ... (default: predicted class)")
    p.add_argument("--layer", default="layer.3", help="layer whose neurons are explained (default layer.3)")
    p.add_argument("--method", default="grad_x_act", choices=["grad_x_act", "conductance", "layer_ig"])
    p.add_argument("--properties", default=None,
                   help="comma-separated label columns of the generated corpus that give supervised concepts "
                        "(default: pos,negation,polarity,tense,number)")
    p.add_argument("--k", type=int, default=20, help="neurons per supervised concept")
    p.add_argument("--n-sentences", type=int, default=300, help="sentences of the generated corpus for concepts")
    p.add_argument("--clusters", type=int, default=30, help="latent concepts (0: none)")
    p.add_argument("--no-cavs", action="store_true",
                   help="no concept directions (cav:property=label, cav:negation_cue=not|never)")
    p.add_argument("--n-random", type=int, default=1000, help="random concepts for z / p")
    p.add_argument("--ablation", default="zero", choices=["zero", "mean", "none"])
    p.add_argument("--ablation-positions", default="all", choices=["all", "tokens"],
                   help="ablate every token the concept is counted at (all; its first-order effect is the "
                        "contribution) or only the tokens its mass sits on (tokens: what the explanation claims)")
    p.add_argument("--ablation-random", type=int, default=0,
                   help="also ablate this many random concepts of the same size the same way: z and p of each "
                        "ablation effect (0: none)")
    p.add_argument("--top", type=int, default=8, help="concepts to print")
    p.add_argument("--sort", default="z", choices=["z", "contribution"])
    p.add_argument("--cache-dir", default=None,
                   help="cache for heads, stores, clusters and directions (default $FINEGRAIN_CACHE/explain, "
                        "else ~/.cache/finegrain/explain)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the explanations as JSON")
    p.add_argument("--html", default=None, help="write an HTML fragment with per-concept highlighting")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # heavy: imported when the command runs
    from finegrain.attribute import head_adapter
    from finegrain.explain import (
        DEFAULT_PROPERTIES,
        ablation_agreement,
        default_cache_dir,
        default_concepts,
        explain,
        explain_section_html,
    )
    from finegrain.models import load_model
    from finegrain.results import write_text_atomic

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.head:
        adapter = head_adapter(args.head, args.model, cache_dir=cache / "heads", device=args.device)
    else:
        adapter = load_model(args.model, task=args.task, device=args.device)
    props = [s.strip() for s in args.properties.split(",") if s.strip()] if args.properties else DEFAULT_PROPERTIES
    concepts = default_concepts(adapter, args.layer, props, k=args.k, n_sentences=args.n_sentences,
                                n_clusters=args.clusters, latent=args.clusters > 0, cavs=not args.no_cavs,
                                cache_dir=cache)
    exps = explain(adapter, list(args.text), args.target, concepts, args.layer, method=args.method,
                   n_random=args.n_random, top_k=args.top, ablation=None if args.ablation == "none" else args.ablation,
                   ablation_positions=args.ablation_positions, n_ablation_random=args.ablation_random)
    for e in exps:
        print(e.table(args.top))
        print()
    if len(exps) > 1:
        a = ablation_agreement(exps)
        if a["spearman"] is not None:
            print(f"Spearman(contribution, ablation effect) over {a['n']} pairs: {a['spearman']:.3f}")
    if args.json:
        write_text_atomic(args.json, json.dumps([e.to_dict() for e in exps], indent=1))
    if args.html:
        write_text_atomic(args.html, explain_section_html(exps, k=args.top))
    return 0
