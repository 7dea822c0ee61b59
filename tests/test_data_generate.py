"""Generated corpora: determinism, alignment and linguistic sanity of the gold labels."""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict

import pytest

from finegrain.data import (
    AGREEMENT_CONDITIONS,
    SENTENCE_COLUMNS,
    WORD_COLUMNS,
    CorpusError,
    agreement_pairs,
    builtin_corpus,
    gender_continuations,
    gender_substitutes,
    generate_corpus,
    load_lexicon,
    mediation_prompts,
    mediation_templates,
    professions,
    read_parallel_dir,
)
from finegrain.data.cli import register
from finegrain.errors import ParameterError
from finegrain.evaluate.baselines import majority_baseline, word_type_baseline

LEX = load_lexicon()
SING_NOUNS = {n["sg"] for n in LEX["nouns"]}
PLUR_NOUNS = {n["pl"] for n in LEX["nouns"]}
PRES3SG = {v["pres3sg"] for v in LEX["verbs"]}
LEMMAS = {v["lemma"] for v in LEX["verbs"]}
PAST = {v["past"] for v in LEX["verbs"]}
FLIP = {"pos": "neg", "neg": "pos"}
CLAUSAL_FORMS = {
    v[k]
    for v in LEX["verbs"]
    if v["frame"] == "clausal" or v.get("clausal")
    for k in ("lemma", "pres3sg", "past", "ing")
}
BE = {"am", "is", "are", "was", "were", "be"}
PARTICIPLES = {v["ing"] for v in LEX["verbs"]}


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(3000, seed=0)


def clauses(sent):
    """Index ranges of the coordinated clauses (split at CCONJ)."""
    bounds, start = [], 0
    for i, p in enumerate(sent.labels["pos"]):
        if p == "CCONJ":
            bounds.append(range(start, i))
            start = i + 1
    bounds.append(range(start, len(sent.words)))
    return bounds


def test_determinism():
    a, b = generate_corpus(200, seed=7), generate_corpus(200, seed=7)
    assert [(s.words, s.labels, s.sent_labels) for s in a] == [(s.words, s.labels, s.sent_labels) for s in b]
    c = generate_corpus(200, seed=8)
    assert a.texts() != c.texts()
    assert len(set(a.texts()) & set(c.texts())) < 50


def test_columns_alignment_and_variety(corpus):
    assert len(corpus) == 3000
    assert len(set(corpus.texts())) == 3000  # unique=True
    assert corpus.label_columns == list(WORD_COLUMNS)
    assert corpus.sentence_label_columns == list(SENTENCE_COLUMNS)
    for s in corpus:
        for col in WORD_COLUMNS:
            assert len(s.labels[col]) == len(s.words), (col, s.text)
        assert s.words[-1] == "." and s.words[0][0].isupper()
    templates = corpus.label_counts("template")
    assert {"transitive", "intransitive", "copular"} <= set(templates)
    assert any("+" in t for t in templates)
    assert set(corpus.label_counts("pos")) >= {"DET", "NOUN", "PROPN", "PRON", "VERB", "AUX", "ADJ", "ADV", "ADP"}
    assert sum(1 for t in corpus.texts() if " that " in t) > 100  # relative clauses
    assert len({w.lower() for ws in corpus.words() for w in ws}) > 400


def test_noun_number_matches_lexicon(corpus):
    for s in corpus:
        for w, pos, num in zip(s.words, s.labels["pos"], s.labels["number"]):
            if pos == "NOUN":
                assert w in (PLUR_NOUNS if num == "Plur" else SING_NOUNS), (w, num, s.text)
                assert num in ("Sing", "Plur")


def test_sentiment_flips_under_negation(corpus):
    cells = Counter()
    for s in corpus:
        pol = [(i, p) for i, p in enumerate(s.labels["polarity"]) if p != "_"]
        assert len(pol) == 1, s.text  # exactly one sentiment word
        i, lexical = pol[0]
        # independent of the negation labels: is there a cue in the clause of the sentiment word?
        clause = next(c for c in clauses(s) if i in c)
        negated = any(s.words[j].lower() in ("not", "never") for j in clause)
        assert s.sent_labels["sentiment"] == (FLIP[lexical] if negated else lexical), s.text
        assert (s.labels["negation"][i] == "1") == negated
        cells[lexical, negated] += 1
    assert min(cells.values()) > 200 and len(cells) == 4


