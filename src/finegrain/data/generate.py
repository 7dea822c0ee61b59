"""Built-in generated corpora with gold labels, deterministic from a seed.

A template grammar over the lexicon in ``finegrain/resources/lexicon.json`` produces English
sentences labelled per word and per sentence, for probing (Belinkov et al. 2017; Dalvi et al. 2019)
without external data. Clauses are transitive, intransitive, copular, existential (``there is a dog
in the park``), clause-taking (``Mary says that ...``) or control clauses (``the boy wants to
swim``); noun phrases carry adjectives, prepositional phrases and relative clauses; clauses end in
adverbs, directions, paths, recipients, temporal phrases or adverbial clauses (``before the dog
sleeps``); verbs are simple or progressive.

The grammar is ambiguous on purpose, as English is: noun/verb homographs (``walk``, ``watch``,
``book``, ``plan``, ``notice``, ...), ``that`` as determiner, demonstrative or relative pronoun and
complementiser (DET/PRON/SCONJ), ``this``/``these``/``those`` as DET/PRON, ``to`` as infinitive marker
or preposition (PART/ADP), ``there`` as expletive or adverb (PRON/ADV), ``before``/``after``/``until``
as ADP/SCONJ, ``outside``/``inside``/``behind``/``around`` as ADP/ADV, ``-ing`` forms as VERB
(``is walking``), NOUN (``the meeting``) or ADJ (``the sleeping dog``), adjective/adverb and
adjective/verb homographs (``fast``, ``late``, ``open``, ``clean``). Nouns, verbs, adjectives and most
function words are drawn with Zipfian weights (rank = position in the lexicon), so a few words of each
category are frequent, as in real text. The generator knows the role of every token it emits, so every
label stays gold; predicting each word's most frequent training tag (the word-type baseline of
:func:`finegrain.evaluate.baselines.word_type_baseline`, sentences split 80/20) scores about 0.90 on
POS with 1,000-2,000 sentences and 0.91 with 10,000, below the 0.92 of real English (issue 14).

Word columns (:data:`WORD_COLUMNS`)
    ``pos``       Universal POS tag (``be`` is AUX in all its uses, existential ``there`` PRON,
                  prepositions without an object ADV, attributive participles ADJ).
    ``number``    ``Sing``/``Plur`` on nouns, names, pronouns (demonstratives included),
                  number-marked determiners and on the finite verb/auxiliary (the number of the
                  subject it agrees with; in existentials, of the noun after the verb); ``_`` elsewhere.
    ``tense``     ``Pres``/``Past``/``Fut`` on every verbal word of a clause (auxiliaries, copula,
                  lexical verb, participle, and the infinitive of a control clause); ``_`` elsewhere.
    ``gender``    ``Masc``/``Fem`` on gendered nouns, person names and pronouns; ``_`` elsewhere.
    ``person``    ``1``/``2``/``3`` on pronouns and finite verbs/auxiliaries; ``_`` elsewhere.
    ``ner``       BIO tags ``B-PER``/``I-PER``/``B-LOC``/``B-ORG``/... or ``O``.
    ``negation``  ``1`` for words in a negation scope, ``0`` otherwise. The scope is the negated
                  verb phrase: the finite auxiliary, the cue (``not``/``never``), the verb and its
                  complements (an embedded ``that``-clause included); never the subject, a
                  conjunction or the other clause. Negated clauses get no adverbial clause, whose
                  scope would be ambiguous.
    ``polarity``  lexical sentiment of the word (``pos``/``neg``) or ``_``.

Sentence columns (:data:`SENTENCE_COLUMNS`)
    ``sentiment``       ``pos``/``neg``: each sentence has exactly one sentiment word, in one
                        clause; its polarity, flipped when it lies in a negation scope.
    ``tense``           tense shared by all clauses of the sentence.
    ``subject_number``  number of the first clause's subject (``_`` for *you*; in an existential the
                        number of the noun the verb agrees with).
    ``template``        clause kinds (:data:`CLAUSE_KINDS`), e.g. ``transitive`` or ``copular+control``.

:func:`agreement_pairs` builds subject-verb number agreement minimal pairs (Linzen et al. 2016;
Lakretz et al. 2019) and :func:`professions` / :func:`mediation_templates` the causal mediation
material of Vig et al. (2020). :func:`builtin_corpus` also serves the embedded real-text corpora of
:mod:`finegrain.data.embedded` (``ptb``, ``wnut16``).
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, fields
from functools import cache
from importlib.resources import files
from typing import Any

from finegrain.data.corpus import Corpus, CorpusError, Sentence
from finegrain.data.embedded import EMBEDDED_CORPORA, PTB_DEFAULT_SENTENCES, ptb_corpus, wnut16_corpus
from finegrain.errors import ParameterError

WORD_COLUMNS = ("pos", "number", "tense", "gender", "person", "ner", "negation", "polarity")
SENTENCE_COLUMNS = ("sentiment", "tense", "subject_number", "template")
# clause kinds and how often each is drawn
CLAUSE_KINDS = ("transitive", "intransitive", "copular", "complement", "control", "existential")
_KIND_WEIGHTS = (0.25, 0.23, 0.16, 0.13, 0.09, 0.14)
_SIMPLE_KINDS = ("transitive", "intransitive", "copular")  # the kinds of embedded clauses
_AGENTS = {"person", "animal", "org"}
_INDEFINITE = ("a", "some", "two", "many")  # determiners of an existential's pivot ("there is a dog")
TENSES = ("Pres", "Past", "Fut")
AGREEMENT_CONDITIONS = (
    "simple",
    "adv",
    "namePP",
    "nounPP",
    "nounPP_attractor",
    "nounPPAdv",
    "nounPPAdv_attractor",
    "objrel",
    "objrel_attractor",
)
GENERATED_CORPORA = ("synthetic", "sentiment", "agreement")
BUILTIN_CORPORA = GENERATED_CORPORA + EMBEDDED_CORPORA
ZIPF_EXPONENT = 1.0  # weight of the word of rank r: 1 / r**ZIPF_EXPONENT (Zipf's law)
_NAME_CLASS = {"PER": "person", "LOC": "place", "ORG": "org"}
_FLIP = {"pos": "neg", "neg": "pos"}
_FLIP_NUMBER = {"Sing": "Plur", "Plur": "Sing"}


# -- resources ---------------------------------------------------------------------------------


def _resource(name: str) -> dict:
    return json.loads((files("finegrain") / "resources" / name).read_text(encoding="utf-8"))


@cache
def load_lexicon() -> dict:
    """The generator's lexicon (``resources/lexicon.json``); treat the result as read-only."""
    return _resource("lexicon.json")


