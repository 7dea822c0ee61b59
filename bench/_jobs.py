"""Subprocess entry points of the benchmark (each prints one JSON line on stdout, last).

Each job runs in a fresh process, so that its peak RSS belongs to one measurement and one contender's
allocations never slow the next; most reset the kernel's peak mark after loading and warm-up, so that
``peak_rss_mb`` (whole process) and ``work_peak_rss_mb`` (the timed work only) are both reported:

    python bench/_jobs.py extract --impl finegrain|bare|bare-onednn --corpus WORDS.json [--precision bfloat16]
    <nnsight venv python> bench/_jobs.py extract --impl nnsight --corpus WORDS.json --also-bare
    <neurox venv python> bench/_jobs.py neurox-extract --model PATH --corpus TXT --out H5
    python bench/_jobs.py profile-extract --corpus WORDS.json
    python bench/_jobs.py probe --impl finegrain|sklearn --data NPZ --task pos|control [--budget N]
    <neurox venv python> bench/_jobs.py probe --impl neurox --data NPZ --task pos --budget EPOCHS
    python bench/_jobs.py ig --impl finegrain|captum --head HEAD.pt --texts TEXTS.json --out SCORES.json
    python bench/_jobs.py report --out DIR
    python bench/_jobs.py rss-extract --n 2000 --out DIR
    python bench/_jobs.py write-synth --rows 1000000 --out STORE
    python bench/_jobs.py stream --store STORE
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

#: the completeness criterion of the IG benchmark, the same as finegrain's default (``DELTA_TOLERANCE`` and
#: its float32 floor): |delta| <= 1% of |f(x) - f(x')| (+ 1e-6), per example
IG_TOLERANCE, IG_ATOL = 0.01, 1e-6
#: the n_steps a Captum user tries, doubling, until an example meets the criterion
CAPTUM_STEPS = (2, 4, 8, 16, 32, 64, 128, 256)


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


def _rss_now_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: write 5 to /proc/self/clear_refs), so that
    the next :func:`_maxrss_mb` is the peak of what runs after this call, not of model loading."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _emit(d: dict) -> None:
    print("\n" + json.dumps(d), flush=True)


def _threads(n: int) -> int:
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _words(path: str) -> list[list[str]]:
    return json.loads(Path(path).read_text())


# -- extraction ----------------------------------------------------------------------------------------
def extract_job(args) -> dict:
    """One timed extraction in a fresh process, after loading and a warm-up over 64 sentences (the
    first call of a kernel for a new shape or dtype builds it): finegrain ``extract()`` (store
    written), the bare batched forward (``bare``, ``bare-onednn``) or nnsight (``nnsight``; with
    ``--also-bare`` the bare forward is timed after it in the same process, for a ratio that no
    difference between processes can move)."""
    import shutil

    import _peers
    import torch

    from finegrain.models import load_model

    threads = _threads(args.threads)
    sentences = _words(args.corpus)
    model = load_model("minilm", device="cpu")
    hf, tok = model.model, model.tokenizer
    few = sentences[:64]
    if args.impl == "finegrain":
        from finegrain.data.corpus import Corpus
        from finegrain.extraction import extract

        def run(sents) -> float:
            shutil.rmtree(args.out, ignore_errors=True)
            os.sync()
            t = time.perf_counter()
            extract(model, Corpus.from_words(sents, name="bench"), args.out, layers="hidden", dtype="float32",
                    batch_size=args.batch_size, progress=False, precision=args.precision)
            return time.perf_counter() - t
    elif args.impl in ("bare", "bare-onednn"):
        def run(sents) -> float:
            return _peers.bare_forward(hf, tok, sents, args.batch_size, onednn=args.impl == "bare-onednn",
                                       precision=args.precision)
    elif args.impl == "nnsight":
        import nnsight

        nn_model = _peers.nnsight_model(hf)

        def run(sents) -> float:
            return _peers.nnsight_forward(nn_model, hf, tok, sents, args.batch_size, precision=args.precision)
    else:
        raise SystemExit(f"unknown impl {args.impl}")
    run(few)
    load_peak = _maxrss_mb()
    before = _rss_now_mb()
    reset = _reset_peak_rss()
    cpu0 = _cpu_s()
    secs = run(sentences)
    out = {"impl": args.impl, "precision": args.precision, "seconds": secs, "cpu_seconds": _cpu_s() - cpu0,
           "threads": threads, "rss_before_mb": before, "load_peak_rss_mb": load_peak,
           "work_peak_rss_mb": _maxrss_mb() if reset else float("nan"), "sentences": len(sentences),
           "torch": torch.__version__}
    if args.impl == "nnsight":
        out["nnsight"] = nnsight.__version__
    if args.also_bare:
        _peers.bare_forward(hf, tok, few, args.batch_size, precision=args.precision)
        out["bare_seconds"] = _peers.bare_forward(hf, tok, sentences, args.batch_size, precision=args.precision)
    out["peak_rss_mb"] = _maxrss_mb() if not reset else max(load_peak, out["work_peak_rss_mb"])
    if args.impl == "finegrain":
        shutil.rmtree(args.out, ignore_errors=True)
    return out


def neurox_extract(args) -> dict:
    """NeuroX's ``extract_representations``, unmodified, after a warm-up over the first 64 sentences. It
    loads the model inside the call; that load is taken out of the clock by handing it the model loaded
    (and timed) before, through its own ``get_model_and_tokenizer`` (subtracting a separately timed load
    instead is noisy: the first load of a process is slower than the next)."""
    import contextlib
    import io

    import torch
    from neurox.data.extraction import transformers_extractor as te

    threads = _threads(args.threads)
    t = time.perf_counter()
    loaded = te.get_model_and_tokenizer(args.model, device="cpu")
    load = time.perf_counter() - t
    te.get_model_and_tokenizer = lambda *a, **k: loaded
    lines = Path(args.corpus).read_text().splitlines()
    few = Path(args.out).with_suffix(".warm.txt")
    few.write_text("\n".join(lines[:64]) + "\n")
    sink = io.StringIO()

    def run(corpus: Path) -> float:
        Path(args.out).unlink(missing_ok=True)
        os.sync()
        with contextlib.redirect_stdout(sink):  # it prints every sentence; not counted against it
            t = time.perf_counter()
            te.extract_representations(args.model, str(corpus), args.out, device="cpu",
                                       aggregation=args.aggregation, output_type=args.output_type)
            return time.perf_counter() - t

    run(few)
    few.unlink()
    load_peak = _maxrss_mb()
    reset = _reset_peak_rss()
    secs = run(Path(args.corpus))
    work_peak = _maxrss_mb() if reset else float("nan")
    Path(args.out).unlink(missing_ok=True)
    return {"seconds": secs, "seconds_load": load, "load_peak_rss_mb": load_peak, "work_peak_rss_mb": work_peak,
            "peak_rss_mb": max(load_peak, work_peak), "threads": threads, "torch": torch.__version__}


def profile_extract(args) -> dict:
    """Profiles of one finegrain extraction (float32, store written) after a warm-up: cProfile (Python
    functions, by own time and by cumulative time) and torch.profiler (operators, by self CPU time), each
    in its own run (the two together would distort each other), beside an unprofiled run's time."""
    import contextlib
    import cProfile
    import io
    import pstats
    import shutil

    from torch.profiler import ProfilerActivity, profile

    from finegrain.data.corpus import Corpus
    from finegrain.extraction import extract
    from finegrain.models import load_model

    threads = _threads(args.threads)
    corpus = Corpus.from_words(_words(args.corpus), name="bench")
    model = load_model("minilm", device="cpu")

    def run(c, profiler=None) -> float:
        """One extraction; ``profiler`` (entered after the old store is gone) sees ``extract()`` alone."""
        shutil.rmtree(args.out, ignore_errors=True)
        os.sync()
        with profiler if profiler is not None else contextlib.nullcontext():
            t = time.perf_counter()
            extract(model, c, args.out, layers="hidden", dtype="float32", batch_size=32, progress=False)
            return time.perf_counter() - t

    run(corpus[:64])
    plain = run(corpus)
    prof = cProfile.Profile()
    cp_secs = run(corpus, prof)
    texts = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(args.top)
        texts[key] = buf.getvalue()
    tp = profile(activities=[ProfilerActivity.CPU])
    tp_secs = run(corpus, tp)
    ops = tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    shutil.rmtree(args.out, ignore_errors=True)
    return {"seconds": plain, "cprofile_seconds": cp_secs, "torch_profile_seconds": tp_secs, "threads": threads,
            "cprofile_tottime": texts["tottime"], "cprofile_cumulative": texts["cumulative"], "torch_ops": ops,
            "sentences": len(corpus), "words": corpus.n_words}