def test_negation_scope_is_the_negated_verb_phrase(corpus):
    n_neg = 0
    for s in corpus:
        neg = s.labels["negation"]
        for c in clauses(s):
            in_scope = [j for j in c if neg[j] == "1"]
            cues = [j for j in c if s.words[j].lower() in ("not", "never")]
            assert bool(in_scope) == bool(cues), s.text
            if not cues:
                continue
            n_neg += 1
            # contiguous, contains the cue, runs to the end of the clause, excludes the subject
            assert in_scope == list(range(in_scope[0], c[-1] + 1 if c[-1] != len(s.words) - 1 else c[-1]))
            assert cues[0] in in_scope
            assert in_scope[0] > c[0]
            assert s.labels["pos"][in_scope[0]] in ("AUX", "VERB", "PART", "ADV")
        assert neg[-1] == "0"  # final period
    assert n_neg > 800


def test_verbs_agree_with_subjects(corpus):
    checked = 0
    for s in corpus:
        pos, num, per, tense = (s.labels[k] for k in ("pos", "number", "person", "tense"))
        for w, p, n, pe, t in zip(s.words, pos, num, per, tense):
            if p not in ("VERB", "AUX") or n == "_" and pe == "_":
                continue
            w = w.lower()
            key = f"{pe}{n}" if n == "Sing" and pe in ("1", "3") else "other"
            if t == "Pres":
                if p == "VERB":
                    assert w in (PRES3SG if key == "3Sing" else LEMMAS), s.text
                else:
                    expected = {"3Sing": {"is", "does"}, "1Sing": {"am", "do"}, "other": {"are", "do"}}[key]
                    assert w in expected, s.text
            elif t == "Past":
                if p == "AUX" and w != "did":
                    assert w == ("was" if key != "other" else "were"), s.text
                elif p == "VERB":
                    assert w in PAST, s.text
            else:
                assert w == "will"
        # independent link to the subject in simple clauses: first nominal <-> first finite verb
        first = clauses(s)[0]
        if " that " in s.text or any(s.labels["pos"][j] == "ADP" for j in first):
            continue
        subj = next(j for j in first if pos[j] in ("NOUN", "PROPN", "PRON"))
        verb = next(j for j in first if pos[j] in ("VERB", "AUX") and num[j] + per[j] != "__")
        assert subj < verb
        assert num[verb] == num[subj] == s.sent_labels["subject_number"], s.text
        if pos[subj] == "PRON":
            assert per[verb] == per[subj]
        else:
            assert per[verb] == "3"
        checked += 1
    assert checked > 1000


def test_tense_labels(corpus):
    for s in corpus:
        t = s.sent_labels["tense"]
        verbal = [tt for tt, p in zip(s.labels["tense"], s.labels["pos"]) if p in ("VERB", "AUX")]
        assert verbal and set(verbal) == {t}, s.text
        assert ("will" in s.words) == (t == "Fut")
        assert all(tt == "_" for tt, p in zip(s.labels["tense"], s.labels["pos"]) if p not in ("VERB", "AUX"))
    assert set(corpus.label_counts("tense", level="sentence")) == {"Pres", "Past", "Fut"}
    assert set(corpus.label_counts("tense")) == {"Pres", "Past", "Fut", "_"}  # word column wins


def test_ner_and_gender(corpus):
    names = {tuple(n["form"].split()): n for n in LEX["names"]}
    gendered = {n["sg"]: n["gender"] for n in LEX["nouns"]} | {n["pl"]: n["gender"] for n in LEX["nouns"]}
    seen_types = set()
    for s in corpus:
        ner = s.labels["ner"]
        i = 0
        while i < len(ner):
            if ner[i] == "O":
                i += 1
                continue
            assert ner[i].startswith("B-"), s.text
            typ, j = ner[i][2:], i + 1
            while j < len(ner) and ner[j] == f"I-{typ}":
                j += 1
            entry = names[tuple(s.words[i:j])]
            assert entry["type"] == typ
            assert s.labels["gender"][i] == entry["gender"]
            seen_types.add(typ)
            i = j
        for w, p, g in zip(s.words, s.labels["pos"], s.labels["gender"]):
            if p == "NOUN":
                assert g == gendered[w]
            if p == "PRON" and w.lower() in ("he", "him"):
                assert g == "Masc"
            if p == "PRON" and w.lower() in ("she", "her"):
                assert g == "Fem"
    assert seen_types == {"PER", "LOC", "ORG"}


def test_bad_arguments():
    with pytest.raises(ParameterError, match="n_sentences"):
        generate_corpus(0)
    with pytest.raises(ParameterError, match="negation_rate"):
        generate_corpus(10, negation_rate=1.5)


# -- ambiguity (issue 14): word identity does not give the POS away, every label stays gold ---------


def _word_type_pos_baseline(corpus, seed: int = 0) -> tuple[float, float]:
    """Word-type and majority POS baselines, sentences split 80/20 at random."""
    ids = list(range(len(corpus)))
    random.Random(seed).shuffle(ids)
    cut = int(0.8 * len(ids))

    def flat(part, what):
        return [x for i in part for x in (corpus[i].words if what == "words" else corpus[i].labels["pos"])]

    train, test = ids[:cut], ids[cut:]
    wt = word_type_baseline(flat(train, "words"), flat(train, "pos"), flat(test, "words"), flat(test, "pos"))
    return wt, majority_baseline(flat(train, "pos"), flat(test, "pos"))


