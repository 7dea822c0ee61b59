"""``finegrain explain``: the concepts behind a prediction, from the command line.

``finegrain explain --model minilm --head builtin:sentiment --text "This movie was not good at all ."``
trains (or loads from the cache) the sentiment head, extracts a small activation store of the
built-in generated corpus at the chosen layer (cached), builds supervised concepts (probe rankings
per label of each property), latent concepts and concept directions of that layer, and prints the
top concepts with their tokens and neurons.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

DEFAULT_PROPERTIES = ("pos", "negation", "polarity", "tense", "number")


def default_cache_dir() -> Path:
    return Path(os.environ.get("FINEGRAIN_CACHE", Path.home() / ".cache" / "finegrain")) / "explain"


def negation_cues() -> list[str]:
    """The negation cue words of the built-in generator's lexicon (``not``, ``never``)."""
    from finegrain.data.generate import load_lexicon

    return list(load_lexicon()["negation"]["cues"])


def default_concepts(adapter, layer: str, properties: Sequence[str] = DEFAULT_PROPERTIES, k: int = 20,
                     n_sentences: int = 300, n_clusters: int = 30, latent: bool = True, cavs: bool = True,
                     cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool | None = False):
    """Supervised concepts (``property=label``, top ``k`` probe neurons per label), latent
    concepts (``n_clusters`` k-means clusters) and concept directions (``cav:property=label`` for
    the same labels and ``cav:negation_cue=not`` / ``=never`` for the occurrences of each negation
    cue; :func:`finegrain.explain.concept_cavs`) of ``layer``, from a store of ``n_sentences``
    sentences of the built-in generated corpus extracted with ``adapter`` (cached under
    ``cache_dir``).

    The corpus's ``negation`` column marks the negation *scope* (auxiliary, cue, verb and its
    complements), so ``negation=1`` is a scope concept; ``cav:negation_cue=not`` is the cue itself
    (negation has a cue and a scope; Morante & Blanco 2012). Which of the two a head reads is an
    empirical question: on MiniLM the head trained on the generated sentiment corpus reads the cue
    direction and neither scope concept (README, Findings)."""
    from finegrain.data import generate_corpus
    from finegrain.explain.concepts import ConceptSet, SupervisedConcepts, latent_concepts
    from finegrain.extraction import extract
    from finegrain.store import ActivationStore
    from finegrain.unsupervised.concepts import LatentConcepts

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha1(f"{adapter.weights_hash()}|{layer}|{n_sentences}|{seed}".encode()).hexdigest()[:12]
    base = cache / f"{Path(str(adapter.name)).name.replace(':', '_').replace('+', '_')}-{layer}-{key}"
    store_path = base.parent / (base.name + ".store")
    try:
        store = ActivationStore(store_path)
        if layer not in store.layers:
            raise ValueError
    except Exception:
        cache.mkdir(parents=True, exist_ok=True)
        corpus = generate_corpus(n_sentences, seed=seed)
        store = extract(adapter, corpus, store_path, layers=[layer], overwrite=True, progress=progress)
    concepts = SupervisedConcepts.from_store(store, list(properties), layer, k=k, seed=seed)
    if latent:
        lc_path = base.parent / f"{base.name}.latent{n_clusters}.json"
        if lc_path.exists():
            lc = LatentConcepts.from_json(lc_path)
            if lc.layer != layer:
                raise ValueError(f"{lc_path}: clusters of {lc.layer}, not {layer}")
        else:
            lc = LatentConcepts(n_clusters=n_clusters, method="kmeans", seed=seed).fit(
                store, layer, label_columns=[p for p in properties if p in ("pos", "negation", "polarity")])
            lc.to_json(lc_path)
        concepts = ConceptSet(list(concepts) + list(latent_concepts(lc)))
    if cavs:
        concepts = ConceptSet(list(concepts) + list(_cached_cavs(store, layer, properties, seed,
                                                                 base.parent / f"{base.name}.cavs.npz")))
    return concepts


