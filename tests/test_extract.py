import random
import string

import numpy as np
import pytest
import torch

from finegrain.data.corpus import Corpus, CorpusError, Sentence
from finegrain.extraction import _plan_units, extract
from finegrain.models import ModelError
from finegrain.store import ActivationStore, StoreError, StoreWriter


def _random_words(rng, n):
    alphabet = string.ascii_letters + string.digits + ".,!?'-"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(n)]


def _manual(model, words, layer, how):
    """Reference word vectors computed independently: the charpiece tokenizer makes word k of
    length n own exactly n consecutive tokens after [CLS]."""
    b = model.encode([words])
    _, cache = model.run_with_cache(b, [layer])
    act = cache[layer][0]
    out, t = [], 1
    for w in words:
        span = act[t : t + len(w)]
        out.append({"first": span[0], "last": span[-1], "mean": span.mean(0)}[how])
        t += len(w)
    return torch.stack(out).numpy()


@pytest.mark.parametrize("how", ["first", "last", "mean"])
def test_alignment_exhaustive_with_charpiece(tiny_bert, tmp_path, how):
    rng = random.Random(0)
    sents = [_random_words(rng, rng.randint(1, 9)) for _ in range(40)]
    store = extract(tiny_bert, Corpus.from_words(sents), tmp_path / "a.fgstore", layers="all",
                    aggregation=how, batch_size=7, buffer_sentences=16, progress=False)
    assert store.n_rows == sum(map(len, sents))
    row = 0
    for s in sents:
        for lay in ("layer.0", "layer.2", "layer.1.mlp"):
            np.testing.assert_allclose(store[lay][row : row + len(s)], _manual(tiny_bert, s, lay, how), atol=2e-5)
        assert list(store.words[row : row + len(s)]) == s
        row += len(s)


def test_store_equals_hidden_states_gpt2_bpe(tiny_gpt2, tmp_path):
    sents = [["the", "cat", "sat", "on", "the", "mat"], ["unbelievable", "results", "!"], ["a"]]
    store = extract(tiny_gpt2, Corpus.from_words(sents), tmp_path / "g.fgstore", aggregation="last", progress=False)
    b = tiny_gpt2.encode([sents[1]])
    with torch.no_grad():
        hs = tiny_gpt2.model(**b.inputs, output_hidden_states=True).hidden_states
    wid = b.word_ids[0]
    last_tok = [max(t for t, w in enumerate(wid) if w == k) for k in range(3)]
    np.testing.assert_allclose(store["layer.1"][6:9], hs[1][0, last_tok].numpy(), atol=1e-5)


def test_sentence_pooling_and_labels(tiny_bert, tmp_path):
    c = Corpus([Sentence(["ab", "c"], sent_labels={"y": "pos"}), Sentence(["de"], sent_labels={"y": "neg"})])
    store = extract(tiny_bert, c, tmp_path / "p.fgstore", pooling="cls", layers=["layer.2"], progress=False)
    assert store.level == "sentence" and store.n_rows == 2
    assert list(store.labels("y")) == ["pos", "neg"]
    b = tiny_bert.encode([["ab", "c"]])
    _, cache = tiny_bert.run_with_cache(b, ["layer.2"])
    np.testing.assert_allclose(store["layer.2"][0], cache["layer.2"][0, 0].numpy(), atol=1e-5)


def test_long_sentences_are_split_into_windows(tiny_bert, tmp_path):
    words = ["abcd"] * 40  # 160 subwords > 128 positions
    store = extract(tiny_bert, Corpus.from_words([words, ["xy"]]), tmp_path / "w.fgstore", aggregation="first",
                    progress=False)
    assert store.n_rows == 41
    assert np.isfinite(store["layer.2"][:]).all()
    # the first window's rows equal extracting that window alone
    n_fit = (128 - 2) // 4
    ref = _manual(tiny_bert, words[:n_fit], "layer.1", "first")
    np.testing.assert_allclose(store["layer.1"][:n_fit], ref, atol=2e-5)


