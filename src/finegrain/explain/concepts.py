"""Concepts behind one interface: neuron sets (supervised), latent clusters and CAV directions.

Every :class:`Concept` has a ``name``, a ``kind`` (``supervised`` | ``latent`` | ``cav``), a
``layer`` and either ``neurons`` (a set of units of the layer) or a ``direction`` (a unit vector in
the layer's activation space). Its :meth:`Concept.contribution` turns a neuron attribution tensor
``[examples, tokens, units]`` (from :func:`finegrain.attribute.neuron_attribution`) into the
attribution mass the concept carries per example, and :meth:`Concept.null` draws the same
quantity for random concepts of the same size, so that a contribution is always reported against
chance (z-score, empirical p-value).

* supervised concepts (:class:`SupervisedConcepts`): the neurons a linear probe ranks highest for
  one label of one property (Dalvi et al. 2019, "What is one grain of sand in the desert?");
* latent concepts (:func:`latent_concepts`): clusters of a layer's word representations (Dalvi
  et al. 2022, *Discovering Latent Concepts Learned in BERT*; ConceptX / NxPlain): a word carries
  the concept when its representation falls in the cluster, and the concept's mass is the
  attribution of those words (all units);
* concept activation vectors (:mod:`finegrain.explain.cavs`, Kim et al. 2018): the mass is the
  gradient x activation carried by the component of the activation along the CAV,
  ``sum_t (g_t . v)(a_t . v)``, against random directions along which the activations are as large
  (:func:`scale_matched_directions`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from finegrain.errors import ConceptError, LayerError, ParameterError
from finegrain.intervene import Hook, Mean, Zero
from finegrain.neurons import Neuron
from finegrain.probe import LinearProbe
from finegrain.rank import probe_weight_ranking
from finegrain.store import ActivationStore
from finegrain.store.view import StoreView, View


def layer_view(source, layer: str | None = None) -> View:
    """The view of exactly ``layer``'s columns of a view or store (``None``: the view's one layer)."""
    if isinstance(source, ActivationStore | str | os.PathLike):
        source = StoreView(source)
    if not isinstance(source, View):
        raise ParameterError(f"expected a store view or an ActivationStore, got {type(source).__name__}")
    layers = source.index.layers
    if layer is None:
        if len(layers) != 1:
            raise ParameterError(f"the view has layers {layers}; pick one with layer=")
        return source
    if layer not in layers:
        raise LayerError(f"layer {layer!r} is not in the view (it has {', '.join(layers)})")
    return source if layers == [layer] else source.select(columns=source.index.layer_columns(layer))


# ---------------------------------------------------------------------------------------------
@dataclass
class LayerContext:
    """What concepts need besides the attribution: per-example activations and gradients of the
    target at the layer (``[B, T, D]``, zero at padding), the real-token mask ``[B, T]`` and the
    word index of each token (``None`` for special tokens); ``f_x`` the target's value on each input and
    ``target`` the target itself."""

    layer: str
    attr: np.ndarray
    acts: np.ndarray | None = None
    grads: np.ndarray | None = None
    mask: np.ndarray | None = None
    token_word_ids: list[list[int | None]] = field(default_factory=list)
    words: list[list[str]] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    f_x: np.ndarray | None = None
    target: object = None
    _word_cluster: dict = field(default_factory=dict, repr=False)

    def word_vectors(self, b: int) -> np.ndarray:
        """``[n_words, D]``: activations of example ``b`` averaged over each word's tokens (the
        store's ``mean`` aggregation, so they match vectors a latent-concept model was fit on)."""
        if self.acts is None:
            raise ConceptError("latent concepts need the layer activations (LayerContext.acts)")
        n = len(self.words[b])
        out = np.zeros((n, self.acts.shape[2]))
        cnt = np.zeros(n)
        for t, w in enumerate(self.token_word_ids[b]):
            if w is not None and w < n:
                out[w] += self.acts[b, t]
                cnt[w] += 1
        return out / np.maximum(cnt, 1)[:, None]

    def word_clusters(self, model) -> list[np.ndarray]:
        """Latent-concept id of every word of every example (cached per clustering model)."""
        key = id(model)
        if key not in self._word_cluster:
            self._word_cluster[key] = [
                model.predict(self.word_vectors(b)) if len(self.words[b]) else np.zeros(0, dtype=int)
                for b in range(self.attr.shape[0])
            ]
        return self._word_cluster[key]


