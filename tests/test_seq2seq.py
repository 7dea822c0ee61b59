"""Encoder-decoder models (issue 18 item 4): addresses, hooks, teacher-forced extraction of both
sides, probing, interventions, attribution of a target word to source words, loading by path.

The tiny models use the charpiece tokenizer (one token per character), so every expected alignment
is computed here from the words themselves, independently of the adapter's alignment code."""

import random
import string

import numpy as np
import pytest
import torch

from finegrain.attribute import TargetError, attribute
from finegrain.data.corpus import Corpus, Sentence
from finegrain.errors import CorpusError, ModelError, ParameterError
from finegrain.intervene.edits import Head, Set, Zero, intervene
from finegrain.models import load_model
from finegrain.models.seq2seq import Seq2SeqAdapter, is_seq2seq, load_seq2seq
from finegrain.probe.probes import LinearProbe
from finegrain.testing import CHARS, sharpen, tiny_bert
from finegrain.testing_seq2seq import TINY, tiny_bart, tiny_t5
from finegrain.translation import TranslationTarget, extract_seq2seq

SRC = [["ab", "cde", "f"], ["ghij", "k"], ["lm", "no", "pq", "r"]]
TGT = [["xy", "z"], ["uvw", "st", "q"], ["a", "bc"]]


def _words(rng, n, alphabet=string.ascii_lowercase):
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def _modules(adapter, side, i):
    """The hook modules of block ``i`` (1-based), located by each family's own attribute names."""
    m = adapter.model
    if isinstance(m.config.model_type, str) and m.config.model_type == "t5":
        blk = (m.encoder if side == "enc" else m.decoder).block[i - 1].layer
        out = {"attn": blk[0].SelfAttention.o, "mlp": blk[-1].DenseReluDense.wo}
        if side == "dec":
            out["cross"] = blk[1].EncDecAttention.o
        return out
    blk = (m.model.encoder if side == "enc" else m.model.decoder).layers[i - 1]
    out = {"attn": blk.self_attn.out_proj, "mlp": blk.fc2}
    if side == "dec":
        out["cross"] = blk.encoder_attn.out_proj
    return out