def test_word_type_pos_baseline_is_at_most_that_of_real_english():
    # the most-frequent-tag baseline of real English POS is about 0.92; the old grammar gave 0.97-0.99
    for n, seed in ((1000, 0), (4000, 1)):
        word_type, majority = _word_type_pos_baseline(generate_corpus(n, seed=seed), seed=seed)
        assert 0.8 < word_type <= 0.92, (n, word_type)
        assert majority < 0.25  # a real multi-class task: the lookup is far above the majority class


def test_ambiguous_words_occur_with_each_of_their_tags(corpus):
    tags = defaultdict(Counter)
    for s in corpus:
        for w, p in zip(s.words, s.labels["pos"]):
            tags[w.lower()][p] += 1
    expected = {
        "that": {"DET", "PRON", "SCONJ"},
        "to": {"PART", "ADP"},
        "there": {"PRON", "ADV"},
        "this": {"DET", "PRON"},
        "those": {"DET", "PRON"},
        "before": {"ADP", "SCONJ"},
        "until": {"ADP", "SCONJ"},
        "outside": {"ADP", "ADV"},
        "like": {"ADP", "VERB"},
        "fast": {"ADJ", "ADV"},
        "home": {"NOUN", "ADV"},
        "walk": {"NOUN", "VERB"},
        "watch": {"NOUN", "VERB"},
        "plan": {"NOUN", "VERB"},
        "notice": {"NOUN", "VERB"},
        "painting": {"NOUN", "VERB"},
        "walking": {"ADJ", "VERB"},
        "running": {"ADJ", "VERB"},
    }
    for word, want in expected.items():
        frequent = {t for t, n in tags[word].items() if n >= 5}
        assert frequent >= want, (word, dict(tags[word]))
    assert sum(sum(n >= 3 for n in t.values()) >= 2 for t in tags.values()) >= 60


def test_ambiguous_words_are_labelled_by_their_context(corpus):
    """An independent check that the gold tags of ambiguous words follow from the words around them."""
    seen = Counter()
    for s in corpus:
        w, p = [x.lower() for x in s.words], s.labels["pos"]
        for i, (word, tag) in enumerate(zip(w, p)):
            prev = p[i - 1] if i else None
            nxt = p[i + 1] if i + 1 < len(p) else None
            if word == "to":  # infinitive marker before a verb, else a preposition
                assert (tag == "PART") == (nxt == "VERB"), s.text
            if word == "that":
                if tag == "DET":
                    assert nxt in ("ADJ", "NOUN"), s.text
                elif tag == "SCONJ":  # complementiser after a clause-taking verb
                    assert w[i - 1] in CLAUSAL_FORMS, s.text
                else:
                    assert tag == "PRON" and nxt not in ("ADJ", "NOUN"), s.text
            if word == "there":  # expletive before a form of be
                assert (tag == "PRON") == (i + 1 < len(w) and (w[i + 1] in BE or w[i + 1] == "will")), s.text
            if word in PARTICIPLES and tag == "ADJ":  # attributive participle ("the sleeping dog")
                assert nxt == "NOUN", s.text
            if word in PARTICIPLES and tag == "VERB":  # progressive: after be, a cue or an adverb between
                assert w[i - 1] in BE or (p[i - 1] in ("PART", "ADV") and w[i - 2] in BE), s.text
            if tag == "NOUN":  # common nouns only ever follow their determiner or adjective
                assert prev in ("DET", "ADJ", "NUM"), s.text
            seen[word, tag] += 1
    assert seen["that", "SCONJ"] and seen["to", "ADP"] and seen["there", "ADV"]


# -- agreement ---------------------------------------------------------------------------------


def test_agreement_pairs():
    pairs = agreement_pairs(360, seed=3)
    assert pairs == agreement_pairs(360, seed=3)
    assert pairs != agreement_pairs(360, seed=4)
    cells = Counter((p["condition"], p["subject_number"]) for p in pairs)
    assert set(cells) == {(c, n) for c in AGREEMENT_CONDITIONS for n in ("Sing", "Plur")}
    assert len(set(cells.values())) == 1  # balanced
    verbs = {v["lemma"]: v for v in LEX["verbs"]}
    for p in pairs:
        v = verbs[p["verb"]]
        assert p["correct"] != p["wrong"]
        assert p["correct"] == (v["pres3sg"] if p["subject_number"] == "Sing" else v["lemma"])
        assert {p["correct"], p["wrong"]} == {v["pres3sg"], v["lemma"]}
        assert p["sentence"] == f"{p['prefix']} {p['correct']}"
        words = p["prefix"].split()
        assert words[1] == p["subject"]
        assert p["subject"] in (SING_NOUNS if p["subject_number"] == "Sing" else PLUR_NOUNS)
        if p["condition"].endswith("_attractor"):
            assert p["attractor_number"] != p["subject_number"]
            # the attractor noun of the right number sits between subject and verb
            later = PLUR_NOUNS if p["attractor_number"] == "Plur" else SING_NOUNS
            assert any(w in later for w in words[2:])
        elif p["condition"] in ("simple", "adv"):
            assert p["attractor_number"] == "_" and len(words) == 2 + (p["condition"] == "adv")
        elif p["condition"] != "namePP":
            assert p["attractor_number"] == p["subject_number"]


