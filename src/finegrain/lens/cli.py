"""``finegrain lens``, ``finegrain dla`` and ``finegrain attention``: the logit lens, direct logit attribution
and per-head attention patterns of a transformer."""

from __future__ import annotations

import argparse
from pathlib import Path


def _out(args) -> Path | None:
    if not args.out:
        return None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _model(args):
    # heavy: imported when the command runs
    from finegrain.models import load_model

    return load_model(args.model, task=args.task, device=args.device)


def _show(res, args, name: str) -> None:
    """Print the table; with --out write NAME.json and NAME.png."""
    print(res.table())
    out = _out(args)
    if out:
        res.to_json(out / f"{name}.json")
        print(f"wrote {res.plot(out / f'{name}.png')} and {out / f'{name}.json'}")


def cmd_lens(args) -> None:
    # heavy: imported when the command runs
    from finegrain.lens import logit_lens

    _show(logit_lens(_model(args), args.text, target=args.target, k=args.k, position=args.position), args, "lens")


def cmd_dla(args) -> None:
    # heavy: imported when the command runs
    from finegrain.lens import direct_logit_attribution

    res = direct_logit_attribution(_model(args), args.text, args.target, against=args.against, position=args.position)
    _show(res, args, "dla")


def cmd_attention(args) -> None:
    # heavy: imported when the command runs
    from finegrain.lens import attention_patterns

    res = attention_patterns(_model(args), args.text)
    print(res.table())
    out = _out(args)
    if out:
        res.to_json(out / "attention.json")
        if args.layer:
            pngs = [res.plot(out / f"attention_{args.layer}.png", layer=args.layer, sentence=args.sentence)]
        else:
            pngs = res.save_plots(out, sentence=args.sentence)
        print(f"wrote {out / 'attention.json'} and {len(pngs)} heatmap(s) in {out}")


def _common(p, task: str) -> None:
    p.add_argument("--model", default="minilm", help="minilm or a local HF model path")
    p.add_argument("--task", default=task, help="HF head: causal-lm, masked-lm, base, ...")
    p.add_argument("--device", default="auto")


def register(subparsers) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser("lens", help="logit lens: each layer's residual through the final norm and the "
                              "unembedding (nostalgebraist 2020)", formatter_class=fmt)
    _common(p, "causal-lm")
    p.add_argument("--text", required=True)
    p.add_argument("--target", help="token whose probability and rank per layer are reported")
    p.add_argument("--k", type=int, default=5, help="top tokens per layer and position")
    p.add_argument("--position", type=int, help="position shown in the table (default: last token / mask token)")
    p.add_argument("--out", help="directory for lens.json and lens.png")
    p.set_defaults(func=cmd_lens)

    d = subparsers.add_parser("dla", help="direct logit attribution of a token to the embedding, each block's "
                              "attention heads and MLP (decoders)", formatter_class=fmt)
    _common(d, "causal-lm")
    d.add_argument("--text", required=True)
    d.add_argument("--target", required=True, help="token whose logit is attributed (e.g. ' Paris')")
    d.add_argument("--against", help="token subtracted (attributes the logit difference)")
    d.add_argument("--position", type=int, help="position whose logits are read (default: the last token)")
    d.add_argument("--out", help="directory for dla.json and dla.png")
    d.set_defaults(func=cmd_dla)

    a = subparsers.add_parser("attention", help="per-head attention patterns: summary table, JSON and heatmaps",
                              formatter_class=fmt)
    _common(a, "base")
    a.add_argument("--text", required=True, action="append", help="a text (repeat for a batch)")
    a.add_argument("--layer", help="draw only this layer (e.g. layer.2); default: one PNG per layer")
    a.add_argument("--sentence", type=int, default=0, help="which text the heatmaps show")
    a.add_argument("--out", help="directory for attention.json and the heatmaps")
    a.set_defaults(func=cmd_attention)