# -- probes --------------------------------------------------------------------------------------------
def probe_job(args) -> dict:
    """One probe trained on the saved matrices (``Xtr``/``Xte``, labels ``y{tr,te}_{task}`` as class
    indices, ``sid_tr`` the training rows' sentences) and scored on the test rows. ``finegrain``: the default
    ``LinearProbe()`` (it stops by itself; ``--budget`` is ignored), on a view with the sentence ids, so that
    its dev split is by sentence as with a store; ``sklearn``: ``StandardScaler`` + ``LogisticRegression``
    (lbfgs, C=1) with ``max_iter=budget``; ``neurox``: ``train_logistic_regression_probe`` with its
    defaults (Adam lr 1e-3, batch 128, l1 = l2 = 1e-5) for ``budget`` epochs."""
    import numpy as np
    import torch

    threads = _threads(args.threads)
    # every import before the peak mark is reset: the fit's growth is then the fit's own
    if args.impl == "finegrain":
        from finegrain.probe import LinearProbe
        from finegrain.store.view import ArrayView
    elif args.impl == "sklearn":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    elif args.impl == "neurox":
        import contextlib
        import io

        from neurox.interpretation import linear_probe
    else:
        raise SystemExit(f"unknown impl {args.impl}")
    d = np.load(args.data)
    Xtr, Xte = d["Xtr"], d["Xte"]
    ytr, yte = d[f"ytr_{args.task}"], d[f"yte_{args.task}"]
    load_peak = _maxrss_mb()
    before = _rss_now_mb()
    reset = _reset_peak_rss()
    info: dict = {}
    cpu0 = _cpu_s()
    if args.impl == "finegrain":
        probe = LinearProbe(progress=False, precision=args.precision)
        view = ArrayView(Xtr, ytr, sent_ids=d["sid_tr"])
        t = time.perf_counter()
        probe.fit(view)
        secs = time.perf_counter() - t
        acc = float(probe.score(Xte, yte))
        info = {"epochs": int(probe.n_epochs_), "best_epoch": int(probe.best_epoch_), "solver": probe.solver_,
                "converged": probe.converged_, "l2": float(probe.l2_)}
    elif args.impl == "sklearn":
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=args.budget))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t = time.perf_counter()
            pipe.fit(Xtr, ytr)
            secs = time.perf_counter() - t
        acc = float(pipe.score(Xte, yte))
        n_iter = int(np.max(pipe[-1].n_iter_))
        info = {"iterations": n_iter, "converged": n_iter < args.budget}
    else:
        torch.manual_seed(0)
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            t = time.perf_counter()
            probe = linear_probe.train_logistic_regression_probe(
                Xtr, ytr, lambda_l1=1e-5, lambda_l2=1e-5, num_epochs=args.budget, batch_size=128,
                learning_rate=1e-3)
            secs = time.perf_counter() - t
            acc = float(linear_probe.evaluate_probe(probe, Xte, yte)["__OVERALL__"])
        info = {"epochs": args.budget}
    return {"impl": args.impl, "task": args.task, "budget": args.budget, "seconds": secs,
            "cpu_seconds": _cpu_s() - cpu0, "test_acc": acc, "threads": threads, "rows": int(len(Xtr)),
            "features": int(Xtr.shape[1]), "rss_before_mb": before, "load_peak_rss_mb": load_peak,
            "work_peak_rss_mb": _maxrss_mb() if reset else float("nan"),
            "peak_rss_mb": max(load_peak, _maxrss_mb()), **info}


