"""UnrolledLSTM and LSTMAdapter on a tiny random character LM (vocab 20, emb 8, hidden 6, 2 layers)."""

import pytest
import torch
from torch import nn

from finegrain.models.base import ModelError
from finegrain.models.lstm import LSTMAdapter, UnrolledLSTM

VOCAB = ["<pad>", "<s>", " "] + list("abcdefghijklmnopq")


@pytest.fixture
def parts():
    torch.manual_seed(0)
    return nn.Embedding(20, 8, padding_idx=0), nn.LSTM(8, 6, 2, batch_first=True), nn.Linear(6, 20)


@pytest.fixture
def adapter(parts):
    return LSTMAdapter.from_modules(*parts, VOCAB, level="char", device="cpu")


def reference_logits(parts, ids):
    emb, lstm, head = parts
    with torch.no_grad():
        return head(lstm(emb(ids))[0])


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("hooked", [False, True])
def test_unrolled_matches_nn_lstm(batch_first, hooked):
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 4, 3, batch_first=batch_first)
    un = UnrolledLSTM.from_lstm(lstm)
    x = torch.randn(3, 7, 5) if batch_first else torch.randn(7, 3, 5)
    state = (torch.randn(3, 3, 4), torch.randn(3, 3, 4))
    if hooked:  # no-op hooks force the step-wise path on every layer
        for k in range(3):
            un.add_hook(k, lambda a, t: None, "h")
            un.add_hook(k, lambda a, t: None, "c")
    with torch.no_grad():
        ref, (h_ref, c_ref) = lstm(x, state)
        out, (h, c) = un(x, state)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=1e-5)


def test_from_lstm_rejects_bidirectional():
    with pytest.raises(ModelError, match="unidirectional"):
        UnrolledLSTM.from_lstm(nn.LSTM(3, 2, bidirectional=True))


def test_layers_and_unknown_layer(adapter):
    assert adapter.kind == "lstm"
    assert adapter.layers() == {"embedding": 8, "lstm.1": 6, "lstm.1.cell": 6, "lstm.2": 6, "lstm.2.cell": 6}
    assert adapter.hidden_layers() == ["embedding", "lstm.1", "lstm.2"]
    batch = adapter.encode(["ab cd"])
    with pytest.raises(ModelError, match="unknown layer"):
        adapter.run_with_cache(batch, ["lstm.3"])
    with pytest.raises(ModelError, match="unknown layer"), adapter.hooks({"lstm.0": lambda a, t: None}):
        pass


def test_char_encoding_word_ids(adapter, parts):
    batch = adapter.encode([["ab", "cd"], ["q"]])
    assert batch.word_ids == [[0, 0, None, 1, 1], [0, None, None, None, None]]
    assert batch.tokens[0] == list("ab cd")
    assert batch.n_words == [2, 1]
    assert batch.attention_mask.tolist() == [[1] * 5, [1, 0, 0, 0, 0]]
    with_bos = LSTMAdapter.from_modules(*parts, VOCAB, level="char", bos="<s>", device="cpu")
    assert with_bos.encode(["ab cd"]).word_ids == [[None, 0, 0, None, 1, 1]]
    with pytest.raises(ModelError, match="not in the vocabulary"):
        adapter.encode(["xyz"])


def test_word_level_encoding(parts):
    words = ["<pad>"] + [f"w{i}" for i in range(19)]
    ad = LSTMAdapter.from_modules(*parts, words, level="word", device="cpu")
    batch = ad.encode(["w3 w1 w4"])
    assert batch.inputs["input_ids"].tolist() == [[4, 2, 5]]
    assert batch.word_ids == [[0, 1, 2]]


def test_forward_matches_reference_and_padding_is_harmless(adapter, parts):
    batch = adapter.encode(["ab cd", "q"])
    with torch.no_grad():
        logits = adapter.forward(batch).logits
    torch.testing.assert_close(logits, reference_logits(parts, batch.inputs["input_ids"]))
    # right padding: a sentence's logits do not depend on the longer sentence next to it
    with torch.no_grad():
        alone = adapter.forward(adapter.encode(["q"])).logits
    torch.testing.assert_close(logits[1, :1], alone[0])