def _attr_array(attr) -> np.ndarray:
    a = getattr(attr, "scores", attr)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, None, :]
    if a.ndim != 3:
        raise ConceptError(f"attribution must be [examples, tokens, units], got shape {a.shape}")
    return a


# ---------------------------------------------------------------------------------------------
class Concept:
    """Base class. Subclasses implement :meth:`token_contributions` and :meth:`null`."""

    kind: str = "concept"

    def __init__(self, name: str, layer: str, neurons: Sequence[Neuron | str] | None = None,
                 direction: np.ndarray | None = None, words: Sequence[str] = (), meta: dict | None = None):
        self.name = str(name)
        self.layer = str(layer)
        self.neurons = [Neuron.parse(n) for n in neurons] if neurons is not None else None
        if self.neurons is not None:
            bad = [str(n) for n in self.neurons if n.layer != self.layer]
            if bad:
                raise ConceptError(f"concept {name!r} is at {layer} but names neurons of other layers: {bad[:3]}")
        self.direction = None if direction is None else np.asarray(direction, dtype=np.float64).reshape(-1)
        self.words = list(words)
        self.meta = dict(meta or {})

    @property
    def size(self) -> int:
        return len(self.neurons) if self.neurons is not None else 1

    @property
    def units(self) -> np.ndarray:
        if self.neurons is None:
            raise ConceptError(f"{self.kind} concept {self.name!r} has no neuron set")
        return np.array([n.unit for n in self.neurons], dtype=np.int64)

    def token_contributions(self, attr, context: LayerContext | None = None) -> np.ndarray:
        """``[B, T]``: the concept's attribution mass at every token."""
        raise NotImplementedError

    def contribution(self, attr, context: LayerContext | None = None) -> np.ndarray:
        """``[B]``: attribution mass the concept carries in each example (summed over tokens)."""
        return self.token_contributions(attr, context).sum(1)

    def null(self, attr, context: LayerContext | None, n_random: int, rng: np.random.Generator) -> np.ndarray:
        """``[B, n_random]``: the same mass for random concepts of the same size."""
        raise NotImplementedError

    def ablation(self, adapter, batch_mask, layer_mean: np.ndarray | None, context: LayerContext | None,
                 rows: Sequence[int] | None = None, positions: torch.Tensor | None = None):
        """The :mod:`finegrain.intervene` edit that removes the concept (zero, or its mean when
        ``layer_mean`` is given), or ``None`` when it cannot be ablated. ``positions`` (``[rows, T]``
        bool) restricts it to those tokens (within the concept's own, for concepts that have some)."""
        return None

    def random_ablations(self, adapter, batch_mask, layer_mean: np.ndarray | None, context: LayerContext | None,
                         rows: Sequence[int], positions: torch.Tensor | None, n: int,
                         rng: np.random.Generator) -> list:
        """``n`` edits that remove random concepts of the same size the same way (same fill, same
        positions): the null of the ablation effect. Empty when the concept kind has none."""
        return []

    def describe(self, max_items: int = 8) -> str:
        if self.neurons is not None:
            ns = ", ".join(str(n.unit) for n in self.neurons[:max_items])
            return f"{len(self.neurons)} neurons ({ns}{', ...' if len(self.neurons) > max_items else ''})"
        if self.words:
            return "words: " + " ".join(self.words[:max_items])
        return ""

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "layer": self.layer,
                "neurons": None if self.neurons is None else [str(n) for n in self.neurons],
                "direction": None if self.direction is None else [float(x) for x in self.direction],
                "words": self.words, "meta": self.meta}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.layer}, {self.describe()})"


