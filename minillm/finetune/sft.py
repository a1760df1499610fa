"""Instruction tuning: a chat template, special tokens, loss masks and padded batches (lesson 08).

A conversation is rendered as::

    <|user|>\\n{question}<|end|>\\n<|assistant|>\\n{answer}<|end|>\\n

with three special tokens added to the BPE tokenizer (:func:`add_chat_tokens`) and the model's
embedding grown to match (:func:`resize_token_embeddings`). The loss mask is 1 exactly on the
assistant's tokens and its closing ``<|end|>`` (so the model learns to answer *and to stop*),
0 on everything else: the question is context, never a target. :func:`collate` pads a list of
encoded conversations into ``(ids, targets, attention mask)`` where masked positions carry the
target -100, which :class:`minillm.model.GPT`'s loss ignores, so they contribute zero gradient.

:data:`CHAT_TEMPLATE` is the same format as a Jinja ``chat_template`` (with ``{% generation %}``
around the assistant's part), and :func:`to_hf_tokenizer` exports the tokenizer to a
``transformers`` fast tokenizer, so ``apply_chat_template(..., return_assistant_tokens_mask=True)``
gives the same ids and mask as :meth:`ChatFormat.encode`. A chat model's folder stores the
template beside its tokenizer as ``chat_template.jinja`` (:func:`save_chat_template`, the file
name ``transformers`` itself uses), and :func:`load_chat_template` refuses a template that
:class:`ChatFormat` does not render.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from minillm.model.config import GPTConfig
from minillm.model.gpt import GPT
from minillm.tokenizer.bpe import BPETokenizer
from minillm.tokenizer.gpt2 import _bytes_to_unicode

__all__ = [
    "USER",
    "ASSISTANT",
    "END",
    "CHAT_TOKENS",
    "CHAT_TEMPLATE",
    "add_chat_tokens",
    "resize_token_embeddings",
    "ChatFormat",
    "Encoded",
    "collate",
    "masked_cross_entropy",
    "to_hf_tokenizer",
    "CHAT_TEMPLATE_FILE",
    "has_chat_tokens",
    "save_chat_template",
    "load_chat_template",
]

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS: tuple[str, ...] = (USER, ASSISTANT, END)
ROLES = ("user", "assistant")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] }}{{ '<|end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- else -%}{{ raise_exception('roles must be user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)
"""The chat format as a Jinja template for ``transformers``' ``apply_chat_template``."""

CHAT_TEMPLATE_FILE = "chat_template.jinja"
"""The template's file beside a chat model's tokenizer (``transformers`` 5 uses the same name)."""


def has_chat_tokens(tokenizer) -> bool:
    """Whether ``tokenizer`` has every one of :data:`CHAT_TOKENS` (it can encode chats)."""
    return set(CHAT_TOKENS) <= set(tokenizer.special_tokens)


def save_chat_template(folder: str | os.PathLike, template: str = CHAT_TEMPLATE) -> Path:
    """Write ``template`` to ``folder/chat_template.jinja`` atomically; returns the path."""
    path = Path(folder) / CHAT_TEMPLATE_FILE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(template)
    os.replace(tmp, path)
    return path


def load_chat_template(folder: str | os.PathLike) -> str | None:
    """The template stored in ``folder/chat_template.jinja``, or None when there is none.

    Raises:
        ValueError: the stored template is not :data:`CHAT_TEMPLATE`, the only one that
            :class:`ChatFormat` renders (training and serving would then disagree).
    """
    path = Path(folder) / CHAT_TEMPLATE_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if text != CHAT_TEMPLATE:
        raise ValueError(
            f"{path} is not minillm's chat template (CHAT_TEMPLATE): ChatFormat renders only that "
            "one; restore the file or re-export the model"
        )
    return text


def add_chat_tokens(tokenizer):
    """A copy of a :class:`minillm.tokenizer.BPETokenizer` with :data:`CHAT_TOKENS` added.

    New ids come after the existing ones (``vocab_size``, ``vocab_size + 1``, ...); tokens the
    tokenizer already has keep their ids.
    """

    specials = tokenizer.special_tokens
    next_id = tokenizer.vocab_size
    for token in CHAT_TOKENS:
        if token not in specials:
            specials[token] = next_id
            next_id += 1
    return BPETokenizer(
        tokenizer._ranks,  # same package: the ordinary tokens are shared unchanged
        pattern=tokenizer.pattern,
        special_tokens=specials,
        merges=tokenizer.merges,
        name=tokenizer.name,
    )