def test_run_with_cache_shapes_and_values(adapter, parts):
    batch = adapter.encode(["ab cd", "abc"])
    with torch.no_grad():
        out, cache = adapter.run_with_cache(batch, "all")
    assert {k: tuple(v.shape) for k, v in cache.items()} == {
        "embedding": (2, 5, 8),
        "lstm.1": (2, 5, 6),
        "lstm.1.cell": (2, 5, 6),
        "lstm.2": (2, 5, 6),
        "lstm.2.cell": (2, 5, 6),
    }
    emb, lstm, head = parts
    with torch.no_grad():
        top, (_, c_n) = lstm(emb(batch.inputs["input_ids"]))
    torch.testing.assert_close(cache["lstm.2"], top, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cache["lstm.2.cell"][:, -1], c_n[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, head(top), atol=1e-6, rtol=1e-5)


def test_cell_matches_hand_computed_recursion():
    torch.manual_seed(2)
    lstm = nn.LSTM(3, 2, 1, batch_first=True)
    emb = nn.Embedding(4, 3)
    ad = LSTMAdapter.from_modules(emb, lstm, nn.Linear(2, 4), ["<pad>", "a", "b", "c"], level="char", device="cpu")
    batch = ad.encode(["ab"])
    with torch.no_grad():
        _, cache = ad.run_with_cache(batch, ["lstm.1.cell", "lstm.1"])
        x = emb.weight[[1, 2]]
    w_ih, w_hh = lstm.weight_ih_l0.detach(), lstm.weight_hh_l0.detach()
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    h, c = torch.zeros(2), torch.zeros(2)
    cells, hiddens = [], []
    for t in range(2):
        z = w_ih @ x[t] + w_hh @ h + b
        i, f, g, o = z[0:2].sigmoid(), z[2:4].sigmoid(), z[4:6].tanh(), z[6:8].sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        cells.append(c)
        hiddens.append(h)
    torch.testing.assert_close(cache["lstm.1.cell"][0], torch.stack(cells))
    torch.testing.assert_close(cache["lstm.1"][0], torch.stack(hiddens))


@pytest.mark.parametrize("layer", ["lstm.1", "lstm.1.cell", "embedding"])
def test_edit_at_step_t_changes_only_later_steps(adapter, layer):
    batch = adapter.encode(["abc dq"])
    edit_step = 2

    def edit(act, step):
        return act + 1.0 if step == edit_step else None

    with torch.no_grad():
        with adapter.hooks({layer: lambda a, t: None}):  # same step-wise path: bit-comparable
            before = adapter.forward(batch).logits
        with adapter.hooks({layer: edit}):
            edited = adapter.forward(batch).logits
    assert torch.equal(edited[:, :edit_step], before[:, :edit_step])
    for t in range(edit_step, before.shape[1]):
        assert not torch.allclose(edited[:, t], before[:, t]), t


def test_cell_edit_changes_hidden_state_of_same_step(adapter):
    batch = adapter.encode(["abcd"])
    with torch.no_grad():
        _, base = adapter.run_with_cache(batch, ["lstm.1"])
        with adapter.hooks({"lstm.1.cell": lambda a, t: torch.zeros_like(a) if t == 1 else None}):
            _, cached = adapter.run_with_cache(batch, ["lstm.1", "lstm.1.cell"])
    assert torch.equal(cached["lstm.1.cell"][:, 1], torch.zeros(1, 6))
    torch.testing.assert_close(cached["lstm.1"][:, 0], base["lstm.1"][:, 0])
    assert torch.equal(cached["lstm.1"][:, 1], torch.zeros(1, 6))  # h = o * tanh(0)
    assert not torch.allclose(cached["lstm.1"][:, 2], base["lstm.1"][:, 2])


def test_hooks_removed_afterwards(adapter):
    batch = adapter.encode(["ab cd", "q"])
    with torch.no_grad():
        before = adapter.forward(batch).logits
        with adapter.hooks({"lstm.2": lambda a, t: a * 0, "embedding": lambda a, t: a + 1}):
            assert not torch.equal(adapter.forward(batch).logits, before)
        with pytest.raises(RuntimeError), adapter.hooks({"lstm.1": lambda a, t: a * 2}):
            raise RuntimeError("removed even on error")
        after = adapter.forward(batch).logits
    assert torch.equal(after, before)
    assert not adapter.model.has_hooks()


def test_hook_with_wrong_shape_is_an_error(adapter):
    with pytest.raises(ModelError, match="shape"), adapter.hooks({"lstm.1": lambda a, t: a[:, :2]}):
        adapter.forward(adapter.encode(["ab"]))


def test_classification_head(parts):
    emb, lstm, _ = parts
    head = nn.Linear(6, 3)
    ad = LSTMAdapter.from_modules(emb, lstm, head, VOCAB, task="classification", level="char", device="cpu")
    batch = ad.encode(["ab cd", "q"])
    with torch.no_grad():
        logits = ad.forward(batch).logits
        top = lstm(emb(batch.inputs["input_ids"]))[0]
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, head(top[[0, 1], [4, 0]]))
    with pytest.raises(ModelError, match="language model"):
        ad.sequence_logprob("ab", "c")


