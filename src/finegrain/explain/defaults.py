"""The default concepts of ``finegrain explain``: supervised, latent and direction concepts of one
layer, from a small store of the built-in generated corpus.

:func:`default_concepts` extracts that store on the fly. With ``cache_dir`` the store, the clusters
and the directions are kept there and reused by the next call (keyed by the model's weights, the
layer, the corpus size and the seed); without it everything is built in a temporary directory and
nothing is written anywhere else. :func:`default_cache_dir` is the documented default location the
command line uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finegrain import paths
from finegrain.data import generate_corpus
from finegrain.data.generate import load_lexicon
from finegrain.errors import ConceptError, StoreError
from finegrain.explain.cavs import concept_cavs, store_spectrum
from finegrain.explain.concepts import ConceptSet, DirectionConcept, SupervisedConcepts, latent_concepts
from finegrain.extraction import extract
from finegrain.store import ActivationStore
from finegrain.unsupervised.concepts import LatentConcepts

DEFAULT_PROPERTIES: tuple[str, ...] = ("pos", "negation", "polarity", "tense", "number")


def default_cache_dir() -> Path:
    """Where ``finegrain explain`` caches heads, stores, clusters and directions: ``$FINEGRAIN_CACHE/explain``,
    else ``$XDG_CACHE_HOME/finegrain/explain``, else ``~/.cache/finegrain/explain``
    (:func:`finegrain.paths.cache_dir`). Library calls cache only where they are told to (``cache_dir=``)."""
    return paths.cache_dir("explain")


def negation_cues() -> list[str]:
    """The negation cue words of the built-in generator's lexicon (``not``, ``never``)."""
    return list(load_lexicon()["negation"]["cues"])


def default_concepts(adapter, layer: str, properties: Sequence[str] = DEFAULT_PROPERTIES, k: int = 20,
                     n_sentences: int = 300, n_clusters: int = 30, latent: bool = True, cavs: bool = True,
                     cache_dir: str | os.PathLike | None = None, seed: int = 0,
                     progress: bool | None = False) -> ConceptSet:
    """Supervised concepts (``property=label``, top ``k`` probe neurons per label), latent concepts
    (``n_clusters`` k-means clusters, Dalvi et al. 2022) and concept directions (``cav:property=label``
    for the same labels and ``cav:negation_cue=not`` / ``=never`` for the occurrences of each negation
    cue; :func:`finegrain.explain.concept_cavs`, Kim et al. 2018) of ``layer``, from a store of
    ``n_sentences`` sentences of the built-in generated corpus extracted with ``adapter``.

    ``cache_dir``: where the store, clusters and directions are cached (e.g. :func:`default_cache_dir`);
    ``None`` (default) builds them in a temporary directory that is removed afterwards.

    The corpus's ``negation`` column marks the negation *scope* (auxiliary, cue, verb and its
    complements), so ``negation=1`` is a scope concept; ``cav:negation_cue=not`` is the cue itself
    (negation has a cue and a scope; Morante & Blanco 2012). Which of the two a head reads is an
    empirical question: on MiniLM the head trained on the generated sentiment corpus reads the cue
    direction and neither scope concept (README, Findings)."""
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="finegrain-explain-") as tmp:
            return _concepts(adapter, layer, properties, k, n_sentences, n_clusters, latent, cavs, Path(tmp), seed,
                             progress)
    return _concepts(adapter, layer, properties, k, n_sentences, n_clusters, latent, cavs, Path(cache_dir), seed,
                     progress)


def _concepts(adapter, layer, properties, k, n_sentences, n_clusters, latent, cavs, cache: Path, seed,
              progress) -> ConceptSet:
    key = hashlib.sha1(f"{adapter.weights_hash()}|{layer}|{n_sentences}|{seed}".encode()).hexdigest()[:12]
    base = cache / f"{Path(str(adapter.name)).name.replace(':', '_').replace('+', '_')}-{layer}-{key}"
    store_path = base.parent / (base.name + ".store")
    store = None
    if store_path.exists():
        try:
            store = ActivationStore(store_path)
        except StoreError:
            store = None  # an interrupted or damaged cache entry: extract again
    if store is None or layer not in store.layers:
        cache.mkdir(parents=True, exist_ok=True)
        store = extract(adapter, generate_corpus(n_sentences, seed=seed), store_path, layers=[layer], overwrite=True,
                        progress=progress)
    view = store.view(layers=[layer])
    concepts = SupervisedConcepts.from_store(view, list(properties), layer, k=k, seed=seed)
    if latent:
        lc_path = base.parent / f"{base.name}.latent{n_clusters}.json"
        lc = LatentConcepts.from_json(lc_path) if lc_path.exists() else None
        if lc is not None and lc.layer != layer:
            raise ConceptError(f"{lc_path}: clusters of {lc.layer}, not {layer}")
        if lc is None:
            lc = LatentConcepts(n_clusters=n_clusters, method="kmeans", seed=seed).fit(
                view, layer, label_columns=[p for p in properties if p in ("pos", "negation", "polarity")])
            lc.to_json(lc_path)
        concepts = ConceptSet(list(concepts) + list(latent_concepts(lc)))
    if cavs:
        concepts = ConceptSet(list(concepts) + list(_cached_cavs(view, layer, properties, seed,
                                                                 base.parent / f"{base.name}.cavs.npz")))
    return concepts


def _cached_cavs(view, layer: str, properties: Sequence[str], seed: int, path: Path) -> ConceptSet:
    """:func:`concept_cavs` of the view, the directions cached in ``path`` (the spectrum of the
    scale-matched null is recomputed from the view, which is cheap)."""
    words = {f"negation_cue={w}": [w] for w in negation_cues()}
    key = json.dumps({"layer": layer, "properties": list(properties), "words": words, "seed": seed, "v": 2})
    if path.exists():
        try:
            blob = np.load(path, allow_pickle=False)
            if str(blob["key"]) == key:
                meta = json.loads(str(blob["meta"]))
                spectrum = store_spectrum(view, layer, seed=seed)
                return ConceptSet(DirectionConcept(m["name"], layer, v, meta=m["meta"], words=m["words"],
                                                   spectrum=spectrum)
                                  for m, v in zip(meta, blob["directions"]))
        except (OSError, KeyError, ValueError):
            pass  # a stale or damaged cache entry: recompute it
    cs = concept_cavs(view, layer, list(properties), word_concepts=words, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = [{"name": c.name, "meta": c.meta, "words": c.words} for c in cs]
    np.savez(path, key=np.asarray(key), meta=np.asarray(json.dumps(meta)),
             directions=np.stack([c.direction for c in cs]))
    return cs
