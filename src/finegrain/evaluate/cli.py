"""``finegrain control`` (``selectivity``), ``finegrain ablate-probe`` and ``finegrain evaluate``: control
tasks and selectivity per layer, and probe-side ablation of a neuron ranking; results are saved as JSON
next to the store."""

from __future__ import annotations

import argparse

from finegrain.errors import ParameterError
from finegrain.probe.cli import (
    add_data_arguments,
    add_probe_arguments,
    csv,
    output_path,
    probe_from_args,
    split_fractions,
)
from finegrain.rank.cli import add_rank_arguments, data_views, rank_options


def _cmd_control(args) -> int:
    from finegrain.evaluate import selectivity_layers  # heavy: imported when the command runs
    from finegrain.store import ActivationStore

    res = selectivity_layers(ActivationStore(args.store), args.label, layers=csv(args.layers),
                             probe=probe_from_args(args), splits=split_fractions(args), seed=args.seed,
                             include_all=args.all)
    print(res.table())
    path = output_path(args, "selectivity")
    res.to_json(path)
    print(f"saved {path}")
    return 0


def _ks(text: str | None) -> list | None:
    try:
        return [float(k) if "." in k else int(k) for k in text.split(",")] if text else None
    except ValueError as e:
        raise ParameterError(f"--ks must be comma-separated ints or fractions, got {text!r}") from e


def _cmd_ablate(args) -> int:
    from finegrain.evaluate import probe_ablation  # heavy: imported when the command runs
    from finegrain.rank import Ranking

    train, dev, test = data_views(args)
    if args.ranking:
        ranking, options = Ranking.from_json(args.ranking), {}
    else:
        ranking, options = args.method, rank_options(args)
    res = probe_ablation(train, test, ranking, ks=_ks(args.ks), probe=probe_from_args(args), fill=args.fill,
                         modes=tuple(csv(args.modes)), n_random=args.n_random, seed=args.seed, dev=dev, **options)
    print(res.table())
    path = output_path(args, "ablation")
    res.to_json(path)
    print(f"saved {path}")
    png = args.plot or output_path(argparse.Namespace(**{**vars(args), "out": None}), "ablation", "png")
    print(f"plot  {res.plot(png)}")
    return 0


def _cmd_evaluate(args) -> int:
    if not (args.control_task or args.ablation):
        raise ParameterError("choose --control-task and/or --ablation")
    if args.control_task:
        _cmd_control(argparse.Namespace(**{**vars(args), "all": False, "out": None}))
    if args.ablation:
        _cmd_ablate(argparse.Namespace(**{**vars(args), "out": None, "plot": None}))
    return 0


def _add_ablation_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ablation")
    g.add_argument("--ranking", help="ranking JSON from `finegrain rank` (default: compute --method)")
    g.add_argument("--ks", help="numbers of neurons (ints) or fractions (0.05), comma-separated")
    g.add_argument("--modes", default="keep,remove,retrain", help="keep, remove and/or retrain")
    g.add_argument("--fill", choices=["mean", "zero"], default="mean",
                   help="what ablated units read as: their training mean (default) or zero")
    g.add_argument("--n-random", type=int, default=3)
    g.add_argument("--plot", help="PNG path (default: next to the store)")


def register(subparsers) -> None:
    """Add ``control`` / ``selectivity``, ``ablate-probe`` and ``evaluate`` to the ``finegrain`` CLI."""
    p = subparsers.add_parser("control", aliases=["selectivity"],
                              help="control task (Hewitt & Liang 2019) and selectivity per layer")
    add_data_arguments(p)
    add_probe_arguments(p)
    p.add_argument("--all", action="store_true", help="also all layers concatenated")
    p.set_defaults(func=_cmd_control)

    p = subparsers.add_parser("ablate-probe", help="accuracy keeping / removing the top, random and bottom "
                                                   "neurons of a ranking (probe-side)")
    add_data_arguments(p)
    add_probe_arguments(p)
    add_rank_arguments(p)
    _add_ablation_arguments(p)
    p.set_defaults(func=_cmd_ablate)

    p = subparsers.add_parser("evaluate", help="control task + selectivity and/or probe-side ranking ablation")
    add_data_arguments(p)
    add_probe_arguments(p)
    add_rank_arguments(p)
    _add_ablation_arguments(p)
    p.add_argument("--control-task", action="store_true")
    p.add_argument("--ablation", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


__all__ = ["register"]