def test_auto_dtype_is_float16_for_large_stores_only(tiny_bert, tmp_path, monkeypatch):
    import finegrain.extraction as fx

    corpus = Corpus.from_texts(["ab cd", "e"])
    assert extract(tiny_bert, corpus, tmp_path / "a.fgstore", progress=False).dtype == "float32"
    monkeypatch.setattr(fx, "AUTO_FLOAT16_BYTES", 3 * 32 * 4 - 1)  # 3 words x 32 units of layer.1
    store = extract(tiny_bert, corpus, tmp_path / "b.fgstore", layers=["layer.1"], progress=False)
    assert store.dtype == "float16" and store["layer.1"].dtype == np.float16
    with pytest.raises(ValueError, match="dtype"):
        extract(tiny_bert, corpus, tmp_path / "c.fgstore", dtype="int8")


def test_float16_store(tiny_bert, tmp_path):
    store = extract(tiny_bert, Corpus.from_texts(["ab cd", "e"]), tmp_path / "h.fgstore", dtype="float16",
                    progress=False)
    assert store["layer.1"].dtype == np.float16


def test_bfloat16_autocast_extraction_is_close_and_recorded(tiny_bert, tmp_path):
    rng = random.Random(3)
    corpus = Corpus.from_words([_random_words(rng, rng.randint(2, 7)) for _ in range(12)])
    full = extract(tiny_bert, corpus, tmp_path / "f.fgstore", progress=False)
    mixed = extract(tiny_bert, corpus, tmp_path / "b.fgstore", precision="bfloat16", progress=False)
    assert mixed.meta["precision"] == "bfloat16" and full.meta["precision"] == "float32"
    assert mixed.meta["fingerprint"] != full.meta["fingerprint"]  # a resumed run never mixes precisions
    assert mixed["layer.1"].dtype == np.float32  # computed in bf16, stored as asked
    for lay in full.layers:
        x, y = full[lay][:], mixed[lay][:]
        # the embeddings involve no matmul; every block's output went through bfloat16 matmuls
        assert np.array_equal(x, y) == (lay == "layer.0")
        assert np.linalg.norm(x - y) / np.linalg.norm(x) < 0.03
    with pytest.raises(ValueError, match="precision"):
        extract(tiny_bert, corpus, tmp_path / "x.fgstore", precision="int8")


