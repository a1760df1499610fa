"""The course model's GGUF file in llama.cpp itself, through llama-cpp-python (built locally).

llama.cpp reads the file with no conversion step: its tokenizer gives minillm's ids on the whole
validation split, the f32 file gives minillm's greedy tokens, Q8_0 follows them except at near
ties, and Q4_0 / the mixed recipe report their agreement. Each check takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is in the dev extra")

import minillm  # noqa: E402
from minillm.course import course_data  # noqa: E402
from minillm.data import load_split  # noqa: E402
from minillm.finetune import ChatFormat, add_chat_tokens, resize_token_embeddings  # noqa: E402
from minillm.finetune.sft import END
from minillm.quantize.gguf_export import export_gguf  # noqa: E402
from minillm.quantize.llamacpp import LlamaCppLM  # noqa: E402
from minillm.tokenizer import ENDOFTEXT  # noqa: E402

QTYPES = ("f32", "f16", "q8_0", "q4_0", "mixed")
PROMPTS = (
    "ROMEO:\n",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "To be, or not to be, that is the question:",
    "KING RICHARD III:\nNow is the winter of our discontent",
    "The quality of mercy is not strain'd,",
)
NEW_TOKENS = 64
# A near tie: minillm's two best logits closer than this. Rounding every weight and activation
# to 8 bits moves a logit difference by a few hundredths here, so Q8_0 may pick the other token
# there and only there.
NEAR_TIE = 0.1


@pytest.fixture(scope="module")
def course():
    return minillm.course_model(verbose=False)


@pytest.fixture(scope="module")
def runners(course, tmp_path_factory):
    model, tokenizer = course
    folder = tmp_path_factory.mktemp("gguf")
    out = {q: LlamaCppLM(export_gguf(model, tokenizer, folder / f"{q}.gguf", q)) for q in QTYPES}
    yield out
    for lm in out.values():
        lm.close()


@pytest.fixture(scope="module")
def greedy_paths(course):
    """minillm's greedy continuation of each prompt, and its float logits along that path."""
    model, tokenizer = course
    paths = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tokenizer.encode_ordinary(prompt)
            seq = model.generate(torch.tensor([ids]), NEW_TOKENS, temperature=0)
            paths.append((ids, seq, model(seq)[0][0]))
    return paths


def test_llama_cpp_reads_the_hyper_parameters_and_special_tokens(course, runners):
    model, tokenizer = course
    llm = runners["f32"].llm
    meta = llm.metadata
    assert meta["general.architecture"] == "gptneox"
    assert meta["tokenizer.ggml.pre"] == "llama-bpe"
    assert llm.n_vocab() == model.config.vocab_size
    assert int(meta["gptneox.context_length"]) == model.config.block_size
    assert llm.n_embd() == model.config.n_embd
    assert llm.token_bos() == llm.token_eos() == tokenizer.eot_id
    assert llm.detokenize([tokenizer.eot_id], special=True) == ENDOFTEXT.encode()
    assert "tokenizer.chat_template" not in meta  # a base model has no chat format


def test_tokenizer_gives_minillms_ids_on_the_whole_validation_split(course, runners):
    _, tokenizer = course
    val = load_split(course_data(verbose=False), "val").tolist()
    docs = tokenizer.decode_bytes(val).decode("utf-8").split(ENDOFTEXT)[:-1]
    assert len(docs) == val.count(tokenizer.eot_id) >= 1
    lm = runners["f32"]
    n_tokens = 0
    for i, doc in enumerate(docs):
        ours = tokenizer.encode_ordinary(doc)
        theirs = lm.tokenize(doc)
        first = next(
            (j for j, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None
        )
        assert ours == theirs, f"document {i}: first difference at token {first}"
        assert lm.detokenize(theirs) == doc.encode("utf-8")
        n_tokens += len(ours)
    assert n_tokens == len(val) - len(docs)  # every token of the split but the separators


def test_the_regex_difference_never_changes_the_course_ids(course, runners):
    """llama-bpe's regex (cl100k's original) cuts trailing whitespace after its last line break;
    minillm's tiktoken form keeps it in one piece. The ids differ only if a token spans such a
    line break, and no token of the course vocabulary does (see minillm.gguf_export)."""
    regex = pytest.importorskip("regex")
    from minillm.quantize.gguf_export import LLAMA3_REGEX, tokens_across_line_breaks
    from minillm.tokenizer import GPT4_PATTERN

    _, tokenizer = course
    text = "the end\n\n  "
    assert regex.findall(GPT4_PATTERN, text)[-1] == "\n\n  "
    assert regex.findall(LLAMA3_REGEX, text)[-2:] == ["\n\n", "  "]
    assert tokens_across_line_breaks(tokenizer) == []
    assert tokens_across_line_breaks(tokenizer, extra=[b"\n  "]) == [b"\n  "]
    lm = runners["f32"]
    rng = np.random.default_rng(0)
    alphabet = list("ab Z9'.,!\n\r\t\u00e9\u00a0") + ["'s", "  ", "\n\n", "123", "\u4e2d"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet, size=rng.integers(1, 14)))
        assert tokenizer.encode_ordinary(text) == lm.tokenize(text), repr(text)