def resize_token_embeddings(model, vocab_size: int):
    """A :class:`minillm.model.GPT` with ``vocab_size`` embedding rows, the old ones copied.

    New rows start at the mean of the old embeddings (a neutral, in-distribution start; random
    rows of the init scale would make the new tokens' logits arbitrary). The output layer is
    tied, so it grows with the embedding. Returns a new model in the same mode.

    Raises:
        ValueError: ``vocab_size`` is smaller than the model's.
    """

    old = model.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the model's {old}")
    config = GPTConfig.from_dict({**model.config.to_dict(), "vocab_size": vocab_size})
    new = GPT(config).to(model.transformer.wte.weight.device)
    state = model.state_dict()
    with torch.no_grad():
        wte = state["transformer.wte.weight"]
        grown = torch.cat([wte, wte.mean(0, keepdim=True).expand(vocab_size - old, -1)])
        state["transformer.wte.weight"] = grown
        if "lm_head.weight" in state:
            state["lm_head.weight"] = (
                grown
                if config.tie_weights
                else torch.cat(
                    [
                        state["lm_head.weight"],
                        state["lm_head.weight"].mean(0, keepdim=True).expand(vocab_size - old, -1),
                    ]
                )
            )
    new.load_weights(state)
    return new.train(model.training)


@dataclass(frozen=True)
class Encoded:
    """One encoded conversation: token ids and the loss mask (1 = a target to learn)."""

    ids: list[int]
    mask: list[int]


class ChatFormat:
    """Render and encode conversations in the course chat format.

    Args:
        tokenizer: a tokenizer that has :data:`CHAT_TOKENS` (see :func:`add_chat_tokens`).
    """

    def __init__(self, tokenizer) -> None:
        specials = tokenizer.special_tokens
        missing = [t for t in CHAT_TOKENS if t not in specials]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {missing}; call add_chat_tokens(tokenizer) first"
            )
        self.tokenizer = tokenizer
        self.user_id, self.assistant_id, self.end_id = (specials[t] for t in CHAT_TOKENS)
        self.newline = tokenizer.encode_ordinary("\n")

    @staticmethod
    def _check(messages: Sequence[dict]) -> None:
        if not messages:
            raise ValueError("a conversation needs at least one message")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ValueError(
                    f"message {i} must be a dict with role 'user' or 'assistant', got {message!r}"
                )
            if not isinstance(message.get("content"), str):
                raise TypeError(f"message {i}: content must be a str")

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as text, special tokens spelled out."""
        self._check(messages)
        parts = []
        for message in messages:
            tag = USER if message["role"] == "user" else ASSISTANT
            parts.append(f"{tag}\n{message['content']}{END}\n")
        if add_generation_prompt:
            parts.append(f"{ASSISTANT}\n")
        return "".join(parts)

    def encode(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> Encoded:
        """Token ids of :meth:`render`'s text and the loss mask over them.

        The ids are exactly those of ``transformers``' ``apply_chat_template`` with
        :data:`CHAT_TEMPLATE`: the text between two special tokens (a role tag's newline and the
        content after it) is encoded as one piece, as a ``tokenizers`` tokenizer does, so a
        content that starts with a newline merges with the tag's newline the same way. The one
        difference is deliberate: a content holding a special token's text (``"<|end|>"``) stays
        ordinary text here, so a message cannot inject a control token; ``transformers`` parses it.

        The mask is 1 on every token that holds a byte of an assistant message's content, and on
        its ``<|end|>``; 0 on role tags, newlines and user messages.
        """
        self._check(messages)
        ids: list[int] = []
        mask: list[int] = []
        encode = self.tokenizer.encode_ordinary
        for message in messages:
            tag = self.user_id if message["role"] == "user" else self.assistant_id
            run = encode("\n" + message["content"])
            if message["role"] == "user":
                flags = [0] * len(run)
            else:  # tokens wholly inside the tag's newline are context; the rest are answer
                flags, seen = [], 0
                for token in run:
                    flags.append(int(seen + len(self.tokenizer.token_bytes(token)) > 1))
                    seen += len(self.tokenizer.token_bytes(token))
            ids += [tag, *run, self.end_id, *self.newline]
            mask += [0, *flags, int(message["role"] == "assistant"), *[0] * len(self.newline)]
        if add_generation_prompt:
            ids += [self.assistant_id, *self.newline]
            mask += [0] * (1 + len(self.newline))
        return Encoded(ids, mask)

    def prompt_ids(self, question: str) -> list[int]:
        """The ids that ask ``question`` and open the assistant's turn (for generation)."""
        return self.encode([{"role": "user", "content": question}], add_generation_prompt=True).ids

    def example(self, question: str, answer: str) -> Encoded:
        """One question-answer pair as a two-message conversation."""
        return self.encode(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )


