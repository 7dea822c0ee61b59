"""Controlling behaviour by editing concept neurons (Suau et al. 2020; Bau et al. 2019), always
against random units of the same size.

* **Expert units** (Suau et al. 2020, "Finding experts in transformer models"): each unit's response,
  max-pooled over the tokens of a sentence, is scored by its average precision (AP, scikit-learn's tie
  handling: :func:`finegrain.rank.average_precision_columns`) as a detector of concept-positive
  sentences; the top *k* are the experts. Intervention: set each expert to its median (pooled)
  response on the positive sentences, at every position.
* **Editing the units found for a property** (Bau et al. 2019, "Identifying and controlling important
  neurons in neural machine translation"): scale or set the top units of any ranking (a probe's, a
  correlation ranking) with :class:`~finegrain.intervene.edits.Scale` / :class:`Set` / :class:`Zero`.

:func:`concept_control` measures what an edit does to the model's output — the log-probability of
concept words after prompts (each scored followed by a word boundary on character models), of
control words, generations, and a classifier's labels — and does the same for ``n_random`` sets of
random units of the same size in the same layers, edited the same way. Only an effect beyond every
random draw is reported as steering (``steered``); otherwise the result says plainly that the edit
cannot be told from editing arbitrary units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from finegrain.data.generate import generate_corpus, load_lexicon
from finegrain.errors import ParameterError
from finegrain.intervene.edits import Edit, Scale, Set, Zero, intervene, neuron_list, resolve_neurons
from finegrain.intervene.scoring import (
    boundary_ids,
    continuation_logprobs,
    is_hf_causal,
    logits_of,
    scores_continuations,
    uses_sequence_logprob,
)
from finegrain.models.base import ModelAdapter, ModelError, eval_mode
from finegrain.neurons import Neuron, NeuronIndex
from finegrain.rank import average_precision_columns, sentence_max_pool
from finegrain.results import Result
from finegrain.store.view import View


def generate(adapter: ModelAdapter, prompt: str, n_tokens: int = 20, edits: Edit | Sequence[Edit] | None = None,
             temperature: float = 0.0, seed: int = 0) -> str:
    """Generate a continuation of ``prompt`` with ``edits`` active (greedy when
    ``temperature == 0``). HF causal LMs re-run the whole sequence at each step (no KV cache), so
    position-based edits stay at their positions; adapters with their own ``generate`` (the char
    LSTM) are called inside :func:`intervene`."""
    if n_tokens < 0:
        raise ParameterError(f"n_tokens must be >= 0, got {n_tokens}")
    with eval_mode(adapter):
        if not is_hf_causal(adapter):
            gen = getattr(adapter, "generate", None)
            if gen is None:
                raise ModelError(f"{adapter.name}: generation needs a causal LM or an adapter with generate()")
            with intervene(adapter, edits), torch.no_grad():
                try:
                    return gen(prompt, n_tokens, temperature=temperature, seed=seed)
                except TypeError:  # an adapter whose generate() takes no sampling options
                    return gen(prompt, n_tokens)
        tok = adapter.tokenizer
        ids = tok(prompt, return_tensors="pt")["input_ids"].to(adapter.device)
        if ids.shape[1] == 0:
            ids = torch.tensor([[tok.bos_token_id]], device=adapter.device)
        n0 = ids.shape[1]
        gen_rng = torch.Generator().manual_seed(seed)
        with intervene(adapter, edits), torch.no_grad():
            for _ in range(n_tokens):
                if ids.shape[1] >= adapter.max_length:
                    break
                logits = logits_of(adapter, adapter.model(input_ids=ids))[0, -1].float()
                if temperature > 0:
                    p = torch.softmax(logits / temperature, -1).cpu()
                    nxt = torch.multinomial(p, 1, generator=gen_rng).to(ids.device)
                else:
                    nxt = logits.argmax()[None]
                ids = torch.cat([ids, nxt[None]], 1)
        return tok.decode(ids[0, n0:])


# -- concept material from the built-in lexicon --------------------------------------------------
def concept_classes() -> list[str]:
    """The noun classes of the built-in lexicon (``animal``, ``person``, ``place``, ``thing``)."""
    return sorted({n["class"] for n in load_lexicon()["nouns"]})


def concept_words(concept: str, forms: Sequence[str] = ("sg",)) -> list[str]:
    """The lexicon's nouns of class ``concept`` (``forms``: ``"sg"`` and/or ``"pl"``), e.g. the
    ANIMAL words ``dog, cat, horse, ...``."""
    nouns = [n for n in load_lexicon()["nouns"] if n["class"] == concept]
    if not nouns:
        raise ParameterError(f"no lexicon nouns of class {concept!r}; classes: {', '.join(concept_classes())}")
    bad = [f for f in forms if f not in ("sg", "pl")]
    if bad:
        raise ParameterError(f"forms must be 'sg' and/or 'pl', got {bad}")
    return [n[f] for n in nouns for f in forms]


def concept_sentences(concept: str, n_sentences: int = 400, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Sentences of the built-in generated corpus and whether each contains a ``concept`` noun
    (singular or plural, any case): the positive and negative examples of Suau et al.'s AP."""
    forms = {w.lower() for w in concept_words(concept, ("sg", "pl"))}
    corpus = generate_corpus(n_sentences=n_sentences, seed=seed)
    texts = [" ".join(s.words) for s in corpus.sentences]
    positive = np.array([any(w.lower() in forms for w in s.words) for s in corpus.sentences])
    return texts, positive


