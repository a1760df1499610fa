"""Lesson 01 (data): load a corpus, clean and normalise it, remove exact and near duplicates,
scrub PII, split by document, pack token ids into files and draw batches.

Modules: ``cleaning``, ``corpus``, ``deduplication``, ``packing``, ``pipeline``, ``splits``.
"""

from minillm.data.cleaning import (
    PII_PLACEHOLDERS,
    clean_text,
    normalize_whitespace,
    quality_filter,
    quality_problems,
    scrub_pii,
    strip_gutenberg_boilerplate,
    symbol_ratio,
)
from minillm.data.corpus import (
    ASSETS,
    BUNDLED_CORPORA,
    METADATA_FILE,
    SPLIT_NAMES,
    TOKENS_FORMAT,
    TOKENS_VERSION,
    UNICODE_FORMS,
    Document,
    load_corpus,
)
from minillm.data.deduplication import (
    MinHasher,
    NearDuplicate,
    dedup,
    estimate_jaccard,
    find_near_duplicates,
    jaccard,
    known_edition_pairs,
    lsh_candidate_pairs,
    modern_spelling_first,
    shingle_hashes,
    text_hash,
)
from minillm.data.packing import (
    get_batch,
    load_tokens,
    pack_tokens,
    read_token_sidecar,
    token_dtype,
)
from minillm.data.pipeline import (
    corpus_stats,
    prepare_corpus,
    split_documents,
)
from minillm.data.splits import (
    batch_generator,
    check_tokens,
    draw_batch,
    load_split,
)

__all__ = [
    "ASSETS",
    "BUNDLED_CORPORA",
    "Document",
    "METADATA_FILE",
    "MinHasher",
    "NearDuplicate",
    "PII_PLACEHOLDERS",
    "SPLIT_NAMES",
    "TOKENS_FORMAT",
    "TOKENS_VERSION",
    "UNICODE_FORMS",
    "batch_generator",
    "check_tokens",
    "clean_text",
    "corpus_stats",
    "dedup",
    "draw_batch",
    "estimate_jaccard",
    "find_near_duplicates",
    "get_batch",
    "jaccard",
    "known_edition_pairs",
    "load_corpus",
    "load_split",
    "load_tokens",
    "lsh_candidate_pairs",
    "modern_spelling_first",
    "normalize_whitespace",
    "pack_tokens",
    "prepare_corpus",
    "quality_filter",
    "quality_problems",
    "read_token_sidecar",
    "scrub_pii",
    "shingle_hashes",
    "split_documents",
    "strip_gutenberg_boilerplate",
    "symbol_ratio",
    "text_hash",
    "token_dtype",
]