def test_extract_only_some_neurons_keeps_their_addresses(tiny_bert, tmp_path):
    from finegrain.describe import gather_columns
    from finegrain.rank import probeless_ranking
    from finegrain.store import StoreError

    rng = random.Random(4)
    corpus = Corpus.from_words([_random_words(rng, rng.randint(2, 6)) for _ in range(10)])
    full = extract(tiny_bert, corpus, tmp_path / "f.fgstore", layers="all", progress=False)
    some = extract(tiny_bert, corpus, tmp_path / "s.fgstore", neurons="layer.2.mlp:5,layer.1:3,layer.1:1,layer.1:3",
                   progress=False)
    assert some.layers == {"layer.2.mlp": 1, "layer.1": 2}
    assert some.units("layer.1") == [1, 3]
    index = some.neuron_index()
    assert [str(n) for n in index.neurons()] == ["layer.2.mlp:5", "layer.1:1", "layer.1:3"]
    np.testing.assert_array_equal(some["layer.1"][:], full["layer.1"][:][:, [1, 3]])
    np.testing.assert_array_equal(some.matrix(neurons=["layer.1:3", "layer.2.mlp:5"]),
                                  full.matrix(neurons=["layer.1:3", "layer.2.mlp:5"]))
    np.testing.assert_array_equal(gather_columns(some, ["layer.1:3"]), gather_columns(full, ["layer.1:3"]))
    with pytest.raises(StoreError, match="layer.1:2 is not among"):
        some.matrix(neurons=["layer.1:2"])
    # rankings over a partial store name the real units
    labels = np.array(["a", "b"] * (some.n_rows // 2) + ["a"] * (some.n_rows % 2))
    assert {str(n) for n in probeless_ranking(some.matrix(), labels, index).neurons} == {
        "layer.2.mlp:5", "layer.1:1", "layer.1:3"}
    with pytest.raises(ModelError, match="out of range"):
        extract(tiny_bert, corpus, tmp_path / "x.fgstore", neurons=["layer.1:999"])
    with pytest.raises(ModelError, match="unknown layer"):
        extract(tiny_bert, corpus, tmp_path / "x.fgstore", neurons=["layer.9:1"])


def _interrupted_then_resumed(model, corpus, path, monkeypatch, hard: bool = False, **kw):
    """Extract with a KeyboardInterrupt at the third store write (``hard``: the process dies without
    saving its pending rows), check the store reads as incomplete, then re-run; return the resumed
    store and the number of rows the re-run wrote."""
    orig = StoreWriter.write
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    def dead(self):
        raise OSError("process killed")

    monkeypatch.setattr(StoreWriter, "write", flaky)
    if hard:
        monkeypatch.setattr(StoreWriter, "flush", dead)
    with pytest.raises(KeyboardInterrupt):
        extract(model, corpus, path, buffer_sentences=8, progress=False, **kw)
    monkeypatch.undo()
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(path)
    written = []

    def counting(self, *a, **k):
        written.append(len(k["sent_id"]))
        return orig(self, *a, **k)

    monkeypatch.setattr(StoreWriter, "write", counting)
    store = extract(model, corpus, path, buffer_sentences=8, progress=False)
    monkeypatch.undo()
    return store, sum(written)


def test_resume_after_interruption(tiny_bert, tmp_path, monkeypatch):
    rng = random.Random(1)
    corpus = Corpus.from_words([_random_words(rng, 5) for _ in range(30)])
    full = extract(tiny_bert, corpus, tmp_path / "full.fgstore", buffer_sentences=8, progress=False)
    store, rewritten = _interrupted_then_resumed(tiny_bert, corpus, tmp_path / "r.fgstore", monkeypatch)
    assert rewritten == corpus.n_words - 2 * 8 * 5  # only the unwritten buffers were redone
    np.testing.assert_array_equal(store.matrix(), full.matrix())


def test_resume_after_a_hard_stop_restarts_at_the_buffer_on_disk(tiny_bert, tmp_path, monkeypatch):
    """Killed without saving its pending rows, a run resumes at the first buffer not wholly on disk
    (progress on disk is a chunk boundary, here inside the second buffer)."""
    rng = random.Random(2)
    corpus = Corpus.from_words([_random_words(rng, 5) for _ in range(30)])  # 40 rows per buffer of 8
    full = extract(tiny_bert, corpus, tmp_path / "full.fgstore", buffer_sentences=8, progress=False)
    store, rewritten = _interrupted_then_resumed(tiny_bert, corpus, tmp_path / "r.fgstore", monkeypatch, hard=True,
                                                 chunk_rows=24)
    # 80 rows were accepted, 66 on disk (150 rows tile as chunks of 22 for chunk_rows=24): buffer 2
    # (rows 40..79) is redone
    assert rewritten == corpus.n_words - 40
    np.testing.assert_array_equal(store.matrix(), full.matrix())


def test_bad_inputs(tiny_bert, tmp_path):
    with pytest.raises(CorpusError, match="empty corpus"):
        extract(tiny_bert, Corpus([]), tmp_path / "e.fgstore")
    with pytest.raises(ModelError, match="unknown layer"):
        extract(tiny_bert, Corpus.from_texts(["a b"]), tmp_path / "e.fgstore", layers=["layer.7"])
    with pytest.raises(ModelError, match="model adapter"):
        extract(torch.nn.Linear(2, 2), Corpus.from_texts(["a b"]), tmp_path / "e.fgstore")
    with pytest.raises(ValueError, match="aggregation"):
        extract(tiny_bert, Corpus.from_texts(["a b"]), tmp_path / "e.fgstore", aggregation="max")
    with pytest.raises(CorpusError, match="2 labels for 3 words"):
        Sentence(["a", "b", "c"], labels={"pos": ["X", "Y"]})
    extract(tiny_bert, Corpus.from_texts(["a b"]), tmp_path / "x.fgstore", progress=False)
    with pytest.raises(StoreError, match="already exists"):
        extract(tiny_bert, Corpus.from_texts(["a b"]), tmp_path / "x.fgstore", progress=False)


@pytest.mark.slow
def test_minilm_tricky_tokenization(minilm, tmp_path):
    sents = [["Unbelievably", ",", "naïve", "café-goers", "didn't", "re-tokenize", "🙂", "!"],
             ["The", "ﬁrst", "Straße", "in", "東京"]]
    store = extract(minilm, Corpus.from_words(sents), tmp_path / "m.fgstore", aggregation="mean", progress=False)
    assert store.n_rows == 13 and np.isfinite(store["layer.6"][:]).all()
    b = minilm.encode([sents[0]])
    # every word owns at least one token and tokens of a word are contiguous
    wid = [w for w in b.word_ids[0] if w is not None]
    assert sorted(set(wid)) == list(range(8)) and wid == sorted(wid)


def test_lstm_char_model_extraction_aligns_words(tmp_path):
    from finegrain.models.lstm import LSTMAdapter

    torch.manual_seed(0)
    vocab = ["<pad>", " "] + list("abcdefghijklmnopqrstuvwxyz.")
    emb, lstm, head = torch.nn.Embedding(len(vocab), 8), torch.nn.LSTM(8, 6, num_layers=2, batch_first=True), \
        torch.nn.Linear(6, len(vocab))
    m = LSTMAdapter.from_modules(emb, lstm, head, vocab, level="char")
    sents = [["ab", "cde", "."], ["xyz"]]
    store = extract(m, Corpus.from_words(sents), tmp_path / "l.fgstore", layers="all", aggregation="last",
                    progress=False)
    assert set(store.layers) == {"embedding", "lstm.1", "lstm.1.cell", "lstm.2", "lstm.2.cell"}
    b = m.encode([sents[0]])
    _, cache = m.run_with_cache(b, ["lstm.2.cell"])
    # "ab cde ." : the last characters of the words are at positions 1, 5 and 7
    np.testing.assert_allclose(store["lstm.2.cell"][:3], cache["lstm.2.cell"][0, [1, 5, 7]].numpy(), atol=1e-6)


# -- issue 16: tokenless words, windows in running text, training mode, token-level stores ---------------
def test_a_batch_of_tokenless_words_gives_zero_rows_recorded_in_the_metadata(tiny_bert, tmp_path, caplog):
    """Every word of a batch tokenizing to nothing (BERT's normaliser drops zero-width spaces) used to
    crash with "index_add_(): Expected dtype int32/int64 for index but got: Float"."""
    zw = "\u200b"
    corpus = Corpus.from_words([[zw, zw + zw], ["ab", zw, "c"]])
    for agg in ("first", "last", "mean"):
        with caplog.at_level("WARNING", logger="finegrain.extraction"):
            store = extract(tiny_bert, corpus, tmp_path / f"{agg}.fgstore", aggregation=agg, batch_size=1,
                            layers=["layer.1"], progress=False)
        X = store["layer.1"][:]
        assert store.n_rows == 5 and not X[[0, 1, 3]].any() and X[[2, 4]].any()
        assert store.meta["tokenless_words"] == 3 and store.meta["tokenless_rows"] == [0, 1, 3]
        assert "produced no model token" in caplog.text
    assert "3 word(s) produced no model token" in store.info()


def _sentencepiece_adapter():
    """A tiny GPT-2 with a SentencePiece-style BPE tokenizer (``▁`` marks a space), built offline."""
    from tokenizers import SentencePieceBPETokenizer
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    from finegrain.models.hf import HFAdapter

    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(["the cat sat on the mat", "the dogs run in the park"] * 20, vocab_size=120,
                           special_tokens=["<unk>", "<pad>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, unk_token="<unk>", pad_token="<pad>",
                                  model_max_length=32)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=None,
                     eos_token_id=None)
    return HFAdapter(GPT2Model(cfg), tok, name="tiny-sentencepiece", device="cpu")


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "sentencepiece"])
def test_sentences_over_the_window_budget_are_windowed_in_running_text(kind, tmp_path):
    """Windows used to be planned from each word's tokens counted alone, which misses byte-level BPE's
    leading-space token: 27 words estimated at 64 tokens were 75, and extraction failed."""
    from finegrain.extraction import _plan_units
    from finegrain.testing import tiny_bert, tiny_gpt2

    model = {"bpe": tiny_gpt2, "wordpiece": tiny_bert, "sentencepiece": _sentencepiece_adapter}[kind]()
    rng = random.Random(5)
    words = ["zq", "the", "cat", "xv", "sat", "on", "unbelievable", "mat", "!"] * 9
    rng.shuffle(words)
    assert model.token_count(words) > model.max_length
    if kind == "bpe":  # the failure: words counted alone underestimate the running text
        assert sum(model.token_count([w]) for w in words) < model.token_count(words)
    units = _plan_units(model, [words, ["the", "cat"]], model.max_length)
    windows = [u for u in units if u.sent == 0]
    assert windows[0].start == 0 and windows[-1].stop == len(words) and len(windows) > 1
    for a, b in zip(windows, windows[1:]):
        assert a.stop == b.start
    for u in windows:
        assert u.n_tokens == model.token_count(words[u.start : u.stop]) <= model.max_length
        if u.stop < len(words):  # each window is as long as fits
            assert model.token_count(words[u.start : u.stop + 1]) > model.max_length
    store = extract(model, Corpus.from_words([words, ["the", "cat"]]), tmp_path / "w.fgstore", layers=["layer.1"],
                    progress=False)
    assert store.n_rows == len(words) + 2 and np.isfinite(store["layer.1"][:]).all()
    w0 = windows[0]
    ref = extract(model, Corpus.from_words([words[w0.start : w0.stop]]), tmp_path / "r.fgstore", layers=["layer.1"],
                  progress=False)
    np.testing.assert_allclose(store["layer.1"][: w0.stop], ref["layer.1"][:], atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "textgenrnn"])