# -- expert units --------------------------------------------------------------------------------
@dataclass
class ExpertUnits(Result):
    """The top-``k`` expert units of a concept (Suau et al. 2020): their AP as detectors of positive
    sentences, and their median max-pooled response on the positives (the value the intervention sets).
    ``candidates`` / ``candidate_ap`` / ``candidate_values`` hold every scored unit, from which random
    units of the same size are drawn. A random unit's AP is about ``positive_fraction``, not 0.5."""

    concept: str
    neurons: list[Neuron]
    ap: list[float]
    values: list[float]
    positive_fraction: float = float("nan")
    n_sentences: int = 0
    candidates: list[Neuron] = field(default_factory=list)
    candidate_ap: list[float] = field(default_factory=list)
    candidate_values: list[float] = field(default_factory=list)

    @classmethod
    def _decode(cls, d: dict) -> dict:
        d = dict(d)
        for key in ("neurons", "candidates"):
            d[key] = [Neuron.parse(n) for n in d.get(key, [])]
        d["positive_fraction"] = float("nan") if d.get("positive_fraction") is None else d["positive_fraction"]
        return d

    def edit(self, positions=None) -> Set:
        """The Suau et al. intervention: force each unit to its median positive response."""
        return Set(list(self.neurons), np.asarray(self.values, dtype=np.float32), positions=positions)

    def table(self) -> str:
        head = (f"expert units for {self.concept!r} (Suau et al. 2020): AP of the sentence-max-pooled response "
                f"over {self.n_sentences} sentences, {self.positive_fraction:.1%} positive (a random unit's AP "
                f"is about that)")
        lines = [f"{str(n):<18} AP {a:.3f}   median positive response {v:+.4f}"
                 for n, a, v in zip(self.neurons, self.ap, self.values)]
        if self.candidate_ap:
            lines.append(f"all {len(self.candidate_ap)} units: median AP {float(np.median(self.candidate_ap)):.3f}")
        return "\n".join([head, *lines])

    def plot(self, path) -> Path:
        from finegrain.viz.intervene import plot_expert_ap  # heavy (matplotlib): imported only to draw

        return plot_expert_ap(self.candidate_ap or self.ap, self.ap, self.positive_fraction, path,
                              f"expert units for {self.concept}")