def collate(
    batch: Sequence[Encoded], pad_id: int, max_len: int | None = None, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad encoded conversations into ``(ids, targets, attention)`` tensors, each (B, T).

    ``targets[b, t]`` is the token at ``t + 1`` when the mask there is 1, else -100 (ignored by
    the loss): a padded position, a question token or a role tag is never a target. Sequences
    longer than ``max_len`` keep their *first* ``max_len`` tokens.

    Args:
        batch: encoded conversations.
        pad_id: id for padding (any valid id; padded positions are never targets).
        max_len: cut longer sequences; default the longest in the batch.
        side: "right" (for training) or "left" (prompts for batched generation).
    """
    if not batch:
        raise ValueError("collate needs at least one example")
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    longest = max(len(e.ids) for e in batch)
    T = min(longest, max_len) if max_len else longest
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), T), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), T), dtype=torch.long)
    for b, example in enumerate(batch):
        seq = torch.tensor(example.ids[:T], dtype=torch.long)
        mask = torch.tensor(example.mask[:T], dtype=torch.bool)
        tgt = torch.full_like(seq, -100)
        tgt[:-1] = torch.where(mask[1:], seq[1:], torch.full_like(seq[1:], -100))
        n = len(seq)
        where = slice(0, n) if side == "right" else slice(T - n, T)
        ids[b, where], targets[b, where], attention[b, where] = seq, tgt, 1
    return ids, targets, attention


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -100.

    ``L = -(1/|M|) Σ_{t∈M} log p(x_{t+1} | x_{≤t})`` with ``M`` the unmasked positions.

    Raises:
        ValueError: no position is unmasked (the mean would be 0/0).
    """
    keep = targets != -100
    if not bool(keep.any()):
        raise ValueError("every target is masked: nothing to learn from this batch")
    return torch.nn.functional.cross_entropy(logits[keep].float(), targets[keep])


def to_hf_tokenizer(tokenizer, chat_template: str = CHAT_TEMPLATE):
    """The tokenizer as a ``transformers`` ``PreTrainedTokenizerFast`` with the chat template.

    Byte-level BPE with the same regex pre-tokenizer, vocabulary, merges (in training order)
    and special tokens, so it gives the same ids; ``chat_template`` is attached.

    Raises:
        ValueError: the tokenizer has no recorded merges (needed by ``tokenizers``' BPE).
    """
    try:
        import transformers
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "to_hf_tokenizer needs transformers: pip install 'minillm[course]'"
        ) from err

    if not tokenizer.merges:
        raise ValueError("the tokenizer has no merges recorded; train or load one that does")
    byte_char = _bytes_to_unicode()
    ranks = tokenizer._ranks  # same package

    def spell(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    id_to_bytes = {i: t for t, i in ranks.items()}
    vocab = {spell(t): i for t, i in ranks.items()}
    specials = tokenizer.special_tokens
    vocab.update(specials)
    merges = [
        (spell(id_to_bytes[a]), spell(id_to_bytes[b]))
        for a, b, _ in sorted(tokenizer.merges, key=lambda m: m[2])
    ]
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=core)
    end = END if END in specials else None
    hf.eos_token = end or next(iter(specials), None)
    hf.pad_token = hf.eos_token
    hf.chat_template = chat_template
    return hf