def _own(adapter, sources, targets):
    """The model's own forward (ids, HF's own label shift), one pair at a time: no padding involved."""
    tok = adapter.tokenizer
    outs = []
    for s, t in zip(sources, targets):
        ids = torch.tensor([tok(" ".join(s))["input_ids"]])
        labels = torch.tensor([tok(text_target=" ".join(t))["input_ids"]])
        with torch.no_grad():
            outs.append(adapter.model(input_ids=ids, labels=labels, output_hidden_states=True))
    return outs


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["t5", "bart", "marian"])
def test_addresses_resolve_to_the_models_own_states_and_modules(family):
    a = TINY[family]()
    lay = a.layers()
    assert a.hidden_layers() == [f"enc.layer.{i}" for i in range(4)] + [f"dec.layer.{i}" for i in range(4)]
    for i in (1, 2, 3):
        assert {f"enc.layer.{i}.attn", f"enc.layer.{i}.mlp", f"dec.layer.{i}.attn", f"dec.layer.{i}.cross",
                f"dec.layer.{i}.mlp"} <= set(lay)
    assert "enc.layer.1.cross" not in lay
    assert lay["enc.layer.2.mlp"] == 64 and lay["dec.layer.3"] == 32
    assert a.heads("dec.layer.2.cross") == (4, 8) and a.heads("enc.layer.1.attn") == (4, 8)
    with pytest.raises(ModelError):
        a.heads("dec.layer.2.mlp")

    b = a.encode(SRC, targets=TGT)
    seen = {}

    def grab(name):
        def hook(mod, args):
            seen[name] = args[0].detach()
        return hook

    handles = [mod.register_forward_pre_hook(grab(f"{side}.layer.{i}.{k}"))
               for side in ("enc", "dec") for i in (1, 2, 3) for k, mod in _modules(a, side, i).items()]
    try:
        out, cache = a.run_with_cache(b, list(lay))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        own = a.model(**b.inputs, output_hidden_states=True)
    torch.testing.assert_close(out.logits, own.logits)
    for i in range(4):
        torch.testing.assert_close(cache[f"enc.layer.{i}"], own.encoder_hidden_states[i])
        torch.testing.assert_close(cache[f"dec.layer.{i}"], own.decoder_hidden_states[i])
    for name, act in seen.items():
        torch.testing.assert_close(cache[name], act, msg=name)
    assert len(seen) == 3 * 2 + 3 * 3


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_edit_at_a_decoder_layer_changes_the_decoder_from_there_on_and_not_the_encoder(family):
    a = TINY[family]()
    b = a.encode(SRC, targets=TGT)
    state = {k: v.clone() for k, v in a.model.state_dict().items()}
    with torch.no_grad():
        clean = a.forward(b, output_hidden_states=True)
        consumed = []  # the input of decoder block 3, which reads dec.layer.2 (HF's own recording of
        # hidden_states[2] may run before or after our hook, depending on which was attached first)
        blocks = a.model.decoder.block if family == "t5" else a.model.model.decoder.layers
        h = blocks[2].register_forward_pre_hook(lambda mod, args: consumed.append(args[0].clone()))
        try:
            with intervene(a, [Set("dec.layer.2", 0.0)]):
                edited = a.forward(b, output_hidden_states=True)
        finally:
            h.remove()
        with intervene(a, [Zero("enc.layer.2:5")]):
            enc_edit = a.forward(b, output_hidden_states=True)
        with intervene(a, [Zero(Head("dec.layer.1.attn", 1))]):
            head_self = a.forward(b).logits
        with intervene(a, [Zero(Head("dec.layer.1.cross", 0))]):
            head_cross = a.forward(b).logits
        after = a.forward(b, output_hidden_states=True)
    for x, y in zip(clean.encoder_hidden_states, edited.encoder_hidden_states):
        assert torch.equal(x, y)
    for i in (0, 1):
        assert torch.equal(clean.decoder_hidden_states[i], edited.decoder_hidden_states[i])
    assert len(consumed) == 1 and torch.count_nonzero(consumed[0]) == 0
    assert not torch.allclose(clean.decoder_hidden_states[3], edited.decoder_hidden_states[3])
    assert not torch.allclose(clean.logits, edited.logits)
    # the encoder edit: unit 5 of enc.layer.2 is zero, the layers below untouched, everything above changed
    for i in (0, 1):
        assert torch.equal(clean.encoder_hidden_states[i], enc_edit.encoder_hidden_states[i])
    assert torch.equal(enc_edit.encoder_hidden_states[1], clean.encoder_hidden_states[1])
    assert not torch.allclose(clean.encoder_hidden_states[3], enc_edit.encoder_hidden_states[3])
    assert not torch.allclose(clean.decoder_hidden_states[1], enc_edit.decoder_hidden_states[1])  # via cross-attn
    assert not torch.allclose(clean.logits, head_self) and not torch.allclose(clean.logits, head_cross)
    # nothing left behind: parameters and outputs bit-identical
    assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(after.logits, clean.logits)


# ----------------------------------------------------------------------------------------------
def _expected_rows(adapter, own, sources, targets, side, align="input"):
    """Mean over each word's tokens, positions computed from the words (charpiece: n chars = n tokens)."""
    bos = 1 if adapter.tokenizer("a")["input_ids"][0] == adapter.tokenizer.bos_token_id else 0
    rows = {i: [] for i in range(4)}
    for o, s, t in zip(own, sources, targets):
        words = s if side == "encoder" else t
        # encoder: token 0 is the first token (T5, Marian) or <s> (BART); decoder input t reads label t-1
        start = bos + (1 if side == "decoder" and align == "input" else 0)
        hs = o.encoder_hidden_states if side == "encoder" else o.decoder_hidden_states
        for i in range(4):
            p = start
            for w in words:
                rows[i].append(hs[i][0, p : p + len(w)].mean(0).numpy())
                p += len(w)
    return {i: np.stack(v) for i, v in rows.items()}


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_extraction_rows_equal_the_models_own_hidden_states_on_both_sides(family, tmp_path):
    a = TINY[family]()
    rng = random.Random(1)
    src = [_words(rng, rng.randint(1, 6)) for _ in range(8)]
    tgt = [_words(rng, rng.randint(1, 6)) for _ in range(8)]
    own = _own(a, src, tgt)
    enc = extract_seq2seq(a, Corpus.from_words(src), tmp_path / "e.fgstore", side="encoder", batch_size=3,
                          buffer_sentences=4, progress=False)
    assert list(enc.layers) == [f"enc.layer.{i}" for i in range(4)]
    dec = extract_seq2seq(a, Corpus.from_words(tgt), tmp_path / "d.fgstore", side="decoder", sources=src,
                          batch_size=3, buffer_sentences=4, progress=False)
    assert list(dec.layers) == [f"dec.layer.{i}" for i in range(4)]
    assert list(dec.words) == [w for t in tgt for w in t] and list(enc.words) == [w for s in src for w in s]
    exp_e = _expected_rows(a, own, src, tgt, "encoder")
    exp_d = _expected_rows(a, own, src, tgt, "decoder")
    for i in range(4):
        np.testing.assert_allclose(enc[f"enc.layer.{i}"][:], exp_e[i], atol=2e-5)
        np.testing.assert_allclose(dec[f"dec.layer.{i}"][:], exp_d[i], atol=2e-5)
    out = extract_seq2seq(a, Corpus.from_words(tgt), tmp_path / "o.fgstore", side="decoder", sources=src,
                          align="output", layers=["dec.layer.3"], progress=False)
    np.testing.assert_allclose(out["dec.layer.3"][:], _expected_rows(a, own, src, tgt, "decoder", "output")[3],
                               atol=2e-5)