class NeuronConcept(Concept):
    """A concept made of a set of neurons of one layer. Its mass is the summed attribution of its
    units over all tokens; the null draws random unit sets of the same size from the layer."""

    kind = "supervised"

    def __init__(self, name: str, layer: str, neurons: Sequence[Neuron | str | int], words: Sequence[str] = (),
                 meta: dict | None = None, kind: str = "supervised", detector=None):
        ns = [Neuron(layer, int(n)) if isinstance(n, int | np.integer) else Neuron.parse(n) for n in neurons]
        if not ns:
            raise ConceptError(f"concept {name!r} has no neurons")
        if len({n.unit for n in ns}) != len(ns):
            raise ConceptError(f"concept {name!r} names a neuron twice")
        super().__init__(name, layer, ns, words=words, meta=meta)
        self.kind = kind
        self.detector = detector

    def _check(self, a: np.ndarray) -> None:
        if int(self.units.max()) >= a.shape[2]:
            raise ConceptError(f"concept {self.name!r} names unit {int(self.units.max())} but the attribution "
                               f"has {a.shape[2]} units")

    def token_mask(self, a: np.ndarray, context: LayerContext | None) -> np.ndarray | None:
        """``[B, T]`` tokens the concept is counted at: with a ``detector`` (e.g. the probe that found
        the concept), the word tokens where it detects the concept; else all tokens (``None``)."""
        if self.detector is None or context is None or context.acts is None:
            return None
        m = np.asarray(self.detector(context.acts), dtype=bool)[:, : a.shape[1]]
        word = np.zeros(a.shape[:2], dtype=bool)
        for b, wids in enumerate(context.token_word_ids):
            for t, w in enumerate(wids[: a.shape[1]]):
                word[b, t] = w is not None
        return m & word

    def _masked(self, attr, context) -> np.ndarray:
        a = _attr_array(attr)
        self._check(a)
        m = self.token_mask(a, context)
        return a if m is None else a * m[..., None]

    def token_contributions(self, attr, context=None):
        return self._masked(attr, context)[:, :, self.units].sum(2)

    def null(self, attr, context, n_random, rng):
        per_unit = self._masked(attr, context).sum(1)  # [B, U]
        U, k = per_unit.shape[1], len(self.units)
        idx = np.argsort(rng.random((n_random, U)), axis=1)[:, :k]  # n_random uniform k-subsets
        M = np.zeros((n_random, U))
        np.put_along_axis(M, idx, 1.0, axis=1)
        return per_unit @ M.T

    def _ablation_positions(self, batch_mask, context, rows, positions) -> torch.Tensor | None:
        m = self.token_mask(np.zeros((len(context.token_word_ids), batch_mask.shape[1], 1)), context) \
            if context is not None else None
        pos = None if m is None else torch.as_tensor(m if rows is None else m[list(rows)])
        if positions is not None:
            pos = positions if pos is None else pos & positions
        return pos

    def _unit_edit(self, neurons: list[Neuron], layer_mean, pos):
        if layer_mean is None:
            return Zero(neurons, positions=pos)
        return Mean(neurons, np.asarray(layer_mean)[[n.unit for n in neurons]], positions=pos)

    def ablation(self, adapter, batch_mask, layer_mean, context, rows=None, positions=None):
        return self._unit_edit(list(self.neurons), layer_mean,
                               self._ablation_positions(batch_mask, context, rows, positions))

    def random_ablations(self, adapter, batch_mask, layer_mean, context, rows, positions, n, rng):
        """Random unit sets of the same size, drawn uniformly from the layer (as :meth:`null`)."""
        pos = self._ablation_positions(batch_mask, context, rows, positions)
        U, k = adapter.check_layer(self.layer), len(self.units)
        return [self._unit_edit([Neuron(self.layer, int(u)) for u in rng.permutation(U)[:k]], layer_mean, pos)
                for _ in range(n)]


