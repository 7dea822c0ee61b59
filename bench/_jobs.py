"""Subprocess entry points of the benchmark (each prints one JSON line on stdout, last).

Run in a fresh process so that its peak RSS (``ru_maxrss``) belongs to one measurement:

    python bench/_jobs.py rss-extract --n 2000 --out DIR
    python bench/_jobs.py write-synth --rows 1000000 --out STORE
    python bench/_jobs.py stream --store STORE
    <neurox venv python> bench/_jobs.py neurox-extract --model PATH --corpus TXT --out H5
    <neurox venv python> bench/_jobs.py neurox-probe --data NPZ --epochs 10
    python bench/_jobs.py fg-probe --data NPZ --epochs 10 [--precision bfloat16]
    python bench/_jobs.py ig --impl finegrain|captum --head HEAD.pt --texts TEXTS.json --out SCORES.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _maxrss_mb() -> float:
    """Peak RSS of this process in MB. Linux keeps ``ru_maxrss`` across fork and exec, so a job started
    by a big parent would report the parent's peak: VmHWM (per address space, new at exec) is read
    first."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: write 5 to /proc/self/clear_refs), so that
    the next :func:`_maxrss_mb` is the peak of what runs after this call, not of model loading."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _emit(d: dict) -> None:
    print("\n" + json.dumps(d), flush=True)


def rss_extract(args) -> dict:
    import psutil

    from finegrain.data.generate import generate_corpus
    from finegrain.extraction import extract
    from finegrain.models import load_model

    corpus = generate_corpus(args.n, seed=args.seed, unique=False)
    model = load_model(args.model, device="cpu")
    model.model(**model.encode([["warm", "up"]]).inputs)
    before = psutil.Process().memory_info().rss / 2**20
    t = time.perf_counter()
    store = extract(model, corpus, args.out, layers=args.layers.split(","), dtype=args.dtype, overwrite=True,
                    progress=False)
    secs = time.perf_counter() - t
    size = sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file())
    return {"sentences": args.n, "words": corpus.n_words, "seconds": secs, "rss_before_mb": before,
            "peak_rss_mb": _maxrss_mb(), "store_mb": size / 2**20}


