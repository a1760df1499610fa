"""``minillm finetune``: every method runs, checkpoints resume exactly, bad input is one line."""

from __future__ import annotations

import json
import random

import pytest
import torch

from minillm.cli import finetune_grpo, main
from minillm.cli.finetune_recipe import RESULTS_NAME, FinetuneSettings, run_finetune
from minillm.data import Document
from minillm.finetune import load_adapter
from minillm.model import GPT, GPTConfig
from minillm.tokenizer import BPETokenizer
from minillm.train import CHECKPOINT_NAME, TOKENIZER_NAME, load_checkpoint, save_checkpoint

NAMES = ["HAMLET", "HORATIO", "OPHELIA", "First Witch"]
WORDS = [
    "thou",
    "art",
    "my",
    "lord",
    "and",
    "king",
    "the",
    "night",
    "is",
    "dark",
    "sweet",
    "love",
    "doth",
    "speak",
    "of",
    "death",
]


def fake_play(seed: int) -> str:
    rng = random.Random(seed)
    blocks = []
    for _ in range(30):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(5, 8))).capitalize() for _ in range(2)]
        blocks.append(f"{rng.choice(NAMES)}.\n" + "\n".join(lines))
    return "\n\n".join(blocks)


# Two training plays, one held-out play (Macbeth is in minillm.finetune.instructions.EVAL_PLAYS).
DOCS = [
    Document(name=t.lower().replace(" ", "_"), text=fake_play(i), title=t)
    for i, t in enumerate(["Hamlet", "The Tempest", "Macbeth"])
]


@pytest.fixture(scope="module")
def base():
    text = (
        " ".join(WORDS + NAMES) + " Answer: Who speaks the last line? Comedy, tragedy or history?"
    )
    tokenizer = BPETokenizer.train(text * 4, 300, special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    config = GPTConfig.preset(
        "course", vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=32
    )
    return GPT(config).eval(), tokenizer


@pytest.fixture(scope="module")
def base_checkpoint(base, tmp_path_factory):
    model, tokenizer = base
    folder = tmp_path_factory.mktemp("base")
    save_checkpoint(
        folder / CHECKPOINT_NAME, model, step=0, tokenizer_fingerprint=tokenizer.fingerprint()
    )
    tokenizer.save(folder / TOKENIZER_NAME)
    return folder


def settings(method: str, **extra) -> FinetuneSettings:
    fixed = dict(steps=4, warmup=1, batch_size=4, per_play=3, n_resamples=50)
    return FinetuneSettings(method=method, **{**fixed, **extra})


def run(method, out, base, **kwargs):
    model, tokenizer = base
    extra = kwargs.pop("settings", {})
    return run_finetune(
        settings(method, **extra),
        out,
        base=model,
        tokenizer=tokenizer,
        docs=DOCS,
        verbose=False,
        **kwargs,
    )


def weights(folder) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / CHECKPOINT_NAME).model_state


@pytest.mark.parametrize("method", ["lora", "sft", "classify"])  # full: as sft, plain format
def test_a_resumed_run_equals_an_uninterrupted_one(method, base, tmp_path):
    whole = run(method, tmp_path / "whole", base)
    part = run(method, tmp_path / "part", base, stop_after=2, save_every=1)
    assert not part["complete"] and part["step"] == 2
    resumed = run(method, tmp_path / "part", base, resume=True)
    assert resumed["complete"] and resumed["step"] == 4
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "part")
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"resumed weights differ from the uninterrupted run's: {changed[:4]}"
    for key in ("exact_match", "accuracy"):
        if key in whole:
            assert resumed[key] == whole[key]
    saved = json.loads((tmp_path / "part" / RESULTS_NAME).read_text())
    assert saved["trainable_parameters"] == whole["trainable_parameters"] > 0


def test_lora_trains_only_the_adapters_and_writes_a_peft_adapter(base, tmp_path):
    model, _ = base
    result = run("lora", tmp_path, base, settings={"rank": 2})
    trainable = result["trainable_parameters"]
    assert 0 < trainable < 0.1 * result["total_parameters"]
    adapted = load_adapter(GPT(model.config), tmp_path / "adapter")
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == trainable
    before = {k: v for k, v in model.state_dict().items()}
    after = weights(tmp_path)
    frozen = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert not frozen, f"LoRA changed frozen weights: {frozen[:4]}"


