"""``finegrain attribute``: word attributions and interactions from the command line."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "attribute",
        help="attribute a prediction to input words (IG, SHAP, ...) or find interacting words",
        description="Word-level attribution of a target (class logit, next/masked token, continuation "
                    "log-probability, similarity to --pair, neuron activation) with Captum methods, or "
                    "pairwise interactions (--interactions ih|stii|archipelago).",
    )
    p.add_argument("--model", default="minilm", help="minilm, textgenrnn or a local HF model path")
    p.add_argument("--task", default="base", help="HF task when loading a path (e.g. sequence-classification)")
    p.add_argument("--head", default=None, help="builtin:sentiment (trained on the fly) or a saved head .pt")
    p.add_argument("--head-cache", default=None, help="directory to cache trained heads")
    p.add_argument("--text", action="append", required=True, help="input text (repeatable)")
    p.add_argument("--pair", default=None, help="second sentence for --target similarity")
    p.add_argument("--target", default=None,
                   help="pred | class:K | prob:K | next:TOK | masked:TOK | continuation:TEXT | similarity | "
                        "neuron:LAYER:UNIT (default: predicted class / token, or similarity with --pair)")
    p.add_argument("--method", default="ig", help="ig, saliency, input_x_gradient, deeplift, deeplift_shap, "
                   "gradient_shap, kernel_shap, shapley, shapley_exact, feature_ablation, occlusion, layer_ig, "
                   "layer_conductance, neuron_conductance")
    p.add_argument("--interactions", default=None, choices=["ih", "stii", "sti", "archipelago"])
    p.add_argument("--layer", default=None, help="layer for layer_ig / layer_conductance")
    p.add_argument("--neuron", default=None, help="LAYER:UNIT for neuron_conductance")
    p.add_argument("--baseline", default="pad", help="pad | mask | unk | token id")
    p.add_argument("--steps", type=int, default=50, help="IG steps (IH: grid side)")
    p.add_argument("--samples", type=int, default=25, help="samples for sampling methods")
    p.add_argument("--internal-batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write results as JSON")
    p.add_argument("--html", default=None, help="write a word heatmap as self-contained HTML")
    p.add_argument("--png", default=None, help="write the interaction matrix heatmap (with --interactions)")
    p.set_defaults(func=run)


def _adapter(args):
    from finegrain.models import load_model

    if args.head:
        from finegrain.attribute.heads import head_adapter

        return head_adapter(args.head, args.model, cache_dir=args.head_cache, device=args.device)
    return load_model(args.model, task=args.task, device=args.device)


def run(args: argparse.Namespace) -> int:
    from finegrain.attribute import (
        attribute,
        html_heatmap,
        interaction_table,
        interactions,
        parse_target,
        save_interaction_png,
        save_json,
    )

    adapter = _adapter(args)
    target = parse_target(args.target, adapter, pair=args.pair)
    if target.name == "similarity" and args.pair is None and ":" not in (args.target or ""):
        raise SystemExit("--target similarity needs --pair")
    baseline = int(args.baseline) if args.baseline.isdigit() else args.baseline
    if args.interactions:
        kw = {"baseline": baseline}
        if args.interactions == "ih":
            kw.update(steps=min(args.steps, 16), on_relu="warn")
        elif args.interactions in ("stii", "sti"):
            kw.update(n_samples=args.samples * 8)
        res = interactions(adapter, list(args.text), target, method=args.interactions, **kw)
        for r in res:
            print(interaction_table(r))
            print()
        if args.png:
            save_interaction_png(res[0], args.png)
    else:
        res = attribute(adapter, list(args.text), target, method=args.method, layer=args.layer, neuron=args.neuron,
                        baseline=baseline, n_steps=args.steps, n_samples=args.samples,
                        internal_batch_size=args.internal_batch_size)
        for r in res:
            print(r.table())
            print()
        if args.html:
            with open(args.html, "w") as fh:
                fh.write(html_heatmap(res))
    if args.json:
        save_json(res, args.json)
    return 0

