"""``finegrain rank``: rank the neurons of a store for a property (probe weights, Gaussian, probeless,
AP) and optionally find the minimal neuron set; results are saved as JSON next to the store."""

from __future__ import annotations

import argparse
import json

from finegrain.probe.cli import (
    add_data_arguments,
    add_probe_arguments,
    csv,
    output_path,
    probe_from_args,
    split_fractions,
)

METHODS = ("lca", "probe", "gaussian", "probeless", "ap")  # finegrain.rank.METHODS, without importing numpy


def add_rank_arguments(p: argparse.ArgumentParser, default: str = "lca") -> None:
    g = p.add_argument_group("ranking")
    g.add_argument("--method", choices=METHODS, default=default,
                   help="lca/probe: elastic-net probe weights (Dalvi et al. 2019)")
    g.add_argument("--criterion", choices=["loglik", "accuracy", "mi"], default="loglik", help="gaussian")
    g.add_argument("--max-dims", type=int, default=None, help="gaussian: greedy steps (default 50)")
    g.add_argument("--concept", help="ap: label value that defines the concept")
    g.add_argument("--level", choices=["token", "sentence"], default="token", help="ap")
    g.add_argument("--raw", action="store_true",
                   help="probeless: mean differences of raw activations (default: standardised units)")


def rank_options(args) -> dict:
    """The keyword arguments of ``finegrain.rank.rank_neurons`` that the ranking arguments set."""
    return dict(concept=args.concept, level=args.level, criterion=args.criterion, max_dims=args.max_dims,
                standardize=not args.raw)


def data_views(args):
    """``(train, dev, test)`` labelled views of the store (dev is ``None`` for a two-way split)."""
    from finegrain.store import ActivationStore  # heavy: imported when the command runs

    view = ActivationStore(args.store).view(layers=csv(args.layers), label=args.label)
    parts = view.split(split_fractions(args), seed=args.seed)
    return parts[0], parts[1] if len(parts) == 3 else None, parts[-1]


def _cmd_rank(args) -> int:
    from finegrain.rank import minimal_neuron_set, rank_neurons  # heavy: imported when the command runs

    train, dev, _ = data_views(args)
    probe = probe_from_args(args)
    ranking = rank_neurons(train, args.method, dev=dev, probe=probe, **rank_options(args))
    print(ranking.table(args.top))
    print(f"by layer (top {args.top}): {json.dumps(ranking.by_layer(args.top))}")
    path = output_path(args, f"rank-{args.method}")
    ranking.to_json(path)
    print(f"saved {path}")
    if args.minimal:
        ms = minimal_neuron_set(train, dev if dev is not None else train, ranking, tolerance=args.tolerance,
                                probe=probe)
        print(ms.table())
        mpath = path.with_name(path.name.replace(".json", ".minimal.json"))
        ms.to_json(mpath)
        print(f"saved {mpath}")
    return 0


def register(subparsers) -> None:
    """Add ``rank`` to the ``finegrain`` CLI."""
    p = subparsers.add_parser("rank", help="rank neurons for a property (lca|gaussian|probeless|ap)")
    add_data_arguments(p)
    add_probe_arguments(p)
    add_rank_arguments(p)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--minimal", action="store_true", help="also find the minimal neuron set (LCA)")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.set_defaults(func=_cmd_rank)


__all__ = ["METHODS", "add_rank_arguments", "data_views", "rank_options", "register"]