def test_decoder_sources_from_the_corpus_column_and_errors(tmp_path):
    a = tiny_t5()
    corpus = Corpus([Sentence(t, sent_labels={"source": " ".join(s)}) for s, t in zip(SRC, TGT)])
    st = extract_seq2seq(a, corpus, tmp_path / "c.fgstore", side="decoder", layers=["dec.layer.2"], progress=False)
    ref = extract_seq2seq(a, Corpus.from_words(TGT), tmp_path / "r.fgstore", side="decoder", sources=SRC,
                          layers=["dec.layer.2"], progress=False)
    np.testing.assert_array_equal(st["dec.layer.2"][:], ref["dec.layer.2"][:])
    # other sources, other rows, another fingerprint (a resumed extraction never mixes the two)
    other = extract_seq2seq(a, Corpus.from_words(TGT), tmp_path / "o.fgstore", side="decoder",
                            sources=[["zz"]] * 3, layers=["dec.layer.2"], progress=False)
    assert not np.allclose(other["dec.layer.2"][:], ref["dec.layer.2"][:])
    assert other.meta["fingerprint"] != ref.meta["fingerprint"] == st.meta["fingerprint"]
    with pytest.raises(CorpusError, match="source"):
        extract_seq2seq(a, Corpus.from_words(TGT), tmp_path / "x.fgstore", side="decoder", progress=False)
    # identical targets with different sources (once refused): each is read behind its own source
    pairs = [["ab"], ["cde", "f"]]
    dup = extract_seq2seq(a, Corpus.from_words([["x", "y"]] * 2), tmp_path / "y.fgstore", side="decoder",
                          sources=pairs, layers=["dec.layer.2"], progress=False)
    for i, s in enumerate(pairs):
        alone = extract_seq2seq(a, Corpus.from_words([["x", "y"]]), tmp_path / f"y{i}.fgstore", side="decoder",
                                sources=[s], layers=["dec.layer.2"], progress=False)
        np.testing.assert_allclose(dup["dec.layer.2"][2 * i : 2 * i + 2], alone["dec.layer.2"][:], atol=2e-5)
    assert not np.allclose(dup["dec.layer.2"][:2], dup["dec.layer.2"][2:])
    with pytest.raises(ParameterError):
        extract_seq2seq(a, Corpus.from_words(TGT), tmp_path / "z.fgstore", side="middle")
    with pytest.raises(ParameterError):
        a.encode(SRC, side="decoder")
    with pytest.raises(ModelError):
        a.check_layer("layer.2")
    with pytest.raises(ModelError, match="encoder-decoder"):
        Seq2SeqAdapter(tiny_bert().model, a.tokenizer)