def test_sequence_logprob_is_sum_of_token_logprobs(adapter, parts):
    ids = torch.tensor([[3, 4, 2, 5]])  # "ab c"
    logp = torch.log_softmax(reference_logits(parts, ids)[0], -1)
    expected = logp[1, 2] + logp[2, 5]  # p(" " | "ab") * p("c" | "ab ")
    torch.testing.assert_close(adapter.sequence_logprob("ab", " c").detach(), expected)


def test_generate_is_seeded_and_never_pads(adapter):
    a = adapter.generate("ab", 12, temperature=1.0, seed=3)
    assert a == adapter.generate("ab", 12, temperature=1.0, seed=3)
    assert len(a) == 12 and "<pad>" not in a
    greedy = adapter.generate("ab", 5, temperature=0)
    assert greedy == adapter.generate("ab", 5, temperature=0, seed=9)


# -- issue 19, item 4: fused below the first hooked layer, identical values ---------------------
def _count_stepwise(monkeypatch):
    calls = []
    orig = UnrolledLSTM._stepwise

    def counted(self, k, *a, **kw):
        calls.append(k)
        return orig(self, k, *a, **kw)

    monkeypatch.setattr(UnrolledLSTM, "_stepwise", counted)
    return calls


@pytest.mark.parametrize("layer", ["embedding", "lstm.1", "lstm.1.cell", "lstm.2", "lstm.2.cell"])
def test_hooked_paths_equal_the_fused_path(adapter, parts, monkeypatch, layer):
    batch = adapter.encode(["ab cd", "qa"])
    with torch.no_grad():
        fused = adapter.forward(batch).logits
        steps = _count_stepwise(monkeypatch)
        with adapter.hooks({layer: lambda a, t: None}):
            hooked = adapter.forward(batch).logits
        stepped = list(steps)
        out, cache = adapter.run_with_cache(batch, ["lstm.1", "lstm.2"])
    # only the hooked layer steps in Python; layers below and above it run the fused kernel
    assert stepped == {"embedding": [], "lstm.1": [0], "lstm.1.cell": [0], "lstm.2": [1], "lstm.2.cell": [1]}[layer]
    torch.testing.assert_close(hooked, fused, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, fused, atol=1e-6, rtol=1e-5)
    emb, lstm, head = parts
    ref = nn.LSTM(8, 6, 1, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(lstm, f"{name}_l0"))
        h1 = ref(emb(batch.inputs["input_ids"]))[0]
    torch.testing.assert_close(cache["lstm.1"], h1, atol=1e-6, rtol=1e-5)


