"""Instruction tuning pieces: chat template and mask (against transformers), zero gradient on
masked positions, greedy exact match, the classification head's padding invariance, the loop."""

from __future__ import annotations

import pytest
import torch

from minillm.finetune import (
    CHAT_TEMPLATE,
    CHAT_TOKENS,
    ChatFormat,
    SequenceClassifier,
    add_chat_tokens,
    answer_exact_match,
    apply_lora,
    collate,
    last_token_index,
    masked_cross_entropy,
    resize_token_embeddings,
    sft_loss,
    to_hf_tokenizer,
    train_steps,
)
from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer

TEXT = (
    "Who speaks the last line? HAMLET: To be, or not to be, that is the question. "
    "Comedy, tragedy or history? Now is the winter of our discontent. "
) * 20

CONVERSATIONS = [
    [
        {"role": "user", "content": "Who speaks?\nHAMLET: to be"},
        {"role": "assistant", "content": "HAMLET"},
    ],
    [
        {"role": "user", "content": "Comedy, tragedy or history?"},
        {"role": "assistant", "content": "tragedy"},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes, quite sure."},
    ],
]


@pytest.fixture(scope="module")
def tok():
    base = BPETokenizer.train(
        TEXT, vocab_size=300, pattern="gpt4", special_tokens=["<|endoftext|>"]
    )
    return add_chat_tokens(base)


def tiny_gpt(vocab_size, seed=0, n_layer=1):
    torch.manual_seed(seed)
    config = GPTConfig.preset(
        "course", n_layer=n_layer, n_embd=32, n_head=2, vocab_size=vocab_size, block_size=64
    )
    return GPT(config).eval()


