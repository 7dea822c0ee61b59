"""The second process of a parallel report: ``python -m finegrain.report.worker``, started by
:class:`finegrain.report.build.Lane`, not a command of its own.

It reads JSON lines on stdin — first ``{"spec": ...}`` (output folder, configuration, its own steps: the
sections on the sentiment head), then ``{"stores": [...]}`` once the parent has written the activation
stores, ``{"task": ...}`` answering each of its requests for the next task of the shared queue (``null``:
none left) and ``{"threads": n}`` once the parent only waits — and writes one JSON line per finished step
to its stdout (value, timing, error), ``{"next": true}`` when it is free, and ``{"done": ...}`` at the end;
anything a library prints goes to stderr. Every step is the parent's own (:class:`~finegrain.report.build.Steps`:
same call, same key), its result saved and reused in ``OUT/results`` as there.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback
from dataclasses import fields
from pathlib import Path

import torch

import finegrain
from finegrain.models import load_model
from finegrain.report import sections as S
from finegrain.report.build import CorpusData, ReportConfig, Steps, _rss_mb, _Runner
from finegrain.results import jsonable
from finegrain.store import ActivationStore


class _Inbox:
    """The parent's messages, read from stdin by a thread: each kept by its one key."""

    def __init__(self, stream):
        self._q: queue.Queue = queue.Queue()
        self._held: dict[str, object] = {}
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                for k, v in msg.items():
                    self._q.put((k, v))
        self._q.put(("eof", True))

    def _drain(self, block: bool) -> None:
        try:
            k, v = self._q.get(block=block)
        except queue.Empty:
            return
        self._held[k] = v
        while True:
            try:
                k, v = self._q.get_nowait()
            except queue.Empty:
                return
            self._held[k] = v

    def peek(self, key: str):
        """The latest message ``key`` (removed), or ``None``."""
        self._drain(block=False)
        return self._held.pop(key, None)

    def has(self, key: str) -> bool:
        self._drain(block=False)
        return key in self._held

    def get(self, key: str):
        """Wait for message ``key``; ``None`` when stdin ends first."""
        while key not in self._held and "eof" not in self._held:
            self._drain(block=True)
        return self._held.pop(key, None)


def _corpus(d: dict) -> CorpusData:
    return CorpusData(d["name"], d["kind"], ActivationStore(d["path"]), list(d["properties"]), tuple(d["notes"]),
                      main=bool(d["main"]), display=dict(d.get("display") or {}))


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a library's print goes to stderr, never into the results

    def send(**msg) -> None:
        proto.write(json.dumps(jsonable(msg), allow_nan=False) + "\n")
        proto.flush()

    inbox = _Inbox(sys.stdin)
    spec = inbox.get("spec")
    if spec is None:
        return 2
    try:
        known = {f.name for f in fields(ReportConfig)}
        cfg = ReportConfig(**{k: v for k, v in spec["config"].items() if k in known})
        cfg.progress, cfg.parallel = False, False
        torch.set_num_threads(int(spec.get("threads") or 1))
        out = Path(spec["out"])
        run = _Runner(out, cfg)

        def step(task) -> None:
            n = inbox.peek("threads")  # the parent only waits now: every thread is ours
            if n:
                torch.set_num_threads(int(n))
            if steps.corpora is None and steps.needs_stores(task):
                steps.corpora = [_corpus(d) for d in inbox.get("stores") or []]
            label, fn, key, optional = steps.step(task)
            value = run.run(label, fn, key=key, optional=optional)
            send(step=label, value=value, timing=run.timings[label], error=run.errors.get(label))

        label = "load model (second process)"
        model = run.run(label, load_model, cfg.model, device=cfg.device)
        send(step=label, value=None, timing=run.timings[label])
        ctx = S.Context(model, cfg, out)
        steps = Steps(model, ctx, cfg, {"version": finegrain.__version__, "weights": model.weights_hash()})
        for name in spec["fixed"]:
            step(("extra", name))
        while True:
            send(next=True)
            task = inbox.get("task")
            if task is None:
                break
            step(tuple(task))
        send(done=True, peak_rss_mb=_rss_mb())
        return 0
    except BaseException:  # the parent computes what it did not get, and raises there what must not fail
        send(fatal=traceback.format_exc())
        return 1
    finally:
        proto.close()


if __name__ == "__main__":
    sys.exit(main())
