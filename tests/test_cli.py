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