def test_chat_tokens_are_added_after_the_vocabulary(tok):
    specials = tok.special_tokens
    ids = [specials[t] for t in CHAT_TOKENS]
    assert ids == [tok.vocab_size - 3, tok.vocab_size - 2, tok.vocab_size - 1]
    assert add_chat_tokens(tok).special_tokens == specials  # idempotent


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_template_and_mask_equal_transformers(tok, conversation):
    pytest.importorskip("transformers")
    chat = ChatFormat(tok)
    hf = to_hf_tokenizer(tok)
    assert hf.chat_template == CHAT_TEMPLATE
    ours = chat.encode(conversation)
    theirs = hf.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ours.ids == list(theirs["input_ids"])
    assert ours.mask == list(theirs["assistant_masks"])
    assert chat.render(conversation) == hf.apply_chat_template(conversation, tokenize=False)
    prompt = hf.apply_chat_template(conversation[:1], tokenize=True, add_generation_prompt=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert chat.encode(conversation[:1], add_generation_prompt=True).ids == list(prompt)


def test_hf_tokenizer_gives_the_same_ids_as_ours(tok):
    pytest.importorskip("transformers")
    text = TEXT[:500] + " Ünïcödé 12345 \n\n  spaces"
    assert to_hf_tokenizer(tok).encode(text, add_special_tokens=False) == tok.encode_ordinary(text)


def test_mask_covers_exactly_the_answer_and_its_end_token(tok):
    chat = ChatFormat(tok)
    enc = chat.example("Comedy, tragedy or history?", "tragedy")
    scored = [i for i, m in zip(enc.ids, enc.mask, strict=True) if m]
    assert scored == tok.encode_ordinary("tragedy") + [tok.special_tokens["<|end|>"]]


def test_masked_positions_get_zero_gradient(tok):
    chat = ChatFormat(tok)
    batch = [chat.encode(c) for c in CONVERSATIONS]
    ids, targets, _ = collate(batch, pad_id=0)
    model = tiny_gpt(tok.vocab_size)
    # the gradient of the loss with respect to the logits is zero at every masked position
    logits, _ = model(ids)
    logits.retain_grad()
    masked_cross_entropy(logits, targets).backward()
    masked = targets == -100
    assert bool(masked.any()) and bool((~masked).any())
    assert torch.count_nonzero(logits.grad[masked]) == 0
    assert bool((logits.grad[~masked].abs().sum(-1) > 0).all())
    # and changing masked target tokens (questions, pads) leaves the loss unchanged
    base = masked_cross_entropy(logits.detach(), targets)
    noisy = targets.clone()
    noisy[masked] = -100
    assert torch.equal(masked_cross_entropy(logits.detach(), noisy), base)


def test_collate_pads_right_and_left(tok):
    chat = ChatFormat(tok)
    batch = [chat.encode(c) for c in CONVERSATIONS]
    ids_r, tgt_r, att_r = collate(batch, pad_id=5)
    ids_l, tgt_l, att_l = collate(batch, pad_id=5, side="left")
    n = len(batch[0].ids)
    assert ids_r[0, :n].tolist() == batch[0].ids and bool((ids_r[0, n:] == 5).all())
    assert ids_l[0, -n:].tolist() == batch[0].ids and att_l[0].sum() == n
    assert torch.equal(tgt_r[0, :n], tgt_l[0, -n:])
    assert (tgt_r[0, n - 1 :] == -100).all()
    with pytest.raises(ValueError, match="side"):
        collate(batch, pad_id=0, side="middle")


def test_exact_match_equals_greedy_generation(tok):
    chat = ChatFormat(tok)
    model = tiny_gpt(tok.vocab_size, seed=3)
    end = tok.special_tokens["<|end|>"]
    examples = []
    for question in ["Who speaks?", "Comedy, tragedy or history?", "To be"]:
        prompt = torch.tensor([chat.prompt_ids(question)])
        out = model.generate(prompt, 4, temperature=0)[0, prompt.shape[1] :].tolist()
        answer_ids = out[: out.index(end)] if end in out else out
        examples.append((question, tok.decode(answer_ids), end in out))
        examples.append((question, tok.decode(answer_ids) + "x", False))
    encoded = [chat.example(q, a) for q, a, _ in examples]
    ids, targets, _ = collate(encoded, pad_id=0)
    hits = answer_exact_match(model, ids, targets).tolist()
    assert hits == [float(ok) for _, _, ok in examples]


def test_classifier_is_padding_side_invariant():
    model = tiny_gpt(50, n_layer=2)
    clf = SequenceClassifier(model, 3).eval()
    seqs = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    T = 6

    def pad(side):
        ids = torch.full((3, T), 0)
        att = torch.zeros(3, T, dtype=torch.long)
        for b, s in enumerate(seqs):
            where = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
            ids[b, where], att[b, where] = torch.tensor(s), 1
        return ids, att

    with torch.no_grad():
        right, left = clf(*pad("right")), clf(*pad("left"))
        alone = torch.cat(
            [clf(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs]
        )
    torch.testing.assert_close(right, left, atol=1e-6, rtol=0)
    torch.testing.assert_close(right, alone, atol=1e-6, rtol=0)
    # reading the last position of a right-padded batch (the bug) gives something else
    ids, att = pad("right")
    with torch.no_grad():
        wrong = clf.head(model._hidden(ids, 0, None)[:, -1])
    assert not torch.allclose(wrong, right, atol=1e-4)


def test_last_token_index():
    att = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_index(att).tolist() == [1, 3, 3]
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.zeros(1, 3, dtype=torch.long))


def test_train_steps_lowers_the_sft_loss_and_trains_only_adapters(tok):
    chat = ChatFormat(tok)
    ids, targets, _ = collate([chat.encode(c) for c in CONVERSATIONS], pad_id=0)
    model = apply_lora(tiny_gpt(tok.vocab_size), targets=["c_attn", "c_fc"], r=4)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    log = train_steps(model, lambda step: sft_loss(model, ids, targets), steps=40, lr=3e-2)
    assert log.losses[-1] < log.losses[0] - 0.3, log.losses
    assert log.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"{name} changed but is frozen"


def test_train_steps_rejects_a_frozen_model():
    model = tiny_gpt(20)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train_steps(model, lambda step: torch.tensor(0.0), steps=1)


def test_resize_token_embeddings_keeps_old_logits():
    model = tiny_gpt(40)
    grown = resize_token_embeddings(model, 43).eval()
    idx = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(grown(idx)[0][..., :40], model(idx)[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="smaller"):
        resize_token_embeddings(model, 10)


def test_chat_format_rejects_bad_messages(tok):
    chat = ChatFormat(tok)
    with pytest.raises(ValueError, match="role"):
        chat.encode([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="at least one"):
        chat.encode([])
    with pytest.raises(ValueError, match="add_chat_tokens"):
        ChatFormat(BPETokenizer.train(TEXT, vocab_size=260, special_tokens=["<|endoftext|>"]))