@pytest.mark.filterwarnings("ignore:LinearProbe did not converge")
def test_probes_on_decoder_rows_find_a_planted_target_word_property(tmp_path):
    """Targets mix words of two planted classes (spelt with other letters); sources are unrelated.
    The state that has read a word's first token (align="input") predicts its class; the state about to
    emit that token (align="output") has read only the previous, independent words and cannot."""
    a = tiny_bart()
    rng = random.Random(0)
    vocab = {"A": ["ab", "bad", "dab", "cab", "abba"], "B": ["xy", "zyx", "yy", "xzz", "zz"]}
    tgt, cls, src = [], [], []
    while len(tgt) < 70:
        c = [rng.choice("AB") for _ in range(rng.randint(3, 6))]
        t = [rng.choice(vocab[k]) for k in c]
        if t in tgt:  # distinct targets: a clean split by sentence
            continue
        tgt.append(t)
        cls.append(c)
        src.append(_words(rng, rng.randint(2, 5), "mnopqrst"))
    corpus = Corpus.from_words(tgt, labels={"cls": cls})
    acc = {}
    for align in ("input", "output"):
        st = extract_seq2seq(a, corpus, tmp_path / f"{align}.fgstore", side="decoder", sources=src, align=align,
                             layers=["dec.layer.1"], aggregation="first", progress=False)
        train, test = st.view(layers=["dec.layer.1"], label="cls").split((0.7, 0.3), seed=0)
        probe = LinearProbe(epochs=60, lr=2e-2, progress=False).fit(train, train.y)
        acc[align] = probe.score(test, test.y)
    assert acc["input"] >= 0.95
    assert acc["output"] <= 0.8
    # encoder rows on the same footing: a source-word property (first letter in m-p) is decodable
    scls = [["lo" if w[0] in "mnop" else "hi" for w in s] for s in src]
    est = extract_seq2seq(a, Corpus.from_words(src, labels={"c": scls}), tmp_path / "enc.fgstore",
                          layers=["enc.layer.1"], progress=False)
    train, test = est.view(layers=["enc.layer.1"], label="c").split((0.7, 0.3), seed=0)
    assert LinearProbe(epochs=60, lr=2e-2, progress=False).fit(train, train.y).score(test, test.y) >= 0.9


# ----------------------------------------------------------------------------------------------
def _logp(adapter, sources, targets, word=None):
    """log p(target | source) from the model's own loss (HF's label shift and cross-entropy)."""
    out = []
    tok = adapter.tokenizer
    for s, t in zip(sources, targets):
        ids = torch.tensor([tok(" ".join(s))["input_ids"]])
        labels = torch.tensor([tok(text_target=" ".join(t))["input_ids"]])
        # HF's own shift of the full target (masking labels with -100 would also change the decoder input)
        dec = adapter.model.prepare_decoder_input_ids_from_labels(labels=labels)
        if word is not None:  # score only the tokens of target word `word` (charpiece: one per char)
            bos = 1 if labels[0, 0] == tok.bos_token_id else 0
            p = bos + sum(len(w) for w in t[:word])
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[0, p : p + len(t[word])] = True
            labels = torch.where(keep, labels, -100)
        with torch.no_grad():
            loss = adapter.model(input_ids=ids, decoder_input_ids=dec, labels=labels).loss
        out.append(-float(loss) * int((labels != -100).sum()))
    return np.array(out)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_ig_attributes_a_translation_to_source_words_with_completeness(family):
    # smooth activations (T5 v1.1's gated GELU, BART's GELU): Gauss-Legendre IG converges in few steps
    a = sharpen(tiny_t5(gated=True) if family == "t5" else tiny_bart(), std=0.15)
    src = ["ab cde f", "ghij k"]
    tgt = ["xy z", "uvw st q"]
    target = TranslationTarget(sources=src, targets=tgt)
    res = attribute(a, src, target, method="ig", n_steps=64)
    np.testing.assert_allclose([r.f_x for r in res], _logp(a, [s.split() for s in src], [t.split() for t in tgt]),
                               rtol=1e-5, atol=1e-4)
    # the baseline is the source with its content tokens replaced by padding, the target unchanged
    pad = [["[PAD]" * len(w) for w in s.split()] for s in src]
    np.testing.assert_allclose([r.f_baseline for r in res], _logp(a, pad, [t.split() for t in tgt]),
                               rtol=1e-5, atol=1e-4)
    for r, s in zip(res, src):
        assert r.words == s.split() and len(r.word_scores) == len(r.words)
        gap = r.f_x - r.f_baseline
        assert abs(gap) > 0.05
        # completeness: the source-word scores add up to f(x) - f(x') (to IG's discretisation error)
        assert abs(r.word_scores.sum() - gap) <= 0.01 * abs(gap) + 1e-4, (r.word_scores.sum(), gap)
        assert r.delta is not None and abs(r.delta) <= 0.01 * abs(gap) + 1e-4
    one = attribute(a, src[1], TranslationTarget(tgt[1], word=1), method="saliency")
    np.testing.assert_allclose(one.f_x if not isinstance(one, list) else one[0].f_x,
                               _logp(a, [src[1].split()], [tgt[1].split()], word=1)[0], rtol=1e-5, atol=1e-4)


