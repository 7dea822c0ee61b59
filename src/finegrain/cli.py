"""The ``finegrain`` command line: a thin layer over the Python API.

Each capability package may provide ``<package>/cli.py`` with ``register(subparsers)``; they are
all collected here. The core commands (``extract``, ``info``, ``layers``) are parsed without importing
the plugins, and every heavy module (torch, transformers, zarr) is imported inside the command that
needs it, so ``finegrain info`` starts in well under a second (issue 19).

Errors: every finegrain error and every ``OSError`` (disk full, permission denied, not a directory,
...) is printed as one line naming the file and the problem, with exit status 2; ``--debug`` (anywhere
on the command line) shows the traceback instead. ``-v`` only turns on progress logging.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

import finegrain
from finegrain.errors import CorpusError, FinegrainError, ParameterError

_PLUGINS = [
    "finegrain.data.cli",
    "finegrain.probe.cli",
    "finegrain.rank.cli",
    "finegrain.evaluate.cli",
    "finegrain.unsupervised.cli",
    "finegrain.attribute.cli",
    "finegrain.intervene.cli",
    "finegrain.mediation.cli",
    "finegrain.describe.cli",
    "finegrain.report.cli",
    "finegrain.explain.cli",
    "finegrain.distributed.cli",
    "finegrain.patching.cli",
    "finegrain.lens.cli",
]


CORE_COMMANDS = ("extract", "info", "layers")


def _cmd_extract(args) -> int:
    # heavy: imported when the command runs
    from finegrain.data import read_corpus
    from finegrain.extraction import extract
    from finegrain.models import load_model
    from finegrain.store import check_output

    check_output(args.out, args.overwrite)  # a refused --out fails before the model is loaded
    corpus = read_corpus(args.corpus, labels=args.labels, label=args.label)  # a file or builtin:NAME
    sources = None
    if args.sources:
        # one source sentence per line, parallel to the corpus's (target) sentences
        sources = [s.words for s in read_corpus(args.sources, format="text")]
        if len(sources) != len(corpus):
            raise CorpusError(f"{args.sources}: {len(sources)} source sentences for the {len(corpus)} sentences "
                              f"of {args.corpus} (one source per line, in the corpus's order)")
    seq2seq = {k: v for k, v in (("side", args.side), ("sources", sources)) if v is not None}
    if args.align != "input":
        seq2seq["align"] = args.align
    if args.engine == "ray":
        if seq2seq:
            raise ParameterError("--side/--sources/--align run with --engine local")
        from finegrain.distributed import extract_ray  # heavy: imported when the command runs

        store = extract_ray(
            args.model, corpus, args.out, layers=args.layers, aggregation=args.aggregation, pooling=args.pooling,
            dtype=args.dtype, batch_size=args.batch_size, num_workers=args.workers, overwrite=args.overwrite,
            task=args.task, device=args.device, address=args.address, precision=args.precision, neurons=args.neurons,
        )
    else:
        model = load_model(args.model, task=args.task, device=args.device, allow_download=args.allow_download)
        store = extract(
            model, corpus, args.out, layers=args.layers, aggregation=args.aggregation, pooling=args.pooling,
            dtype=args.dtype, batch_size=args.batch_size, overwrite=args.overwrite, precision=args.precision,
            neurons=args.neurons, **seq2seq,
        )
    print(store.info())
    return 0


def _cmd_info(args) -> int:
    from finegrain.store import ActivationStore  # heavy: numpy and the store's own files (no zarr, no torch)

    store = ActivationStore(args.store)
    print(store.info())
    if args.verify:
        r = store.verify(progress=None if args.progress else False)
        what = "every crc32c checksum correct" if r["checksummed"] else "all present (format 1: no checksums)"
        print(f"verified   {r['chunks']} chunks of {r['arrays']} arrays, {r['bytes'] / 1e6:.1f} MB: {what}")
    return 0


def _cmd_layers(args) -> int:
    from finegrain.models import load_model  # heavy: imported when the command runs

    model = load_model(args.model, task=args.task, device="cpu", allow_download=args.allow_download)
    print(f"{model.name}  ({model.kind})")
    for name, size in model.layers().items():
        extra = ""
        if name.endswith(".attn"):
            h, d = model.heads(name)
            extra = f"  ({h} heads x {d})"
        print(f"  {name:<20} {size}{extra}")
    return 0


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The parser of every command (``plugins=False``: the core commands only, nothing else imported)."""
    p = argparse.ArgumentParser(
        prog="finegrain", description="Fine-grained interpretation and causation analysis of NLP models."
    )
    p.add_argument("--version", action="version", version=f"finegrain {finegrain.__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (accepted anywhere)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("extract", help="extract activations of a model over a corpus into a store")
    e.add_argument("--model", default="minilm", help="minilm | textgenrnn | local HF model directory")
    e.add_argument("--task", default="base", help="HF head: base, masked-lm, causal-lm, ...")
    e.add_argument("--allow-download", action="store_true",
                   help="let transformers fetch a model missing locally from the Hugging Face hub (off: never)")
    e.add_argument("--corpus", required=True, help="corpus file (txt, conllu, tsv, ...) or builtin:synthetic")
    e.add_argument("--labels", help="labels file for the NeuroX parallel format")
    e.add_argument("--label", default=None, help="label column (CoNLL-U column or FEATS key, e.g. upos, feats:Number)")
    e.add_argument("--out", required=True, help="output store directory (NAME.fgstore)")
    e.add_argument("--layers", default="hidden", help="'hidden', 'all' or comma-separated layer names")
    e.add_argument("--neurons", default=None,
                   help="keep only these neurons, e.g. layer.3:117,layer.5.mlp:12 (replaces --layers)")
    e.add_argument("--aggregation", default="mean", choices=["first", "last", "mean", "token"],
                   help="subword tokens to word rows, or 'token': one row per model token (per character, "
                        "spaces included, for character models)")
    e.add_argument("--pooling", default=None, choices=["cls", "mean", "last"], help="one row per sentence")
    e.add_argument("--dtype", default="auto", choices=["auto", "float16", "float32"],
                   help="stored precision (auto: float16 once a float32 store would pass 2 GiB)")
    e.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="compute precision of the forward (autocast); --dtype is the stored precision")
    e.add_argument("--side", default=None, choices=["encoder", "decoder"],
                   help="encoder-decoder models: the encoder (rows = source words) or the teacher-forced decoder "
                        "(rows = target words, with --sources)")
    e.add_argument("--sources", default=None,
                   help="with --side decoder: a text file of source sentences, one per line, parallel to --corpus "
                        "(default: the corpus's sentence-level 'source' column)")
    e.add_argument("--align", default="input", choices=["input", "output"],
                   help="with --side decoder: read a target word where it is the decoder's input or its prediction")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="auto")
    e.add_argument("--engine", default="local", choices=["local", "ray"])
    e.add_argument("--workers", type=int, default=2, help="Ray actors (with --engine ray)")
    e.add_argument("--address", default=None, help="existing Ray cluster (default: the local Ray)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing finegrain store (only a store)")
    e.set_defaults(func=_cmd_extract)

    i = sub.add_parser("info", help="summarise an activation store")
    i.add_argument("store")
    i.add_argument("--verify", action="store_true", help="read every chunk and check its crc32c checksum")
    i.add_argument("--progress", action="store_true", help="show a progress bar while verifying")
    i.set_defaults(func=_cmd_info)

    la = sub.add_parser("layers", help="list the layers (hook points) of a model with their sizes")
    la.add_argument("--model", default="minilm")
    la.add_argument("--task", default="base")
    la.add_argument("--allow-download", action="store_true", help="let transformers fetch a missing model")
    la.set_defaults(func=_cmd_layers)

    for mod in _PLUGINS if plugins else ():
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name and (err.name == mod or mod.startswith(err.name + ".")):
                continue  # capability not installed/built
            raise
        module.register(sub)
    return p


