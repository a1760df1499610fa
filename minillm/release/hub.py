"""Release: Hugging Face conversion, export, a model card, a checked manifest, an upload (lesson 12).

:func:`to_hf` and :func:`from_hf` convert a :class:`minillm.model.GPT` to and from
``transformers``' ``GPT2LMHeadModel`` / ``GPTNeoXForCausalLM`` / ``LlamaForCausalLM`` (the GPT-2
preset maps to the first, the same blocks with RoPE to the second, the Llama-style preset to the
third; the key and config mappings are in
:mod:`minillm.model.hf_layouts`); :meth:`GPT.to_hf <minillm.model.GPT.to_hf>`,
:meth:`GPT.from_hf <minillm.model.GPT.from_hf>` and :meth:`GPT.from_pretrained
<minillm.model.GPT.from_pretrained>` call them. :func:`export_hf` writes a folder that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load with no
minillm installed: ``config.json``, ``model.safetensors`` (written by :mod:`minillm.utils.safefile`,
tied weights once), ``generation_config.json``, ``tokenizer.json`` (a regex split then byte-level
BPE, the same ids as :class:`minillm.tokenizer.BPETokenizer`), ``tokenizer_config.json`` (with the
chat template of lesson 08), ``README.md`` (the model card of :mod:`minillm.release.modelcard`) and a
``SHA256SUMS`` manifest. :func:`push_to_hub` lists what an upload would send, and sends it only
when asked (``dry_run=False``). ``minillm export --checkpoint CKPT --out DIR`` does the export
from the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import minillm.model.hf_convert as hf_convert
import minillm.utils.safefile as safefile
from minillm.finetune.sft import CHAT_TEMPLATE, END, has_chat_tokens, to_hf_tokenizer
from minillm.model.gpt import GPT
from minillm.model.hf_convert import (
    _hub_offline,
    _import_transformers,
    hf_layout_of,
    hf_state_dict,
    to_hf,
)
from minillm.release.modelcard import build_card, facts_from_model
from minillm.utils.outputs import check_output

__all__ = [
    "EXPORT_FILES",
    "UploadItem",
    "export_hf",
    "export_onnx",
    "from_hf",
    "from_pretrained",
    "hf_layout_of",
    "push_to_hub",
    "to_hf",
]

EXPORT_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
)
"""The files :func:`export_hf` writes (plus the ``SHA256SUMS`` manifest of all of them)."""


# ---------------------------------------------------------------------------------------------


def from_hf(source: Any, config: Any = None, cls: type[GPT] = GPT) -> GPT:
    """A GPT with the weights of a ``transformers`` model (:func:`minillm.model.hf_convert.from_hf`)."""
    return hf_convert.from_hf(source, config, cls=cls)


def from_pretrained(name_or_path: str | os.PathLike[str], cls: type[GPT] = GPT) -> GPT:
    """A GPT from a ``save_pretrained`` folder (:func:`minillm.model.hf_convert.from_pretrained`)."""
    return hf_convert.from_pretrained(name_or_path, cls=cls)


def export_hf(
    model: GPT,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    card: str | None = None,
    chat_template: str | None = None,
    overwrite: bool = False,
    inputs: tuple[str | Path, ...] = (),
) -> dict[str, int]:
    """Write ``model`` and ``tokenizer`` as a Hugging Face model folder, atomically.

    Args:
        model: a :class:`GPT` whose configuration fits a layout (:func:`hf_layout_of`).
        tokenizer: a :class:`minillm.tokenizer.BPETokenizer` with its merges.
        out_dir: the folder to create (written in a temporary sibling, then renamed).
        card: the ``README.md`` text; default: :func:`minillm.release.modelcard.build_card` from what
            the model and tokenizer say about themselves.
        chat_template: the Jinja chat template; default: lesson 08's
            :data:`minillm.finetune.sft.CHAT_TEMPLATE`.
        overwrite: replace an existing non-empty ``out_dir``.
        inputs: the files the model came from; an ``out_dir`` that is or holds one is refused
            even with ``overwrite`` (:func:`minillm.utils.outputs.check_output`).

    Returns:
        Every file written and its size in bytes (the manifest included).

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty, and ``overwrite`` is False.
        ValueError: the model fits no ``transformers`` layout, or its vocabulary is smaller
            than the tokenizer's.
    """

    out_dir = check_output(out_dir, overwrite=overwrite, inputs=inputs)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(
            f"--out {out_dir} is a file; the export is a folder: choose another path"
        )
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{model.config.vocab_size} embeddings"
        )
    transformers = _import_transformers()
    eot = tokenizer.eot_id
    hf_model = to_hf(model, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    hf_model.config.architectures = [type(hf_model).__name__]
    hf_tok = to_hf_tokenizer(tokenizer, chat_template or CHAT_TEMPLATE)
    hf_tok.model_max_length = model.config.block_size
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        hf_model.config.save_pretrained(tmp)
        # a chat model's answer ends with <|end|>: generate() stops there as well
        stops = [eot, tokenizer.special_tokens[END]] if has_chat_tokens(tokenizer) else eot
        transformers.GenerationConfig(
            bos_token_id=eot, eos_token_id=stops, pad_token_id=eot, do_sample=False
        ).save_pretrained(tmp)
        tensors, aliases = hf_state_dict(hf_model)
        safefile.save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        _save_tokenizer(hf_tok, tmp)
        text = card if card is not None else build_card(facts_from_model(model, tokenizer))
        (tmp / "README.md").write_text(text, encoding="utf-8")
        safefile.write_manifest(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}


def _save_tokenizer(hf_tok: Any, folder: Path) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json``, the chat template inside the latter."""
    hf_tok.save_pretrained(folder)
    jinja = folder / "chat_template.jinja"  # transformers 5 writes the template apart
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = hf_tok.chat_template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
    jinja.unlink(missing_ok=True)
    for extra in set(p.name for p in folder.iterdir()) - {
        "tokenizer.json",
        "tokenizer_config.json",
    }:
        if extra not in EXPORT_FILES:
            (folder / extra).unlink()