def test_translation_target_errors():
    a = tiny_t5()
    with pytest.raises(ParameterError, match="either target"):
        TranslationTarget()
    with pytest.raises(ParameterError, match="different targets"):
        TranslationTarget(sources=["a b", "a b"], targets=["x", "y"])
    with pytest.raises(TargetError, match="no target"):
        attribute(a, ["c d"], TranslationTarget(sources=["a b"], targets=["x"]), method="saliency")
    with pytest.raises(TargetError, match="word 5"):
        attribute(a, ["c d"], TranslationTarget("x y", word=5), method="saliency")


# ----------------------------------------------------------------------------------------------
def test_a_local_checkpoint_loads_by_path(tmp_path):
    a = tiny_bart()
    path = tmp_path / "my-nmt"
    a.model.save_pretrained(path)
    a.tokenizer.save_pretrained(path)
    assert is_seq2seq(path) and not is_seq2seq(tmp_path)
    for b in (load_seq2seq(path, device="cpu"), load_model(str(path), device="cpu")):
        assert isinstance(b, Seq2SeqAdapter) and b.layers() == a.layers()
        x, y = a.encode(SRC, targets=TGT), b.encode(SRC, targets=TGT)
        assert x.word_ids == y.word_ids and x.sides["decoder"].word_ids == y.sides["decoder"].word_ids
        with torch.no_grad():
            torch.testing.assert_close(a.forward(x).logits, b.forward(y).logits)
    with pytest.raises(ModelError, match="never downloads"):
        load_seq2seq(tmp_path / "missing")
    with pytest.raises(ParameterError):
        load_seq2seq(path, task="causal-lm")


class _SlowCharTokenizer:
    """Built lazily (transformers' Python tokenizer base): SentencePiece-like pieces, ``▁`` opens a word."""

    @staticmethod
    def make():
        from transformers import PreTrainedTokenizer

        class CharTok(PreTrainedTokenizer):
            def __init__(self, **kw):
                toks = ["<pad>", "<unk>", "</s>"] + list(CHARS) + ["▁" + c for c in CHARS]
                self._vocab = {t: i for i, t in enumerate(toks)}
                self._inv = dict(enumerate(toks))
                super().__init__(pad_token="<pad>", unk_token="<unk>", eos_token="</s>", **kw)

            @property
            def vocab_size(self):
                return len(self._vocab)

            def get_vocab(self):
                return dict(self._vocab)

            def _tokenize(self, text, **kw):
                return [p for w in text.split() for p in ["▁" + w[0], *w[1:]]]

            def _convert_token_to_id(self, t):
                return self._vocab.get(t, 1)

            def _convert_id_to_token(self, i):
                return self._inv.get(i, "<unk>")

            def build_inputs_with_special_tokens(self, a, b=None):
                return a + [self.eos_token_id]

        return CharTok()


def test_slow_tokenizers_align_word_by_word():
    """Marian's tokenizer is SentencePiece in Python (no offsets): words are tokenised one by one."""
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _SlowCharTokenizer.make()
    assert not tok.is_fast
    cfg = T5Config(vocab_size=len(tok), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=2,
                   decoder_start_token_id=0)
    a = Seq2SeqAdapter(T5ForConditionalGeneration(cfg), tok, name="slow", device="cpu")
    b = a.encode(SRC, targets=TGT)
    for s, t, ids, wid, dwid in zip(SRC, TGT, b.inputs["input_ids"].tolist(), b.word_ids, b.sides["decoder"].word_ids):
        whole = tok(" ".join(s))["input_ids"]
        assert ids[: len(whole)] == whole
        assert wid[: len(whole)] == [k for k, w in enumerate(s) for _ in w] + [None]
        assert dwid[: sum(map(len, t)) + 1] == [None] + [k for k, w in enumerate(t) for _ in w]


