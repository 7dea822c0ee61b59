"""MiniLM extraction throughput on a GPU (words/s), printed as markdown lines for bench/RESULTS.md.

    python bench/gpu_extract.py                    # float32, then float16 autocast
    python bench/gpu_extract.py --sentences 20000 --batch-size 128 --no-fp16

Measures finegrain ``extract()`` (store written, all hidden states) and a bare batched
``model(**batch, output_hidden_states=True)`` loop over the same sentences, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sentences", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-fp16", action="store_true", help="skip the float16 autocast run")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    import torch

    from finegrain.data.generate import generate_corpus
    from finegrain.extraction import extract
    from finegrain.models import load_model

    model = load_model("minilm", device=args.device)
    if model.device.type != "cuda":
        print(f"warning: running on {model.device}, not CUDA", file=sys.stderr)
    gpu = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else str(model.device)
    corpus = generate_corpus(args.sentences, seed=0, unique=False)
    words = corpus.n_words
    tmp = Path(tempfile.mkdtemp(prefix="fg-gpu-"))

    def sync():
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(fp16: bool):
        if fp16 and model.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def run_extract(fp16: bool) -> float:
        sync()
        t = time.perf_counter()
        extract(model, corpus, tmp / "g.fgstore", layers="hidden", dtype="float16" if fp16 else "float32",
                batch_size=args.batch_size, overwrite=True, progress=False,
                precision="float16" if fp16 and model.device.type == "cuda" else "float32")
        sync()
        return time.perf_counter() - t

    def run_bare(fp16: bool) -> float:
        tok, hf = model.tokenizer, model.model
        sync()
        t = time.perf_counter()
        texts = [" ".join(s.words) for s in corpus.sentences]
        lengths = [len(ids) for ids in tok(texts)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        with torch.inference_mode(), autocast(fp16):
            for i in range(0, len(order), args.batch_size):
                batch = tok([texts[j] for j in order[i : i + args.batch_size]], padding=True, return_tensors="pt")
                out = hf(**batch.to(model.device), output_hidden_states=True)
                # bring the states to host memory, as extraction must
                [h.cpu() for h in out.hidden_states]
        sync()
        return time.perf_counter() - t

    run_extract(False)  # warm-up: CUDA context, kernels
    print(f"GPU extraction, MiniLM-L6, all 7 hidden states, {args.sentences} sentences / {words} words, "
          f"batch {args.batch_size}, {gpu}, torch {torch.__version__}, median of {args.repeats}:")
    print()
    print("| precision | finegrain extract (store written) | bare forward | ratio |")
    print("|---|---|---|---|")
    for fp16 in ([False] if args.no_fp16 else [False, True]):
        fg, bare = [], []
        for _ in range(args.repeats):
            fg.append(run_extract(fp16))
            bare.append(run_bare(fp16))
        f, b = statistics.median(fg), statistics.median(bare)
        name = "float16 autocast, fp16 store" if fp16 else "float32"
        print(f"| {name} | {words / f:,.0f} words/s ({f:.2f} s) | {words / b:,.0f} words/s ({b:.2f} s) "
              f"| {f / b:.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
