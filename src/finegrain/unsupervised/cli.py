"""CLI: ``finegrain correlate | similarity | redundancy | concepts`` (see ``register``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finegrain.errors import ParameterError


def _csv(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _write(path: str | None, result) -> None:
    if path:
        result.to_json(path)
        print(f"wrote {path}")


def _correlate(args) -> None:
    # heavy: imported when the command runs
    from finegrain.store import ActivationStore
    from finegrain.unsupervised import cross_model_correlation

    if len(args.stores) < 2:
        raise ParameterError("correlate needs at least two stores")
    stores = [ActivationStore(p).view() for p in args.stores]
    res = cross_model_correlation(
        stores,
        layers=_csv(args.layers),
        names=_csv(args.names),
        methods=_csv(args.methods) or ("maxcorr", "mincorr", "linreg"),
        ridge=args.ridge,
        holdout=args.holdout,
        chunk_rows=args.chunk_rows,
        progress=True,
    )
    for model, by_method in res.rankings.items():
        for method, r in by_method.items():
            top = ", ".join(f"{n} ({s:.3f})" for n, s in zip(r.neurons[: args.top], r.scores[: args.top]))
            print(f"{model} {method}: {top}")
    _write(args.out, res)


def _similarity(args) -> None:
    # heavy: imported when the command runs
    from finegrain.results import write_text_atomic
    from finegrain.store import ActivationStore
    from finegrain.unsupervised import similarity_matrices

    if not 1 <= len(args.stores) <= 2:
        raise ParameterError("similarity takes one or two stores")
    stores = [ActivationStore(p).view() for p in args.stores]
    methods = _csv(args.method) or ["cka"]
    res = similarity_matrices(
        stores if len(stores) == 2 else stores[0],
        layers=_csv(args.layers),
        methods=methods,
        layers_b=_csv(args.layers_b),
        variance=args.variance,
        chunk_rows=args.chunk_rows,
        progress=True,
    )
    for m, mat in res.items():
        print(mat)
        if args.plot:
            p = Path(args.plot)
            path = p if len(res) == 1 else p.with_name(f"{p.stem}.{m}{p.suffix or '.png'}")
            print(f"wrote {mat.plot(path)}")
    if args.out:
        write_text_atomic(args.out, json.dumps({m: mat.to_dict() for m, mat in res.items()}, indent=1))
        print(f"wrote {args.out}")


def _redundancy(args) -> None:
    # heavy: imported when the command runs
    from finegrain.store import ActivationStore
    from finegrain.unsupervised import analyze_redundancy

    rep = analyze_redundancy(
        ActivationStore(args.store).view(),
        args.label,
        layers=_csv(args.layers),
        threshold=args.threshold,
        delta_layer=args.delta_layer,
        delta_neuron=args.delta_neuron,
        max_rows=args.max_rows or None,
        chunk_rows=args.chunk_rows,
    )
    print(rep.summary())
    print(
        "selected neurons: "
        + ", ".join(str(n) for n in rep.selected_neurons[:50])
        + (" ..." if rep.n_needed > 50 else "")
    )
    _write(args.out, rep)


def _concepts(args) -> None:
    # heavy: imported when the command runs
    from finegrain.store import ActivationStore
    from finegrain.unsupervised import LatentConcepts

    store = ActivationStore(args.store)
    cols = _csv(args.labels)
    if cols is None:
        cols = list(store.label_columns)
    lc = LatentConcepts(
        n_clusters=args.n_clusters,
        method=args.method,
        max_per_type=args.max_per_type or None,
        dedupe=args.dedupe,
        max_tokens=args.max_tokens or None,
        purity_threshold=args.purity,
    ).fit(store.view(layers=[args.layer]), args.layer, label_columns=cols)
    print(lc.summary(max_clusters=args.show))
    _write(args.out, lc)


def _command(subparsers, name: str, func, help: str, out: str, chunk_rows: bool = True) -> argparse.ArgumentParser:
    """A subcommand running ``func``, with ``--out`` (``out``: what it writes) and, for the commands that
    stream the stores, ``--chunk-rows``; the caller adds the rest after these."""
    p = subparsers.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, help=help)
    if chunk_rows:
        p.add_argument("--chunk-rows", type=int, default=4096, help="store rows read at a time")
    p.add_argument("--out", help=f"write {out} as JSON")
    p.set_defaults(func=func, command_name=name)
    return p


def register(subparsers) -> None:
    """Add the unsupervised-analysis subcommands to the main ``finegrain`` parser."""
    p = _command(subparsers, "correlate", _correlate, "cross-model neuron correlation rankings "
                 "(MaxCorr/MinCorr/LinReg, Bau et al. 2019)", "the full rankings")
    p.add_argument("stores", nargs="+", metavar="STORE", help="two or more aligned activation stores")
    p.add_argument("--layers", help="comma-separated layers used in every store (default: all)")
    p.add_argument("--names", help="comma-separated model names (default: store names)")
    p.add_argument("--methods", default="maxcorr,mincorr,linreg", help="comma-separated rankings")
    p.add_argument("--ridge", type=float, default=1e-3, help="LinReg ridge penalty (x mean variance)")
    p.add_argument("--holdout", type=float, default=0.2, help="LinReg held-out sentence fraction")
    p.add_argument("--top", type=int, default=10, help="neurons to print per ranking")

    p = _command(subparsers, "similarity", _similarity, "layer-by-layer representation similarity "
                 "(CKA, SVCCA, PWCCA, neuronsim, mixedsim)", "the matrices")
    p.add_argument("stores", nargs="+", metavar="STORE", help="one store (its layer pairs) or two aligned stores")
    p.add_argument("--method", default="cka", help="comma-separated: cka,neuronsim,mixedsim,svcca,pwcca")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--layers-b", help="layers of the second store (default: same as --layers)")
    p.add_argument("--variance", type=float, default=0.99, help="SVCCA variance kept")
    p.add_argument("--plot", help="heatmap PNG path (one per method when several)")

    p = _command(subparsers, "redundancy", _redundancy, "neuron redundancy: correlation clustering + "
                 "layer/neuron selection (Dalvi et al. 2020)", "the report")
    p.add_argument("store")
    p.add_argument("--label", required=True, help="label column used by the probes")
    p.add_argument("--layers", help="comma-separated layers, bottom to top (default: all)")
    p.add_argument("--threshold", type=float, default=0.3, help="clustering cut on 1 - |corr|")
    p.add_argument("--delta-layer", type=float, default=0.01, help="allowed accuracy loss for a layer")
    p.add_argument("--delta-neuron", type=float, default=0.01, help="allowed accuracy loss for neurons")
    p.add_argument("--max-rows", type=int, default=20000, help="rows the probes use (0 = all)")

    p = _command(subparsers, "concepts", _concepts, "latent concept discovery by clustering a layer's word "
                 "vectors (Dalvi et al. 2022)", "the concepts (centroids, clusters)", chunk_rows=False)
    p.add_argument("store")
    p.add_argument("--layer", required=True)
    p.add_argument("--n-clusters", type=int, default=50)
    p.add_argument("--method", choices=["agglomerative", "kmeans"], default="agglomerative")
    p.add_argument("--labels", help="comma-separated label columns to align with (default: all)")
    p.add_argument("--max-per-type", type=int, default=10, help="occurrences kept per word type (0 = all)")
    p.add_argument("--dedupe", action="store_true", help="one (mean) vector per word type")
    p.add_argument("--max-tokens", type=int, default=20000, help="tokens clustered at most (0 = all)")
    p.add_argument("--purity", type=float, default=0.9, help="purity needed to call a cluster aligned")
    p.add_argument("--show", type=int, default=30, help="clusters to print")