def professions() -> list[str]:
    """About 100 professions that are not definitionally gendered, for causal mediation analysis of
    gender bias (Vig et al. 2020). The file holds no bias scores: bias is measured on the model."""
    return list(_resource("professions.json")["professions"])


def mediation_templates() -> list[str]:
    """Vig et al. (2020) templates with one ``{}`` slot for the profession, e.g. ``"The {} said that"``."""
    return list(_resource("mediation.json")["templates"])


def gender_substitutes() -> dict[str, str]:
    """Words that replace the profession to set the input's gender: ``{"male": "man", "female": "woman"}``."""
    return dict(_resource("mediation.json")["set_gender"])


def gender_continuations() -> dict[str, str]:
    """Pronoun continuations scored after the prompt: ``{"male": " he", "female": " she"}``."""
    return dict(_resource("mediation.json")["continuations"])


def mediation_prompts(
    templates: list[str] | None = None, professions_: list[str] | None = None
) -> list[dict[str, str]]:
    """Every template x profession combination with its set-gender inputs (Vig et al. 2020):
    ``{"template", "profession", "base", "male", "female"}``; e.g. base ``"The nurse said that"``,
    male ``"The man said that"``."""
    templates = mediation_templates() if templates is None else templates
    profs = professions() if professions_ is None else professions_
    subs = gender_substitutes()
    out = []
    for t in templates:
        if t.count("{}") != 1:
            raise ParameterError(f"template {t!r} must contain exactly one '{{}}' slot")
        for p in profs:
            out.append(
                {
                    "template": t,
                    "profession": p,
                    "base": t.format(p),
                    "male": t.format(subs["male"]),
                    "female": t.format(subs["female"]),
                }
            )
    return out


# -- grammar -----------------------------------------------------------------------------------


@dataclass
class _Tok:
    word: str
    pos: str
    number: str = "_"
    tense: str = "_"
    gender: str = "_"
    person: str = "_"
    ner: str = "O"
    negation: str = "0"
    polarity: str = "_"


@dataclass
class _Agr:
    """Agreement features of a noun phrase."""

    person: str
    number: str
    gender: str
    cls: str


@cache
def _zipf_cum_weights(n: int) -> list[float]:
    return list(itertools.accumulate(1.0 / r**ZIPF_EXPONENT for r in range(1, n + 1)))


def _agr_key(person: str, number: str) -> str:
    if number == "Sing" and person in ("1", "3"):
        return f"{person}Sing"
    return "other"