def test_reading_hooks_run_the_fused_kernel(adapter, monkeypatch):
    """run_with_cache's hooks only read hidden states: those layers run the fused kernel (no Python steps)
    and cache the stepped path's values to float32 rounding; a cell state, an editing hook or detach=False
    (the cached tensor must be the one the forward goes on with) still steps."""
    batch = adapter.encode(["ab cd", "qa"])
    with torch.no_grad():
        with adapter.hooks({"lstm.1": lambda a, t: None, "lstm.2": lambda a, t: None}):  # may edit: steps
            _, stepped = adapter.run_with_cache(batch, ["lstm.1", "lstm.2"])
        steps = _count_stepwise(monkeypatch)
        out, fused = adapter.run_with_cache(batch, ["lstm.1", "lstm.2"])
        assert steps == []
        _, with_cell = adapter.run_with_cache(batch, ["lstm.1", "lstm.1.cell"])
        assert steps == [0]
        adapter.run_with_cache(batch, ["lstm.2"], detach=False)
        assert steps == [0, 1]
        plain = adapter.forward(batch).logits
    torch.testing.assert_close(out.logits, plain, atol=0, rtol=0)  # the very path of an unhooked forward
    for lay in ("lstm.1", "lstm.2"):
        torch.testing.assert_close(fused[lay], stepped[lay], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(with_cell["lstm.1"], fused["lstm.1"], atol=1e-6, rtol=1e-5)


def test_a_reading_hook_may_not_edit(adapter):
    from finegrain.models.lstm import reads_only

    batch = adapter.encode(["ab"])
    with pytest.raises(ModelError, match="reads_only"), adapter.hooks({"lstm.1": reads_only(lambda a, t: a * 0)}):
        adapter.forward(batch)


def test_output_hooks_see_and_replace_the_layer_output(adapter, parts):
    batch = adapter.encode(["ab cd", "qa"])
    seen = []

    def record(seq, steps, rows):
        seen.append((seq.detach().clone(), steps.clone(), rows.clone()))

    with torch.no_grad():
        _, cache = adapter.run_with_cache(batch, ["lstm.1"])
        with adapter.output_hooks({"lstm.1": record}):
            adapter.forward(batch)
        with adapter.output_hooks({"lstm.2": lambda seq, steps, rows: torch.zeros_like(seq)}):
            zeroed = adapter.forward(batch).logits
    (seq, steps, rows), = seen
    torch.testing.assert_close(seq, cache["lstm.1"])
    assert steps.tolist() == [list(range(5))] * 2 and rows.tolist() == [0, 1]
    torch.testing.assert_close(zeroed, parts[2](torch.zeros(2, 5, 6)).expand_as(zeroed))
    assert not adapter.model.has_hooks()
    with pytest.raises(ModelError, match="no output hook"), adapter.output_hooks({"lstm.1.cell": record}):
        pass


def _tiny_windows(context="window"):
    from finegrain.models.textgenrnn import TextgenrnnModel

    torch.manual_seed(3)
    model = TextgenrnnModel(vocab_size=len(VOCAB), embedding_dim=6, hidden_size=5, window=4, context=context)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return LSTMAdapter(model, VOCAB, level="char", bos="<s>", unk=0, device="cpu")


@pytest.mark.parametrize("layer", ["embedding", "lstm.1", "lstm.2.cell"])
def test_window_lockstep_equals_the_windows_run_one_by_one(layer):
    """textgenrnn's windows run in lockstep when hooked: the logits equal the unhooked batched windows,
    every window calls the hook once per step it contains, and run_with_cache keeps the state of the
    window ending at each step (the one that predicts the next character)."""
    ad = _tiny_windows()
    batch = ad.encode(["abc dq", "ab"])
    ids = batch.inputs["input_ids"]
    w = ad.model.window
    calls = []
    with torch.no_grad():
        plain = ad.forward(batch).logits
        with ad.hooks({layer: lambda a, t: calls.append(t)}):
            hooked = ad.forward(batch).logits
        _, cache = ad.run_with_cache(batch, ["lstm.1", "lstm.2"])
        padded = nn.functional.pad(ids, (w - 1, 0), value=0)
        for s in range(ids.shape[1]):
            feats, _ = ad.model.features(padded[:, s : s + w], hooked=False)  # the window ending at s alone
            h1 = feats[:, -1, 6:11]
            torch.testing.assert_close(cache["lstm.1"][:, s], h1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(hooked, plain, atol=1e-6, rtol=1e-5)
    T = ids.shape[1]
    assert sorted(calls) == sorted(s for t in range(T) for s in range(max(0, t - w + 1), t + 1))


def test_sequence_logprob_word_boundary(adapter):
    plain = adapter.sequence_logprob("ab", " c")
    bounded = adapter.sequence_logprob("ab", " c", word_boundary=True)
    ids = torch.tensor([[3, 4, 2, 5]])
    with torch.no_grad():
        logp = torch.log_softmax(adapter.model(ids).logits[0], -1)
    want = float(plain) + float(torch.logsumexp(logp[-1, adapter.word_boundary_ids()], 0))
    assert float(bounded) == pytest.approx(want, abs=1e-5) and float(bounded) < float(plain)
    assert adapter.word_boundary_ids() == [2]  # the space (no punctuation in this vocabulary, no bos)


# -- issue 18: generation carries the recurrent state (values as before) -----------------------------
def _full_recompute_generate(ad, prefix, n, temperature=0.0, seed=None):
    """generate() as it was before: every character predicted from a forward over the whole text."""
    ids = ad.prompt_ids(prefix)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out, seen = [], []
    with torch.no_grad():
        for _ in range(n):
            logits = ad.model.logits_at(torch.tensor([ids]), [len(ids) - 1])[0, 0].double()
            seen.append(logits.clone())
            logits[ad.pad_index] = -torch.inf
            nxt = int(logits.argmax()) if temperature <= 0 else int(
                torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            if ad.bos is not None and nxt == ad.stoi[ad.bos]:
                break
            ids.append(nxt)
            out.append(ad.itos[nxt])
    return "".join(out), torch.stack(seen)


@pytest.mark.parametrize("context", [None, "window", "stream"])
def test_incremental_generation_equals_full_recompute_with_and_without_edits(adapter, context):
    ad = adapter if context is None else _tiny_windows(context)
    edit = {"lstm.1": lambda a, t: a.index_fill(1, torch.tensor([0]), 0.9) if t >= 2 else None,
            "embedding": lambda a, t: a * 1.5 if t == 1 else None}
    for hooks in ({}, edit):
        with ad.hooks(hooks):
            for temperature, seed in ((0.0, None), (1.0, 3)):
                want, logits = _full_recompute_generate(ad, "ab", 15, temperature, seed)
                assert ad.generate("ab", 15, temperature=temperature, seed=seed) == want
                assert ad.generate("ab", 15, temperature=temperature, seed=seed, cache=False) == want
                _, _, got = ad.generate_tokens("ab", 15, temperature, seed)
                torch.testing.assert_close(got.double(), logits.float().double(), atol=1e-5, rtol=1e-5)


def test_generation_carries_the_state_instead_of_rerunning_the_text(adapter, monkeypatch):
    seen = []
    orig = UnrolledLSTM.forward_layers

    def counted(self, x, *a, **kw):
        seen.append(x.shape[1])
        return orig(self, x, *a, **kw)

    monkeypatch.setattr(UnrolledLSTM, "forward_layers", counted)
    out = adapter.generate_tokens("ab", 20)[1]
    assert len(out) == 20 and seen == [2] + [1] * 19  # the prompt once, then one step per character
    seen.clear()
    out = _tiny_windows("stream").generate_tokens("ab", 20)[1]
    assert seen == [3, 3] + [1] * (len(out) - 1)  # the padding context and "<s>ab" once, then one step each
    seen.clear()
    out = _tiny_windows("window").generate_tokens("ab", 20)[1]
    assert seen == [4] * len(out)  # window mode: one 4-step window per character, however long the text