def test_sft_then_dpo_from_the_sft_folder(base, base_checkpoint, tmp_path):
    sft = run("sft", tmp_path / "sft", base)
    assert set(sft["by_task"]) == {"speaker", "genre"}
    chat_tokenizer = BPETokenizer.load(tmp_path / "sft" / TOKENIZER_NAME)
    assert "<|end|>" in chat_tokenizer.special_tokens
    dpo = run_finetune(
        settings("dpo"),
        tmp_path / "dpo",
        checkpoint=str(tmp_path / "sft"),
        docs=DOCS,
        verbose=False,
    )
    assert dpo["complete"] and {"margin_before", "margin_after"} <= set(dpo)
    assert dpo["margin_before"]["n"] == dpo["exact_match"]["n"]


def test_an_existing_checkpoint_is_never_overwritten_silently(base, tmp_path):
    run("classify", tmp_path, base)
    with pytest.raises(FileExistsError, match="--resume"):
        run("classify", tmp_path, base)
    again = run("classify", tmp_path, base, overwrite=True)
    assert again["complete"]


def test_resuming_with_other_settings_names_them(base, tmp_path):
    run("full", tmp_path, base, stop_after=1)
    with pytest.raises(ValueError, match="lr"):
        run("full", tmp_path, base, resume=True, settings={"lr": 0.5})
    # scoring-only settings may change
    assert run("full", tmp_path, base, resume=True, settings={"n_resamples": 20})["complete"]


def one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--method", "bogus"], "invalid choice"),
        (["--method", "lora", "--rank", "0"], "--rank"),
        (["--method", "full", "--lr", "nan"], "--lr"),
        (["--method", "full", "--steps", "-2"], "--steps"),
        (["--method", "full", "--resume", "--overwrite"], "not allowed with"),
        (["--method", "full", "--resume"], "checkpoint"),
        (["--method", "full", "--tasks", "poetry"], "unknown task"),
        (["--method", "classify", "--train-blocks", "-1"], "--train-blocks"),
        (["--method", "dpo"], "--method sft"),
        (["--method", "full", "--seed", str(2**64)], "--seed"),
        (["--method", "grpo", "--group-size", "1"], "--group-size"),
        (["--method", "grpo", "--temperature", "0"], "--temperature"),
        (["--method", "grpo", "--clip-epsilon", "-1"], "--clip-epsilon"),
    ],
)
def test_bad_input_is_one_error_line(capsys, tmp_path, base_checkpoint, extra, needle):
    argv = ["finetune", "--out", str(tmp_path / "out"), "--checkpoint", str(base_checkpoint)]
    line = one_error_line(capsys, argv + extra)
    assert needle in line, line


def test_an_out_that_is_a_file_is_one_error_line(capsys, tmp_path, base_checkpoint):
    file = tmp_path / "file"
    file.write_text("x")
    argv = [
        "finetune",
        "--method",
        "full",
        "--out",
        str(file),
        "--checkpoint",
        str(base_checkpoint),
    ]
    assert "is a file" in one_error_line(capsys, argv)


def test_a_missing_out_flag_is_one_error_line(capsys):
    assert "--out" in one_error_line(capsys, ["finetune", "--method", "lora"])


def test_classify_reads_its_own_longer_passages_and_trains_the_chosen_blocks(base, tmp_path):
    from minillm.cli.finetune_recipe import classify_data, genre_passages

    chosen = settings("classify", classify_chars=300, classify_per_play=5, max_chars=60)
    data = classify_data(chosen, DOCS)
    texts, labels = genre_passages(data["train"])
    assert len(texts) == 2 * 5 and {e.play for e in data["eval"]} == {"Macbeth"}
    assert max(map(len, texts)) <= 300 and min(map(len, texts)) > 60, [len(t) for t in texts]
    head = 32 * 3 + 3
    counts = {}
    for blocks in (0, 1, 5):  # 5 > n_layer: every block
        out = run("classify", tmp_path / str(blocks), base, settings={"train_blocks": blocks})
        counts[blocks] = out["trainable_parameters"]
    model, _ = base
    block = sum(p.numel() for p in model.transformer.h[-1].parameters())
    ln_f = sum(p.numel() for p in model.transformer.ln_f.parameters())
    assert counts == {0: head, 1: head + block + ln_f, 5: head + block + ln_f}, counts


