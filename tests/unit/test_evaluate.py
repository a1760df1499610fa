"""minillm.evaluate: tasks, the report (table and JSON), the bundled probe sets, `minillm eval`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import minillm.evaluate as M
from minillm import cli
from minillm import evaluate as E


class TinyLM(nn.Module):
    """A causal stand-in: logits from the running mean of the embeddings."""

    def __init__(self, vocab_size: int = 257, block_size: int = 64):
        super().__init__()
        torch.manual_seed(0)
        self.config = type("Config", (), {"block_size": block_size})()
        self.embed = nn.Embedding(vocab_size, 8)
        self.head = nn.Linear(8, vocab_size)

    def forward(self, idx):
        h = self.embed(idx).cumsum(1) / torch.arange(1, idx.shape[1] + 1).view(1, -1, 1)
        return self.head(h), None


class ByteTokenizer:
    special_tokens = {"<|endoftext|>": 256}

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@pytest.fixture()
def text_dir(tmp_path):
    (tmp_path / "hamlet.txt").write_text("To be, or not to be, that is the question. " * 3)
    (tmp_path / "lear.txt").write_text("Nothing will come of nothing: speak again. " * 2)
    return tmp_path


def test_bundled_probe_sets_load_and_are_balanced():
    probes = E.load_bias_probes()
    assert len(probes) >= 30
    for category in {p.category for p in probes}:
        stereo = [p for p in probes if p.category == category and p.kind == "stereotype"]
        # as many probes favour a as favour b, so a plain preference for one word cancels
        assert sum(p.favours == "a" for p in stereo) == sum(p.favours == "b" for p in stereo)
        assert any(p.kind == "neutral" for p in probes if p.category == category)
    items = E.load_multiple_choice()
    assert len(items) == 20 and all(len(i.choices) == 4 for i in items)
    assert len({i.id for i in items}) == len(items)


def test_evaluate_runs_every_task_and_reports_table_and_json(text_dir):
    model, tok = TinyLM(), ByteTokenizer()
    generation = E.GenerationTask(["To be, or"], [" not to be"], max_new_tokens=4)
    report = E.evaluate(
        model, tok, [f"perplexity:{text_dir}", "cloze", "bias", generation], verbose=False
    )
    assert [r.task for r in report.results] == ["perplexity", "cloze", "bias", "generation"]
    ppl = report["perplexity"]
    scores = M.score_documents(model, tok, E.read_documents(text_dir))
    assert ppl.metrics["perplexity"] == pytest.approx(M.LMScore.combine(scores).perplexity)
    assert [row["name"] for row in ppl.rows] == ["hamlet", "lear"]
    assert 0 <= report["cloze"].metrics["accuracy"] <= 1
    assert report["cloze"].metrics["chance"] == pytest.approx(0.25)
    assert "gender/stereotype/mean_gap" in report["bias"].metrics
    assert len(report["generation"].rows) == 1
    table = str(report)
    assert "perplexity" in table and "bits_per_byte" in table and "accuracy" in table
    data = json.loads(report.to_json())
    assert data["tasks"]["perplexity"]["metrics"]["tokens"] == ppl.metrics["tokens"]
    assert math.isclose(
        data["tasks"]["cloze"]["metrics"]["accuracy"], report["cloze"].metrics["accuracy"]
    )
    with pytest.raises(KeyError, match="no task 'nope'"):
        report["nope"]


def test_report_save_is_atomic_and_readable(tmp_path):
    report = E.EvalReport([E.TaskResult("t", {"x": 1.5})], {"model": "m"})
    path = report.save(tmp_path / "sub" / "report.json")
    assert json.loads(path.read_text())["tasks"]["t"]["metrics"] == {"x": 1.5}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary left


def test_greedy_continuation_picks_the_argmax_each_step():
    model = TinyLM()
    ids = [1, 2, 3]
    out = E.greedy_continuation(model, ids, 5)
    seq = list(ids)
    for _ in range(5):
        seq.append(int(model(torch.tensor([seq[-64:]]))[0][0, -1].argmax()))
    assert out == seq[3:]


def test_generation_task_from_text_cuts_aligned_pairs():
    tok = ByteTokenizer()
    text = "".join(chr(97 + i % 26) for i in range(300))
    task = E.GenerationTask.from_text(text, tok, n=3, prompt_tokens=10, reference_tokens=5)
    assert len(task.prompts) == 3 and task.max_new_tokens == 5
    for prompt, reference in zip(task.prompts, task.references, strict=True):
        assert len(prompt) == 10 and len(reference) == 5
        assert prompt + reference in text
    with pytest.raises(ValueError, match="need at least 15"):
        E.GenerationTask.from_text("short", tok, prompt_tokens=10, reference_tokens=5)
    with pytest.raises(ValueError, match="2 prompts but 1 references"):
        E.GenerationTask(["a", "b"], ["c"])


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("nonsense", ValueError, "unknown task"),
        ("perplexity", ValueError, "unknown task"),
        ("perplexity:/no/such/file.txt", FileNotFoundError, "no .txt file"),
        ("mc:/no/such.jsonl", FileNotFoundError, "no task file"),
        (42, TypeError, "spec string"),
    ],
)
def test_resolve_task_rejects_bad_specs(spec, error, message):
    with pytest.raises(error, match=message):
        E.resolve_task(spec)


def test_task_files_with_bad_lines_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "choices": ["x", "y"], "answer": 0}\n{"context": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 lacks the fields \['choices', 'answer'\]"):
        E.load_multiple_choice(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1 is not valid JSON"):
        E.load_multiple_choice(bad)


def test_evaluate_needs_tasks_with_distinct_names():
    with pytest.raises(ValueError, match="no tasks"):
        E.evaluate(TinyLM(), ByteTokenizer(), [])
    with pytest.raises(ValueError, match="share a name"):
        E.evaluate(TinyLM(), ByteTokenizer(), ["bias", "bias"])


def test_eval_command_on_a_checkpoint(tmp_path, text_dir, capsys):
    from minillm.model import GPT, GPTConfig
    from minillm.tokenizer import BPETokenizer
    from minillm.train import TOKENIZER_NAME, save_checkpoint

    tokenizer = BPETokenizer.train(
        "To be, or not to be, that is the question. " * 20, vocab_size=270,
        special_tokens=["<|endoftext|>"],
    )  # fmt: skip
    tokenizer.save(tmp_path / TOKENIZER_NAME)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16
    )
    torch.manual_seed(0)
    model = GPT(config)
    ckpt = save_checkpoint(tmp_path / "checkpoint.safetensors", model, step=0)
    out = tmp_path / "report.json"
    code = cli.main(
        ["eval", "--checkpoint", str(ckpt), "--tasks", f"perplexity:{text_dir},cloze",
         "--json", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "bits_per_byte" in printed and "accuracy" in printed
    report = json.loads(out.read_text())
    expected = M.LMScore.combine(
        M.score_documents(model, tokenizer, E.read_documents(text_dir))
    ).perplexity
    assert report["tasks"]["perplexity"]["metrics"]["perplexity"] == pytest.approx(
        expected, rel=1e-5
    )