# -- integrated gradients ------------------------------------------------------------------------------
def _meets(delta: float, gap: float) -> bool:
    return abs(delta) <= IG_TOLERANCE * abs(gap) + IG_ATOL


class _CaptumTutorial:
    """Captum's LayerIntegratedGradients the way its BERT tutorial writes it: one sentence per call, ids
    in, the word-embedding layer hooked, reference = [CLS] [PAD]... [SEP], target = the predicted class,
    ``return_convergence_delta=True``, every step of a sentence in one forward (``internal_batch_size``
    unset)."""

    def __init__(self, head):
        import torch
        from captum.attr import LayerIntegratedGradients

        self.torch = torch
        self.model, self.tok = head.model, head.tokenizer
        self.model.eval()
        self.model.zero_grad()
        self.lig = LayerIntegratedGradients(self.forward, self.model.get_input_embeddings())

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits

    def encode(self, text: str):
        torch = self.torch
        enc = self.tok(text.split(), is_split_into_words=True, return_tensors="pt")
        ids = enc["input_ids"]
        ref = torch.full_like(ids, self.tok.pad_token_id)
        ref[:, 0], ref[:, -1] = ids[:, 0], ids[:, -1]  # keep [CLS] and [SEP]
        with torch.no_grad():
            pred = int(self.forward(ids, enc["token_type_ids"], enc["attention_mask"]).argmax(-1))
        return enc, ids, ref, pred

    def run(self, encoded, text: str, n_steps: int) -> tuple[list[float], float, float]:
        """(word scores, delta, f(x) - f(x')) of one sentence at ``n_steps``; the gap is sum(attributions)
        - delta (Captum's delta is sum(attributions) - (f(x) - f(x')))."""
        enc, ids, ref, pred = encoded
        attr, delta = self.lig.attribute(inputs=ids, baselines=ref, target=pred,
                                         additional_forward_args=(enc["token_type_ids"], enc["attention_mask"]),
                                         n_steps=n_steps, return_convergence_delta=True)
        tok_scores = attr.sum(-1).squeeze(0).detach()
        words = [0.0] * len(text.split())
        for t, w in enumerate(enc.word_ids()):
            if w is not None:
                words[w] += float(tok_scores[t])
        d = float(delta.reshape(-1)[0])
        return words, d, float(tok_scores.sum()) - d