def _cached_cavs(store, layer: str, properties: Sequence[str], seed: int, path: Path):
    """:func:`concept_cavs` of the store, the directions cached in ``path`` (the spectrum of the
    scale-matched null is recomputed from the store, which is cheap)."""
    import json

    import numpy as np

    from finegrain.explain.concepts import ConceptSet, DirectionConcept
    from finegrain.explain.tcav import concept_cavs, store_spectrum

    words = {f"negation_cue={w}": [w] for w in negation_cues()}
    key = json.dumps({"layer": layer, "properties": list(properties), "words": words, "seed": seed, "v": 2})
    if path.exists():
        try:
            blob = np.load(path, allow_pickle=False)
            if str(blob["key"]) == key:
                meta = json.loads(str(blob["meta"]))
                spectrum = store_spectrum(store, layer, seed=seed)
                return ConceptSet(DirectionConcept(m["name"], layer, v, meta=m["meta"], words=m["words"],
                                                   spectrum=spectrum)
                                  for m, v in zip(meta, blob["directions"]))
        except (OSError, KeyError, ValueError):
            pass
    cs = concept_cavs(store, layer, list(properties), word_concepts=words, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = [{"name": c.name, "meta": c.meta, "words": c.words} for c in cs]
    np.savez(path, key=np.asarray(key), meta=np.asarray(json.dumps(meta)),
             directions=np.stack([c.direction for c in cs]))
    return cs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a prediction by the concepts (probed neuron sets, latent clusters) it relied on",
        description="Concept-based explanation: attribution mass of each concept's neurons at a layer vs random "
                    "neuron sets of the same size (z, p), with causal confirmation by ablation.",
    )
    p.add_argument("--model", default="minilm", help="minilm or a local HF model path")
    p.add_argument("--task", default="base", help="HF task when loading a path")
    p.add_argument("--head", default=None, help="builtin:sentiment (trained on the fly, cached) or a saved head .pt")
    p.add_argument("--text", action="append", required=True, help="input text (repeatable)")
    p.add_argument("--target", default=None, help="pred | class:K | prob:K | next:TOK | ... (default: predicted class)")
    p.add_argument("--layer", default="layer.3", help="layer whose neurons are explained (default layer.3)")
    p.add_argument("--method", default="grad_x_act", choices=["grad_x_act", "conductance", "layer_ig"])
    p.add_argument("--properties", default=",".join(DEFAULT_PROPERTIES),
                   help="label columns of the generated corpus that give supervised concepts")
    p.add_argument("--k", type=int, default=20, help="neurons per supervised concept")
    p.add_argument("--n-sentences", type=int, default=300, help="sentences of the generated corpus for concepts")
    p.add_argument("--clusters", type=int, default=30, help="latent concepts (0: none)")
    p.add_argument("--no-cavs", action="store_true",
                   help="no concept directions (cav:property=label, cav:negation_cue=not|never)")
    p.add_argument("--n-random", type=int, default=1000, help="random concepts for z / p")
    p.add_argument("--ablation", default="zero", choices=["zero", "mean", "none"])
    p.add_argument("--top", type=int, default=8, help="concepts to print")
    p.add_argument("--sort", default="z", choices=["z", "contribution"])
    p.add_argument("--cache-dir", default=None,
                   help="cache for heads, stores and clusters (default ~/.cache/finegrain/explain)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the explanations as JSON")
    p.add_argument("--html", default=None, help="write an HTML fragment with per-concept highlighting")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from finegrain.explain.explain import ablation_agreement, explain, explain_section_html
    from finegrain.models import load_model

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.head:
        from finegrain.attribute.heads import head_adapter

        adapter = head_adapter(args.head, args.model, cache_dir=cache / "heads", device=args.device)
    else:
        adapter = load_model(args.model, task=args.task, device=args.device)
    props = [s.strip() for s in args.properties.split(",") if s.strip()]
    concepts = default_concepts(adapter, args.layer, props, k=args.k, n_sentences=args.n_sentences,
                                n_clusters=args.clusters, latent=args.clusters > 0, cavs=not args.no_cavs,
                                cache_dir=cache)
    exps = explain(adapter, list(args.text), args.target, concepts, args.layer, method=args.method,
                   n_random=args.n_random, top_k=args.top, ablation=None if args.ablation == "none" else args.ablation)
    for e in exps:
        print(e.table(args.top))
        print()
    if len(exps) > 1:
        a = ablation_agreement(exps)
        if a["spearman"] is not None:
            print(f"Spearman(contribution, ablation effect) over {a['n']} pairs: {a['spearman']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps([e.to_dict() for e in exps], indent=1))
    if args.html:
        Path(args.html).write_text(explain_section_html(exps, k=args.top))
    return 0