class _Grammar:
    """The template grammar. Every emitter returns tokens whose labels it sets from the role it gives
    them, so a word that several constructions share (``that``, ``to``, ``walk``, ``sleeping``) gets a
    different gold label in each."""

    # how often optional pieces occur: tuned so that the word-type POS baseline on the corpus is below
    # 0.92, the most-frequent-tag baseline of real English (issue 14), with every clause still short
    DEMONSTRATIVE_RATE = 0.4  # an object NP is "this"/"that"/"these"/"those" (PRON)
    DEMONSTRATIVE_SUBJECT_RATE = 0.6  # ... and so is the subject of "is lovely", "happened" (not agents)
    PROGRESSIVE_RATE = 0.4  # a non-stative verb is progressive ("is walking")
    ADVERBIAL_RATE = 0.3  # an unnegated clause ends in an adverbial clause ("before the dog sleeps")
    FREQUENCY_ADVERB_RATE = 0.08  # "often", "always", ... before the verb

    def __init__(self, rng: random.Random, lex: dict | None = None):
        self.rng = rng
        self.lex = lex or load_lexicon()
        self.nouns_by_class: dict[str, list[dict]] = {}
        for n in self.lex["nouns"]:
            self.nouns_by_class.setdefault(n["class"], []).append(n)
        self.names_by_class: dict[str, list[dict]] = {}
        for n in self.lex["names"]:
            self.names_by_class.setdefault(_NAME_CLASS[n["type"]], []).append(n)
        self.verbs = self.lex["verbs"]
        self.adjs = self.lex["adjectives"]

    # -- small pieces ------------------------------------------------------------------------
    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def coin(self, p: float) -> bool:
        return self.rng.random() < p

    def zipf(self, seq):
        """An item of ``seq`` with Zipfian weight 1/rank (rank = position in the lexicon), as word
        frequencies in real text: a few words of each category are frequent, most are rare."""
        return self.rng.choices(seq, cum_weights=_zipf_cum_weights(len(seq)))[0]

    def determiner(self, number: str, plain: bool = False, forms: tuple[str, ...] | None = None) -> _Tok:
        if plain:
            return _Tok("the", "DET")
        d = self.choice(
            [d for d in self.lex["determiners"] if number in d["use"] and (forms is None or d["form"] in forms)]
        )
        return _Tok(d["form"], d.get("upos", "DET"), number=d["number"])

    def name(self, cls: str) -> tuple[list[_Tok], _Agr]:
        entry = self.choice(self.names_by_class[cls])
        parts = entry["form"].split()
        gender = entry["gender"]
        toks = [
            _Tok(w, "PROPN", number="Sing", gender=gender, ner=("B-" if i == 0 else "I-") + entry["type"])
            for i, w in enumerate(parts)
        ]
        # "de" in "Rio de Janeiro" is part of the name but a function word
        for t in toks[1:]:
            if t.word.islower():
                t.pos, t.number, t.gender = "ADP", "_", "_"
        return toks, _Agr("3", "Sing", gender, cls)

    def pronoun(self, case: str) -> tuple[list[_Tok], _Agr]:
        p = self.choice(self.lex["pronouns"])
        tok = _Tok(p[case], "PRON", number=p["number"], gender=p["gender"], person=p["person"])
        return [tok], _Agr(p["person"], p["number"], p["gender"], "person")

    def demonstrative(self, cls: str) -> tuple[list[_Tok], _Agr]:
        """``this``/``that``/``these``/``those`` standing for an NP of ``cls`` (PRON, third person)."""
        d = self.choice(self.lex["demonstratives"])
        return [_Tok(d["form"], "PRON", number=d["number"], person="3")], _Agr("3", d["number"], "_", cls)

    def bare_np(
        self,
        cls: str,
        number: str | None = None,
        plain_det: bool = False,
        adj_rate: float = 0.25,
        forms: tuple[str, ...] | None = None,
        adjective: dict | None = None,
    ) -> tuple[list[_Tok], _Agr]:
        """Determiner (+ attributive adjective: ``adjective``, or a neutral one at ``adj_rate``) + common noun."""
        noun = self.zipf(self.nouns_by_class[cls])
        number = number or self.choice(("Sing", "Plur"))
        det = self.determiner(number, plain=plain_det, forms=forms)
        toks = [det]
        if adjective is None and adj_rate and self.coin(adj_rate):
            adjective = self.zipf(
                [a for a in self.adjs if a["attributive"] and a["sentiment"] == "_" and cls in a["applies"]]
            )
        if adjective is not None:
            toks.append(_Tok(adjective["form"], "ADJ", polarity=adjective["sentiment"]))
        form = noun["sg"] if number == "Sing" else noun["pl"]
        toks.append(_Tok(form, "NOUN", number=number, gender=noun["gender"]))
        if det.word == "a" and toks[1].word[0] in "aeiou":
            det.word = "an"
        return toks, _Agr("3", number, noun["gender"], cls)

    def np(
        self,
        classes: list[str],
        case: str = "nom",
        tense: str = "Pres",
        modifiers: bool = True,
    ) -> tuple[list[_Tok], _Agr]:
        """A noun phrase of one of ``classes``: pronoun, demonstrative, name, or (modified) common noun."""
        # "likes these", "this is lovely": a demonstrative is an object, or a subject that is not an agent
        # (then more often: "that is lovely" is how English says it)
        agentive = bool(_AGENTS.intersection(classes))
        if (case == "acc" or not agentive) and self.coin(
            self.DEMONSTRATIVE_RATE if case == "acc" else self.DEMONSTRATIVE_SUBJECT_RATE
        ):
            return self.demonstrative(self.choice(classes))
        r = self.rng.random()
        if "person" in classes and r < 0.18:
            return self.pronoun(case)
        name_classes = [c for c in classes if c in self.names_by_class]
        if name_classes and r < 0.33:
            return self.name(self.choice(name_classes))
        noun_classes = [c for c in classes if c in self.nouns_by_class]
        if not noun_classes:
            return self.name(self.choice(name_classes))
        cls = self.choice(noun_classes)
        toks, agr = self.bare_np(cls)
        if modifiers:
            r = self.rng.random()
            if r < 0.15:
                toks += self.noun_pp()
            elif r < 0.27:
                toks += self.relative_clause(agr, tense)
        return toks, agr

    def noun_pp(self, number: str | None = None, cls: str | None = None) -> list[_Tok]:
        prep = self.zipf(self.lex["prepositions"]["noun_modifier"])
        cls = cls or self.choice(("person", "animal", "thing", "place"))
        toks, _ = self.bare_np(cls, number=number, plain_det=True, adj_rate=0)
        return [_Tok(prep, "ADP"), *toks]

    def place_np(self) -> list[_Tok]:
        return self.name("place")[0] if self.coin(0.3) else self.bare_np("place", adj_rate=0.15)[0]

    def locative_pp(self) -> list[_Tok]:
        return [_Tok(self.zipf(self.lex["prepositions"]["locative"]), "ADP"), *self.place_np()]

    def directional_pp(self) -> list[_Tok]:
        """``to the park`` after a verb of motion: ``to`` as a preposition (ADP)."""
        return [_Tok(self.zipf(self.lex["prepositions"]["directional"]), "ADP"), *self.place_np()]

    def temporal_pp(self) -> list[_Tok]:
        """``before the meeting``: ``before``/``after`` as prepositions (ADP), cf. :meth:`adverbial_clause`."""
        prep = self.zipf(self.lex["prepositions"]["temporal"])
        return [_Tok(prep, "ADP"), *self.bare_np("event", adj_rate=0.15)[0]]

    def comparison_pp(self) -> list[_Tok]:
        """``like a bird``: ``like`` as a preposition (ADP), beside the verb ``like``."""
        prep = self.choice(self.lex["prepositions"]["comparison"])
        return [_Tok(prep, "ADP"), *self.bare_np(self.choice(("person", "animal")), adj_rate=0)[0]]

    def recipient(self, tense: str) -> list[_Tok]:
        """``to the king`` after ``give``/``talk``/...: ``to`` as a preposition (ADP), cf. ``want to``."""
        prep = _Tok(self.choice(self.lex["prepositions"]["dative"]), "ADP")
        return [prep, *self.np(["person", "animal"], case="acc", tense=tense, modifiers=False)[0]]

    def pick_verb(self, frame: str, sentiment: str = "_", subj: str | None = None, obj: str | None = None):
        """A random verb of ``frame`` (``trans``, ``intrans``, ``clausal``, ``control``); transitive verbs
        marked ``clausal`` also serve the ``clausal`` frame (``know that ...``)."""
        cands = [
            v
            for v in self.verbs
            if (v["frame"] == frame or (frame == "clausal" and v.get("clausal")))
            and v["sentiment"] == sentiment
            and (subj is None or subj in v["subj"])
            and (obj is None or obj in v.get("obj", ()))
        ]
        return self.zipf(cands) if cands else None

    def aspect(self, verb: dict) -> str:
        return "prog" if not verb.get("stative") and self.coin(self.PROGRESSIVE_RATE) else "simple"

    def verb_group(
        self,
        verb: dict | None,
        tense: str,
        agr: _Agr,
        neg: str | None = None,
        adverb: str | None = None,
        aspect: str = "simple",
    ) -> list[_Tok]:
        """Finite verb group for ``verb`` (``None`` = copula *be*), optionally negated with ``not``
        (do-support in the simple tenses) or ``never``, or with a pre-verbal frequency adverb;
        ``aspect="prog"`` makes the progressive (``is walking``, ``will be walking``)."""
        aux = self.lex["auxiliaries"]
        key = _agr_key(agr.person, agr.number)

        def fin(word: str, pos: str) -> _Tok:
            return _Tok(word, pos, number=agr.number, tense=tense, person=agr.person)

        def nonfin(word: str, pos: str) -> _Tok:
            return _Tok(word, pos, tense=tense)

        if verb is None:  # copula: auxiliary first, cue/adverb after it
            if tense == "Fut":
                group = [fin(aux["future"], "AUX"), nonfin("be", "AUX")]
            else:
                group = [fin(aux["be"][tense][key], "AUX")]
        elif aspect == "prog":
            if tense == "Fut":
                group = [fin(aux["future"], "AUX"), nonfin("be", "AUX"), nonfin(verb["ing"], "VERB")]
            else:
                group = [fin(aux["be"][tense][key], "AUX"), nonfin(verb["ing"], "VERB")]
        elif tense == "Fut":
            group = [fin(aux["future"], "AUX"), nonfin(verb["lemma"], "VERB")]
        elif neg == "not":
            group = [fin(aux["do"][tense][key], "AUX"), nonfin(verb["lemma"], "VERB")]
        else:
            form = verb["past"] if tense == "Past" else (verb["pres3sg"] if key == "3Sing" else verb["lemma"])
            group = [fin(form, "VERB")]
        inserted = neg or adverb
        if inserted:
            tok = _Tok(inserted, "PART" if inserted == "not" else "ADV")
            # after the first auxiliary ("does not", "will never", "is often"), else before the verb
            group.insert(1 if group[0].pos == "AUX" else 0, tok)
        if verb is not None and verb["sentiment"] != "_":
            group[-1].polarity = verb["sentiment"]
        return group

    def relative_clause(self, head: _Agr, tense: str) -> list[_Tok]:
        """``that`` (PRON) + subject-relative (``that chases the cats``) or object-relative
        (``that the cats chase``) clause, neutral and unnegated."""
        that = _Tok(self.lex["relativizer"], "PRON")
        if self.coin(0.5):
            verb = self.pick_verb(self.choice(("trans", "intrans")), subj=head.cls)
            if verb is not None:
                toks = [that, *self.verb_group(verb, tense, head, aspect=self.aspect(verb))]
                if verb["frame"] == "trans":
                    toks += self.bare_np(self.choice(verb["obj"]))[0]
                return toks
        verb = self.pick_verb("trans", obj=head.cls)
        subj_cls = self.choice([c for c in verb["subj"] if c in self.nouns_by_class])
        subj, agr = self.bare_np(subj_cls, adj_rate=0)
        return [that, *subj, *self.verb_group(verb, tense, agr)]

    def complements(self, verb: dict, tense: str) -> list[_Tok]:
        """What follows the verb: the object (+ a recipient, an adverb or a PP) of a transitive verb; for
        an intransitive one a direction or path (verbs of motion), a recipient, an adverb, or a PP."""
        if verb["frame"] == "trans":
            toks = self.np(verb["obj"], case="acc", tense=tense)[0]
            if self.coin(verb.get("to", 0.0)):  # "gives the book to the king"
                return toks + self.recipient(tense)
            r = self.rng.random()
            if r < 0.06:
                toks += self.temporal_pp()
            elif r < 0.1:
                toks += self.locative_pp()
            elif r < 0.22:
                toks.append(_Tok(self.zipf(self.lex["adverbs"]["place"]), "ADV"))
            return toks
        if verb.get("motion") or verb.get("path"):
            r = self.rng.random()
            if verb.get("motion") and r < 0.3:
                return self.directional_pp()
            if r < 0.45:  # "around the park": preposition (ADP)
                return [_Tok(self.zipf(self.lex["prepositions"]["path"]), "ADP"), *self.place_np()]
            if r < 0.65:  # "around" without an object: adverb (ADV)
                return [_Tok(self.zipf(self.lex["prepositions"]["path"]), "ADV")]
        if self.coin(verb.get("to", 0.0)):  # "talks to the king"
            return self.recipient(tense)
        r = self.rng.random()
        if r < 0.18:
            return [_Tok(self.zipf(self.lex["adverbs"]["manner"]), "ADV")]
        if r < 0.36:
            return [_Tok(self.zipf(self.lex["adverbs"]["place"]), "ADV")]
        if r < 0.46:
            return self.locative_pp()
        if r < 0.54:
            return self.temporal_pp()
        if r < 0.58:
            return self.comparison_pp()
        return []

    def adverbial_clause(self, tense: str) -> list[_Tok]:
        """A subordinating conjunction (SCONJ; ``before``/``after`` also prepositions) + a neutral,
        unnegated clause. English puts the present in temporal clauses about the future, so future
        sentences take only ``because``: every verb of a sentence keeps the sentence's tense."""
        sub = "because" if tense == "Fut" else self.zipf(self.lex["subordinators"])
        toks, _ = self.clause(self.choice(_SIMPLE_KINDS), tense, "_", None, embedded=True)
        return [_Tok(sub, "SCONJ"), *toks]

    # -- clauses -----------------------------------------------------------------------------
    def clause(
        self, kind: str, tense: str, polarity: str, neg: str | None, embedded: bool = False
    ) -> tuple[list[_Tok], _Agr]:
        """One clause of ``kind`` whose sentiment word has lexical ``polarity`` (``_`` = neutral).
        ``embedded`` clauses (complement and adverbial clauses) get no adverbial clause of their own."""
        adverb = None
        if neg is None and self.coin(self.FREQUENCY_ADVERB_RATE):
            adverb = self.choice(self.lex["adverbs"]["frequency"])
        if kind == "copular":
            adj = self.zipf([a for a in self.adjs if a["sentiment"] == polarity and a.get("predicative", True)])
            # the subject's class first: "that is lovely" (a thing) is then as likely as "he is lovely"
            subj, agr = self.np([self.choice(adj["applies"])], tense=tense)
            vp = self.verb_group(None, tense, agr, neg=neg, adverb=adverb)
            vp.append(_Tok(adj["form"], "ADJ", polarity=adj["sentiment"]))
        elif kind == "existential":  # "there is a lovely dog in the park": the verb agrees with the pivot
            cls = self.choice(("person", "animal", "thing"))
            adjective = None
            if polarity != "_":  # the sentiment word is an attributive adjective of the pivot
                adjective = self.choice([a for a in self.adjs if a["sentiment"] == polarity and cls in a["applies"]])
            pivot, agr = self.bare_np(cls, forms=_INDEFINITE, adjective=adjective)
            subj = [_Tok(self.lex["expletive"], "PRON")]
            vp = [*self.verb_group(None, tense, agr, neg=neg, adverb=adverb), *pivot, *self.locative_pp()]
        elif kind == "complement":  # "Mary says that the park is lovely"
            verb = self.pick_verb("clausal")
            subj, agr = self.np(verb["subj"], tense=tense)
            vp = self.verb_group(verb, tense, agr, neg=neg, adverb=adverb)
            inner, _ = self.clause(self.choice(_SIMPLE_KINDS), tense, polarity, None, embedded=True)
            vp += [_Tok(self.lex["complementizer"], "SCONJ"), *inner]
        elif kind == "control":  # "the dog wants to sleep": the infinitive carries the clause's tense label
            ctrl = self.pick_verb("control")
            cls = self.choice(ctrl["subj"])
            frame = self.choice(("trans", "intrans"))
            inf = self.pick_verb(frame, polarity, subj=cls)
            if inf is None:  # no such verb for this subject: every frame and polarity has person verbs
                cls, inf = "person", self.pick_verb(frame, polarity, subj="person")
            subj, agr = self.np([cls], tense=tense)
            vp = self.verb_group(ctrl, tense, agr, neg=neg, adverb=adverb)
            vp += [
                _Tok(self.lex["infinitive_marker"], "PART"),
                _Tok(inf["lemma"], "VERB", tense=tense, polarity=inf["sentiment"]),
                *self.complements(inf, tense),
            ]
        elif kind in ("transitive", "intransitive"):
            verb = self.pick_verb("trans" if kind == "transitive" else "intrans", polarity)
            subj, agr = self.np(verb["subj"], tense=tense)
            vp = self.verb_group(verb, tense, agr, neg=neg, adverb=adverb, aspect=self.aspect(verb))
            vp += self.complements(verb, tense)
        else:
            raise AssertionError(kind)
        # adverbial clauses only outside negation scopes: "did not leave because ..." has two readings
        if neg is None and not embedded and self.coin(self.ADVERBIAL_RATE):
            vp += self.adverbial_clause(tense)
        if neg:
            for t in vp:
                t.negation = "1"
        return subj + vp, agr

    def sentence(self, negation_rate: float, coordination_rate: float) -> tuple[list[_Tok], dict[str, str]]:
        tense = self.choice(TENSES)
        sentiment = self.choice(("pos", "neg"))
        negated = self.coin(negation_rate)
        lexical = _FLIP[sentiment] if negated else sentiment
        n_clauses = 2 if self.coin(coordination_rate) else 1
        target = self.rng.randrange(n_clauses)
        toks: list[_Tok] = []
        kinds = []
        subj_number = "_"
        for c in range(n_clauses):
            if c:
                toks.append(_Tok(self.choice(self.lex["conjunctions"]), "CCONJ"))
            kind = self.rng.choices(CLAUSE_KINDS, _KIND_WEIGHTS)[0]
            if c == target:  # the clause with the sentiment word
                neg = self.choice(self.lex["negation"]["cues"]) if negated else None
                ctoks, agr = self.clause(kind, tense, lexical, neg)
            else:
                neg = self.choice(self.lex["negation"]["cues"]) if self.coin(negation_rate / 2) else None
                ctoks, agr = self.clause(kind, tense, "_", neg)
            if c == 0:
                subj_number = agr.number
            toks += ctoks
            kinds.append(kind)
        toks.append(_Tok(".", "PUNCT"))
        labels = {
            "sentiment": sentiment,
            "tense": tense,
            "subject_number": subj_number,
            "template": "+".join(kinds),
        }
        return toks, labels


