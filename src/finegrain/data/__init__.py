"""Corpora: types, readers/writers, generated corpora with gold labels, embedded real text (Penn
Treebank with spaCy silver labels, WNUT-16 with gold NER), spaCy silver labels for any corpus."""

# annotate() imports spaCy lazily, so importing it here is cheap; binding the function here also
# keeps ``finegrain.data.annotate`` the function rather than the submodule.
from finegrain.data.annotate import AnnotationError, annotate
from finegrain.data.corpus import Corpus, CorpusError, Sentence
from finegrain.data.embedded import (
    EMBEDDED_CORPORA,
    PTB_COLUMNS,
    default_cache_dir,
    ptb_corpus,
    ptb_sentences,
    wnut16_corpus,
)
from finegrain.data.generate import (
    AGREEMENT_CONDITIONS,
    BUILTIN_CORPORA,
    GENERATED_CORPORA,
    SENTENCE_COLUMNS,
    WORD_COLUMNS,
    agreement_pairs,
    builtin_corpus,
    gender_continuations,
    gender_substitutes,
    generate_corpus,
    load_lexicon,
    mediation_prompts,
    mediation_templates,
    parse_builtin_spec,
    professions,
    sentiment_corpus,
)
from finegrain.data.load import as_corpus, read_corpus
from finegrain.data.readers import (
    detect_format,
    read_conll2003,
    read_conllu,
    read_parallel,
    read_parallel_dir,
    read_text,
    read_tsv,
    write_parallel,
)

__all__ = [
    "AGREEMENT_CONDITIONS",
    "AnnotationError",
    "BUILTIN_CORPORA",
    "EMBEDDED_CORPORA",
    "GENERATED_CORPORA",
    "PTB_COLUMNS",
    "SENTENCE_COLUMNS",
    "WORD_COLUMNS",
    "Corpus",
    "CorpusError",
    "Sentence",
    "agreement_pairs",
    "annotate",
    "as_corpus",
    "builtin_corpus",
    "default_cache_dir",
    "detect_format",
    "gender_continuations",
    "gender_substitutes",
    "generate_corpus",
    "load_lexicon",
    "mediation_prompts",
    "mediation_templates",
    "parse_builtin_spec",
    "professions",
    "ptb_corpus",
    "ptb_sentences",
    "read_conll2003",
    "read_conllu",
    "read_corpus",
    "read_parallel",
    "read_parallel_dir",
    "read_text",
    "read_tsv",
    "sentiment_corpus",
    "wnut16_corpus",
    "write_parallel",
]