def _matrix_and_index(X, index) -> tuple[np.ndarray, list[Neuron]]:
    if isinstance(X, View):
        M = X.materialize()
        idx = X.index if index is None else index
    else:
        M = np.asarray(X, dtype=np.float32)
        idx = index
    if M.ndim != 2:
        raise ParameterError(f"responses must be a [rows, units] matrix, got shape {M.shape}")
    if idx is None:
        raise ParameterError("give the neuron addresses of the columns (index=...) or a view that carries them")
    neurons = idx.neurons() if isinstance(idx, NeuronIndex) else [Neuron.parse(n) for n in idx]
    if len(neurons) != M.shape[1]:
        raise ParameterError(f"{M.shape[1]} columns but {len(neurons)} neuron addresses")
    return M, neurons


def expert_units(X, positive, index: NeuronIndex | Sequence | None = None, k: int = 10, sent_ids=None,
                 concept: str = "concept") -> ExpertUnits:
    """Suau et al. 2020: rank units by the average precision of their response as a detector of the
    concept and return the top ``k`` with their median response on the positives.

    ``X``: responses ``[rows, units]`` (array or view; a view carries its neuron index). Without
    ``sent_ids`` each row is one sentence (already pooled) and ``positive`` has one flag per row. With
    ``sent_ids`` (one per row) each unit's response is max-pooled over the rows of every sentence and a
    sentence is positive when any of its rows is (or ``positive`` has one flag per sentence, in sorted
    sentence-id order). AP ties are handled as scikit-learn does (:func:`finegrain.rank.ap`)."""
    M, neurons = _matrix_and_index(X, index)
    pos = np.asarray(positive).astype(bool).reshape(-1)
    if sent_ids is not None:
        sent_ids = np.asarray(sent_ids)
        if len(sent_ids) != len(M):
            raise ParameterError(f"{len(M)} rows but {len(sent_ids)} sentence ids")
        sids, M = sentence_max_pool(M, sent_ids)
        if len(pos) == len(sent_ids):
            pos = sentence_max_pool(pos[:, None].astype(np.int8), sent_ids)[1][:, 0].astype(bool)
        elif len(pos) != len(sids):
            raise ParameterError(f"positive has {len(pos)} flags: expected one per row ({len(sent_ids)}) or per "
                                 f"sentence ({len(sids)})")
    if len(pos) != len(M):
        raise ParameterError(f"{len(M)} rows of responses but {len(pos)} concept flags")
    if pos.all() or not pos.any():
        raise ParameterError("expert units need both concept-positive and negative sentences")
    if not 1 <= int(k) <= len(neurons):
        raise ParameterError(f"k must be in 1..{len(neurons)}, got {k}")
    ap = average_precision_columns(M, pos)
    med = np.median(M[pos], axis=0)
    top = np.argsort(-ap, kind="stable")[: int(k)]
    return ExpertUnits(concept, [neurons[i] for i in top], [float(ap[i]) for i in top], [float(med[i]) for i in top],
                       float(pos.mean()), int(len(pos)), neurons, ap.astype(float).tolist(), med.astype(float).tolist())


def sentence_responses(adapter: ModelAdapter, texts: Sequence[str], layers=None, batch_size: int = 32,
                       progress: bool | None = None) -> tuple[np.ndarray, NeuronIndex]:
    """Each unit's response max-pooled over the tokens of each text (``[texts, units]``) and the
    neuron index of the columns. Pooled tokens are the real tokens of words (``word_ids`` not ``None``):
    no special tokens, padding, ``bos`` or, in character models, the spaces between words."""
    if not texts:
        raise ParameterError("no texts")
    lays = adapter.resolve_layers(layers)
    sizes = adapter.layers()
    index = NeuronIndex([(lay, sizes[lay]) for lay in lays])
    out = []
    with eval_mode(adapter), torch.no_grad():
        for s in tqdm(range(0, len(texts), batch_size), desc="responses", disable=None if progress is None else
                      not progress):
            batch = adapter.encode([t.split() for t in texts[s:s + batch_size]])
            _, cache = adapter.run_with_cache(batch, lays)
            keep = torch.tensor([[w is not None for w in row] for row in batch.word_ids])
            keep &= batch.attention_mask.cpu().bool()
            if not bool(keep.any(1).all()):
                raise ParameterError("a text has no word tokens to pool")
            parts = []
            for lay in lays:
                a = cache[lay].float().cpu()
                a = a.masked_fill(~keep[:, : a.shape[1], None], float("-inf"))
                parts.append(a.max(1).values)
            out.append(torch.cat(parts, 1).numpy())
    return np.concatenate(out), index


