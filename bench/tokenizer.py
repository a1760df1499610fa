"""Tokenizer benchmark: training time and encoding throughput, side by side, in one run.

Training on the cleaned Shakespeare corpus (``minillm.data.prepare_corpus``) at several vocabulary
sizes: minillm's fast (incremental) trainer, the naive trainer (recount every pair per merge;
smallest size only, it is slow) and Hugging Face ``tokenizers``' BPE trainer with the same
pre-tokenization (GPT-2's regex, byte level). Encoding throughput (MB of UTF-8 per second, one
thread): minillm's pure-Python encoder, the same tokenizer through ``to_tiktoken()``, and
tiktoken's own GPT-2 encoding (with minillm's GPT-2 tokenizer beside it for parity).

    python bench/tokenizer.py                 # full run, writes bench/results/tokenizer.json
    python bench/tokenizer.py --quick         # smaller sizes, for a smoke test

Targets (issue 3): vocab 1024 on ~1 MB in <= 4 s; pure-Python encoding >= 1 MB/s; to_tiktoken
ids identical and at tiktoken's speed.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version
from pathlib import Path

from common import machine_info, timed, write_results

from minillm.data import prepare_corpus
from minillm.tokenizer import ENDOFTEXT, GPT2_PATTERN, BPETokenizer, tiktoken_gpt2
from minillm.tokenizer.gpt2 import _bytes_to_unicode

RESULTS = Path(__file__).resolve().parent / "results" / "tokenizer.json"
SAMPLE_CHARS = 1_000_000  # the "~1 MB" of the training target


def truncate(documents: list[str], n_chars: int) -> list[str]:
    """The first documents, the last one cut, totalling ``n_chars`` characters."""
    out, total = [], 0
    for doc in documents:
        out.append(doc[: n_chars - total])
        total += len(out[-1])
        if total >= n_chars:
            break
    return out


def train_hf(documents: list[str], vocab_size: int):
    """Hugging Face tokenizers' BPE trainer, pre-tokenizing exactly like minillm (GPT-2 regex)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer)
    return tokenizer


def vocab_overlap(ours: BPETokenizer, hf_tokenizer) -> float:
    """Fraction of minillm's ordinary tokens that Hugging Face's trainer also learnt."""
    char_to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    hf_tokens = {
        bytes(char_to_byte[c] for c in token)
        for token in hf_tokenizer.get_vocab()
        if token != ENDOFTEXT
    }
    ours_tokens = {ours.token_bytes(i) for i in range(ours.vocab_size) if i != ours.eot_id}
    return len(ours_tokens & hf_tokens) / len(ours_tokens)


def bench_training(documents: list[str], label: str, sizes: list[int], naive_size: int | None):
    rows, trained = [], {}
    n_mb = sum(len(d.encode("utf-8")) for d in documents) / 1e6
    for size in sizes:
        fast_s, tok = timed(lambda size=size: BPETokenizer.train(documents, size))
        trained[size] = tok
        hf_s, hf_tok = timed(lambda size=size: train_hf(documents, size))
        row = {
            "corpus": label,
            "mb": round(n_mb, 2),
            "vocab_size": size,
            "fast_s": round(fast_s, 2),
            "hf_tokenizers_s": round(hf_s, 2),
            "fast_over_hf": round(fast_s / hf_s, 1),
            "vocab_overlap_with_hf": round(vocab_overlap(tok, hf_tok), 3),
        }
        if size == naive_size:
            naive_s, naive_tok = timed(
                lambda size=size: BPETokenizer.train(documents, size, naive=True)
            )
            assert naive_tok.merges == tok.merges, "naive and fast trainers disagree"
            row.update(naive_s=round(naive_s, 1), naive_over_fast=round(naive_s / fast_s, 1))
            row["identical_merges"] = True
        rows.append(row)
        print(f"  trained {label} vocab {size}: fast {fast_s:.2f} s, HF {hf_s:.2f} s", flush=True)
    return rows, trained


def bench_encoding(text: str, tokenizer: BPETokenizer, repeats: int) -> list[dict]:
    mb = len(text.encode("utf-8")) / 1e6
    rows = []

    def add(name: str, seconds: float, identical_to: str = "", identical: bool | None = None):
        rows.append(
            {"encoder": name, "mb": round(mb, 2), "seconds": round(seconds, 3),
             "mb_per_s": round(mb / seconds, 2), "identical_to": identical_to,
             "identical": "" if identical is None else identical}
        )  # fmt: skip

    fresh = BPETokenizer.load(tokenizer.save(RESULTS.parent / ".bench_tokenizer.tmp"))
    (RESULTS.parent / ".bench_tokenizer.tmp").unlink()
    cold_s, ours_ids = timed(lambda: fresh.encode(text, allowed_special="all"))
    add(f"minillm pure Python, vocab {tokenizer.vocab_size}, cold cache", cold_s)
    warm_s, _ = timed(lambda: fresh.encode(text, allowed_special="all"), repeats)
    add(f"minillm pure Python, vocab {tokenizer.vocab_size}, warm cache", warm_s)
    encoding = tokenizer.to_tiktoken()
    tt_s, tt_ids = timed(lambda: encoding.encode(text, allowed_special="all"), repeats)
    add(
        f"minillm to_tiktoken, vocab {tokenizer.vocab_size}",
        tt_s,
        "pure Python",
        tt_ids == ours_ids,
    )

    gpt2_ours, gpt2_theirs = BPETokenizer.gpt2(), tiktoken_gpt2()
    theirs_s, theirs_ids = timed(lambda: gpt2_theirs.encode(text, allowed_special="all"), repeats)
    add("tiktoken gpt2", theirs_s)
    ours_s, gpt2_ids = timed(lambda: gpt2_ours.encode(text, allowed_special="all"))
    add(
        "minillm pure Python, GPT-2 vocab, cold cache",
        ours_s,
        "tiktoken gpt2",
        gpt2_ids == theirs_ids,
    )
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON results")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    documents = [doc.text for doc in prepare_corpus("shakespeare")]
    sample = truncate(documents, SAMPLE_CHARS // (10 if args.quick else 1))
    sizes = [512, 1024] if args.quick else [1024, 4096, 8192]
    print("training on ~1 MB (fast vs naive vs Hugging Face) ...", flush=True)
    sample_rows, _ = bench_training(
        sample, "~1 MB sample", sizes[:1] if args.quick else [1024], 512 if args.quick else 1024
    )
    print("training on the whole cleaned corpus ...", flush=True)
    full = sample if args.quick else documents
    full_rows, trained = bench_training(full, "cleaned corpus", sizes, None)
    text = ENDOFTEXT.join(full)
    print("encoding ...", flush=True)
    encode_rows = bench_encoding(text, trained[sizes[-1]], repeats=1 if args.quick else 3)

    print_table("Training time (seconds)", sample_rows + full_rows)
    print_table("Encoding throughput (one thread)", encode_rows)
    results = {
        "machine": machine_info(
            load_average_before=[round(x, 2) for x in load_before],
            load_average_after=[round(x, 2) for x in os.getloadavg()],
        ),
        "versions": {
            "python": sys.version.split()[0],
            **{pkg: version(pkg) for pkg in ("minillm", "tiktoken", "tokenizers", "regex")},
        },
        "quick": args.quick,
        "training": sample_rows + full_rows,
        "encoding": encode_rows,
    }
    if not args.no_write:
        write_results(RESULTS, results)
        print(f"\nwrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