def write_synth(args) -> dict:
    import numpy as np

    from finegrain.store import StoreWriter

    layers = {f"layer.{i}": args.width for i in range(args.layers)}
    w = StoreWriter(args.out, layers, args.rows, label_columns=["y"], dtype="float16", chunk_rows=args.block,
                    overwrite=True, meta={"model": "synthetic"})
    rng = np.random.default_rng(0)
    base = {k: rng.normal(size=(args.block, v)).astype(np.float16) for k, v in layers.items()}
    # a planted binary label that layer.0:0 encodes, for the streaming probe of the benchmark
    y = np.where(np.arange(args.block) % 2 == 0, "a", "b")
    base["layer.0"][:, 0] += np.float16(2) * (y == "b")
    t = time.perf_counter()
    words = np.array(["w"] * args.block)
    for start in range(0, args.rows, args.block):
        k = min(args.block, args.rows - start)
        shift = np.float16((start // args.block) % 7 * 0.01)  # blocks differ; no RNG cost per block
        sid = np.arange(start, start + k) // 10
        w.write({n: (a[:k] + shift) for n, a in base.items()}, sent_id=sid, word_pos=np.zeros(k, np.int64),
                words=words[:k], labels={"y": y[:k]})
    w.commit()
    size = sum(f.stat().st_size for f in w.path.rglob("*") if f.is_file())
    return {"rows": args.rows, "seconds": time.perf_counter() - t, "peak_rss_mb": _maxrss_mb(),
            "store_mb": size / 2**20}


def stream(args) -> dict:
    """One streaming pass over every neuron: running mean and variance (the first pass of a
    correlation/ranking), one block in memory at a time."""
    import numpy as np

    from finegrain.store import ActivationStore

    store = ActivationStore(args.store)
    t = time.perf_counter()
    n, s1, s2 = 0, None, None
    for _, X in store.iter_chunks(None, chunk_rows=args.block):
        X = X.astype(np.float64)
        s1 = X.sum(0) if s1 is None else s1 + X.sum(0)
        s2 = (X * X).sum(0) if s2 is None else s2 + (X * X).sum(0)
        n += len(X)
    mean = s1 / n
    var = s2 / n - mean**2
    return {"rows": n, "neurons": int(len(mean)), "seconds": time.perf_counter() - t,
            "peak_rss_mb": _maxrss_mb(), "mean_var": float(var.mean())}


def stream_op(args) -> dict:
    """One out-of-core operation on a (synthetic) store, in a fresh process so that its peak RSS is its
    own: ``probe`` (1 epoch of the elastic-net probe streamed from layer.0 and layer.1, blocks of
    ``--block`` rows, on the planted label ``y``), ``top`` (the 20 top-activating words of 8 neurons,
    one pass) or ``cka`` (CKA of layer.0 x layer.1, running cross-products)."""
    from finegrain.store import ActivationStore

    store = ActivationStore(args.store)
    base = _maxrss_mb()
    t = time.perf_counter()
    out: dict = {"op": args.op, "rows": store.n_rows}
    if args.op == "probe":
        from finegrain.probe import LinearProbe
        from finegrain.probe.sources import StoreSource

        src = StoreSource(store, layers=["layer.0", "layer.1"], block_rows=args.block)
        probe = LinearProbe.neurox(epochs=1, device="cpu", progress=False, block_rows=args.block)
        probe.fit(src, store.labels("y"))
        w = abs(probe.coef_).sum(0)
        out.update(loss=probe.loss_history_[-1], planted_rank=int((w > w[0]).sum()))
    elif args.op == "top":
        from finegrain.describe import top_activating

        for u in range(8):
            top_activating(store, f"layer.1:{u}", k=20, with_context=False, chunk_rows=args.block)
    elif args.op == "cka":
        from finegrain.unsupervised import similarity_matrix

        sm = similarity_matrix(store, layers=["layer.0", "layer.1"], method="cka", chunk_rows=args.block)
        out["cka_01"] = float(sm.values[0, 1])
    else:
        raise SystemExit(f"unknown op {args.op}")
    out.update(seconds=time.perf_counter() - t, rss_after_open_mb=base, peak_rss_mb=_maxrss_mb())
    return out


def neurox_extract(args) -> dict:
    import contextlib
    import io

    import torch
    from neurox.data.extraction import transformers_extractor as te

    torch.set_num_threads(args.threads or torch.get_num_threads())
    t = time.perf_counter()
    te.get_model_and_tokenizer(args.model)  # measured separately: extract_representations loads again
    load = time.perf_counter() - t
    sink = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(sink):  # it prints every sentence; not counted against it
        te.extract_representations(args.model, args.corpus, args.out, device="cpu", aggregation=args.aggregation,
                                   output_type=args.output_type)
    total = time.perf_counter() - t
    return {"seconds_total": total, "seconds_load": load, "seconds": total - load}


def _probe_data(args):
    """``(Xtr, ytr, Xte, yte)`` saved by the bench's probe section; sets the torch threads asked for."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    d = np.load(args.data)
    return d["Xtr"], d["ytr"], d["Xte"], d["yte"]


def neurox_probe(args) -> dict:
    import torch
    from neurox.interpretation import linear_probe

    Xtr, ytr, Xte, yte = _probe_data(args)
    torch.manual_seed(0)
    t = time.perf_counter()
    probe = linear_probe.train_logistic_regression_probe(
        Xtr, ytr, lambda_l1=args.l1, lambda_l2=args.l2, num_epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr)
    secs = time.perf_counter() - t
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        acc = linear_probe.evaluate_probe(probe, Xte, yte)["__OVERALL__"]
    return {"seconds": secs, "test_acc": float(acc), "threads": torch.get_num_threads()}


def fg_probe(args) -> dict:
    """finegrain's LinearProbe on the same saved matrices as ``neurox-probe``, also in a fresh process."""
    import torch

    from finegrain.probe import LinearProbe

    Xtr, ytr, Xte, yte = _probe_data(args)
    probe = LinearProbe.neurox(l1=args.l1, l2=args.l2, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                               device="cpu", random_state=args.seed, progress=False, precision=args.precision)
    t = time.perf_counter()
    probe.fit(Xtr, ytr)
    secs = time.perf_counter() - t
    return {"seconds": secs, "test_acc": probe.score(Xte, yte), "threads": torch.get_num_threads()}


def _captum_lig(head, texts: list[str], n_steps: int, internal_batch_size: int):
    """Captum's LayerIntegratedGradients the way its BERT tutorial writes it: one sentence at a time,
    ids in, the layer hooked is the word-embedding layer, reference = [CLS] [PAD]... [SEP], target =
    the predicted class, ``internal_batch_size`` set. Returns (word scores, deltas) per sentence."""
    import torch
    from captum.attr import LayerIntegratedGradients

    model, tok = head.model, head.tokenizer
    model.eval()
    model.zero_grad()

    def forward_fn(input_ids, token_type_ids=None, attention_mask=None):
        return model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits

    lig = LayerIntegratedGradients(forward_fn, model.get_input_embeddings())
    scores, deltas = [], []
    for text in texts:
        enc = tok(text.split(), is_split_into_words=True, return_tensors="pt")
        ids, tti, mask = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
        ref = torch.full_like(ids, tok.pad_token_id)
        ref[:, 0], ref[:, -1] = ids[:, 0], ids[:, -1]  # keep [CLS] and [SEP]
        with torch.no_grad():
            pred = int(forward_fn(ids, tti, mask).argmax(-1))
        attr, delta = lig.attribute(inputs=ids, baselines=ref, target=pred, additional_forward_args=(tti, mask),
                                    n_steps=n_steps, internal_batch_size=internal_batch_size,
                                    return_convergence_delta=True)
        tok_scores = attr.sum(-1).squeeze(0).detach()
        words = [0.0] * len(text.split())
        for t, w in enumerate(enc.word_ids()):
            if w is not None:
                words[w] += float(tok_scores[t])
        scores.append(words)
        deltas.append(float(delta.reshape(-1)[0]))
    return scores, deltas


def _finegrain_ig(head, texts: list[str], n_steps: int, internal_batch_size: int | None, batch_size: int,
                  sort: bool = True, tokens_per_forward: int | None = None):
    """finegrain IG, sentences batched. ``sort``: pass the texts ordered by token count (and restore the
    order after), as one does for any batched inference: ``attribute`` pads within its groups of
    ``batch_size`` in the order given, and in random order a third of the rows can be padding."""
    from finegrain.attribute import attribute

    order = list(range(len(texts)))
    if sort:
        lengths = [len(ids) for ids in head.tokenizer(texts)["input_ids"]]
        order.sort(key=lengths.__getitem__)
    kw = {} if internal_batch_size is None else {"internal_batch_size": internal_batch_size}
    if tokens_per_forward is not None:
        kw["tokens_per_forward"] = tokens_per_forward or None
    res = attribute(head, [texts[i] for i in order], "pred", method="ig", n_steps=n_steps, batch_size=batch_size,
                    progress=False, **kw)
    back = [None] * len(texts)
    for i, r in zip(order, res):
        back[i] = r
    return [[float(x) for x in r.word_scores] for r in back], [float(r.delta) for r in back]


def ig(args) -> dict:
    """IG of a MiniLM classification head over ``--texts`` with finegrain (sentences batched) or
    Captum (one sentence at a time), in a fresh process so that its peak RSS is its own."""
    from pathlib import Path

    import psutil
    import torch

    from finegrain.attribute import load_head

    torch.set_num_threads(args.threads or torch.get_num_threads())
    texts = json.loads(Path(args.texts).read_text())
    head = load_head(args.head, "minilm", device="cpu")
    if args.impl == "captum":
        def run(tx, steps):
            return _captum_lig(head, tx, steps, args.internal_batch_size or steps)
    else:
        def run(tx, steps):
            return _finegrain_ig(head, tx, steps, args.internal_batch_size, args.batch_size, not args.no_sort,
                                 args.tokens_per_forward)
    run(texts[:2], 2)  # warm-up (imports, first autograd pass), not timed
    load_peak = _maxrss_mb()  # loading the model is the same for both and would hide the difference
    import gc

    gc.collect()
    before = psutil.Process().memory_info().rss / 2**20
    reset = _reset_peak_rss()
    cpu0, t = _cpu_s(), time.perf_counter()
    scores, deltas = run(texts, args.n_steps)
    secs, cpu = time.perf_counter() - t, _cpu_s() - cpu0
    attr_peak = _maxrss_mb() if reset else float("nan")
    Path(args.out).write_text(json.dumps({"word_scores": scores, "deltas": deltas}))
    return {"impl": args.impl, "seconds": secs, "cpu_seconds": cpu, "threads": torch.get_num_threads(),
            "rss_before_mb": before, "peak_rss_mb": _maxrss_mb(), "load_peak_rss_mb": load_peak,
            "attribution_peak_rss_mb": attr_peak,
            "mean_abs_delta": sum(abs(d) for d in deltas) / len(deltas), "sentences": len(texts)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="job", required=True)
    a = sub.add_parser("rss-extract")
    a.add_argument("--n", type=int, required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--model", default="minilm")
    a.add_argument("--layers", default="layer.0,layer.3,layer.6")
    a.add_argument("--dtype", default="float16")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(fn=rss_extract)
    w = sub.add_parser("write-synth")
    w.add_argument("--rows", type=int, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--layers", type=int, default=7)
    w.add_argument("--width", type=int, default=384)
    w.add_argument("--block", type=int, default=16384)
    w.set_defaults(fn=write_synth)
    s = sub.add_parser("stream")
    s.add_argument("--store", required=True)
    s.add_argument("--block", type=int, default=16384)
    s.set_defaults(fn=stream)
    so = sub.add_parser("stream-op")
    so.add_argument("--store", required=True)
    so.add_argument("--op", required=True, choices=["probe", "top", "cka"])
    so.add_argument("--block", type=int, default=16384)
    so.set_defaults(fn=stream_op)
    ne = sub.add_parser("neurox-extract")
    ne.add_argument("--model", required=True)
    ne.add_argument("--corpus", required=True)
    ne.add_argument("--out", required=True)
    ne.add_argument("--threads", type=int, default=0)
    ne.add_argument("--aggregation", default="average")
    ne.add_argument("--output-type", default="hdf5", help="NeuroX's own default is json")
    ne.set_defaults(fn=neurox_extract)
    npb, fpb = sub.add_parser("neurox-probe"), sub.add_parser("fg-probe")
    for sp in (npb, fpb):  # the same training setup for both
        sp.add_argument("--data", required=True)
        sp.add_argument("--epochs", type=int, default=10)
        sp.add_argument("--lr", type=float, default=1e-3)
        sp.add_argument("--batch-size", type=int, default=128)
        sp.add_argument("--l1", type=float, default=1e-5)
        sp.add_argument("--l2", type=float, default=1e-5)
        sp.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    npb.set_defaults(fn=neurox_probe)
    fpb.add_argument("--precision", default="float32")
    fpb.add_argument("--seed", type=int, default=0)
    fpb.set_defaults(fn=fg_probe)
    ig_ = sub.add_parser("ig")
    ig_.add_argument("--impl", choices=["finegrain", "captum"], required=True)
    ig_.add_argument("--head", required=True)
    ig_.add_argument("--texts", required=True)
    ig_.add_argument("--out", required=True)
    ig_.add_argument("--n-steps", type=int, default=50)
    ig_.add_argument("--internal-batch-size", type=int, default=None,
                     help="rows per forward (default: finegrain's own default; Captum: n_steps)")
    ig_.add_argument("--tokens-per-forward", type=int, default=None,
                     help="finegrain's token budget per forward (default: its default; 0: none)")
    ig_.add_argument("--batch-size", type=int, default=16)
    ig_.add_argument("--threads", type=int, default=0)
    ig_.add_argument("--no-sort", action="store_true", help="finegrain: keep the given order (more padding)")
    ig_.set_defaults(fn=ig)
    args = p.parse_args(argv)
    _emit(args.fn(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
