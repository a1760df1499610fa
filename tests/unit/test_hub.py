"""minillm.release.hub, minillm.utils.safefile, minillm.release.modelcard: export, safetensors checks, the card, upload."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minillm
from minillm.model import GPT, GPTConfig
from minillm.release import hub, modelcard
from minillm.utils import safefile

ROOT = Path(__file__).resolve().parents[2]
for noisy in ("torchao", "torch.utils._pytree"):  # optional kernels transformers may load
    logging.getLogger(noisy).setLevel(logging.ERROR)

# A made-up evaluation report (the card must repeat whatever its sources say).
REPORT = {
    "meta": {},
    "tasks": {
        "cloze": {"metrics": {"accuracy": 0.3, "accuracy_norm": 0.35, "chance": 0.25, "items": 20}},
        "bias": {
            "metrics": {
                "gender/neutral/mean_gap": 2.5698226,
                "gender/neutral/ci_low": 1.3037,
                "gender/neutral/ci_high": 4.2420,
            }
        },
    },
}


@pytest.fixture(scope="module")
def course():
    return minillm.course_model(verbose=False)


@pytest.fixture(scope="module")
def course_export(course, tmp_path_factory):
    model, tok = course
    facts = modelcard.course_facts(model, tok, report=REPORT)
    out = tmp_path_factory.mktemp("export") / "course"
    sizes = hub.export_hf(model, tok, out, card=modelcard.build_card(facts))
    return out, sizes, facts


def tiny(preset: str) -> GPT:
    """A small random model of a preset ("course-rope": the course shape with RoPE), with room
    for a 200-token greedy continuation."""
    torch.manual_seed(0)
    extra = {"pos_emb": "rope"} if preset == "course-rope" else {}
    config = GPTConfig.preset(
        preset.removesuffix("-rope"), vocab_size=4096, block_size=256, n_layer=2, n_embd=64, **extra
    )
    model = GPT(config).eval()
    with torch.no_grad():  # larger weights than the init: a less repetitive greedy path
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model


def load_hf(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


# ---- export and parity -------------------------------------------------------------------------


def test_export_writes_every_file(course_export):
    out, sizes, _ = course_export
    assert set(sizes) == {*hub.EXPORT_FILES, safefile.MANIFEST_NAME}
    assert all(size > 0 for size in sizes.values())
    config = json.loads((out / "tokenizer_config.json").read_text())
    from minillm.finetune import CHAT_TEMPLATE

    assert config["chat_template"] == CHAT_TEMPLATE
    assert safefile.verify_manifest(out) == []


@pytest.mark.slow  # over 10 s on 2 shared cores (the suite still runs it)
@pytest.mark.parametrize("preset", ["course", "course-rope", "llama-small"])
def test_export_reloads_in_transformers_with_identical_tokens_and_logits(preset, course, tmp_path):
    _, tok = course
    model = tiny(preset)
    hub.export_hf(model, tok, tmp_path / preset)
    hf_model, _ = load_hf(tmp_path / preset)
    want_arch = {
        "course": "GPT2LMHeadModel",
        "course-rope": "GPTNeoXForCausalLM",
        "llama-small": "LlamaForCausalLM",
    }[preset]
    assert type(hf_model).__name__ == want_arch
    ids = torch.tensor([tok.encode("ROMEO:\nBut soft, what light")])
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf_model(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    ours_greedy = model.generate(ids, 200, temperature=0)
    theirs_greedy = hf_model.generate(ids, max_new_tokens=200, do_sample=False, eos_token_id=None)
    assert ours_greedy.shape[1] == ids.shape[1] + 200
    assert torch.equal(theirs_greedy, ours_greedy)


@pytest.mark.slow  # over 10 s on 2 shared cores (the suite still runs it)
def test_the_course_model_matches_after_export(course, course_export):
    model, tok = course
    hf_model, _ = load_hf(course_export[0])
    ids = torch.tensor([tok.encode("KING HENRY:\nOnce more unto the breach")])
    with torch.no_grad():  # float64: the conversion is exact; float32 differs by rounding only
        ours, _ = model.double()(ids)
        theirs = hf_model.double()(ids).logits
    model.float()
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    n = model.config.block_size - ids.shape[1]
    theirs_greedy = hf_model.float().generate(
        ids, max_new_tokens=n, do_sample=False, eos_token_id=None
    )
    assert torch.equal(theirs_greedy, model.generate(ids, n, temperature=0))


def test_tokenizer_gives_the_same_ids_on_the_whole_validation_split(course, course_export):
    from minillm.course import course_data
    from minillm.data import load_split

    _, tok = course
    _, hf_tok = load_hf(course_export[0])
    val = np.asarray(load_split(course_data(verbose=False), "val"), dtype=np.int64).tolist()
    text = tok.decode(val)
    ours = tok.encode(text, allowed_special="all")
    theirs = hf_tok.encode(text, add_special_tokens=False)
    assert len(theirs) == len(ours) and theirs == ours
    assert hf_tok.decode(theirs) == text


def test_chat_template_renders_lesson_08s_format(course_export):
    _, hf_tok = load_hf(course_export[0])
    chat = [
        {"role": "user", "content": "Who art thou?"},
        {"role": "assistant", "content": "A knave."},
    ]
    text = hf_tok.apply_chat_template(chat, tokenize=False)
    assert text == "<|user|>\nWho art thou?<|end|>\n<|assistant|>\nA knave.<|end|>\n"


def test_export_refuses_a_non_empty_folder(course, course_export):
    model, tok = course
    with pytest.raises(FileExistsError, match="overwrite"):
        hub.export_hf(model, tok, course_export[0])


def test_from_hf_and_to_hf_still_live_on_the_model(course):
    model, _ = course
    back = GPT.from_hf(model.to_hf()).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(back(ids)[0], model(ids)[0])


@pytest.mark.slow  # over 10 s on 2 shared cores (the suite still runs it)
def test_the_export_loads_in_a_process_without_minillm(course_export):
    code = (
        "import sys; sys.modules['minillm'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(course_export[0])!r}, local_files_only=True)\n"
        f"t = AutoTokenizer.from_pretrained({str(course_export[0])!r}, local_files_only=True)\n"
        "print(len(t.encode('To be, or not to be')), m.config.model_type)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "gpt_neox"  # the course model has RoPE: GPT-NeoX's layout


def test_onnx_export_matches_pytorch(course, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, tok = course
    path = hub.export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for text in ("ROMEO:", "KING HENRY:\nOnce more unto the breach, dear friends"):  # two lengths
        ids = torch.tensor([tok.encode(text)] * 2)
        with torch.no_grad():
            want = model(ids)[0].numpy()
        got = session.run(None, {"ids": ids.numpy()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4


# ---- safetensors -------------------------------------------------------------------------------


def test_header_parser_agrees_with_safe_open(course_export):
    from safetensors import safe_open

    path = course_export[0] / "model.safetensors"
    tensors, metadata, _ = safefile.check_file(path)
    ours = safefile.load_file(path)
    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(tensors)
        assert f.metadata() == metadata
        for name in tensors:
            assert torch.equal(f.get_tensor(name), ours[name]), name


def test_tied_weights_are_stored_once(course_export, course):
    tensors, _, _ = safefile.read_header(course_export[0] / "model.safetensors")
    embedding = "gpt_neox.embed_in.weight"  # GPT-NeoX's name: the course model has RoPE
    assert embedding in tensors and "lm_head.weight" not in tensors
    hf_model = course[0].to_hf()
    from safetensors.torch import save_file

    with pytest.raises(RuntimeError, match="share memory"):  # the plain writer refuses them
        save_file(hf_model.state_dict(), str(course_export[0].parent / "plain.safetensors"))
    _, aliases = hub.hf_state_dict(hf_model)
    assert aliases == {"lm_head.weight": embedding}


def test_hand_written_file_reads_in_safe_open(tmp_path):
    from safetensors import safe_open

    tensors = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.tensor([1, 2], dtype=torch.int64),
    }
    path = tmp_path / "x.safetensors"
    path.write_bytes(safefile.encode_file(tensors, {"k": "v"}))
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        for name, t in tensors.items():
            assert torch.equal(f.get_tensor(name), t)


def _file(tmp_path: Path, header: dict, data: bytes, tail: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data + tail)
    return path


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlapping offsets",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 12,
            "trailing bytes",
        ),
        (
            {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"\0" * 8,
            "needs 12 bytes",
        ),
        ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "gap"),
    ],
)
def test_malformed_files_are_rejected(tmp_path, header, data, message):
    with pytest.raises(safefile.SafetensorsFormatError, match=message):
        safefile.check_file(_file(tmp_path, header, data))


def test_a_cut_header_is_truncated(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", 500) + b"{}")
    with pytest.raises(safefile.SafetensorsFormatError, match="truncated"):
        safefile.read_header(path)


def test_manifest_catches_a_changed_and_an_extra_file(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    safefile.write_manifest(tmp_path)
    assert safefile.verify_manifest(tmp_path) == []
    (tmp_path / "a.txt").write_text("two")
    (tmp_path / "b.txt").write_text("new")
    problems = safefile.verify_manifest(tmp_path)
    assert problems == ["a.txt: SHA-256 differs from the manifest", "b.txt: not in the manifest"]


def test_no_torch_load_without_weights_only():
    pattern = re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)", re.S)
    offenders = [
        f"{path.relative_to(ROOT)}: {m.group(0)[:60]}"
        for path in sorted((ROOT / "minillm").rglob("*.py"))
        for m in pattern.finditer(path.read_text())
    ]
    assert offenders == [], f"expected no unsafe torch.load, got {offenders}"


# ---- the model card ----------------------------------------------------------------------------


def test_card_numbers_equal_their_sources(course_export):
    out, _, facts = course_export
    text = (out / "README.md").read_text()
    figures = modelcard.card_figures(text)
    assert len(figures) == len(facts.figures) >= 15
    assert modelcard.check_card(text, facts.sources) == []
    body = text.split("## Where every number comes from")[0]
    missing = [f.label for f in figures if modelcard.show(f.value) not in body]
    assert missing == [], (
        f"expected every figure in the card's text, these are only in the table: {missing}"
    )


def test_a_changed_number_is_caught(course_export):
    out, _, facts = course_export
    text = (out / "README.md").read_text()
    bpb = modelcard.show(facts.figure("val.bits_per_byte").value)
    changed = text.replace(f"| {bpb} |", "| 2.0 |")
    assert changed != text
    problems = modelcard.check_card(changed, facts.sources)
    assert any("Validation bits per byte" in p for p in problems), problems
    wrong_sources = json.loads(json.dumps(facts.sources))
    wrong_sources[modelcard.SHIPPED_CARD]["test"]["bits_per_byte"] += 0.01
    problems = modelcard.check_card(text, wrong_sources)
    assert any("Test bits per byte" in p for p in problems), problems
    assert any("model-index" in p for p in problems), problems


def test_card_round_trips_through_huggingface_hub(course_export):
    from huggingface_hub import ModelCard

    card = ModelCard.load(course_export[0] / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["datasets"] and data["metrics"]
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    facts = course_export[2]
    assert results["Validation bits per byte"] == facts.figure("val.bits_per_byte").value
    assert results["Cloze accuracy"] == REPORT["tasks"]["cloze"]["metrics"]["accuracy"]
    again = ModelCard(str(card))
    assert again.data.to_dict() == data


def test_card_has_the_template_sections(course_export):
    text = (course_export[0] / "README.md").read_text()
    for heading in (
        "## Model Details",
        "### Direct Use",
        "### Out-of-Scope Use",
        "## Bias, Risks, and Limitations",
        "## How to Get Started with the Model",
        "## Training Details",
        "## Evaluation",
        "## Environmental Impact",
        "## Technical Specifications",
        "## Licences and provenance",
        "## Model Card Contact",
    ):
        assert heading in text, heading
    assert "core-seconds" in text and "public domain" in text and "MIT" in text


def test_lookup_reads_paths_and_products():
    data = {"a": {"b": [1.5, {"c": 4}]}, "n": 2}
    assert modelcard.lookup(data, "a.b.1.c") == 4
    assert modelcard.lookup(data, "a.b.0*n") == 3.0
    with pytest.raises(KeyError, match="no 'x'"):
        modelcard.lookup(data, "a.x")


# ---- upload and command line -------------------------------------------------------------------


def test_push_to_hub_dry_run_lists_the_files_and_touches_no_network(course_export, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dry run opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    plan = hub.push_to_hub(course_export[0], "someone/minillm-course")
    assert [item.path for item in plan] == sorted(course_export[1])
    assert all(item.size == course_export[1][item.path] for item in plan)
    with pytest.raises(ValueError, match="owner/name"):
        hub.push_to_hub(course_export[0], "no-owner")


def test_push_refuses_a_folder_that_changed(course_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(course_export[0], copy)
    (copy / "README.md").write_text("edited\n")
    with pytest.raises(ValueError, match="README.md: SHA-256 differs"):
        hub.push_to_hub(copy, "someone/minillm-course")


def test_cli_export(tmp_path, course, capsys):
    from minillm import cli
    from minillm.train import TOKENIZER_NAME, save_checkpoint

    model, tok = course
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    ckpt.parent.mkdir()
    save_checkpoint(ckpt, model, step=0, tokenizer_fingerprint=tok.fingerprint())
    tok.save(ckpt.parent / TOKENIZER_NAME)
    assert (
        cli.main(
            ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--repo", "a/b"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "model.safetensors" in printed and "would upload README.md" in printed
    assert (tmp_path / "out" / "config.json").is_file()
    assert cli.main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 2