def test_the_families_own_tokenizers_align_words():
    """T5's SentencePiece-style Unigram tokenizer and BART's byte-level BPE, built in memory."""
    from transformers import BartTokenizer, T5Tokenizer

    letters = string.ascii_lowercase
    t5 = T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
                     + [("▁" + c, -3.0) for c in letters] + [(c, -4.0) for c in letters]
                     + [("▁the", -1.0), ("▁cat", -1.0), ("at", -2.0)], extra_ids=0)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for c in letters + "Ġ":
        vocab[c] = len(vocab)
    bart = BartTokenizer(vocab=vocab, merges=[])
    words = ["the", "cat", "sat"]
    a = tiny_t5(tokenizer=t5)
    b = a.encode([words], targets=[words])
    assert b.tokens[0] == ["▁the", "▁cat", "▁s", "at", "</s>"]
    assert b.word_ids[0] == [0, 1, 2, 2, None]
    assert b.label_word_ids[0] == [0, 1, 2, 2, None] and b.on("decoder").word_ids[0] == [None, 0, 1, 2, 2]
    a = tiny_bart(tokenizer=bart)
    b = a.encode([words], targets=[words], side="decoder", align="output")
    assert b.on("encoder").word_ids[0] == [None, 0, 0, 0, None, 1, 1, 1, None, 2, 2, 2, None]
    assert b.word_ids[0] == b.on("encoder").word_ids[0] and b.side == "decoder"
    with torch.no_grad():
        own = a.model(input_ids=b.inputs["input_ids"], labels=b.labels).logits
        torch.testing.assert_close(a.forward(b).logits, own)


def test_translation_target_describes_itself():
    from finegrain.attribute import describe_target

    a = tiny_bart()
    d = describe_target(a, "ab cd", TranslationTarget("xy z", word=1))
    assert d.category == "translation" and d.label == "z" and d.score == "log-probability"
    np.testing.assert_allclose(np.log(d.probability), _logp(a, [["ab", "cd"]], [["xy", "z"]], word=1)[0], rtol=1e-5)
    assert d.predicted_probability >= d.probability


def test_decoder_layers_without_a_target_fail_clearly(tmp_path):
    from finegrain.extraction import extract

    a = tiny_t5()
    with pytest.raises(ModelError, match="need a target"):
        extract(a, Corpus.from_words(SRC), tmp_path / "x.fgstore", progress=False)
    _, cache = a.run_with_cache(a.encode(SRC), ["enc.layer.3"])  # the encoder alone runs on sources
    assert cache["enc.layer.3"].shape[:2] == a.encode(SRC).inputs["input_ids"].shape


def test_extract_command_reads_either_side(tmp_path, capsys):
    from finegrain.cli import main
    from finegrain.store import ActivationStore

    a = tiny_bart()
    path = tmp_path / "my-nmt"
    a.model.save_pretrained(path)
    a.tokenizer.save_pretrained(path)
    (tmp_path / "tgt.txt").write_text("".join(" ".join(t) + "\n" for t in TGT))
    (tmp_path / "src.txt").write_text("".join(" ".join(s) + "\n" for s in SRC))
    base = ["extract", "--model", str(path), "--device", "cpu", "--layers", "all"]
    assert main([*base, "--corpus", str(tmp_path / "tgt.txt"), "--side", "decoder", "--sources",
                 str(tmp_path / "src.txt"), "--out", str(tmp_path / "d.fgstore")]) == 0
    assert main([*base, "--corpus", str(tmp_path / "src.txt"), "--side", "encoder",
                 "--out", str(tmp_path / "e.fgstore")]) == 0
    dec, enc = ActivationStore(tmp_path / "d.fgstore"), ActivationStore(tmp_path / "e.fgstore")
    ref = extract_seq2seq(load_model(str(path), device="cpu"), Corpus.from_words(TGT), tmp_path / "r.fgstore",
                          side="decoder", sources=SRC, layers="all", progress=False)
    assert dec.layers == ref.layers and all(x.startswith("dec.") for x in dec.layers)
    assert all(x.startswith("enc.") for x in enc.layers) and enc.n_rows == sum(map(len, SRC))
    for layer in ref.layers:
        np.testing.assert_array_equal(dec[layer][:], ref[layer][:])
    # a sources file of the wrong length names itself and both counts, and writes nothing
    (tmp_path / "short.txt").write_text("ab cde\n")
    capsys.readouterr()
    assert main([*base, "--corpus", str(tmp_path / "tgt.txt"), "--side", "decoder", "--sources",
                 str(tmp_path / "short.txt"), "--out", str(tmp_path / "x.fgstore")]) == 2
    err = capsys.readouterr().err
    assert "short.txt: 1 source sentences for the 3 sentences" in err and not (tmp_path / "x.fgstore").exists()
