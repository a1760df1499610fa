"""GPT-2's tokenizer files (lesson 02), offline: OpenAI's ``encoder.json`` and ``vocab.bpe`` are
bundled, checked against the hashes tiktoken pins, and read either by minillm or by tiktoken's
own loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from minillm.tokenizer.pretokenize import ENDOFTEXT, GPT2_PATTERN
from minillm.utils.assets import asset_path

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "GPT2_DIR",
    "GPT2_SHA256",
    "GPT2_URLS",
    "tiktoken_gpt2",
    "install_gpt2_tiktoken_cache",
    "read_gpt2_files",
]


GPT2_DIR = asset_path("gpt2")


GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


GPT2_URLS = {  # where tiktoken downloads them from; its cache names a file by the sha1 of its URL
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (used in its files).

    Printable Latin-1 bytes map to themselves; the 68 others (controls, space, ...) are shifted
    to code points 256 and up, in byte order.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def _check_gpt2_files(folder: Path) -> None:
    for name, expected in GPT2_SHA256.items():
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != expected:
            raise ValueError(f"{folder / name}: sha256 {actual} differs from GPT-2's {expected}")


def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding built by tiktoken's own loader from the bundled files.

    Equivalent to ``tiktoken.get_encoding("gpt2")`` but needs no network: the files are read
    with ``tiktoken.load.data_gym_to_mergeable_bpe_ranks`` (with its cache switched off, so it
    writes nothing) after checking their sha256 against the hashes tiktoken pins.
    """
    import tiktoken
    import tiktoken.load

    _check_gpt2_files(GPT2_DIR)
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # "" = read the files directly, cache nothing
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(GPT2_DIR / "vocab.bpe"),
            encoder_json_file=str(GPT2_DIR / "encoder.json"),
        )
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
    )


def install_gpt2_tiktoken_cache(cache_dir: str | os.PathLike) -> Path:
    """Copy the bundled GPT-2 files into a tiktoken cache folder, under the names tiktoken uses.

    tiktoken names each cached file by the sha1 of its download URL. After this, running with
    ``TIKTOKEN_CACHE_DIR=<cache_dir>`` makes ``tiktoken.get_encoding("gpt2")`` work offline.

    Returns:
        The cache folder.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _check_gpt2_files(GPT2_DIR)
    for name, url in GPT2_URLS.items():
        target = cache_dir / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(GPT2_DIR / name, tmp)
            os.replace(tmp, target)
    return cache_dir


def read_gpt2_files(
    encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike
) -> tuple[dict[bytes, int], dict[str, int], list[tuple[int, int, int]]]:
    """(ranks, specials, merges) from GPT-2's ``encoder.json`` and ``vocab.bpe``.

    GPT-2's files write each byte as a printable character (see ``_bytes_to_unicode``);
    ``vocab.bpe`` lists the merges in order, and merge ``k`` creates id ``256 + k``.

    Raises:
        ValueError: a file is malformed or the two files disagree (the message names it).
    """
    encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
    char_to_byte = {c: b for b, c in _bytes_to_unicode().items()}

    def to_bytes(token: str, source: Path) -> bytes:
        try:
            return bytes(char_to_byte[c] for c in token)
        except KeyError as err:
            raise ValueError(f"{source}: {token!r} is not in GPT-2's byte alphabet") from err

    try:
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{encoder_json}: not a valid JSON file: {err}") from err
    if not isinstance(encoder, dict):
        raise ValueError(f"{encoder_json}: expected a JSON object token -> id")
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"{vocab_bpe}: the first line must be '#version: ...'")
    specials = {t: i for t, i in encoder.items() if t.startswith("<|") and t.endswith("|>")}
    ranks = {to_bytes(t, encoder_json): i for t, i in encoder.items() if t not in specials}
    merges: list[tuple[int, int, int]] = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{vocab_bpe}: line {line_no}: expected two tokens, got {line!r}")
        left, right = (to_bytes(p, vocab_bpe) for p in parts)
        ids = [ranks.get(left), ranks.get(right), ranks.get(left + right)]
        if None in ids or ids[2] != 256 + len(merges):
            raise ValueError(
                f"{vocab_bpe}: line {line_no}: merge {line!r} does not match {encoder_json}"
            )
        merges.append((ids[0], ids[1], ids[2]))
    return ranks, specials, merges