def _captum_ig(head, texts: list[str], steps: list[int] | None) -> list[dict]:
    """Captum over ``texts``: each sentence at ``steps[i]``, or (``None``) at the first of
    :data:`CAPTUM_STEPS` that meets the criterion, every try included in the time (what a user who does
    not know the steps beforehand pays)."""
    cap = _CaptumTutorial(head)
    out = []
    for i, text in enumerate(texts):
        enc = cap.encode(text)
        schedule = CAPTUM_STEPS if steps is None else (steps[i],)
        tried = 0
        for n in schedule:
            words, delta, gap = cap.run(enc, text, n)
            tried += n
            if _meets(delta, gap):
                break
        out.append({"word_scores": words, "delta": delta, "gap": gap, "n_steps": n, "steps_tried": tried})
    return out


def _finegrain_ig(head, texts: list[str], n_steps) -> list[dict]:
    """finegrain's ``attribute(..., method="ig")`` with its defaults (sentences batched, sorted by length
    inside; ``n_steps="auto"``: per example 16, 32, ... until the criterion holds) and the same tolerance."""
    from finegrain.attribute import AUTO_STEPS, attribute

    res = attribute(head, texts, "pred", method="ig", n_steps=n_steps, progress=False,
                    delta_tolerance=IG_TOLERANCE)
    # "auto" reruns an example at every step count of its schedule up to the one it stopped at
    return [{"word_scores": [float(x) for x in r.word_scores], "delta": float(r.delta),
             "gap": float(r.f_x - r.f_baseline), "n_steps": int(r.n_steps), "evaluations": int(r.n_evaluations),
             "steps_tried": sum(s for s in AUTO_STEPS if s <= r.n_steps) if n_steps == "auto" else int(r.n_steps)}
            for r in res]