def _to_sentence(toks: list[_Tok], sent_labels: dict[str, str], capitalize: bool) -> Sentence:
    words = [t.word for t in toks]
    if capitalize and words:
        words[0] = words[0][:1].upper() + words[0][1:]
    labels = {f.name: [getattr(t, f.name) for t in toks] for f in fields(_Tok) if f.name != "word"}
    return Sentence(words, labels, dict(sent_labels))


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ParameterError(f"{name} must be in [0, 1], got {value}")


def generate_corpus(
    n_sentences: int = 2000,
    seed: int = 0,
    negation_rate: float = 0.35,
    coordination_rate: float = 0.2,
    unique: bool = True,
    capitalize: bool = True,
) -> Corpus:
    """Generate ``n_sentences`` labelled sentences (see the module docstring for the columns).

    Deterministic for a given ``seed``. ``unique`` drops repeated sentences so that splits do not
    share sentences.
    """
    if n_sentences < 1:
        raise ParameterError(f"n_sentences must be >= 1, got {n_sentences}")
    _check_rate("negation_rate", negation_rate)
    _check_rate("coordination_rate", coordination_rate)
    g = _Grammar(random.Random(seed))
    sents: list[Sentence] = []
    seen: set[str] = set()
    attempts = 0
    while len(sents) < n_sentences:
        attempts += 1
        if attempts > 50 * n_sentences + 1000:
            raise CorpusError(f"could only generate {len(sents)} unique sentences; use unique=False")
        toks, slabels = g.sentence(negation_rate, coordination_rate)
        s = _to_sentence(toks, slabels, capitalize)
        if unique:
            if s.text in seen:
                continue
            seen.add(s.text)
        sents.append(s)
    meta = {"generator": "finegrain.data.generate", "seed": seed, "negation_rate": negation_rate}
    return Corpus(sents, name="synthetic", meta=meta).validate()