def test_validation_holds_out_training_plays_and_never_reads_the_evaluation_plays(base, tmp_path):
    from minillm.cli.finetune_recipe import classify_data
    from minillm.finetune import EVAL_PLAYS, GENRES, validation_plays

    held = validation_plays()
    assert len(held) == 6 and not set(held) & set(EVAL_PLAYS), held
    assert sorted(GENRES[p] for p in held) == ["comedy"] * 2 + ["history"] * 2 + ["tragedy"] * 2
    titles = [held[0], "Hamlet", "Macbeth"]  # a validation play, a training play, an eval play
    docs = [Document(name=f"p{i}", text=fake_play(i), title=t) for i, t in enumerate(titles)]
    chosen = settings("classify", classify_per_play=3, validation=True)
    data = classify_data(chosen, docs)
    assert {e.play for e in data["eval"]} == {held[0]}, {e.play for e in data["eval"]}
    assert {e.play for e in data["train"]} == {"Hamlet"}, {e.play for e in data["train"]}
    plain = classify_data(settings("classify", classify_per_play=3), docs)
    assert {e.play for e in plain["eval"]} == {"Macbeth"}  # without it: the evaluation plays
    model, tokenizer = base
    out = run_finetune(
        settings("lora", validation=True),
        tmp_path,
        base=model,
        tokenizer=tokenizer,
        docs=docs,
        verbose=False,
    )
    assert out["settings"]["validation"] is True and out["exact_match"]["n"] > 0, out["settings"]
    with pytest.raises(ValueError, match="validation must be True or False"):
        FinetuneSettings(validation="yes")


def verse_play(seed: int) -> str:
    """A fake play whose speeches have three lines (GRPO's prompts are two lines and a name)."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(12):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(5, 8))).capitalize() for _ in range(3)]
        blocks.append(f"{rng.choice(NAMES)}.\n" + "\n".join(lines))
    return "\n\n".join(blocks)


VERSE_DOCS = [
    Document(name=t.lower().replace(" ", "_"), text=verse_play(i), title=t)
    for i, t in enumerate(["Hamlet", "The Tempest", "Macbeth"])
]


def test_grpo_resumes_exactly_and_scores_held_out_prompts(base, tmp_path, monkeypatch):
    model, tokenizer = base
    # The untrained model rarely ends a line, so the verse reward would be 0 for every sample
    # (no advantage, no update): a reward that varies with the text makes the steps move.
    monkeypatch.setattr(finetune_grpo, "verse_reward", lambda text: len(text) % 7 / 6)
    tiny = dict(steps=4, warmup=1, batch_size=2, per_play=3, n_resamples=50, group_size=3,
                max_new_tokens=6, lr=1e-3)  # fmt: skip

    def go(out, **kwargs):
        return run_finetune(
            FinetuneSettings(method="grpo", **tiny), out, base=model, tokenizer=tokenizer,
            docs=VERSE_DOCS, verbose=False, **kwargs,
        )  # fmt: skip

    whole = go(tmp_path / "whole")
    part = go(tmp_path / "part", stop_after=2, save_every=1)
    assert not part["complete"] and part["step"] == 2
    resumed = go(tmp_path / "part", resume=True)
    assert resumed["complete"] and resumed["step"] == 4
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "part")
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"resumed weights differ from the uninterrupted run's: {changed[:4]}"
    assert any(not torch.equal(a[k], model.state_dict()[k]) for k in a), "training changed nothing"
    assert resumed["reward_after"] == whole["reward_after"]
    assert whole["eval_prompts"] == 3 and whole["train_prompts"] == 6  # Macbeth held out
    assert 0 <= whole["reward_before"]["mean"] <= 1
    with pytest.raises(ValueError, match="group_size"):
        FinetuneSettings(method="grpo", group_size=1)