def ig(args) -> dict:
    """IG of a MiniLM classification head over ``--texts`` with finegrain (``--n-steps auto`` or a number)
    or Captum (``--steps-file``: one n_steps per sentence; ``--n-steps N``: N for all; neither: the doubling
    search per sentence), in a fresh process so that its peak RSS is its own."""
    import warnings

    import psutil
    import torch

    from finegrain.attribute import load_head

    threads = _threads(args.threads)
    texts = json.loads(Path(args.texts).read_text())
    head = load_head(args.head, "minilm", device="cpu")
    n_steps = args.n_steps if args.n_steps == "auto" or args.n_steps is None else int(args.n_steps)
    if args.impl == "captum":
        steps = json.loads(Path(args.steps_file).read_text()) if args.steps_file else (
            None if n_steps in (None, "auto") else [n_steps] * len(texts))

        def run(tx, st):
            return _captum_ig(head, tx, st)
    else:
        steps = "auto" if n_steps is None else n_steps

        def run(tx, st):
            return _finegrain_ig(head, tx, st)
    warnings.simplefilter("ignore")  # finegrain's CompletenessWarning: the bench counts the misses itself
    run(texts[:2], [2, 2] if args.impl == "captum" else 2)  # warm-up (imports, first autograd pass), not timed
    load_peak = _maxrss_mb()
    before = psutil.Process().memory_info().rss / 2**20
    reset = _reset_peak_rss()
    cpu0, t = _cpu_s(), time.perf_counter()
    rows = run(texts, steps)
    secs, cpu = time.perf_counter() - t, _cpu_s() - cpu0
    attr_peak = _maxrss_mb() if reset else float("nan")
    Path(args.out).write_text(json.dumps(rows))
    met = sum(_meets(r["delta"], r["gap"]) for r in rows)
    return {"impl": args.impl, "seconds": secs, "cpu_seconds": cpu, "threads": threads,
            "rss_before_mb": before, "load_peak_rss_mb": load_peak, "attribution_peak_rss_mb": attr_peak,
            "peak_rss_mb": max(load_peak, attr_peak), "sentences": len(texts), "met": met,
            "steps_used": [r["n_steps"] for r in rows], "steps_tried": sum(r.get("steps_tried", r["n_steps"])
                                                                           for r in rows),
            "mean_rel_delta": sum(abs(r["delta"]) / max(abs(r["gap"]), 1e-12) for r in rows) / len(rows),
            "torch": torch.__version__}


# -- the report ----------------------------------------------------------------------------------------
def _vmhwm_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _ChildPeaks:
    """Polls the peak RSS (VmHWM) of this process's descendants every ``interval`` seconds in a thread: a
    child's own ``ru_maxrss`` would include its parent's, which Linux carries across fork and exec. The last
    reading before a child exits is its peak up to ``interval`` before the end."""

    def __init__(self, interval: float = 0.25):
        import threading

        import psutil

        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._me = psutil.Process()
        self._interval = interval
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                kids = self._me.children(recursive=True)
            except Exception:  # noqa: BLE001 - a process that vanished between listing and reading
                continue
            for k in kids:
                hwm = _vmhwm_mb(k.pid)
                if hwm is not None:
                    try:
                        name = " ".join(k.cmdline()[1:4])
                    except Exception:  # noqa: BLE001
                        name = str(k.pid)
                    self.peaks[k.pid] = (name, max(hwm, self.peaks.get(k.pid, ("", 0.0))[1]))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {f"{name} (pid {pid})": mb for pid, (name, mb) in self.peaks.items()}


