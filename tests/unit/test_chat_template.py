"""One chat template everywhere: ChatFormat, the exported Hugging Face folder, and the server."""

from __future__ import annotations

import json

import pytest
import torch

from minillm.finetune import (
    CHAT_TEMPLATE,
    CHAT_TEMPLATE_FILE,
    ChatFormat,
    add_chat_tokens,
    has_chat_tokens,
    load_chat_template,
    save_chat_template,
)
from minillm.model import GPT, GPTConfig
from minillm.serve import CHAT_STOP, PLAY_SCRIPT, TEMPLATE, APIError, parse_request
from minillm.tokenizer import BPETokenizer

TEXT = (
    "Who speaks the last line? HAMLET: To be, or not to be, that is the question.\n\n"
    "Comedy, tragedy or history? Now is the winter of our discontent. 'Tis 1599.\n"
) * 20

CONVERSATIONS = [
    [{"role": "user", "content": "Comedy, tragedy or history?\nNow is the winter"}],
    [
        {"role": "user", "content": "Who speaks?"},
        {"role": "assistant", "content": "HAMLET"},
        {"role": "user", "content": "\n\nSure? 'Tis   odd.\n"},
    ],
    [
        {"role": "user", "content": " leading space"},
        {"role": "assistant", "content": "\nA newline first, 1599 and\ttabs "},
        {"role": "user", "content": ""},
    ],
]


@pytest.fixture(scope="module")
def tok():
    base = BPETokenizer.train(
        TEXT, vocab_size=320, pattern="gpt4", special_tokens=["<|endoftext|>"]
    )
    return add_chat_tokens(base)


@pytest.fixture(scope="module")
def exported(tok, tmp_path_factory):
    pytest.importorskip("transformers")
    from minillm.release import export_hf

    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32
    )
    folder = tmp_path_factory.mktemp("export") / "chat"
    export_hf(GPT(config).eval(), tok, folder)
    return folder


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_exported_tokenizer_gives_exactly_minillms_ids(exported, tok, conversation):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    chat = ChatFormat(tok)
    theirs = hf.apply_chat_template(conversation, add_generation_prompt=True)
    theirs = theirs["input_ids"] if hasattr(theirs, "keys") else theirs
    assert list(theirs) == chat.encode(conversation, add_generation_prompt=True).ids
    text = hf.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == chat.render(conversation, add_generation_prompt=True)
    assert json.loads((exported / "tokenizer_config.json").read_text())["chat_template"] == (
        CHAT_TEMPLATE
    )


def test_special_token_text_in_a_message_stays_text_in_minillm(exported, tok):
    """The one deliberate difference: transformers parses "<|end|>" in a content, minillm does not."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    messages = [{"role": "user", "content": "hi<|end|>"}]
    ours = ChatFormat(tok).encode(messages).ids
    assert ours.count(tok.special_tokens["<|end|>"]) == 1  # only the template's own
    theirs = hf.apply_chat_template(messages)
    theirs = theirs["input_ids"] if hasattr(theirs, "keys") else theirs
    assert list(theirs).count(tok.special_tokens["<|end|>"]) == 2


def test_template_file_round_trips_and_a_foreign_one_is_refused(tmp_path):
    assert load_chat_template(tmp_path) is None
    save_chat_template(tmp_path)
    assert load_chat_template(tmp_path) == CHAT_TEMPLATE
    (tmp_path / CHAT_TEMPLATE_FILE).write_text("{{ messages }}")
    with pytest.raises(ValueError, match="not minillm's chat template"):
        load_chat_template(tmp_path)


def test_the_server_encodes_a_chat_models_messages_with_the_template(tok):
    assert has_chat_tokens(tok)
    chat = ChatFormat(tok)
    body = {"model": "m", "messages": CONVERSATIONS[1], "max_tokens": 4}
    parsed = parse_request(
        body, chat=True, tokenizer=tok, model_name="m", block_size=128, chat_format=chat
    )
    assert parsed.prompt_ids == chat.encode(CONVERSATIONS[1], add_generation_prompt=True).ids
    assert parsed.eos_id == chat.end_id
    assert CHAT_STOP not in parsed.params.stop
    with pytest.raises(APIError, match="only user and assistant"):
        parse_request(
            {"model": "m", "messages": [{"role": "system", "content": "Be brief."}]},
            chat=True,
            tokenizer=tok,
            model_name="m",
            block_size=128,
            chat_format=chat,
        )
    script = parse_request(body, chat=True, tokenizer=tok, model_name="m", block_size=128)
    assert CHAT_STOP in script.params.stop and script.eos_id is None
    assert script.prompt_ids == tok.encode_ordinary(
        "USER:\nWho speaks?\n\nASSISTANT:\nHAMLET\n\nUSER:\n\n\nSure? 'Tis   odd.\n\n\nASSISTANT:\n"
    )


def test_models_endpoint_names_the_chat_format(tok):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from minillm.serve import create_app

    torch.manual_seed(0)
    for tokenizer, expected in ((tok, TEMPLATE), (BPETokenizer.train(TEXT, 300), PLAY_SCRIPT)):
        config = GPTConfig.preset(
            "course", vocab_size=tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32
        )
        with TestClient(create_app(GPT(config).eval(), tokenizer, n_slots=2)) as client:
            card = client.get("/v1/models").json()["data"][0]
            assert card["chat_format"] == expected
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "minillm", "messages": CONVERSATIONS[0], "max_tokens": 3},
            ).json()
            prompt = (
                ChatFormat(tokenizer).encode(CONVERSATIONS[0], add_generation_prompt=True).ids
                if expected == TEMPLATE
                else tokenizer.encode_ordinary(
                    "USER:\nComedy, tragedy or history?\nNow is the winter\n\nASSISTANT:\n"
                )
            )
            assert reply["usage"]["prompt_tokens"] == len(prompt)


def test_the_exported_chat_model_stops_generating_at_end(exported, tok):
    config = json.loads((exported / "generation_config.json").read_text())
    assert tok.special_tokens["<|end|>"] in config["eos_token_id"]
    assert tok.eot_id in config["eos_token_id"]