def test_lstm_sentences_over_max_length_are_windowed_not_cut(kind, tmp_path):
    """An LSTM adapter cut a sentence at max_length tokens: every later word got a zero row, reported as
    "produced no model token"."""
    from finegrain.testing import tiny_lstm_lm, tiny_textgenrnn

    model = {"lstm": tiny_lstm_lm, "textgenrnn": tiny_textgenrnn}[kind]()
    model.max_length = 64
    words = ["ab", "cd", "e"] * 40
    assert model.token_count(words) > model.max_length
    store = extract(model, Corpus.from_words([words, ["ab", "e"]]), tmp_path / "l.fgstore", progress=False)
    x = store["lstm.1"][:]
    assert store.n_rows == len(words) + 2 and (np.abs(x).sum(1) > 0).all()
    first = [u for u in _plan_units(model, [words], model.max_length)][0]
    ref = extract(model, Corpus.from_words([words[: first.stop]]), tmp_path / "r.fgstore", progress=False)
    np.testing.assert_allclose(x[: first.stop], ref["lstm.1"][:], atol=1e-6)


def test_extract_hands_the_model_back_in_its_training_mode(tiny_bert, tmp_path, monkeypatch):
    """extract() used to leave the model in eval mode."""
    tiny_bert.model.train()
    tiny_bert.model.encoder.layer[0].eval()  # a mixed state is restored as it was
    corpus = Corpus.from_texts(["ab cd", "e f g"])
    extract(tiny_bert, corpus, tmp_path / "a.fgstore", progress=False)
    assert tiny_bert.model.training and not tiny_bert.model.encoder.layer[0].training
    assert tiny_bert.model.encoder.layer[1].training

    def boom(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StoreWriter, "write", boom)
    with pytest.raises(OSError, match="No space"):
        extract(tiny_bert, corpus, tmp_path / "b.fgstore", progress=False)
    assert tiny_bert.model.training and not tiny_bert.model.encoder.layer[0].training