def test_agreement_pairs_without_attractors():
    pairs = agreement_pairs(50, seed=0, attractors=False)
    assert all(p["attractor_number"] in ("_", p["subject_number"]) for p in pairs)
    assert {p["condition"] for p in pairs} == {"simple", "adv", "nounPP", "nounPPAdv", "objrel"}
    only = agreement_pairs(10, conditions=["nounPP_attractor"])
    assert {p["condition"] for p in only} == {"nounPP_attractor"}
    with pytest.raises(ValueError, match="unknown agreement condition"):
        agreement_pairs(5, conditions=["bogus"])


# -- mediation resources -----------------------------------------------------------------------


def test_professions_and_templates():
    profs = professions()
    assert 90 <= len(profs) <= 130 and len(set(profs)) == len(profs)
    assert {"nurse", "mechanic", "doctor", "secretary"} <= set(profs)
    assert not {"man", "woman", "actress", "waitress", "policeman"} & set(profs)
    assert all(p.isalpha() and p.islower() for p in profs)
    templates = mediation_templates()
    assert len(templates) == 17 and "The {} said that" in templates and "The {} was promoted because" in templates
    assert all(t.count("{}") == 1 for t in templates)
    assert gender_substitutes() == {"male": "man", "female": "woman"}
    assert gender_continuations() == {"male": " he", "female": " she"}
    prompts = mediation_prompts(templates[:2], ["nurse"])
    assert prompts[0] == {
        "template": "The {} said that",
        "profession": "nurse",
        "base": "The nurse said that",
        "male": "The man said that",
        "female": "The woman said that",
    }


# -- built-in corpora --------------------------------------------------------------------------


def test_builtin_corpora():
    syn = builtin_corpus("synthetic", n_sentences=50)
    assert syn.texts() == generate_corpus(50).texts()
    sent = builtin_corpus("sentiment", n_sentences=400)
    assert sent.sentence_label_columns == ["sentiment"]
    counts = sent.label_counts("sentiment")
    assert min(counts.values()) > 150
    negated = sum(any(w.lower() in ("not", "never") for w in s.words) for s in sent)
    assert negated > 150
    agr = builtin_corpus("agreement", n_sentences=36)
    assert len(agr) == 36 and set(agr.sentence_label_columns) == {"condition", "subject_number", "attractor_number"}
    for s, p in zip(agr, agr.meta["pairs"]):
        assert s.text == p["sentence"] and s.words[-1] == p["correct"]
        assert s.labels["number"][-1] == p["subject_number"] and s.labels["pos"][-1] == "VERB"
    with pytest.raises(CorpusError, match="unknown built-in corpus"):
        builtin_corpus("imdb")


# -- CLI ---------------------------------------------------------------------------------------


def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="finegrain")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_generate_and_info(tmp_path, capsys):
    out = tmp_path / "gen"
    run_cli("corpus", "generate", "--n", "40", "--seed", "1", "--out", str(out))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["sentences.txt", "sentence_labels.tsv", *[f"labels.{c}.txt" for c in WORD_COLUMNS]])
    back = read_parallel_dir(out)
    ref = generate_corpus(40, seed=1)
    assert back.words() == ref.words()
    assert back.word_labels("number").tolist() == ref.word_labels("number").tolist()
    assert back.sentence_labels("sentiment").tolist() == ref.sentence_labels("sentiment").tolist()
    capsys.readouterr()
    run_cli("corpus", "info", str(out), "--json")
    info = json.loads(capsys.readouterr().out)
    assert info["sentences"] == 40 and info["words"] == ref.n_words
    assert info["word_labels"]["tense"] == dict(ref.label_counts("tense").most_common(20))
    assert info["sentence_labels"]["tense"] == dict(ref.label_counts("tense", level="sentence"))
    run_cli("corpus", "generate", "--name", "agreement", "--n", "18", "--out", str(tmp_path / "agr"))
    lines = (tmp_path / "agr" / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 18 and json.loads(lines[0])["condition"] == "simple"
