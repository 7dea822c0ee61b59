"""``finegrain patch ...``: activation patching (and attribution patching) between a clean and a corrupted text."""

from __future__ import annotations

import argparse
from pathlib import Path

_KINDS = ("resid", "mlp", "attn", "heads", "cell")


def _component_groups(spec: str) -> list[tuple[str, object]]:
    """``resid,heads,layer.2:5`` -> [("resid", "resid"), ("heads", "heads"), ("neurons", ["layer.2:5"])]."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    groups: list[tuple[str, object]] = [(k, k) for k in items if k in _KINDS]
    addresses = [s for s in items if s not in _KINDS]
    if addresses:
        groups.append(("components", addresses))
    return groups


def cmd_patch(args) -> None:
    # heavy: imported when the command runs
    from finegrain.attribute import head_adapter
    from finegrain.models import load_model
    from finegrain.patching import activation_patching

    if args.head:  # an encoder with a classification head: targets are its classes
        model = head_adapter(args.head, args.model, cache_dir=args.head_cache, device=args.device)
    else:
        model = load_model(args.model, task=args.task, device=args.device)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if args.positions in ("each", "all"):
        positions = args.positions
    else:
        positions = [int(p) for p in args.positions.split(",")]
    for name, comps in _component_groups(args.components):
        res = activation_patching(
            model, args.clean, args.corrupt, args.target, args.against, measure=args.measure,
            position=args.position, components=comps, positions=positions, direction=args.direction,
            method=args.method, batch_size=args.batch_size,
        )
        print(res.table())
        print()
        if out:
            res.to_json(out / f"patching_{name}.json")
            res.plot(out / f"patching_{name}.png")
    if out:
        print(f"tables and heatmaps in {out}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "patch", help="activation patching between a clean and a corrupted text (Meng et al. 2022)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="minilm", help="minilm, textgenrnn, or a local HF model path")
    p.add_argument("--task", default="causal-lm", help="HF head: causal-lm, masked-lm, sequence-classification")
    p.add_argument("--head", default=None,
                   help="a classification head on the encoder: builtin:sentiment (trained on the fly) or a saved "
                        "head .pt (replaces --task; --target/--against are then classes)")
    p.add_argument("--head-cache", default=None, help="directory to keep trained heads in")
    p.add_argument("--device", default="auto")
    p.add_argument("--clean", required=True, help="the clean text")
    p.add_argument("--corrupt", required=True, help="the corrupted text (the same number of tokens)")
    p.add_argument("--target", required=True, help="target token (e.g. ' Paris', with its leading space) or class")
    p.add_argument("--against", help="token or class subtracted from the target (logit difference)")
    p.add_argument("--measure", default="auto", choices=["auto", "logit_diff", "logit", "prob", "logprob"],
                   help="auto: logit_diff with --against, else logit")
    p.add_argument("--position", type=int, help="output position read (default: last token, or the mask token)")
    p.add_argument("--components", default="resid",
                   help="comma-separated kinds (resid, mlp, attn, heads, cell) and/or layers / neuron addresses")
    p.add_argument("--positions", default="each", help="'each', 'all' or comma-separated token positions")
    p.add_argument("--direction", default="denoise", choices=["denoise", "noise"])
    p.add_argument("--method", default="exact", choices=["exact", "attribution", "both"],
                   help="both: also attribution patching and its agreement with exact patching")
    p.add_argument("--batch-size", type=int, default=32, help="patched runs per forward pass")
    p.add_argument("--out", help="directory for patching_<components>.json and .png")
    p.set_defaults(func=cmd_patch)