class LatentConcept(Concept):
    """A latent concept (one cluster of :class:`finegrain.unsupervised.LatentConcepts`, Dalvi et
    al. 2022). A word carries it when its representation's nearest centroid is this cluster; the
    mass is the attribution (all units) of those words' tokens; the null draws the same number of
    random words of the same sentence."""

    kind = "latent"

    def __init__(self, model, cluster_id: int, name: str | None = None, n_words: int = 10):
        cl = model.clusters[cluster_id]
        labels = cl.aligned_labels() if hasattr(cl, "aligned_labels") else {}
        tag = ",".join(f"{k}={v}" for k, v in labels.items())
        nm = name or f"latent:c{cluster_id}" + (f"[{tag}]" if tag else "")
        centroid = np.asarray(model.centroids[cluster_id], dtype=np.float64)
        super().__init__(nm, model.layer, None, direction=centroid, words=cl.top_words(n_words),
                         meta={"cluster": int(cluster_id), "size": int(cl.size), "aligned": labels})
        self.model = model
        self.cluster_id = int(cluster_id)

    def _word_masks(self, a: np.ndarray, context: LayerContext | None) -> np.ndarray:
        if context is None:
            raise ConceptError("latent concepts need a LayerContext (activations and word alignment)")
        clusters = context.word_clusters(self.model)
        m = np.zeros(a.shape[:2], dtype=bool)
        for b in range(a.shape[0]):
            hit = clusters[b] == self.cluster_id
            for t, w in enumerate(context.token_word_ids[b]):
                if w is not None and w < len(hit) and hit[w]:
                    m[b, t] = True
        return m

    def token_contributions(self, attr, context=None):
        a = _attr_array(attr)
        return a.sum(2) * self._word_masks(a, context)

    def present(self, context: LayerContext) -> np.ndarray:
        """``[B]`` bool: examples with at least one word in the cluster."""
        return np.array([(c == self.cluster_id).any() for c in context.word_clusters(self.model)])

    def null(self, attr, context, n_random, rng):
        a = _attr_array(attr)
        tok = a.sum(2)
        clusters = context.word_clusters(self.model)
        out = np.zeros((a.shape[0], n_random))
        for b in range(a.shape[0]):
            n = len(context.words[b])
            k = int((clusters[b] == self.cluster_id).sum())
            if n == 0 or k == 0:
                continue
            word_mass = np.zeros(n)
            for t, w in enumerate(context.token_word_ids[b]):
                if w is not None and w < n:
                    word_mass[w] += tok[b, t]
            idx = np.argsort(rng.random((n_random, n)), axis=1)[:, :k]
            out[b] = word_mass[idx].sum(1)
        return out

    def positions(self, context: LayerContext, n_tokens: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """``[len(rows), n_tokens]`` bool: the tokens of the words that fall in the cluster."""
        clusters = context.word_clusters(self.model)
        rows = range(len(clusters)) if rows is None else rows
        m = np.zeros((len(rows), n_tokens), dtype=bool)
        for i, b in enumerate(rows):
            hit = clusters[b] == self.cluster_id
            for t, w in enumerate(context.token_word_ids[b][:n_tokens]):
                if w is not None and w < len(hit) and hit[w]:
                    m[i, t] = True
        return m

    @staticmethod
    def _all_units_edit(layer: str, layer_mean, pos):
        if layer_mean is None:
            return Zero(layer, positions=pos)
        return Mean(layer, np.asarray(layer_mean), positions=pos)

    def ablation(self, adapter, batch_mask, layer_mean, context, rows=None, positions=None):
        pos = torch.as_tensor(self.positions(context, batch_mask.shape[1], rows))
        if positions is not None:
            pos = pos & positions
        return self._all_units_edit(self.layer, layer_mean, pos)

    def random_ablations(self, adapter, batch_mask, layer_mean, context, rows, positions, n, rng):
        """As many random words of each sentence as it has words in the cluster (as :meth:`null`),
        all units of their tokens."""
        rows = list(range(len(context.words))) if rows is None else list(rows)
        T = batch_mask.shape[1]
        own = self.positions(context, T, rows)
        if positions is not None:
            own &= np.asarray(positions, dtype=bool)
        out = []
        for _ in range(n):
            m = np.zeros((len(rows), T), dtype=bool)
            for i, b in enumerate(rows):
                wids = context.token_word_ids[b][:T]
                k = len({wids[t] for t in np.flatnonzero(own[i])})
                n_words = len(context.words[b])
                if k == 0 or n_words == 0:
                    continue
                pick = set(rng.permutation(n_words)[:k].tolist())
                for t, w in enumerate(wids):
                    if w is not None and w in pick:
                        m[i, t] = True
            out.append(self._all_units_edit(self.layer, layer_mean, torch.as_tensor(m)))
        return out

    def describe(self, max_items: int = 8) -> str:
        return f"cluster {self.cluster_id} ({self.meta['size']} words): " + " ".join(self.words[:max_items])


class DirectionConcept(Concept):
    """A concept given by a direction ``v`` of the layer (a CAV). The mass is the grad x act carried
    by the activation's component along ``v``: ``sum_t (g_t . v)(a_t . v)`` (first-order effect of
    removing that component, i.e. of the ``"zero"`` ablation below). It is first order only: along
    a direction where the activation is far from zero and the model is not linear, the sign of the
    mass need not be that of the ablation effect (MiniLM, the word *not* at layer.4: the mass argues
    against the negative prediction, while removing the direction at the cue lowers the negative
    logit in 18 of 20 sentences: the model saturates along it); read the ``ablation_effect`` next to
    it, measured where the mass sits (``explain(..., ablation_positions="tokens")``) and against
    random directions (``n_ablation_random``).

    The null (random directions of the same "size"), in order of preference:

    * ``random_directions`` when given (e.g. random-vs-random CAVs, Kim et al. 2018), used as they
      are: at most that many null draws, never padded;
    * ``spectrum=(eigenvalues, eigenvectors)`` of the layer's activation second-moment matrix
      (:func:`layer_spectrum`, e.g. of a store's words): random directions ``r`` along which the
      activations are as large, ``E[(a . r)^2] = E[(a . v)^2]`` (:func:`scale_matched_directions`).
      The mass ``(g . v)(a . v)`` grows with ``|a . v|``, and a concept direction is one along which
      activations are large: at layer.3 of MiniLM, ``E[(a . v)^2]`` is 3.5 along the direction of
      the word *not*, 0.30 along an isotropic random direction and 0.14 along a random-vs-random
      CAV. Against those nulls any real direction looks significant (on a toy model, 52% of random
      directions drawn like the activations get p < 0.05 against the isotropic null, 0% against the
      matched one). Matching the scale asks whether the target reads *this* direction more than
      other directions with as much activation along them. (Kim et al.'s random CAVs remain the
      right null for the TCAV score, the sign of a derivative, which does not depend on scale.)
    * else isotropic Gaussian directions.
    """

    kind = "cav"

    def __init__(self, name: str, layer: str, direction: np.ndarray, random_directions: np.ndarray | None = None,
                 words: Sequence[str] = (), meta: dict | None = None,
                 spectrum: tuple[np.ndarray, np.ndarray] | None = None):
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        nrm = np.linalg.norm(v)
        if not np.isfinite(nrm) or nrm == 0:
            raise ConceptError(f"direction of concept {name!r} is zero or not finite")
        super().__init__(name, layer, None, direction=v / nrm, words=words, meta=meta)
        self.random_directions = None if random_directions is None else _unit_rows(random_directions)
        if self.random_directions is not None and self.random_directions.shape[1] != len(v):
            raise ConceptError(f"random directions of {name!r} have {self.random_directions.shape[1]} dims, "
                               f"the direction has {len(v)}")
        self.spectrum = None
        if spectrum is not None:
            ev, vecs = (np.asarray(x, dtype=np.float64) for x in spectrum)
            if vecs.shape != (len(v), len(ev)):
                raise ConceptError(f"spectrum of {name!r}: eigenvectors {vecs.shape} do not match {len(v)} dims "
                                   f"and {len(ev)} eigenvalues")
            self.spectrum = (ev, vecs)

    @property
    def null_kind(self) -> str:
        if self.random_directions is not None:
            return "random directions given"
        return "scale-matched" if self.spectrum is not None else "isotropic"

    def _need(self, context):
        if context is None or context.acts is None or context.grads is None:
            raise ConceptError("CAV concepts need the layer activations and gradients (LayerContext)")
        if context.acts.shape[2] != len(self.direction):
            raise ConceptError(f"CAV {self.name!r} has {len(self.direction)} dims, layer has {context.acts.shape[2]}")

    def token_contributions(self, attr, context=None):
        self._need(context)
        return (context.grads @ self.direction) * (context.acts @ self.direction)

    def null_directions(self, n_random: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, D]`` unit directions of the null (``n <= n_random`` with given random directions)."""
        D = len(self.direction)
        if self.random_directions is not None:
            return self.random_directions[:n_random]
        if self.spectrum is not None:
            return scale_matched_directions(self.spectrum, self.direction, n_random, rng)
        return _unit_rows(rng.standard_normal((n_random, D)))

    def null(self, attr, context, n_random, rng):
        self._need(context)
        R = self.null_directions(n_random, rng)
        gp = np.einsum("btd,rd->btr", context.grads, R)
        ap = np.einsum("btd,rd->btr", context.acts, R)
        return (gp * ap).sum(1)

    def ablation(self, adapter, batch_mask, layer_mean, context, rows=None, positions=None):
        return project_out(self.layer, self.direction, layer_mean, positions)

    def random_ablations(self, adapter, batch_mask, layer_mean, context, rows, positions, n, rng):
        """The directions of :meth:`null` (scale-matched when the concept has a spectrum) removed the
        same way."""
        return [project_out(self.layer, r, layer_mean, positions) for r in self.null_directions(n, rng)]


def project_out(layer: str, direction: np.ndarray, layer_mean: np.ndarray | None = None,
                positions: torch.Tensor | None = None) -> Hook:
    """The edit that sets the component of the activation along the unit vector ``direction`` to
    zero (or to that of ``layer_mean``, mean ablation) at ``positions`` (``[B, T]`` bool; ``None``:
    every token). Works for a whole sequence (``[B, T, D]``) and for one LSTM step (``[B, D]``)."""
    v = torch.as_tensor(np.asarray(direction, dtype=np.float64), dtype=torch.float32)
    mu = 0.0 if layer_mean is None else float(np.asarray(layer_mean) @ np.asarray(direction, dtype=np.float64))
    mask = None if positions is None else torch.as_tensor(positions, dtype=torch.bool)

    def fn(act, step):
        vv = v.to(act.device, act.dtype)
        delta = (act @ vv - mu).unsqueeze(-1) * vv
        if mask is not None:
            m = mask.to(act.device)
            if step is None:  # [B, T, D]: the mask's tokens (padding beyond its width is left alone)
                keep = torch.zeros(act.shape[:2], dtype=torch.bool, device=act.device)
                w = min(m.shape[1], act.shape[1])
                keep[:, :w] = m[:, :w]
            else:  # one LSTM step [B, D]
                keep = m[:, step] if step < m.shape[1] else torch.zeros(act.shape[0], dtype=torch.bool,
                                                                        device=act.device)
            delta = delta * keep.unsqueeze(-1).to(act.dtype)
        return act - delta

    return Hook(layer, fn)


def layer_spectrum(X: np.ndarray, centered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(eigenvalues, eigenvectors)`` of the second-moment matrix ``X'X / n`` of activations
    ``X [n, D]`` (``centered=True``: of the covariance), the ``spectrum`` of
    :class:`DirectionConcept`'s matched null. Uncentred by default because a direction's mass
    ``(g . v)(a . v)`` is measured from zero, so its scale is ``E[(a . v)^2]``, mean included."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ConceptError(f"a spectrum needs activations [n >= 2, D], got shape {X.shape}")
    M = np.cov(X, rowvar=False) if centered else X.T @ X / len(X)
    ev, vecs = np.linalg.eigh(M)
    return np.maximum(ev, 0.0), vecs


def scale_matched_directions(spectrum: tuple[np.ndarray, np.ndarray], direction: np.ndarray, n: int,
                             rng: np.random.Generator, n_pilot: int = 512) -> np.ndarray:
    """``[n, D]`` random unit directions ``r`` whose ``r' S r`` has median ``v' S v`` (``v`` =
    ``direction``, ``S`` the matrix with eigen-decomposition ``spectrum``: the second moment
    ``E[a a']`` of :func:`layer_spectrum`, so that ``r' S r = E[(a . r)^2]``).

    The directions are Gaussian in the eigenbasis with scales ``lambda_i^(alpha/2)``: ``alpha = 0``
    is isotropic, ``alpha = 1`` is distributed like the activations (``r ~ S^(1/2) z``), larger
    ``alpha`` concentrates on the top components and negative ``alpha`` on the bottom ones;
    ``alpha`` is found by bisection on a pilot sample, within ``[-4, 8]``."""
    ev, vecs = spectrum
    v = np.asarray(direction, dtype=np.float64).reshape(-1)
    v = v / max(np.linalg.norm(v), 1e-12)
    target = float(ev @ (vecs.T @ v) ** 2)
    lam = np.maximum(ev, 1e-12 * max(float(ev.max()), 1e-30))
    pilot = rng.standard_normal((n_pilot, len(ev)))

    def var_of(Z):
        W = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        return (W**2) @ ev

    def scaled(Z, a):
        return Z * lam ** (a / 2)

    lo, hi = -4.0, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if np.median(var_of(scaled(pilot, mid))) < target:
            lo = mid
        else:
            hi = mid
    Z = scaled(rng.standard_normal((n, len(ev))), (lo + hi) / 2)
    return _unit_rows(Z @ vecs.T)


def _unit_rows(X) -> np.ndarray:
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------
class ConceptSet(list):
    """A list of concepts with helpers for the decomposition."""

    def names(self) -> list[str]:
        return [c.name for c in self]

    def of_kind(self, kind: str) -> ConceptSet:
        return ConceptSet(c for c in self if c.kind == kind)

    def partition(self) -> ConceptSet:
        """Make the neuron concepts disjoint: a neuron shared by several concepts stays in the one
        where it ranks highest (earliest in its neuron list; ties go to the earlier concept).
        Concepts left empty are dropped; latent and CAV concepts are kept unchanged."""
        best: dict[Neuron, tuple[int, int]] = {}
        for ci, c in enumerate(self):
            if c.neurons is None:
                continue
            for r, n in enumerate(c.neurons):
                if n not in best or (r, ci) < best[n]:
                    best[n] = (r, ci)
        out = ConceptSet()
        for ci, c in enumerate(self):
            if c.neurons is None:
                out.append(c)
                continue
            keep = [n for n in c.neurons if best[n][1] == ci]
            if keep:
                out.append(NeuronConcept(c.name, c.layer, keep, c.words, {**c.meta, "partitioned": True}, c.kind,
                                         getattr(c, "detector", None)))
        return out

    def is_partition(self) -> bool:
        seen: set[Neuron] = set()
        for c in self:
            for n in c.neurons or []:
                if n in seen:
                    return False
                seen.add(n)
        return True

    def assigned_units(self) -> set[int]:
        return {n.unit for c in self for n in (c.neurons or [])}


# ---------------------------------------------------------------------------------------------
class SupervisedConcepts:
    """Supervised concepts from an activation store: for each property (label column) a linear
    probe (:class:`finegrain.probe.LinearProbe`, elastic net, Dalvi et al. 2019) is trained on the
    layer's word activations, and for each label the ``k`` neurons the probe ranks highest for it
    form the concept ``"property=label"``.

    ``selection="signed"`` (default) ranks neurons for label c by ``W[c] - mean_{c' != c} W[c']``
    (units whose activation argues *for* c): with a softmax probe a binary property has
    ``W[1] ~ -W[0]``, so ranking by ``|W[c]|`` (``selection="abs"``, the per-class detail of
    :func:`finegrain.rank.probe_weight_ranking`) gives both labels the same neurons.
    Features are standardised before probing (``standardize=True``) so weights compare across
    units of different scales. ``tokens="active"`` (default) counts a concept only at the word
    tokens where its probe predicts the label (a negation concept at the words in a negation scope);
    ``tokens="all"`` at every token.
    """

    def __init__(self, k: int = 20, selection: str = "signed", standardize: bool = True, min_count: int = 20,
                 skip_labels: Iterable[str] = ("_", "O"), max_rows: int | None = 20000, probe_kw: dict | None = None,
                 tokens: str = "active", seed: int = 0):
        if k < 1:
            raise ParameterError(f"k must be >= 1, got {k}")
        if selection not in ("signed", "abs"):
            raise ParameterError(f"selection must be 'signed' or 'abs', got {selection!r}")
        if tokens not in ("active", "all"):
            raise ParameterError(f"tokens must be 'active' or 'all', got {tokens!r}")
        self.k, self.selection, self.standardize, self.tokens = int(k), selection, standardize, tokens
        self.min_count, self.skip_labels, self.max_rows = int(min_count), set(skip_labels), max_rows
        self.probe_kw = dict(probe_kw or {})
        self.seed = seed
        self.probes: dict[str, object] = {}
        self.accuracy: dict[str, float] = {}

    @classmethod
    def from_store(cls, source, properties: Sequence[str], layer: str | None = None, k: int = 20, **kw) -> ConceptSet:
        """Concepts ``property=label`` for every label of ``properties`` (label columns of a view or store)."""
        return cls(k=k, **kw).fit(source, properties, layer)

    def fit(self, source, properties: Sequence[str], layer: str | None = None) -> ConceptSet:
        """Probe ``layer`` of a view (or store) for each property. The probes are fit in memory on at most
        ``max_rows`` rows (a random subset, the same for the same seed): features are standardised first,
        which needs them all."""
        view = layer_view(source, layer)
        layer = view.index.layers[0]
        n_rows = len(view)
        rows = None
        if self.max_rows is not None and n_rows > self.max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(n_rows, self.max_rows, replace=False))
        sub = view if rows is None else view.subset(rows)
        X = np.asarray(sub.materialize(), dtype=np.float32)
        mu, sd = X.mean(0), X.std(0) + 1e-6
        if self.standardize:
            X = (X - mu) / sd
        else:
            mu, sd = np.zeros_like(mu), np.ones_like(sd)
        words = np.asarray([str(w) for w in np.asarray(sub.words).tolist()])
        neurons = view.index.neurons()
        out = ConceptSet()
        for prop in properties:
            y = np.asarray([str(v) for v in np.asarray(sub.labels(prop)).tolist()])
            kw = {"progress": False, "device": "cpu", "random_state": self.seed, **self.probe_kw}
            probe = LinearProbe(**kw).fit(X, y)
            self.probes[prop] = probe
            self.accuracy[prop] = float(probe.score(X, y))
            W = np.asarray(probe.coef_, dtype=np.float64)
            classes = [str(c) for c in probe.classes_]
            ranking = probe_weight_ranking(probe, neurons) if self.selection == "abs" else None
            for ci, lab in enumerate(classes):
                if lab in self.skip_labels or int((y == lab).sum()) < self.min_count:
                    continue
                if ranking is not None:
                    ns = ranking.top_per_class(lab, self.k)
                else:
                    others = np.delete(W, ci, axis=0)
                    score = W[ci] - (others.mean(0) if len(others) else 0.0)
                    order = np.argsort(-score, kind="stable")[: self.k]
                    ns = [neurons[int(u)] for u in order if score[u] > 0]
                if not ns:
                    continue
                ex = [w for w, _ in Counter(words[y == lab].tolist()).most_common(10)]
                det = _ProbeDetector(probe, mu, sd, ci) if self.tokens == "active" else None
                out.append(NeuronConcept(f"{prop}={lab}", layer, ns, ex,
                                         {"property": prop, "label": lab, "probe_accuracy": self.accuracy[prop],
                                          "count": int((y == lab).sum())}, detector=det))
        return out


class _ProbeDetector:
    """``acts [B, T, D] -> [B, T]`` bool: tokens where ``probe`` predicts class ``index``."""

    def __init__(self, probe, mu: np.ndarray, sd: np.ndarray, index: int):
        self.probe, self.mu, self.sd, self.index = probe, mu, sd, index

    def __call__(self, acts: np.ndarray) -> np.ndarray:
        B, T, D = acts.shape
        X = ((acts.reshape(-1, D) - self.mu) / self.sd).astype(np.float32)
        return (np.asarray(self.probe.decision_function(X)).reshape(B * T, -1).argmax(1) == self.index).reshape(B, T)


def latent_concepts(model, n_words: int = 10) -> ConceptSet:
    """One :class:`LatentConcept` per cluster of a fitted :class:`finegrain.unsupervised.LatentConcepts`."""
    if getattr(model, "centroids", None) is None:
        raise ConceptError("latent_concepts needs a fitted LatentConcepts")
    return ConceptSet(LatentConcept(model, i, n_words=n_words) for i in range(len(model.clusters)))


def random_concepts(layer: str, n_units: int, n: int, k: int, seed: int = 0) -> ConceptSet:
    """``n`` disjoint random neuron concepts of ``k`` units (a control for the decomposition)."""
    if n * k > n_units:
        raise ConceptError(f"{n} disjoint concepts of {k} units do not fit in {n_units} units")
    perm = np.random.default_rng(seed).permutation(n_units)
    return ConceptSet(NeuronConcept(f"random{i}", layer, [int(u) for u in perm[i * k:(i + 1) * k]], kind="random")
                      for i in range(n))