def expert_units_from_texts(adapter: ModelAdapter, texts: Sequence[str], positive, layers=None, k: int = 10,
                            concept: str = "concept", batch_size: int = 32,
                            progress: bool | None = None) -> ExpertUnits:
    """Expert units from a model's responses to ``texts`` (``positive``: one flag per text), max-pooled
    per text by :func:`sentence_responses` (Suau et al. 2020)."""
    X, index = sentence_responses(adapter, texts, layers, batch_size, progress)
    return expert_units(X, positive, index, k, concept=concept)


def expert_units_from_store(view: View, positive: str, k: int = 10, concept: str | None = None) -> ExpertUnits:
    """Expert units for the sentences that contain a token labelled ``positive`` in a token-level store
    view (``store.view(layers=..., label=column)``): responses max-pooled per sentence (its
    ``sent_ids``)."""
    labels = view.labels()
    return expert_units(view, labels == positive, None, k, sent_ids=view.sent_ids,
                        concept=concept or f"{view.label}={positive}")


# -- control --------------------------------------------------------------------------------------
@dataclass
class ControlResult(Result):
    """What editing units did to the model's output, beside the same edit of random units of the same
    size (``random_*``: one value per draw). Log-probabilities are in nats, per concept word averaged
    over the prompts; ``concept_gain`` is the mean change of the concept words' log-probability and
    ``concept_mass_gain`` the change of the log of their summed probability (mean over prompts)."""

    edit: str
    neurons: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    concept_words: list[str] = field(default_factory=list)
    control_words: list[str] = field(default_factory=list)
    concept_logprob_before: list[float] = field(default_factory=list)
    concept_logprob_after: list[float] = field(default_factory=list)
    control_logprob_before: list[float] = field(default_factory=list)
    control_logprob_after: list[float] = field(default_factory=list)
    concept_mass_gain: float = float("nan")
    random_concept_gains: list[float] = field(default_factory=list)
    random_mass_gains: list[float] = field(default_factory=list)
    random_control_gains: list[float] = field(default_factory=list)
    generations_before: list[str] = field(default_factory=list)
    generations_after: list[str] = field(default_factory=list)
    label_dist_before: list[float] = field(default_factory=list)
    label_dist_after: list[float] = field(default_factory=list)
    predictions_before: list[int] = field(default_factory=list)
    predictions_after: list[int] = field(default_factory=list)
    random_flip_rates: list[float] = field(default_factory=list)
    word_boundary: bool = False
    steered: bool | None = None
    verdict: str = ""

    @classmethod
    def _decode(cls, d: dict) -> dict:
        return {k: (float("nan") if v is None and k == "concept_mass_gain" else v) for k, v in d.items()}

    @property
    def concept_gain(self) -> float:
        if not self.concept_logprob_before:
            return float("nan")
        return float(np.mean(self.concept_logprob_after) - np.mean(self.concept_logprob_before))

    @property
    def control_gain(self) -> float:
        if not self.control_logprob_before:
            return float("nan")
        return float(np.mean(self.control_logprob_after) - np.mean(self.control_logprob_before))

    @property
    def flip_rate(self) -> float:
        if not self.predictions_before:
            return float("nan")
        return float(np.mean(np.array(self.predictions_before) != np.array(self.predictions_after)))

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update({"concept_gain": _finite(self.concept_gain), "control_gain": _finite(self.control_gain),
                  "flip_rate": _finite(self.flip_rate)})
        return d

    def measures(self) -> dict[str, tuple[float, list[float]]]:
        """``{measure: (value of the edit, values of the random draws)}`` for the measures taken."""
        out = {}
        if self.concept_logprob_before:
            out["concept log-prob gain"] = (self.concept_gain, self.random_concept_gains)
            out["concept mass gain"] = (self.concept_mass_gain, self.random_mass_gains)
        if self.control_logprob_before:
            out["control-word gain"] = (self.control_gain, self.random_control_gains)
        if self.predictions_before:
            out["flip rate"] = (self.flip_rate, self.random_flip_rates)
        return out

    def table(self) -> str:
        lines = [f"edit: {self.edit} ({len(self.neurons)} units)"]
        for name, (v, r) in self.measures().items():
            rr = np.asarray(r, dtype=float)
            rand = (f"random units of the same size: mean {rr.mean():+.4f} ± {rr.std():.4f} "
                    f"(min {rr.min():+.4f}, max {rr.max():+.4f}, {rr.size} draws)") if rr.size else "no random draws"
            lines.append(f"{name:<22} {v:+.4f}   {rand}")
        for w, b, a in zip(self.concept_words, self.concept_logprob_before, self.concept_logprob_after):
            lines.append(f"  {w!r:<14} log p {b:8.3f} -> {a:8.3f} ({a - b:+.3f})")
        for p, b, a in zip(self.prompts, self.generations_before, self.generations_after):
            lines.append(f"  {p!r}\n    before: {b!r}\n    after:  {a!r}")
        if self.predictions_before:
            lines.append(f"labels before {self.label_dist_before} after {self.label_dist_after}")
        if self.verdict:
            lines.append(self.verdict)
        return "\n".join(lines)

    def plot(self, path) -> Path:
        from finegrain.viz.intervene import plot_control  # heavy (matplotlib): imported only to draw

        measures = self.measures()
        if not measures:
            raise ParameterError("this control result has no measures to plot")
        return plot_control(measures, path, f"{self.edit} vs random units", self.verdict)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _edits_of(units) -> tuple[list[Edit], str, list[str], list[float]]:
    if isinstance(units, ExpertUnits):
        return ([units.edit()], "set to the median positive response (Suau et al. 2020)",
                [str(n) for n in units.neurons], list(units.values))
    edits = [units] if isinstance(units, Edit) else list(units)
    if not edits or not all(isinstance(e, Edit) for e in edits):
        raise ParameterError("units must be ExpertUnits, an Edit or a list of edits")
    return edits, " + ".join(_describe(e) for e in edits), [], []