class _LogitsOnly(nn.Module):
    """A GPT returning its logits only: ONNX graphs have plain tensor outputs."""

    def __init__(self, inner: GPT) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner(idx)[0]


def export_onnx(model: GPT, path: str | Path, opset: int = 17) -> Path:
    """Write ``model`` as an ONNX graph ``ids (batch, time) int64 -> logits (batch, time, vocab)``.

    Uses PyTorch's tracing exporter (``dynamo=False``: no ``onnxscript`` needed); batch and time
    are dynamic axes. Run it with ``onnxruntime.InferenceSession(path)``.

    Raises:
        ImportError: the ``onnx`` package is missing (``pip install onnx onnxruntime``).
    """
    import warnings

    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs onnx: pip install onnx onnxruntime") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, min(8, model.config.block_size), dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # the tracing exporter is the legacy one
        torch.onnx.export(
            _LogitsOnly(model.eval()),
            (example,),
            str(path),
            dynamo=False,
            input_names=["ids"],
            output_names=["logits"],
            dynamic_axes={"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}},
            opset_version=opset,
        )
    return path


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadItem:
    """One file an upload sends: its path in the repository, size and SHA-256."""

    path: str
    size: int
    sha256: str


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    dry_run: bool = True,
    token: str | None = None,
    private: bool = True,
) -> list[UploadItem]:
    """Upload an exported folder to the Hugging Face hub; by default only say what would go.

    The dry run (the default) checks the manifest and returns the files with their sizes and
    hashes; it imports nothing that talks to the network. ``dry_run=False`` creates the
    repository (private unless ``private=False``) and uploads the same files with
    ``huggingface_hub`` (a token from ``token``, ``HF_TOKEN`` or ``huggingface-cli login``).

    Raises:
        ValueError: ``repo_id`` is not ``owner/name``, or the folder does not match its manifest.
        FileNotFoundError: the folder lacks a file of :data:`EXPORT_FILES` or its manifest.
        OSError: a real upload while ``HF_HUB_OFFLINE`` is set.
    """
    folder = Path(folder)
    owner, _, name = repo_id.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    missing = [f for f in (*EXPORT_FILES, safefile.MANIFEST_NAME) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: export it with export_hf first")
    problems = safefile.verify_manifest(folder)
    if problems:
        raise ValueError(f"{folder} does not match its manifest: {'; '.join(problems)}")
    plan = [
        UploadItem(p.relative_to(folder).as_posix(), p.stat().st_size, safefile.sha256_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    if dry_run:
        return plan
    if _hub_offline():
        raise OSError("HF_HUB_OFFLINE is set: unset it to upload (or keep dry_run=True)")
    from huggingface_hub import HfApi  # pragma: no cover - needs the network and a token

    api = HfApi(token=token)  # pragma: no cover
    api.create_repo(repo_id, private=private, exist_ok=True)  # pragma: no cover
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))  # pragma: no cover
    return plan  # pragma: no cover