# -- agreement minimal pairs -------------------------------------------------------------------


def _agreement_item(g: _Grammar, condition: str, number: str, capitalize: bool) -> tuple[list[_Tok], dict]:
    other = _FLIP_NUMBER[number]
    head_cls = g.choice(("person", "animal"))
    toks, agr = g.bare_np(head_cls, number=number, plain_det=True, adj_rate=0)
    subject = toks[-1].word
    base = condition.removesuffix("_attractor")
    attractor = other if condition.endswith("_attractor") else number
    attractor_number = "_"
    if base == "adv":
        toks.append(_Tok(g.choice(g.lex["adverbs"]["epistemic"]), "ADV"))
    elif base == "namePP":
        ntoks, _ = g.name("person")
        toks += [_Tok(g.choice(g.lex["prepositions"]["noun_modifier"]), "ADP"), *ntoks]
        attractor_number = "Sing"
    elif base in ("nounPP", "nounPPAdv"):
        toks += g.noun_pp(number=attractor)
        attractor_number = attractor
        if base == "nounPPAdv":
            toks.append(_Tok(g.choice(g.lex["adverbs"]["epistemic"]), "ADV"))
    elif base == "objrel":
        verb = g.pick_verb("trans", obj=head_cls, subj=g.choice(("person", "animal")))
        while verb is None:
            verb = g.pick_verb("trans", obj=head_cls, subj=g.choice(("person", "animal")))
        emb_cls = g.choice([c for c in verb["subj"] if c in ("person", "animal")])
        emb, emb_agr = g.bare_np(emb_cls, number=attractor, plain_det=True, adj_rate=0)
        toks += [_Tok(g.lex["relativizer"], "PRON"), *emb, *g.verb_group(verb, "Pres", emb_agr)]
        attractor_number = attractor
    elif base != "simple":
        raise ParameterError(f"unknown agreement condition {condition!r}; choose from {AGREEMENT_CONDITIONS}")
    verb = g.pick_verb("intrans", subj=head_cls)
    vtok = g.verb_group(verb, "Pres", agr)[0]
    wrong = verb["lemma"] if number == "Sing" else verb["pres3sg"]
    words = [t.word for t in toks]
    if capitalize:
        words[0] = words[0][:1].upper() + words[0][1:]
    prefix = " ".join(words)
    pair = {
        "prefix": prefix,
        "correct": vtok.word,
        "wrong": wrong,
        "sentence": f"{prefix} {vtok.word}",
        "subject": subject,
        "verb": verb["lemma"],
        "subject_number": number,
        "attractor_number": attractor_number,
        "condition": condition,
    }
    return [*toks, vtok], pair