def test_token_level_store_has_one_row_per_model_token(tiny_bert, tmp_path):
    """aggregation="token": one row per (non-special) token, the token in the word column, its word in
    token_word; the values are the model's own hidden states at those tokens."""
    sents = [["ab", "c"], ["xyz"], ["Hi", "there", "!"]]
    corpus = Corpus([Sentence(s, labels={"pos": [f"P{i}" for i in range(len(s))]}) for s in sents])
    store = extract(tiny_bert, corpus, tmp_path / "t.fgstore", aggregation="token", layers=["layer.1"],
                    progress=False, buffer_sentences=2, batch_size=2)
    assert store.level == "token" and store.meta["aggregation"] == "token"
    n_chars = sum(len(w) for s in sents for w in s)
    assert store.n_rows == n_chars  # charpiece: every character is one subword, [CLS]/[SEP] are left out
    assert list(store.words[:3]) == ["a", "##b", "c"] and store.sentence(1) == ["x", "##y", "##z"]
    assert list(store.index("token_word")[:3]) == [0, 0, 1] and list(store.index("word_pos")[:3]) == [0, 1, 2]
    assert list(store.labels("pos")[:3]) == ["P0", "P0", "P1"]
    row = 0
    for s in sents:
        b = tiny_bert.encode([s])
        _, cache = tiny_bert.run_with_cache(b, ["layer.1"])
        n = sum(len(w) for w in s)
        np.testing.assert_allclose(store["layer.1"][row : row + n], cache["layer.1"][0, 1 : 1 + n].numpy(), atol=2e-5)
        row += n


