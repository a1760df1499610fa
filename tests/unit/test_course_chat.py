"""course_model("chat"): the shipped chat model, its card, its template, and reproducible training."""

from __future__ import annotations

import shutil

import pytest
import torch

from minillm import course
from minillm.finetune import CHAT_TEMPLATE, ChatFormat, load_chat_template
from minillm.train import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def card():
    found = course.chat_card()
    assert found is not None, f"no shipped chat model in {course.CHAT_DIR}"
    return found


def test_the_shipped_chat_model_matches_its_card_and_recipe(card):
    for name, digest in card["sha256"].items():
        assert course.file_sha256(course.CHAT_DIR / name) == digest
    size = sum(p.stat().st_size for p in course.CHAT_DIR.iterdir())
    assert size <= 10_000_000, f"the chat model's files take {size:,} bytes, more than 10 MB"
    assert card["recipe"] == course.CHAT_TRAIN
    assert card["base_weights_sha256"] == course.shipped_card()["weights_sha256"]
    assert load_chat_template(course.CHAT_DIR) == CHAT_TEMPLATE
    for task in card["recipe"]["tasks"]:
        scores = card["scores"][task]
        assert {"base model, prompted", "chat model", "best no-model baseline"} <= set(scores)


def test_course_model_chat_loads_it_and_it_answers_through_the_template(card):
    model, tokenizer = course.course_model("chat", verbose=False)
    base, _ = course.course_model(verbose=False)
    assert model.config.vocab_size == base.config.vocab_size + 3  # the three chat tokens
    chat = ChatFormat(tokenizer)
    prompt = card["answers"][1]["prompt"]  # a genre question from a held-out play
    ids = torch.tensor([chat.prompt_ids(prompt)])
    out = model.generate(ids, 6, temperature=0.0)[0, ids.shape[1] :].tolist()
    assert chat.end_id in out, "the chat model did not stop with <|end|>"
    answer = tokenizer.decode(out[: out.index(chat.end_id)])
    assert answer == card["answers"][1]["chat model"]


def test_a_bad_model_name_is_refused():
    with pytest.raises(ValueError, match="base, chat"):
        course.course_model("instruct")


def test_a_damaged_shipped_chat_file_is_refused(tmp_path, monkeypatch, card):
    copy = tmp_path / "chat_model"
    shutil.copytree(course.CHAT_DIR, copy)
    with open(copy / course.TOKENIZER_NAME, "a") as handle:
        handle.write("\n")
    monkeypatch.setattr(course, "CHAT_DIR", copy)
    with pytest.raises(CheckpointError, match="retrain=True"):
        course.load_shipped_chat_model()


def test_chat_training_is_reproducible_and_writes_a_chat_folder(tmp_path):
    small = {"steps": 2, "per_play": 2, "batch_size": 4}
    first = course.train_chat_model(tmp_path / "a", verbose=False, **small)
    course.train_chat_model(tmp_path / "b", verbose=False, **small)
    assert first["recipe"] == {**course.CHAT_TRAIN, **small}
    model, tokenizer = course._load_chat_folder(tmp_path / "a")
    ChatFormat(tokenizer)
    a = load_checkpoint(tmp_path / "a" / course.SHIPPED_WEIGHTS).model_state
    b = load_checkpoint(tmp_path / "b" / course.SHIPPED_WEIGHTS).model_state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="unknown chat recipe"):
        course.train_chat_model(tmp_path / "c", verbose=False, epochs=3)


def test_the_server_answers_with_the_chat_model_through_the_template(card):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from minillm.serve import create_app

    model, tokenizer = course.course_model("chat", verbose=False)
    with TestClient(create_app(model, tokenizer, n_slots=2)) as client:
        assert client.get("/v1/models").json()["data"][0]["chat_format"] == "chat-template"
        reply = client.post(
            "/v1/chat/completions",
            json={
                "model": "minillm",
                "messages": [{"role": "user", "content": card["answers"][1]["prompt"]}],
                "max_tokens": 6,
                "temperature": 0,
            },
        ).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop"  # stopped by <|end|>, not by the token limit
    assert choice["message"]["content"] == card["answers"][1]["chat model"]