def _describe(e: Edit) -> str:
    if isinstance(e, Scale):
        return f"scale x{e.factor:g}"
    if isinstance(e, Set) and np.ndim(e.value) == 0:
        return f"set to {float(e.value):g}"
    if isinstance(e, Zero):
        return "zero"
    return type(e).__name__


def _random_edits(adapter: ModelAdapter, units, edits: list[Edit], rng: np.random.Generator,
                  pool: Sequence | None) -> list[Edit]:
    """The same edits of random units: as many per layer as the edits touch, drawn from ``pool`` (default:
    every unit of those layers) minus the edited units; expert units get their own median responses."""
    if isinstance(units, ExpertUnits):
        if not units.candidates:
            raise ParameterError("these expert units carry no candidates to draw random units from")
        value = dict(zip(units.candidates, units.candidate_values))
        chosen = set(units.neurons)
        picks = []
        for layer, n in _per_layer(units.neurons).items():
            cands = [c for c in units.candidates if c.layer == layer and c not in chosen]
            picks += _draw(cands, n, rng, layer)
        return [Set(picks, np.asarray([value[p] for p in picks], dtype=np.float32))]
    out = []
    for e in edits:
        if not isinstance(e, Zero | Scale | Set) or (isinstance(e, Set) and np.ndim(e.value) != 0):
            raise ParameterError(f"no random control for {_describe(e)} edits (only Zero, Scale, Set to one "
                                 "value, or ExpertUnits); pass n_random=0 to measure without one")
        spec = resolve_neurons(adapter, e.neurons)
        pool_neurons = neuron_list(adapter, pool if pool is not None else list(spec))
        picks = []
        for layer, us in spec.items():
            cands = [p for p in pool_neurons if p.layer == layer and p.unit not in set(us)]
            picks += _draw(cands, len(us), rng, layer)
        out.append(dataclasses.replace(e, neurons=picks))
    return out


