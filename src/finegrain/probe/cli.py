"""``finegrain probe``: layer-wise probing accuracy beside its baselines; results are saved as JSON next
to the store. The argument helpers (data, probe hyperparameters, output path) are shared by the ``rank``
and ``evaluate`` command lines."""

from __future__ import annotations

import argparse
from pathlib import Path

from finegrain.errors import ParameterError


def csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def split_fractions(args) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in args.split.split(","))
    except ValueError as e:
        raise ParameterError(f"--split must be comma-separated fractions, got {args.split!r}") from e


def output_path(args, kind: str, ext: str = "json") -> Path:
    """``--out``, or ``NAME.<kind>.<label>.<ext>`` next to the store ``NAME.fgstore``."""
    if getattr(args, "out", None):
        return Path(args.out)
    store = Path(args.store)
    return store.with_name(f"{store.name.removesuffix('.fgstore')}.{kind}.{args.label}.{ext}")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="activation store (NAME.fgstore)")
    p.add_argument("--label", required=True, help="label column of the store, e.g. pos")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,dev,test fractions (by sentence)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output JSON (default: next to the store)")


def add_probe_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("probe (defaults: the probe's own, which train until the dev loss stops improving)")
    g.add_argument("--probe", choices=["linear", "logistic", "mlp"], default="linear")
    g.add_argument("--neurox", action="store_true",
                   help="NeuroX's configuration: 10 epochs, lr 1e-3, batch 128, raw inputs, no stopping rule")
    g.add_argument("--l1", type=float, help="L1 penalty (default 1e-5)")
    g.add_argument("--l2", type=float, help="L2 (Frobenius) penalty (default 1e-5)")
    g.add_argument("--epochs", type=int, help="maximum epochs (default 100; training stops earlier on dev loss)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 1e-2 linear, 1e-3 MLP)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--patience", type=int, help="epochs without dev-loss improvement before the lr decays / stop")
    g.add_argument("--no-standardize", action="store_true", help="train on raw (unstandardised) activations")
    g.add_argument("--hidden", default="256", help="MLP hidden sizes, comma-separated")
    g.add_argument("--threads", type=int, help="torch threads for each fit (default: 1 for small probes)")
    g.add_argument("--device", default="auto")


def probe_from_args(args):
    """The probe the arguments describe (unset hyperparameters keep the probe's defaults)."""
    from finegrain.probe import LinearProbe, LogisticProbe, MLPProbe  # heavy: imported when the command runs

    kw = {k: v for k, v in dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, patience=args.patience,
                                n_threads=args.threads).items() if v is not None}
    kw.update(device=args.device, random_state=args.seed)
    if args.no_standardize:
        kw["standardize"] = False
    if args.probe == "mlp":
        return MLPProbe(hidden=tuple(int(h) for h in args.hidden.split(",")), **kw)
    kw.update({k: v for k, v in dict(l1=args.l1, l2=args.l2).items() if v is not None})
    cls = LogisticProbe if args.probe == "logistic" else LinearProbe
    return cls.neurox(**kw) if args.neurox else cls(**kw)


def _cmd_probe(args) -> int:
    from finegrain.probe import probe_layers  # heavy: imported when the command runs
    from finegrain.store import ActivationStore

    store = ActivationStore(args.store)
    res = probe_layers(store, args.label, layers=csv(args.layers), probe=probe_from_args(args),
                       splits=split_fractions(args), include_all=not args.no_all, stream=args.stream,
                       seed=args.seed, control=not args.no_control)
    print(res.table())
    path = output_path(args, "probe")
    res.to_json(path)
    print(f"saved {path}")
    if args.plot:
        print(f"plot  {res.plot(args.plot)}")
    return 0


def register(subparsers) -> None:
    """Add ``probe`` to the ``finegrain`` CLI."""
    p = subparsers.add_parser("probe", help="layer-wise probing accuracy beside majority, word-type and control "
                                            "baselines (+ all layers concatenated)")
    add_data_arguments(p)
    add_probe_arguments(p)
    p.add_argument("--no-control", action="store_true",
                   help="skip the control task per layer (halves the probes trained; selectivity not shown)")
    p.add_argument("--stream", action="store_true", help="stream training rows from the store every epoch")
    p.add_argument("--no-all", action="store_true", help="skip the all-layers probe")
    p.add_argument("--plot", help="save a PNG of accuracy per layer")
    p.set_defaults(func=_cmd_probe)


def main(argv=None) -> int:
    """Standalone entry point (the package CLI calls ``register`` instead)."""
    parser = argparse.ArgumentParser(prog="finegrain")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


__all__ = ["add_data_arguments", "add_probe_arguments", "csv", "main", "output_path", "probe_from_args",
           "register", "split_fractions"]
