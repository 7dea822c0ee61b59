import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from finegrain.cli import main
from finegrain.store import ActivationStore


@pytest.fixture(scope="module")
def saved_bert(tmp_path_factory):
    from finegrain.testing import tiny_bert

    d = tmp_path_factory.mktemp("tiny-bert")
    m = tiny_bert()
    m.model.save_pretrained(d)
    m.tokenizer.save_pretrained(d)
    return d


def test_extract_info_layers_from_a_local_model(saved_bert, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat .\n\nnaïve dogs run fast\n")
    out = tmp_path / "s.fgstore"
    assert main(["extract", "--model", str(saved_bert), "--corpus", str(corpus), "--out", str(out),
                 "--layers", "layer.1,layer.2.mlp", "--dtype", "float16"]) == 0
    store = ActivationStore(out)
    assert store.n_rows == 8 and list(store.layers) == ["layer.1", "layer.2.mlp"]
    assert store["layer.1"].dtype == "float16"
    assert main(["info", str(out)]) == 0
    assert "layer.2.mlp" in capsys.readouterr().out
    assert main(["layers", "--model", str(saved_bert)]) == 0
    assert "(4 heads x 8)" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.fgstore")]) == 2
    assert "no activation store" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["extract", "--model", "minilm", "--corpus", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "empty corpus" in capsys.readouterr().err
    ok = tmp_path / "ok.txt"
    ok.write_text("a b\n")
    assert main(["extract", "--model", "some-org/uncached", "--corpus", str(ok), "--out", str(tmp_path / "x")]) == 2
    assert "finegrain never downloads" in capsys.readouterr().err


# -- issue 16: one line per error, --debug for the traceback -------------------------------------------
@pytest.fixture
def corpus_file(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("the cat sat .\nnaïve dogs run fast\n")
    return f


@pytest.mark.parametrize("code", ["ENOSPC", "EFBIG", "EACCES"])
def test_os_errors_while_writing_are_one_line_naming_the_file(saved_bert, corpus_file, tmp_path, capsys,
                                                             monkeypatch, code):
    """Disk full (or any OSError) used to end in a Python traceback."""
    import errno

    from finegrain.store import files

    def fail(self, *args, **kwargs):  # every chunk file write goes through _send
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(files.ChunkFiles, "_send", fail)
    out = tmp_path / "s.fgstore"
    assert main(["extract", "--model", str(saved_bert), "--corpus", str(corpus_file), "--out", str(out)]) == 2
    text = capsys.readouterr().err
    err = [x for x in text.strip().splitlines() if not x.startswith("Loading weights")]  # transformers' bar
    assert len(err) == 1 and "Traceback" not in text, err
    assert err[0].startswith("finegrain: error: ") and str(out) in err[0] and f"({code})" in err[0]
    assert os.strerror(getattr(errno, code)) in err[0]
    with pytest.raises(OSError):  # --debug: the traceback instead (anywhere on the line)
        main(["extract", "--model", str(saved_bert), "--corpus", str(corpus_file), "--out", str(out), "--debug"])


def test_out_under_a_file_and_other_os_errors_are_one_line(corpus_file, tmp_path, capsys):
    assert main(["extract", "--model", "minilm", "--corpus", str(corpus_file),
                 "--out", str(corpus_file / "x.fgstore")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(corpus_file) in err[0] and "(ENOTDIR)" in err[0]
    assert main(["info", str(corpus_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finegrain activation store" in err[0]
    assert main(["extract", "--model", "minilm", "--corpus", str(tmp_path / "nope.txt"), "--out",
                 str(tmp_path / "y.fgstore")]) == 2
    assert "nope.txt: no such file" in capsys.readouterr().err


def test_key_errors_never_print_as_a_bare_quoted_key(corpus_file, tmp_path, capsys, monkeypatch):
    import finegrain.extraction as fx
    from finegrain.errors import LayerError

    def lookup(*a, **k):
        return {}["acts"]

    monkeypatch.setattr(fx, "extract", lookup)
    monkeypatch.setattr("finegrain.models.load_model", lambda *a, **k: None)
    assert main(["extract", "--corpus", str(corpus_file), "--out", str(tmp_path / "k.fgstore")]) == 2
    err = capsys.readouterr().err.strip()
    assert err != "finegrain: error: 'acts'" and "KeyError" in err and "'acts'" in err and "--debug" in err

    def layer(*a, **k):
        raise LayerError("unknown layer 'layer.9'")

    monkeypatch.setattr(fx, "extract", layer)
    assert main(["extract", "--corpus", str(corpus_file), "--out", str(tmp_path / "k.fgstore")]) == 2
    assert capsys.readouterr().err.strip() == "finegrain: error: unknown layer 'layer.9'"


def test_extract_token_level_from_the_command_line(saved_bert, corpus_file, tmp_path, capsys):
    out = tmp_path / "t.fgstore"
    assert main(["extract", "--model", str(saved_bert), "--corpus", str(corpus_file), "--out", str(out),
                 "--aggregation", "token", "--layers", "layer.1"]) == 0
    store = ActivationStore(out)
    # charpiece: one token per character, but a word with a character outside the vocabulary is one [UNK]
    assert store.level == "token" and store.n_rows == len("thecatsat.dogsrunfast") + 1
    assert "[UNK]" in list(store.words)
    assert "level      token" in capsys.readouterr().out


def test_a_missing_model_fails_at_once_without_the_hub(tmp_path):
    """With HF_HUB_OFFLINE unset, a typo in a model name used to spend ~50 s in hub retries (and would
    download on a machine with internet); now it fails at once, suggesting the closest name."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_ETAG_TIMEOUT"] = env["HF_HUB_DOWNLOAD_TIMEOUT"] = "30"  # the old code's wait, not a hang
    code = textwrap.dedent("""
        import time
        import transformers  # imported before the clock starts: the bound is on the loading itself
        from finegrain.errors import ModelError
        from finegrain.models import load_model
        for name in ("minlm", "some-org/surely-not-cached-model"):
            t0 = time.perf_counter()
            try:
                load_model(name)
            except ModelError as e:
                print(f"{time.perf_counter() - t0:.3f}", e)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=tmp_path)
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2, run.stdout + run.stderr
    print(lines)
    for line in lines:
        assert float(line.split()[0]) < 5.0 and "never downloads unless asked" in line
    assert "Did you mean 'minilm'?" in lines[0]


def test_core_commands_start_fast_without_heavy_imports(tmp_path):
    """`finegrain info` (and --help, which imports every plugin) measured in a subprocess; the core
    commands import no plugin, and `info` neither torch, transformers, scikit-learn nor zarr."""
    from finegrain.store import StoreWriter

    w = StoreWriter(tmp_path / "s.fgstore", {"l": 4}, 6, dtype="float32")
    w.write({"l": np.zeros((6, 4), np.float32)}, np.arange(6), np.zeros(6), list("abcdef"))
    w.commit()
    heavy = ("torch", "transformers", "sklearn", "zarr", "matplotlib")
    probe = textwrap.dedent(f"""
        import sys, time
        t0 = time.perf_counter()
        from finegrain.cli import main
        rc = main(sys.argv[1:])
        print("HEAVY", [m for m in {heavy!r} if m in sys.modules], f"{{time.perf_counter() - t0:.3f}}")
        sys.exit(rc)
    """)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", probe, "info", str(tmp_path / "s.fgstore")], capture_output=True,
                         text=True, timeout=120)
    wall = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("HEAVY"))
    print(f"finegrain info: {wall:.2f} s wall (process start included); {line}")
    assert line.split(" [")[1].startswith("]"), f"finegrain info imported heavy modules: {line}"
    assert wall < 2.0  # generous: a shared 2-core machine; about 0.3 s idle


HEAVY = ("torch", "transformers", "sklearn", "matplotlib", "zarr")


@pytest.mark.slow
def test_help_starts_fast():
    """`python -m finegrain --help` imports every plugin's cli.py: each must import only light modules at
    its top (heavy ones inside the command function), so that --help starts in under a second."""
    from finegrain.cli import _PLUGINS

    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "finegrain", "--help"], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert run.returncode == 0 and "extract" in run.stdout, run.stderr[-2000:]
    code = textwrap.dedent(f"""
        import importlib, sys
        for mod in {list(_PLUGINS)!r}:  # in the CLI's order: each plugin is charged with what it adds
            before = {{m for m in {HEAVY!r} if m in sys.modules}}
            try:
                importlib.import_module(mod)
            except ImportError:
                continue
            added = [m for m in {HEAVY!r} if m in sys.modules and m not in before]
            if added:
                print(mod, added)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    heavy = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    print(f"python -m finegrain --help: {wall:.2f} s wall; plugins importing heavy modules at their top: {heavy}")
    assert not heavy and wall < 2.0, heavy
