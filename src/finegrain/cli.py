"""The ``finegrain`` command line: a thin layer over the Python API.

Each capability package may provide ``<package>/cli.py`` with ``register(subparsers)``; they are
all collected here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

_PLUGINS = [
    "finegrain.data.cli",
    "finegrain.probe.cli",
    "finegrain.unsupervised.cli",
    "finegrain.attribute.cli",
    "finegrain.intervene.cli",
    "finegrain.mediation.cli",
    "finegrain.describe.cli",
    "finegrain.report.cli",
    "finegrain.explain.cli",
    "finegrain.distributed.cli",
]


def _cmd_extract(args) -> int:
    from finegrain.data import read_corpus
    from finegrain.extraction import extract
    from finegrain.models import load_model

    if args.corpus.startswith("builtin:"):
        from finegrain.data import builtin_corpus

        corpus = builtin_corpus(args.corpus.split(":", 1)[1])
    else:
        corpus = read_corpus(args.corpus, labels=args.labels, label=args.label)
    if args.engine == "ray":
        from finegrain.distributed import extract_ray

        store = extract_ray(
            args.model, corpus, args.out, layers=args.layers, aggregation=args.aggregation, pooling=args.pooling,
            dtype=args.dtype, batch_size=args.batch_size, num_workers=args.workers, overwrite=args.overwrite,
            task=args.task, device=args.device, address=args.address, precision=args.precision, neurons=args.neurons,
        )
    else:
        model = load_model(args.model, task=args.task, device=args.device)
        store = extract(
            model, corpus, args.out, layers=args.layers, aggregation=args.aggregation, pooling=args.pooling,
            dtype=args.dtype, batch_size=args.batch_size, overwrite=args.overwrite, precision=args.precision,
            neurons=args.neurons,
        )
    print(store.info())
    return 0


def _cmd_info(args) -> int:
    from finegrain.store import ActivationStore

    print(ActivationStore(args.store).info())
    return 0


def _cmd_layers(args) -> int:
    from finegrain.models import load_model

    model = load_model(args.model, task=args.task, device="cpu")
    print(f"{model.name}  ({model.kind})")
    for name, size in model.layers().items():
        extra = ""
        if name.endswith(".attn"):
            h, d = model.heads(name)
            extra = f"  ({h} heads x {d})"
        print(f"  {name:<20} {size}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import finegrain

    p = argparse.ArgumentParser(
        prog="finegrain", description="Fine-grained interpretation and causation analysis of NLP models."
    )
    p.add_argument("--version", action="version", version=f"finegrain {finegrain.__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("extract", help="extract activations of a model over a corpus into a store")
    e.add_argument("--model", default="minilm", help="minilm | textgenrnn | local HF model directory")
    e.add_argument("--task", default="base", help="HF head: base, masked-lm, causal-lm, ...")
    e.add_argument("--corpus", required=True, help="corpus file (txt, conllu, tsv, ...) or builtin:synthetic")
    e.add_argument("--labels", help="labels file for the NeuroX parallel format")
    e.add_argument("--label", default=None, help="label column (CoNLL-U column or FEATS key, e.g. upos, feats:Number)")
    e.add_argument("--out", required=True, help="output store directory (NAME.fgstore)")
    e.add_argument("--layers", default="hidden", help="'hidden', 'all' or comma-separated layer names")
    e.add_argument("--neurons", default=None,
                   help="keep only these neurons, e.g. layer.3:117,layer.5.mlp:12 (replaces --layers)")
    e.add_argument("--aggregation", default="mean", choices=["first", "last", "mean"])
    e.add_argument("--pooling", default=None, choices=["cls", "mean", "last"], help="one row per sentence")
    e.add_argument("--dtype", default="auto", choices=["auto", "float16", "float32"],
                   help="stored precision (auto: float16 once a float32 store would pass 2 GiB)")
    e.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="compute precision of the forward (autocast); --dtype is the stored precision")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="auto")
    e.add_argument("--engine", default="local", choices=["local", "ray"])
    e.add_argument("--workers", type=int, default=2, help="Ray actors (with --engine ray)")
    e.add_argument("--address", default=None, help="existing Ray cluster (default: the local Ray)")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=_cmd_extract)

    i = sub.add_parser("info", help="summarise an activation store")
    i.add_argument("store")
    i.set_defaults(func=_cmd_info)

    la = sub.add_parser("layers", help="list the layers (hook points) of a model with their sizes")
    la.add_argument("--model", default="minilm")
    la.add_argument("--task", default="base")
    la.set_defaults(func=_cmd_layers)

    for mod in _PLUGINS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name and (err.name == mod or mod.startswith(err.name + ".")):
                continue  # capability not installed/built
            raise
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (ValueError, RuntimeError, FileNotFoundError, KeyError) as e:
        if args.verbose:
            raise
        print(f"finegrain: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
