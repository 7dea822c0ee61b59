"""``finegrain ray ...``: distributed probing and a cluster check (``finegrain extract --engine ray``
is the distributed extraction)."""

from __future__ import annotations

import json


def _cmd_probe_layers(args) -> int:
    # heavy: imported when the command runs
    from finegrain.distributed import probe_layers_ray
    from finegrain.probe import LinearProbe

    # options left unset keep LinearProbe's converging defaults (l2 chosen on dev, early stopping)
    kw = {k: v for k, v in dict(l1=args.l1, l2=args.l2, epochs=args.epochs, lr=args.lr).items() if v is not None}
    probe = LinearProbe(**kw, random_state=args.seed, progress=False)
    layers = args.layers.split(",") if args.layers else None
    res = probe_layers_ray(args.store, args.label, layers=layers, probe=probe, seed=args.seed, stream=args.stream,
                           engine=args.engine, address=args.address, num_gpus=args.gpus_per_task)
    print(res.table())
    if args.out:
        res.to_json(args.out)
        print(f"saved {args.out}")
    return 0


def _cmd_info(args) -> int:
    from finegrain.distributed import init_ray  # optional: ray, imported when the command runs

    ray = init_ray(args.address)
    print(json.dumps({"ray": ray.__version__, "resources": ray.cluster_resources(),
                      "nodes": len(ray.nodes())}, indent=2, default=str))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("ray", help="distributed probing on Ray (extraction: finegrain extract --engine ray)")
    sub = p.add_subparsers(dest="ray_command")
    pl = sub.add_parser("probe-layers", help="one probe per layer (+ all layers), each as a Ray task")
    pl.add_argument("store")
    pl.add_argument("--label", required=True, help="label column of the store")
    pl.add_argument("--layers", help="comma-separated layer names (default: all layers of the store)")
    pl.add_argument("--engine", default="ray", choices=["ray", "local"])
    pl.add_argument("--address", help="address of an existing Ray cluster (default: start Ray locally)")
    pl.add_argument("--gpus-per-task", type=float, default=0)
    pl.add_argument("--l1", type=float, help="L1 penalty (default: LinearProbe's, 1e-5)")
    pl.add_argument("--l2", type=float, help="L2 penalty (default: chosen on the dev split)")
    pl.add_argument("--epochs", type=int, help="maximum epochs (default 100; training stops earlier on dev loss)")
    pl.add_argument("--lr", type=float, help="learning rate (default: LinearProbe's)")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--stream", action="store_true", help="stream training rows from the store")
    pl.add_argument("--out", help="save the result as JSON")
    pl.set_defaults(func=_cmd_probe_layers)
    info = sub.add_parser("info", help="connect to Ray and print the cluster resources")
    info.add_argument("--address")
    info.set_defaults(func=_cmd_info)