def _agreement(
    n: int, seed: int, attractors: bool, conditions, capitalize: bool
) -> tuple[list[list[_Tok]], list[dict]]:
    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    if conditions is None:
        conditions = [c for c in AGREEMENT_CONDITIONS if attractors or not (c.endswith("_attractor") or c == "namePP")]
    for c in conditions:
        if c not in AGREEMENT_CONDITIONS:
            raise ParameterError(f"unknown agreement condition {c!r}; choose from {AGREEMENT_CONDITIONS}")
    g = _Grammar(random.Random(seed))
    toks_out, pairs, seen = [], [], set()
    i = attempts = 0
    while len(pairs) < n:
        attempts += 1
        # cycle through condition x number so every cell is balanced
        cond = conditions[i % len(conditions)]
        number = ("Sing", "Plur")[(i // len(conditions)) % 2]
        toks, pair = _agreement_item(g, cond, number, capitalize)
        if pair["sentence"] in seen and attempts < 50 * n:
            continue
        seen.add(pair["sentence"])
        toks_out.append(toks)
        pairs.append(pair)
        i += 1
    return toks_out, pairs


def agreement_pairs(
    n: int = 1000,
    seed: int = 0,
    attractors: bool = True,
    conditions: list[str] | tuple[str, ...] | None = None,
    capitalize: bool = True,
) -> list[dict[str, Any]]:
    """Subject-verb number agreement minimal pairs (Linzen et al. 2016; Lakretz et al. 2019).

    Each dict has ``prefix`` (text before the verb, e.g. ``"The key near the cabinets"``), the
    ``correct`` and ``wrong`` present-tense verb forms, ``sentence`` (prefix + correct form),
    ``subject`` (head noun), ``verb`` (lemma), ``subject_number``, ``attractor_number`` (number of
    the intervening noun, ``_`` without one) and ``condition``: one of :data:`AGREEMENT_CONDITIONS`
    (``simple``, ``adv``, ``namePP``, ``nounPP``, ``nounPPAdv`` and ``objrel`` as in Lakretz et al.;
    ``*_attractor`` variants have an intervening noun of the opposite number). ``attractors=False``
    keeps only the conditions without a mismatching noun. Conditions and subject numbers are
    balanced. Accuracy is the share of pairs with p(correct) > p(wrong) at the verb.
    """
    return _agreement(n, seed, attractors, conditions, capitalize)[1]


# -- sentence-level sentiment ------------------------------------------------------------------


def sentiment_corpus(n_sentences: int = 2000, seed: int = 0) -> Corpus:
    """Sentence-level sentiment (``sent_labels["sentiment"]``: ``pos``/``neg``) from the same
    grammar, for a classification head. Half the sentiment words are negated, so the label cannot
    be read off the sentiment word alone; word columns ``polarity`` and ``negation`` are kept for
    analysis."""
    c = generate_corpus(n_sentences, seed=seed, negation_rate=0.5, coordination_rate=0.15)
    sents = [
        Sentence(
            s.words,
            {k: s.labels[k] for k in ("polarity", "negation")},
            {"sentiment": s.sent_labels["sentiment"]},
        )
        for s in c
    ]
    return Corpus(sents, name="sentiment", meta={**c.meta, "task": "sentence classification"}).validate()


# -- built-in corpora by name -----------------------------------------------------------------


def parse_builtin_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a built-in corpus spec ``NAME[:key=value,...]`` (the part after ``builtin:`` on the command
    line, e.g. ``ptb:n=5000,split=valid``) into the name and :func:`builtin_corpus` keyword arguments:
    ``n`` (sentences; ``all`` = every sentence of an embedded corpus), ``seed`` and ``split``."""
    name, _, opts = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ParameterError(f"built-in corpus option {item!r} in {spec!r} is not key=value")
        if key == "n":
            kwargs["n_sentences"] = "all" if value == "all" else _int_option(key, value, spec)
        elif key == "seed":
            kwargs["seed"] = _int_option(key, value, spec)
        elif key == "split":
            kwargs["split"] = value
        else:
            raise ParameterError(f"unknown built-in corpus option {key!r} in {spec!r}; choose from n, seed, split")
    return name, kwargs


def _int_option(key: str, value: str, spec: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ParameterError(f"built-in corpus option {key}={value!r} in {spec!r} is not an integer") from None


def builtin_corpus(name: str, n_sentences: int | str | None = None, seed: int = 0, **options: Any) -> Corpus:
    """A built-in corpus by name (options may follow the name: ``"ptb:n=5000,split=valid"``, see
    :func:`parse_builtin_spec`).

    - ``synthetic``: :func:`generate_corpus` (default 2000 sentences), all word and sentence labels;
    - ``sentiment``: sentence-level polarity (``sentiment``) from the same grammar, with negation in
      half the sentences so that the label cannot be read off the sentiment word; word columns
      ``polarity`` and ``negation`` kept for analysis;
    - ``agreement``: :func:`agreement_pairs` (default 900) as sentences ``prefix + correct verb``
      with word columns ``pos``/``number`` and sentence columns ``condition``, ``subject_number``,
      ``attractor_number``; the pairs are in ``corpus.meta["pairs"]``;
    - ``ptb``: real text, the Penn Treebank LM text with spaCy silver labels
      (:func:`~finegrain.data.embedded.ptb_corpus`; default the first 3000 sentences of ``split="train"``;
      ``n_sentences="all"`` for the whole split; further ``options``: ``cache_dir``, ``model``,
      ``batch_size``, ``progress``);
    - ``wnut16``: real tweets with gold NER (:func:`~finegrain.data.embedded.wnut16_corpus`; default all
      2,394).

    ``seed`` only affects the generated corpora (the embedded ones are taken in order).
    """
    base, spec_kwargs = parse_builtin_spec(name)
    clash = [
        k
        for k in spec_kwargs
        if k in options or (k == "n_sentences" and n_sentences is not None) or (k == "seed" and seed != 0)
    ]
    if clash:
        raise ParameterError(f"built-in corpus {name!r}: {clash} given both in the name and as arguments")
    n_sentences = spec_kwargs.pop("n_sentences", n_sentences)
    seed = spec_kwargs.pop("seed", seed)
    options = {**spec_kwargs, **options}
    if base in EMBEDDED_CORPORA:
        n = None if n_sentences == "all" else n_sentences
        if base == "ptb":
            return ptb_corpus(n_sentences=PTB_DEFAULT_SENTENCES if n_sentences is None else n, **options)
        if options:
            raise ParameterError(f"built-in corpus 'wnut16' takes no options, got {sorted(options)}")
        return wnut16_corpus(n_sentences=n)
    if base in GENERATED_CORPORA and options:
        raise ParameterError(f"built-in corpus {base!r} takes n_sentences and seed only, got {sorted(options)}")
    if n_sentences == "all":
        raise ParameterError(f"n_sentences='all' is for the embedded corpora {list(EMBEDDED_CORPORA)}, not {base!r}")
    if base == "synthetic":
        return generate_corpus(n_sentences or 2000, seed=seed)
    if base == "sentiment":
        return sentiment_corpus(n_sentences or 2000, seed=seed)
    if base == "agreement":
        toks, pairs = _agreement(n_sentences or 900, seed, True, None, True)
        sents = []
        for ts, p in zip(toks, pairs):
            s = _to_sentence(ts, {k: p[k] for k in ("condition", "subject_number", "attractor_number")}, True)
            s.labels = {k: s.labels[k] for k in ("pos", "number")}
            sents.append(s)
        return Corpus(sents, name="agreement", meta={"seed": seed, "pairs": pairs}).validate()
    raise CorpusError(f"unknown built-in corpus {base!r}; choose from {list(BUILTIN_CORPORA)}")
