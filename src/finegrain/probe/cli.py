"""``finegrain probe | rank | control (selectivity) | ablate-probe`` subcommands (and ``evaluate``
when no other package registered it). Results are saved as JSON next to the store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finegrain.store import ActivationStore


def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _floats(s: str | None) -> list[float] | None:
    return [float(x) for x in s.split(",")] if s else None


def _out(args, store: ActivationStore, kind: str, ext: str = "json") -> Path:
    if getattr(args, "out", None):
        return Path(args.out)
    stem = store.path.name.removesuffix(".fgstore")
    return store.path.with_name(f"{stem}.{kind}.{args.label}.{ext}")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="activation store (NAME.fgstore)")
    p.add_argument("--label", required=True, help="label column of the store, e.g. pos")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,dev,test fractions (by sentence)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output JSON (default: next to the store)")


def _add_probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe", choices=["linear", "logistic", "mlp"], default="linear")
    p.add_argument("--l1", type=float, default=1e-5)
    p.add_argument("--l2", type=float, default=1e-5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", default="256", help="MLP hidden sizes, comma-separated")
    p.add_argument("--device", default="auto")


def _probe(args):
    from finegrain.probe import LinearProbe, LogisticProbe, MLPProbe

    common = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, device=args.device, seed=args.seed)
    if args.probe == "mlp":
        return MLPProbe(hidden=tuple(int(h) for h in args.hidden.split(",")), **common)
    cls = LogisticProbe if args.probe == "logistic" else LinearProbe
    return cls(l1=args.l1, l2=args.l2, **common)


def _splits(args, store):
    from finegrain.probe import resolve_splits

    return resolve_splits(store, tuple(_floats(args.split)), seed=args.seed)


# -- probe --------------------------------------------------------------------------------
def _cmd_probe(args) -> int:
    from finegrain.probe import probe_layers

    store = ActivationStore(args.store)
    res = probe_layers(
        store,
        args.label,
        layers=_csv(args.layers),
        probe=_probe(args),
        splits=_splits(args, store),
        include_all=not args.no_all,
        stream=args.stream,
        seed=args.seed,
    )
    print(res.table())
    path = res.save(_out(args, store, "probe"))
    print(f"saved {path}")
    if args.plot:
        print(f"plot  {res.plot(args.plot)}")
    return 0


# -- rank ---------------------------------------------------------------------------------
def _rank(args, store, X_tr, y_tr, X_dev, y_dev, index, train_rows):
    from finegrain.rank import ap_ranking, gaussian_ranking, probe_weight_ranking, probeless_ranking

    if args.method in ("lca", "probe"):
        p = _probe(args)
        if args.probe == "mlp":
            raise SystemExit("--method lca needs a linear probe (--probe linear|logistic)")
        return probe_weight_ranking(p.fit(X_tr, y_tr), index)
    if args.method == "gaussian":
        return gaussian_ranking(X_tr, y_tr, X_dev, y_dev, criterion=args.criterion, max_dims=args.max_dims, index=index)
    if args.method == "probeless":
        return probeless_ranking(X_tr, y_tr, index=index)
    if not args.concept:
        raise SystemExit(f"--method ap needs --concept (one of {sorted(set(y_tr.tolist()))[:20]})")
    return ap_ranking(
        X_tr, y_tr == args.concept, level=args.level, sent_ids=store.sent_ids[train_rows], index=index
    )


def _cmd_rank(args) -> int:
    from finegrain.rank import minimal_neuron_set

    store = ActivationStore(args.store)
    parts = _splits(args, store)
    tr, dev = parts[0], parts[1] if len(parts) == 3 else parts[-1]
    X_tr, index = store.matrix(_csv(args.layers), rows=tr, return_index=True)
    X_dev = store.matrix(_csv(args.layers), rows=dev)
    y = store.labels(args.label)
    ranking = _rank(args, store, X_tr, y[tr], X_dev, y[dev], index, tr)
    print(f"{ranking.method}: top {args.top}: " + " ".join(str(n) for n in ranking.top(min(args.top, len(ranking)))))
    print(f"by layer (top {args.top}): {json.dumps(ranking.by_layer(args.top))}")
    path = _out(args, store, f"rank-{args.method}")
    ranking.to_json(path)
    print(f"saved {path}")
    if args.minimal:
        ms = minimal_neuron_set(
            X_tr, y[tr], X_dev, y[dev], ranking, tolerance=args.tolerance, probe=_probe(args), index=index
        )
        print(f"minimal neuron set: {ms.k} neurons ({ms.fraction:.1%}), dev acc {ms.dev_acc:.4f}, "
              f"oracle {ms.oracle_acc:.4f}, reached={ms.reached}")
        print(f"saved {ms.save(path.with_name(path.name.replace('.json', '.minimal.json')))}")
    return 0


# -- control / selectivity -----------------------------------------------------------------
def _cmd_control(args) -> int:
    from finegrain.evaluate import selectivity_layers

    store = ActivationStore(args.store)
    res = selectivity_layers(
        store, args.label, layers=_csv(args.layers), probe=_probe(args), splits=_splits(args, store),
        seed=args.seed, include_all=args.all,
    )
    print(res.table())
    print(f"saved {res.save(_out(args, store, 'selectivity'))}")
    return 0


# -- ablation -------------------------------------------------------------------------------
def _cmd_ablate(args) -> int:
    from finegrain.evaluate import ablation_curves
    from finegrain.rank import Ranking

    store = ActivationStore(args.store)
    parts = _splits(args, store)
    tr, te = parts[0], parts[-1]
    dev = parts[1] if len(parts) == 3 else te
    layers = _csv(args.layers)
    X_tr, index = store.matrix(layers, rows=tr, return_index=True)
    X_te = store.matrix(layers, rows=te)
    y = store.labels(args.label)
    if args.ranking:
        ranking = Ranking.from_json(args.ranking)
    else:
        ranking = _rank(args, store, X_tr, y[tr], store.matrix(layers, rows=dev), y[dev], index, tr)
    ks: list = [float(k) if "." in k else int(k) for k in args.ks.split(",")] if args.ks else None
    res = ablation_curves(X_tr, y[tr], X_te, y[te], ranking, ks=ks, probe=_probe(args), index=index,
                          n_random=args.n_random, seed=args.seed)
    print(res.table())
    print(f"saved {res.save(_out(args, store, 'ablation'))}")
    png = args.plot or _out(args, store, "ablation", "png")
    print(f"plot  {res.plot(png)}")
    return 0


def _cmd_evaluate(args) -> int:
    if not (args.control_task or args.ablation):
        raise SystemExit("choose --control-task and/or --ablation")
    if args.control_task:
        _cmd_control(argparse.Namespace(**{**vars(args), "all": False, "out": None}))
    if args.ablation:
        _cmd_ablate(argparse.Namespace(**{**vars(args), "out": None, "plot": None}))
    return 0


def _add_rank_args(p: argparse.ArgumentParser, default: str = "lca") -> None:
    p.add_argument("--method", choices=["lca", "probe", "gaussian", "probeless", "ap"], default=default,
                   help="lca/probe: elastic-net probe weights (Dalvi et al. 2019)")
    p.add_argument("--criterion", choices=["loglik", "accuracy", "mi"], default="loglik", help="gaussian")
    p.add_argument("--max-dims", type=int, default=None, help="gaussian: greedy steps (default 50)")
    p.add_argument("--concept", help="ap: label value that defines the concept")
    p.add_argument("--level", choices=["token", "sentence"], default="token", help="ap")


def _add_ablation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ranking", help="ranking JSON from `finegrain rank` (default: compute --method)")
    p.add_argument("--ks", help="numbers of neurons kept (ints) or fractions (0.05), comma-separated")
    p.add_argument("--n-random", type=int, default=3)
    p.add_argument("--plot", help="PNG path (default: next to the store)")


def register(subparsers) -> None:
    """Add the probing / ranking / evaluation subcommands to the ``finegrain`` CLI."""
    p = subparsers.add_parser("probe", help="layer-wise probing accuracy (+ all layers concatenated)")
    _add_common(p)
    _add_probe_args(p)
    p.add_argument("--stream", action="store_true", help="stream training rows from the store")
    p.add_argument("--no-all", action="store_true", help="skip the all-layers probe")
    p.add_argument("--plot", help="save a PNG of accuracy per layer")
    p.set_defaults(func=_cmd_probe)

    p = subparsers.add_parser("rank", help="rank neurons for a property (lca|gaussian|probeless|ap)")
    _add_common(p)
    _add_probe_args(p)
    _add_rank_args(p)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--minimal", action="store_true", help="also find the minimal neuron set (LCA)")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.set_defaults(func=_cmd_rank)

    p = subparsers.add_parser("control", aliases=["selectivity"],
                              help="control task (Hewitt & Liang 2019) and selectivity per layer")
    _add_common(p)
    _add_probe_args(p)
    p.add_argument("--all", action="store_true", help="also all layers concatenated")
    p.set_defaults(func=_cmd_control)

    p = subparsers.add_parser("ablate-probe", help="accuracy keeping top/random/bottom neurons of a ranking")
    _add_common(p)
    _add_probe_args(p)
    _add_rank_args(p)
    _add_ablation_args(p)
    p.set_defaults(func=_cmd_ablate)

    if "evaluate" not in getattr(subparsers, "choices", {}):
        p = subparsers.add_parser("evaluate", help="control task + selectivity and/or ranking ablation")
        _add_common(p)
        _add_probe_args(p)
        _add_rank_args(p)
        _add_ablation_args(p)
        p.add_argument("--control-task", action="store_true")
        p.add_argument("--ablation", action="store_true")
        p.set_defaults(func=_cmd_evaluate)


def main(argv=None) -> int:
    """Standalone entry point (the package CLI calls ``register`` instead)."""
    parser = argparse.ArgumentParser(prog="finegrain")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


__all__ = ["main", "register"]
