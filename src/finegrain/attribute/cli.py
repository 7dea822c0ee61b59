"""``finegrain attribute``: word attributions, interactions and attributions of a generated continuation
from the command line (argument parsing only; the work is :func:`finegrain.attribute.attribute`,
:func:`finegrain.attribute.interactions` and :func:`finegrain.attribute.attribute_generation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from finegrain.errors import ParameterError


def _steps(value: str):
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps must be 'auto' or a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--steps must be 'auto' or a positive integer, got {value!r}")
    return n


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "attribute",
        help="attribute a prediction to input words (IG, SHAP, ...) or find interacting words",
        description="Word-level attribution of a target (class logit, next/masked token, continuation "
                    "log-probability, similarity to --pair, neuron activation) with Captum methods and layer "
                    "methods through the model's hook points, or pairwise interactions "
                    "(--interactions ih|stii|archipelago), or the token x token attribution of a generated "
                    "continuation (--generate N, inseq-style). Every result names its target in words and is "
                    "checked for completeness (scores summing to f(x) - f(x')).",
    )
    p.add_argument("--model", default="minilm", help="minilm, textgenrnn or a local HF model path")
    p.add_argument("--task", default="base", help="HF task when loading a path (e.g. sequence-classification)")
    p.add_argument("--context", default=None, choices=["window", "stream"],
                   help="textgenrnn: predictions from 40-character windows (default, as trained) or one stream")
    p.add_argument("--head", default=None, help="builtin:sentiment (trained on the fly) or a saved head .pt")
    p.add_argument("--head-cache", default=None,
                   help="directory to keep trained heads in (default: none, the head is trained each time)")
    p.add_argument("--text", action="append", required=True, help="input text (repeatable)")
    p.add_argument("--true-label", action="append", default=None,
                   help="the true label of each --text (repeatable, in order; shown in the records)")
    p.add_argument("--pair", default=None, help="second sentence for --target similarity")
    p.add_argument("--target", default=None,
                   help="pred | class:K | prob:K | next:pred | next:TOK | masked:TOK | continuation:TEXT | "
                        "similarity | neuron:LAYER:UNIT (default: predicted class / token, or similarity with --pair)")
    p.add_argument("--method", default="ig", help="ig, saliency, input_x_gradient, deeplift, deeplift_shap, "
                   "gradient_shap, kernel_shap, shapley, shapley_exact, feature_ablation, occlusion, layer_ig, "
                   "layer_conductance, neuron_conductance")
    p.add_argument("--interactions", default=None, choices=["ih", "stii", "sti", "archipelago"])
    p.add_argument("--generate", type=int, default=None, metavar="N",
                   help="generate N tokens greedily after each --text (with the model's cache) and attribute every "
                        "generated token to the prompt and the tokens before it: a token x token matrix (decoders: "
                        "--task causal-lm; encoder-decoders: --text is the source; LSTM LMs)")
    p.add_argument("--score", default="probability", choices=["probability", "log-probability", "logit"],
                   help="with --generate: what each row explains about its generated token (default: probability)")
    p.add_argument("--layer", default=None, help="layer for layer_ig / layer_conductance")
    p.add_argument("--neuron", default=None, help="LAYER:UNIT for neuron_conductance")
    p.add_argument("--position", type=int, default=None, help="token of the neuron (default: every real token)")
    p.add_argument("--baseline", default="pad",
                   help="pad (default: pad token / an LSTM's padding index) | zero | unk | mask | space | token id")
    p.add_argument("--steps", type=_steps, default="auto",
                   help="integration steps, or 'auto' (default: doubled until |delta| <= tolerance x |gap|; IH: 16)")
    p.add_argument("--delta-tolerance", type=float, default=0.01,
                   help="completeness criterion as a fraction of |f(x) - f(x')| (default 0.01)")
    p.add_argument("--samples", type=int, default=25, help="samples for sampling methods")
    p.add_argument("--internal-batch-size", type=int, default=256)
    p.add_argument("--level", default="word", choices=["word", "token"],
                   help="heatmap units in --html / --png (token: characters of a character model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", "--out", dest="json", default=None, help="write results as JSON")
    p.add_argument("--html", default=None, help="write the visualisation records as self-contained HTML")
    p.add_argument("--png", default=None, help="write the heatmap (or, with --interactions, the matrix) as PNG")
    p.set_defaults(func=run)


def _adapter(args):
    # heavy: imported when the command runs
    from finegrain.attribute import head_adapter
    from finegrain.models import load_model

    if args.head:
        return head_adapter(args.head, args.model, cache_dir=args.head_cache, device=args.device)
    adapter = load_model(args.model, task=args.task, device=args.device)
    if args.context is not None:
        if not hasattr(adapter.model, "context"):
            raise ParameterError(f"--context applies to textgenrnn; {adapter.name} has no context mode")
        adapter.model.context = args.context
    return adapter


def run(args: argparse.Namespace) -> int:
    # heavy: imported when the command runs
    from finegrain.attribute import (
        attribute,
        html_heatmap,
        interactions,
        parse_target,
        save_json,
        visualization_records,
    )
    from finegrain.results import write_text_atomic
    from finegrain.viz.attribution import plot_word_heatmap

    adapter = _adapter(args)
    target = parse_target(args.target, adapter, pair=args.pair)
    texts = list(args.text)
    if args.generate is not None:
        return _run_generation(args, adapter, texts)
    if args.interactions:
        kw: dict = {"baseline": args.baseline}
        if args.interactions == "ih":
            kw.update(steps=16 if args.steps == "auto" else min(args.steps, 16), on_relu="warn")
        elif args.interactions in ("stii", "sti"):
            kw.update(n_samples=args.samples * 8, seed=args.seed)
        res = interactions(adapter, texts, target, method=args.interactions, **kw)
        print(res.table())
        if args.png:
            res[0].plot(args.png)
    else:
        res = attribute(adapter, texts, target, method=args.method, layer=args.layer, neuron=args.neuron,
                        position=args.position, baseline=args.baseline, n_steps=args.steps, n_samples=args.samples,
                        internal_batch_size=args.internal_batch_size, delta_tolerance=args.delta_tolerance,
                        seed=args.seed, true_labels=args.true_label)
        print(res.table())
        print()
        records = visualization_records(res, level=args.level)
        print(records.table())
        if args.html:
            write_text_atomic(args.html, html_heatmap(res, level=args.level))
        if args.png:
            plot_word_heatmap([r.words for r in records], [r.scores for r in records], args.png,
                              captions=[f"true={r.true_label or 'n/a'}  predicted={r.predicted_label or 'n/a'!r}  "
                                        f"target={r.target_label!r}  total={r.total:.3g}" for r in records])
    if args.json:
        save_json(res, args.json)
    return 0


def _run_generation(args: argparse.Namespace, adapter, texts: list[str]) -> int:
    # heavy: imported when the command runs
    from finegrain.attribute import attribute_generation, generations_html, save_json
    from finegrain.results import write_text_atomic

    res = attribute_generation(adapter, texts, max_new_tokens=args.generate, method=args.method, score=args.score,
                               layer=args.layer, neuron=args.neuron, baseline=args.baseline, n_steps=args.steps,
                               n_samples=args.samples, internal_batch_size=args.internal_batch_size,
                               delta_tolerance=args.delta_tolerance, seed=args.seed)
    print(res.table())
    if args.html:
        write_text_atomic(args.html, generations_html(res))
    if args.png:
        png = Path(args.png)
        for i, r in enumerate(res):  # one picture per prompt: NAME.png, NAME-2.png, ...
            r.plot(png if i == 0 else png.with_name(f"{png.stem}-{i + 1}{png.suffix or '.png'}"))
    if args.json:
        save_json(res, args.json)
    return 0