def report_job(args) -> dict:
    """``finegrain report`` (its command line, in this fresh process) into an empty directory: nothing
    cached but the annotated corpus (spaCy's labels, cached across runs by design). Peak RSS: VmHWM of this
    process and, polled, of every process it starts (the report's second process)."""
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    t = time.perf_counter()
    children = _ChildPeaks()
    from finegrain.cli import main

    argv = ["report", "--out", args.out, "--model", "minilm"]
    if args.n_sentences:
        argv += ["--n-sentences", str(args.n_sentences)]
    rc = main(argv)
    secs = time.perf_counter() - t
    child_peaks = children.stop()
    res = json.loads((Path(args.out) / "results.json").read_text())
    return {"rc": rc, "seconds_in_process": secs, "peak_rss_mb": _maxrss_mb(), "children_peak_rss_mb": child_peaks,
            "total_s": res.get("total_s"), "report_peak_rss_mb": res.get("peak_rss_mb"),
            "timings": res.get("timings", {}),
            "errors": {k: str(v).splitlines()[0] if v else "" for k, v in (res.get("errors") or {}).items()}}


# -- memory and streaming ------------------------------------------------------------------------------
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="job", required=True)
    ex = sub.add_parser("extract")
    ex.add_argument("--impl", required=True, choices=["finegrain", "bare", "bare-onednn", "nnsight"])
    ex.add_argument("--corpus", required=True, help="JSON list of word lists")
    ex.add_argument("--out", default="", help="finegrain: the store (removed after)")
    ex.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    ex.add_argument("--batch-size", type=int, default=32)
    ex.add_argument("--threads", type=int, default=0)
    ex.add_argument("--also-bare", action="store_true")
    ex.set_defaults(fn=extract_job)
    ne = sub.add_parser("neurox-extract")
    ne.add_argument("--model", required=True)
    ne.add_argument("--corpus", required=True)
    ne.add_argument("--out", required=True)
    ne.add_argument("--threads", type=int, default=0)
    ne.add_argument("--aggregation", default="average")
    ne.add_argument("--output-type", default="hdf5", help="NeuroX's own default is json")
    ne.set_defaults(fn=neurox_extract)
    pe = sub.add_parser("profile-extract")
    pe.add_argument("--corpus", required=True)
    pe.add_argument("--out", required=True)
    pe.add_argument("--top", type=int, default=15)
    pe.add_argument("--threads", type=int, default=0)
    pe.set_defaults(fn=profile_extract)
    pr = sub.add_parser("probe")
    pr.add_argument("--impl", required=True, choices=["finegrain", "sklearn", "neurox"])
    pr.add_argument("--data", required=True)
    pr.add_argument("--task", required=True)
    pr.add_argument("--budget", type=int, default=0, help="sklearn: max_iter; NeuroX: epochs; finegrain: unused")
    pr.add_argument("--precision", default="float32")
    pr.add_argument("--threads", type=int, default=0)
    pr.set_defaults(fn=probe_job)
    ig_ = sub.add_parser("ig")
    ig_.add_argument("--impl", choices=["finegrain", "captum"], required=True)
    ig_.add_argument("--head", required=True)
    ig_.add_argument("--texts", required=True)
    ig_.add_argument("--out", required=True)
    ig_.add_argument("--n-steps", default=None, help="'auto' (finegrain's default) or a number for all sentences")
    ig_.add_argument("--steps-file", default=None, help="Captum: JSON list, the n_steps of each sentence")
    ig_.add_argument("--threads", type=int, default=0)
    ig_.set_defaults(fn=ig)
    rp = sub.add_parser("report")
    rp.add_argument("--out", required=True)
    rp.add_argument("--n-sentences", type=int, default=0, help="0: the report's default")
    rp.set_defaults(fn=report_job)
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
    args = p.parse_args(argv)
    _emit(args.fn(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