def _command(argv: list[str]) -> str | None:
    """The command word of ``argv`` (top-level options take no values), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def error_line(e: BaseException) -> str | None:
    """The one line the command line prints for ``e``, or ``None`` for an error that is a bug (its
    traceback is then the report). An ``OSError`` names its file and its errno (``ENOSPC``, ...); a
    ``KeyError`` is never a bare quoted key."""
    if isinstance(e, OSError) and e.strerror and (e.filename is not None or not isinstance(e, FinegrainError)):
        code = errno.errorcode.get(e.errno or 0)
        where = f"{e.filename}" + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "")
        text = f"{where}: {e.strerror}" if e.filename is not None else f"{e.strerror}"
        return " ".join(f"{text}{f' ({code})' if code else ''}".split())
    if isinstance(e, FinegrainError):
        return " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, KeyError):
        key = e.args[0] if e.args else "?"
        return f"missing entry {key!r} (KeyError; run with --debug for the traceback)"
    if isinstance(e, OSError | ValueError | RuntimeError | ImportError | MemoryError):
        return f"{type(e).__name__}: {' '.join(str(e).split())}" if str(e) else type(e).__name__
    return None


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the command too
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser(plugins=_command(argv) not in CORE_COMMANDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("finegrain: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        line = None if debug else error_line(e)
        if line is None:
            raise
        print(f"finegrain: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