def _per_layer(neurons: Sequence[Neuron]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in neurons:
        out[n.layer] = out.get(n.layer, 0) + 1
    return out


def _draw(cands: list[Neuron], n: int, rng: np.random.Generator, layer: str) -> list[Neuron]:
    if len(cands) < n:
        raise ParameterError(f"{layer}: only {len(cands)} other units to draw {n} random units from")
    return [cands[i] for i in rng.choice(len(cands), size=n, replace=False)]


def _word_logprobs(adapter, prompts, words, word_boundary) -> np.ndarray:
    """``[prompts, words]`` log p(word | prompt); words continue the prompt after a space."""
    pre = [p for p in prompts for _ in words]
    cont = [w if w[:1].isspace() or (p and p[-1].isspace()) else " " + w for p in prompts for w in words]
    return continuation_logprobs(adapter, pre, cont, word_boundary=word_boundary).reshape(len(prompts), len(words))


def _predict(adapter: ModelAdapter, texts: Sequence[str]) -> np.ndarray:
    batch = adapter.encode([t.split() if isinstance(t, str) else list(t) for t in texts])
    with torch.no_grad():
        logits = logits_of(adapter, adapter.forward(batch))
    if logits.dim() != 2:
        raise ModelError(f"{adapter.name}: label control needs sequence-level logits [batch, classes]")
    return torch.softmax(logits.float(), -1).cpu().numpy()


def _measure(adapter, edits, prompts, concept, control, texts, word_boundary):
    with intervene(adapter, edits):
        c = _word_logprobs(adapter, prompts, concept, word_boundary) if concept else None
        k = _word_logprobs(adapter, prompts, control, word_boundary) if control else None
        p = _predict(adapter, texts) if texts else None
    return c, k, p


def _mass(lp: np.ndarray) -> np.ndarray:
    """log of the summed probability of the words, per prompt."""
    return np.logaddexp.reduce(lp, axis=1)


#: neutral prompts the concept words are scored after when none are given (they name no concept)
NEUTRAL_PROMPTS = ("I saw a", "She has a", "There is a")


def concept_control(
    adapter: ModelAdapter,
    units,
    prompts: Sequence[str] = (),
    concept_words: Sequence[str] = (),
    control_words: Sequence[str] = (),
    texts: Sequence[str] = (),
    n_random: int = 10,
    random_state: int = 0,
    pool: Sequence | None = None,
    n_tokens: int = 0,
    word_boundary: bool | None = None,
    progress: bool | None = None,
) -> ControlResult:
    """Edit units and measure the change of the model's output, against random units (Suau et al.
    2020; Bau et al. 2019).

    ``units``: :class:`ExpertUnits` (each set to its median positive response) or edits (:class:`Zero`,
    :class:`Scale`, :class:`Set`; any edit with ``n_random=0``). Language models: the log-probability of
    each of ``concept_words`` and ``control_words`` after each prompt (a word continues the prompt after
    a space; on character models it is followed by a word boundary, :mod:`finegrain.intervene.scoring`)
    and, with ``n_tokens``, greedy generations. Classifiers: the predicted labels of ``texts``.

    ``n_random`` draws of random units (as many per layer, from ``pool`` or the edited layers, the edited
    units excluded; expert units' stand-ins set to their own median positive response) give the spread
    an edit of arbitrary units causes. ``steered`` is true only when the concept gain is positive and
    above every random draw (and, with control words, so is its excess over the control-word gain); the
    ``verdict`` says so in words either way.
    """
    edits, desc, neurons, values = _edits_of(units)
    if (concept_words or control_words) and not prompts:
        raise ParameterError("concept and control words are scored after prompts: give prompts")
    if concept_words and not scores_continuations(adapter):
        raise ModelError(f"{adapter.name}: concept-word probabilities need a language model")
    if n_random < 0:
        raise ParameterError(f"n_random must be >= 0, got {n_random}")
    if not (concept_words or texts or (prompts and n_tokens)):
        raise ParameterError("nothing to measure: give concept_words (with prompts), texts, or n_tokens")
    prompts, concept, control, texts = list(prompts), list(concept_words), list(control_words), list(texts)
    if uses_sequence_logprob(adapter):
        wb = bool(word_boundary)
    else:
        wb = bool(concept or control) and bool(boundary_ids(adapter, word_boundary))
    res = ControlResult(desc, neurons or [str(n) for e in edits for n in _edit_neurons(adapter, e)], values,
                        prompts, concept, control, word_boundary=wb)
    rng = np.random.default_rng(random_state)
    with eval_mode(adapter):
        c0, k0, p0 = _measure(adapter, [], prompts, concept, control, texts, word_boundary)
        c1, k1, p1 = _measure(adapter, edits, prompts, concept, control, texts, word_boundary)
        if c0 is not None:
            res.concept_logprob_before, res.concept_logprob_after = c0.mean(0).tolist(), c1.mean(0).tolist()
            res.concept_mass_gain = float(np.mean(_mass(c1) - _mass(c0)))
        if k0 is not None:
            res.control_logprob_before, res.control_logprob_after = k0.mean(0).tolist(), k1.mean(0).tolist()
        if p0 is not None:
            res.predictions_before, res.predictions_after = p0.argmax(1).tolist(), p1.argmax(1).tolist()
            nc = p0.shape[1]
            res.label_dist_before = np.bincount(p0.argmax(1), minlength=nc).astype(float).tolist()
            res.label_dist_after = np.bincount(p1.argmax(1), minlength=nc).astype(float).tolist()
        for _ in tqdm(range(n_random), desc="random units", disable=None if progress is None else not progress):
            rc, rk, rp = _measure(adapter, _random_edits(adapter, units, edits, rng, pool), prompts, concept, control,
                                  texts, word_boundary)
            if rc is not None:
                res.random_concept_gains.append(float(rc.mean() - c0.mean()))
                res.random_mass_gains.append(float(np.mean(_mass(rc) - _mass(c0))))
            if rk is not None:
                res.random_control_gains.append(float(rk.mean() - k0.mean()))
            if rp is not None:
                res.random_flip_rates.append(float(np.mean(p0.argmax(1) != rp.argmax(1))))
        if prompts and n_tokens:
            res.generations_before = [generate(adapter, p, n_tokens) for p in prompts]
            res.generations_after = [generate(adapter, p, n_tokens, edits=edits) for p in prompts]
    res.steered, res.verdict = _verdict(res)
    return res


def _edit_neurons(adapter, e: Edit) -> list[Neuron]:
    spec = getattr(e, "neurons", None)
    return neuron_list(adapter, spec) if spec is not None else []


def _verdict(res: ControlResult) -> tuple[bool | None, str]:
    if res.concept_logprob_before:
        g, r = res.concept_gain, np.asarray(res.random_concept_gains)
        what = f"the concept words' log-probability changes by {g:+.3f} nats"
        if not r.size:
            return None, (f"{what}; NO random control (n_random=0): this cannot be told from the effect of editing "
                          "any units")
        spread = f"random units of the same size: {r.mean():+.3f} ± {r.std():.3f}, max {r.max():+.3f}, {r.size} draws"
        beats = g > 0 and g > r.max()
        if beats and res.control_logprob_before:
            excess = g - res.control_gain
            r_excess = r - np.asarray(res.random_control_gains)
            if not excess > r_excess.max():
                return False, (f"NOT concept-specific: {what} ({spread}), but the control words move as much "
                               f"(excess {excess:+.3f} vs random max {r_excess.max():+.3f}): the edit raises "
                               "words in general, not the concept")
        if beats:
            return True, f"steered: {what}, above every random draw ({spread})"
        return False, (f"NOT steered: {what}, within or below what random units of the same size do ({spread}); "
                       "this is not control of the concept")
    if res.predictions_before:
        f, r = res.flip_rate, np.asarray(res.random_flip_rates)
        if not r.size:
            return None, f"flip rate {f:.3f}; NO random control (n_random=0)"
        beats = f > r.max()
        return beats, (f"flip rate {f:.3f} vs random units {r.mean():.3f} ± {r.std():.3f} (max {r.max():.3f}): "
                       + ("above every random draw" if beats else "NOT above random units"))
    return None, ""