def test_f32_file_gives_minillms_greedy_tokens(runners, greedy_paths):
    lm = runners["f32"]
    for ids, seq, logits in greedy_paths:
        assert lm.greedy(ids, NEW_TOKENS) == seq[0, len(ids) :].tolist()
        drift = (lm(seq)[0][0] - logits).abs().max().item()
        assert drift < 0.05, f"llama.cpp's f32 logits differ from minillm's by {drift:.4f}"


@pytest.mark.parametrize("qtype", ["f16", "q8_0"])
def test_f16_and_q8_0_pick_minillms_token_except_at_near_ties(runners, greedy_paths, qtype):
    lm = runners[qtype]
    steps = flips = 0
    for ids, seq, logits in greedy_paths:
        n = len(ids)
        theirs = lm(seq)[0][0][n - 1 : -1].argmax(-1)  # their pick at each step of our path
        ours = seq[0, n:]
        ref = logits[n - 1 : -1]
        for t in torch.nonzero(theirs != ours).flatten().tolist():
            margin = (ref[t, ours[t]] - ref[t, theirs[t]]).item()
            assert margin < NEAR_TIE, (
                f"{qtype}: at step {t} llama.cpp picked {int(theirs[t])} over minillm's "
                f"{int(ours[t])}, which led by {margin:.3f} (not a near tie)"
            )
            flips += 1
        steps += len(ours)
    print(f"{qtype}: {steps - flips}/{steps} greedy steps agree; the rest are near ties")


def test_q4_0_and_mixed_report_their_agreement(runners, greedy_paths):
    """Q4_0 rounds the tied embedding/output matrix to 4 bits as well; the mixed recipe keeps it
    at 8 bits and agrees more often, with a lower KL along the same paths."""
    report = {}
    for qtype in ("q4_0", "mixed"):
        lm = runners[qtype]
        agree = total = 0
        kl = []
        first_divergence = []
        for ids, seq, logits in greedy_paths:
            n = len(ids)
            theirs = lm(seq)[0][0][n - 1 : -1]
            ours = seq[0, n:]
            agree += int((theirs.argmax(-1) == ours).sum())
            total += len(ours)
            p = torch.log_softmax(logits[n - 1 : -1].double(), -1)
            q = torch.log_softmax(theirs.double(), -1)
            kl.append((p.exp() * (p - q)).sum(-1).mean().item())
            free = lm.greedy(ids, NEW_TOKENS)
            first_divergence.append(
                next(
                    (
                        i
                        for i, (a, b) in enumerate(zip(free, ours.tolist(), strict=False))
                        if a != b
                    ),
                    NEW_TOKENS,
                )
            )
        report[qtype] = dict(top1=agree / total, kl=float(np.mean(kl)), first=first_divergence)
        print(
            f"{qtype}: top-1 {agree}/{total} along minillm's greedy paths, KL {np.mean(kl):.4f}, "
            f"free-running greedy first differs at tokens {first_divergence}"
        )
    for qtype, r in report.items():
        assert r["top1"] >= 0.6, f"{qtype}: top-1 agreement {r['top1']:.2f} < 0.6: a broken file?"
    assert report["mixed"]["kl"] < report["q4_0"]["kl"], report


def test_chat_model_file_carries_the_template_and_stops_at_end(course, tmp_path):
    model, tokenizer = course
    chat_tok = add_chat_tokens(tokenizer)
    chat_model = resize_token_embeddings(model, chat_tok.vocab_size).eval()
    lm = LlamaCppLM(export_gguf(chat_model, chat_tok, tmp_path / "chat.gguf", "f32"))
    try:
        llm = lm.llm
        end = chat_tok.special_tokens[END]
        assert llm.token_eos() == end and llm.token_bos() == chat_tok.eot_id
        from jinja2 import Template

        messages = [{"role": "user", "content": "Who is Romeo?"}]
        text = Template(llm.metadata["tokenizer.chat_template"]).render(
            messages=messages, add_generation_prompt=True
        )
        fmt = ChatFormat(chat_tok)
        assert text == fmt.render(messages, add_generation_prompt=True)
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert ids == fmt.encode(messages, add_generation_prompt=True).ids
        answer = llm.create_chat_completion(messages, temperature=0.0, max_tokens=24)
        with torch.inference_mode():
            seq = chat_model.generate(torch.tensor([ids]), 24, temperature=0)[0, len(ids) :]
        new = seq.tolist()
        new = new[: new.index(end)] if end in new else new
        assert answer["choices"][0]["message"]["content"] == chat_tok.decode(new)
    finally:
        lm.close()
