"""Lesson 02 (tokenization): byte-level BPE (training, encoding, special tokens), GPT-2's files and
tiktoken parity, and the guards that keep a tokenizer and its data together.

Modules: ``bpe``, ``file_format``, ``gpt2``, ``guard``, ``pretokenize``, ``training``.
"""

from minillm.tokenizer.bpe import (
    BPETokenizer,
)
from minillm.tokenizer.file_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    read_tokenizer_file,
)
from minillm.tokenizer.gpt2 import (
    GPT2_DIR,
    GPT2_SHA256,
    GPT2_URLS,
    install_gpt2_tiktoken_cache,
    read_gpt2_files,
    tiktoken_gpt2,
)
from minillm.tokenizer.guard import (
    HEAP_MERGE_MIN_BYTES,
    MAX_WHITESPACE_RUN,
    PATTERN_PROBE,
    WHITESPACE,
    WhitespaceCutter,
    check_pattern_covers,
    check_vocabulary,
    merge_bytes_heap,
    split_long_whitespace,
    whitespace_cuts,
)
from minillm.tokenizer.pretokenize import (
    ENDOFTEXT,
    GPT2_PATTERN,
    GPT4_PATTERN,
    PATTERNS,
)

__all__ = [
    "BPETokenizer",
    "ENDOFTEXT",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GPT2_DIR",
    "GPT2_PATTERN",
    "GPT2_SHA256",
    "GPT2_URLS",
    "GPT4_PATTERN",
    "HEAP_MERGE_MIN_BYTES",
    "MAX_WHITESPACE_RUN",
    "PATTERNS",
    "PATTERN_PROBE",
    "WHITESPACE",
    "WhitespaceCutter",
    "check_pattern_covers",
    "check_vocabulary",
    "install_gpt2_tiktoken_cache",
    "merge_bytes_heap",
    "read_gpt2_files",
    "read_tokenizer_file",
    "split_long_whitespace",
    "tiktoken_gpt2",
    "whitespace_cuts",
]