def test_token_level_store_of_a_character_lstm_has_one_row_per_character(tmp_path, capsys):
    """For character models one row per character, spaces included (Karpathy-style heatmaps in one call);
    a space belongs to the word after it. Also from the command line: --aggregation token."""
    from finegrain.models.lstm import LSTMAdapter

    torch.manual_seed(0)
    vocab = ["<pad>", "<s>", " "] + list("abcdefghijklmnopqrstuvwxyz.")
    emb, lstm, head = torch.nn.Embedding(len(vocab), 8), torch.nn.LSTM(8, 6, num_layers=1, batch_first=True), \
        torch.nn.Linear(6, len(vocab))
    m = LSTMAdapter.from_modules(emb, lstm, head, vocab, level="char", bos="<s>")
    sents = [["ab", "cde", "."], ["xyz"]]
    store = extract(m, Corpus.from_words(sents), tmp_path / "c.fgstore", aggregation="token", layers=["lstm.1"],
                    progress=False)
    assert store.sentence(0) == list("ab cde .") and store.sentence(1) == list("xyz")
    assert list(store.index("token_word")[:8]) == [0, 0, 1, 1, 1, 1, 2, 2]
    b = m.encode([sents[0]])
    _, cache = m.run_with_cache(b, ["lstm.1"])
    np.testing.assert_allclose(store["lstm.1"][:8], cache["lstm.1"][0, 1:9].numpy(), atol=1e-6)  # <s> left out


@pytest.mark.parametrize("chunk_rows", [7, 16, 8192])
def test_reused_buffers_never_overwrite_rows_still_to_write(tiny_bert, tmp_path, monkeypatch, chunk_rows):
    """Buffers' arrays are reused (BufferPool) only once the writer holds no rows of them: with chunks
    smaller and larger than a buffer the store equals one computed in a single buffer."""
    import finegrain.extraction as E

    rng = random.Random(1)
    sents = [_random_words(rng, rng.randint(1, 9)) for _ in range(60)]
    corpus = Corpus.from_words(sents)
    ref = extract(tiny_bert, corpus, tmp_path / "one.fgstore", layers="hidden", buffer_sentences=1000,
                  progress=False)
    made = []
    real_take = E.BufferPool.take

    def take(self, n_rows):
        out = real_take(self, n_rows)
        made.append(len(self.sets))
        return out

    monkeypatch.setattr(E.BufferPool, "take", take)
    store = extract(tiny_bert, corpus, tmp_path / "many.fgstore", layers="hidden", buffer_sentences=4,
                    chunk_rows=chunk_rows, progress=False)
    for lay in ref.layers:
        np.testing.assert_allclose(store[lay][:], ref[lay][:], atol=1e-5)
    assert len(made) > 10
    # rows streamed to their chunk file are not held by the writer: a few sets of arrays serve every buffer
    assert made[-1] <= 3
