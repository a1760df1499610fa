"""Release: Hugging Face conversion, export, a model card, a checked manifest, an upload (lesson 12).

:func:`to_hf` and :func:`from_hf` convert a :class:`minillm.model.GPT` to and from
``transformers``' ``GPT2LMHeadModel`` / ``GPTNeoXForCausalLM`` / ``LlamaForCausalLM`` (the GPT-2
preset maps to the first, the same blocks with RoPE to the second, the Llama-style preset to the
third; the key and config mappings are in
:mod:`minillm.hf_layouts`); :meth:`GPT.to_hf <minillm.model.GPT.to_hf>`,
:meth:`GPT.from_hf <minillm.model.GPT.from_hf>` and :meth:`GPT.from_pretrained
<minillm.model.GPT.from_pretrained>` call them. :func:`export_hf` writes a folder that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load with no
minillm installed: ``config.json``, ``model.safetensors`` (written by :mod:`minillm.safefile`,
tied weights once), ``generation_config.json``, ``tokenizer.json`` (a regex split then byte-level
BPE, the same ids as :class:`minillm.tokenizer.BPETokenizer`), ``tokenizer_config.json`` (with the
chat template of lesson 08), ``README.md`` (the model card of :mod:`minillm.modelcard`) and a
``SHA256SUMS`` manifest. :func:`push_to_hub` lists what an upload would send, and sends it only
when asked (``dry_run=False``). ``minillm export --checkpoint CKPT --out DIR`` does the export
from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm import safefile
from minillm.hf_layouts import (
    _HF_TO_MINILLM,
    _config_from_hf,
    _gpt2_config_kwargs,
    _gpt_neox_config_kwargs,
    _llama_config_kwargs,
    _load_into_hf,
    _minillm_to_gpt2,
    _minillm_to_gpt_neox,
    _minillm_to_llama,
)
from minillm.model import GPT, GPTConfig

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
# Conversion to and from transformers
# ---------------------------------------------------------------------------------------------


def from_hf(source: Any, config: Any = None, cls: type[GPT] = GPT) -> GPT:
    """A GPT with the weights of a ``transformers`` GPT-2, GPT-NeoX or Llama model.

    Args:
        source: a ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` or ``LlamaForCausalLM`` (or a
            model with the same layout), or its state dict.
        config: needed with a state dict: the ``transformers`` config (GPT2Config,
            GPTNeoXConfig or LlamaConfig) or an equivalent :class:`GPTConfig`. Ignored for a model.
        cls: the class to build (a subclass of :class:`GPT`).

    Raises:
        ValueError: unsupported architecture options, or weights that do not fit (missing,
            unexpected or wrongly shaped keys, all listed).
    """
    if isinstance(source, nn.Module):
        config, state_dict = source.config, source.state_dict()
    elif isinstance(source, dict):
        state_dict = source
        if config is None:
            raise ValueError(
                "from_hf with a state dict needs config= (a transformers config or a GPTConfig)"
            )
    else:
        raise TypeError(
            f"from_hf expects a transformers model or a state dict, got {type(source).__name__}"
        )
    layout = _detect_layout(state_dict)
    gpt_config = config if isinstance(config, GPTConfig) else _config_from_hf(config, layout)
    model = cls(gpt_config)
    dtype = model.transformer.wte.weight.dtype
    converted = {k: v.to(dtype) for k, v in _HF_TO_MINILLM[layout](state_dict, gpt_config).items()}
    model.load_weights(converted)
    return model


def to_hf(model: GPT, **config_overrides: Any) -> nn.Module:
    """``model`` as a ``transformers`` ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` or
    ``LlamaForCausalLM``, in eval mode.

    GPT-2 layout: learned positions, LayerNorm, GELU, no grouped heads (missing biases are
    exported as zeros). GPT-NeoX layout: the same with RoPE (sequential residuals; missing biases
    as zeros). Llama layout: RoPE, RMSNorm, SwiGLU. ``config_overrides`` go to the
    ``transformers`` config (for example ``eos_token_id=...``).

    Raises:
        ValueError: the configuration fits neither layout (the message says why).
    """
    transformers = _import_transformers()
    layout = hf_layout_of(model.config)
    if layout == "gpt2":
        hf_config = transformers.GPT2Config(
            **{**_gpt2_config_kwargs(model.config), **config_overrides}
        )
        hf_model = transformers.GPT2LMHeadModel(hf_config)
        state_dict = _minillm_to_gpt2(model.state_dict(), model.config)
    elif layout == "gpt_neox":
        hf_config = transformers.GPTNeoXConfig(
            **{**_gpt_neox_config_kwargs(model.config), **config_overrides}
        )
        hf_model = transformers.GPTNeoXForCausalLM(hf_config)
        state_dict = _minillm_to_gpt_neox(model.state_dict(), model.config)
    else:
        hf_config = transformers.LlamaConfig(
            **{**_llama_config_kwargs(model.config), **config_overrides}
        )
        hf_model = transformers.LlamaForCausalLM(hf_config)
        state_dict = _minillm_to_llama(model.state_dict(), model.config)
    _load_into_hf(hf_model, state_dict)
    return hf_model.eval()


def from_pretrained(name_or_path: str | os.PathLike[str], cls: type[GPT] = GPT) -> GPT:
    """Load a GPT-2, GPT-NeoX or Llama model saved by ``save_pretrained``, or from the hub.

    A local folder is read without any network access. A hub name (``"gpt2"``) is downloaded
    only when the hub is reachable and ``HF_HUB_OFFLINE`` is not set.

    Raises:
        OSError: offline (or the hub is unreachable) and ``name_or_path`` is not a local
            folder; the message says how to load from a folder instead.
    """
    transformers = _import_transformers()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32
        )
        return from_hf(hf_model, cls=cls)
    how_to = (
        f"To load from a folder instead: on a machine with internet run "
        f"`transformers.AutoModelForCausalLM.from_pretrained({str(name_or_path)!r})"
        f".save_pretrained('some/folder')`, copy the folder here, then call "
        f"`GPT.from_pretrained('some/folder')`."
    )
    if _hub_offline():
        raise OSError(
            f"{str(name_or_path)!r} is not a local folder and the Hugging Face hub is off "
            f"(HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set). Unset it to download. {how_to}"
        )
    try:
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            str(name_or_path), dtype=torch.float32
        )
    except OSError as err:
        raise OSError(
            f"could not load {str(name_or_path)!r} from the Hugging Face hub "
            f"(offline, or no such model): {err}. {how_to}"
        ) from err
    return from_hf(hf_model, cls=cls)


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is in the course extra
        raise ImportError(
            "Hugging Face interop needs transformers: pip install -e '.[course]'"
        ) from err
    return transformers


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def _detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("transformer.h.") or k == "transformer.wte.weight" for k in state_dict):
        return "gpt2"
    if any(k.startswith("model.layers.") or k == "model.embed_tokens.weight" for k in state_dict):
        return "llama"
    if any(k.startswith("gpt_neox.") for k in state_dict):
        return "gpt_neox"
    sample = sorted(state_dict)[:5]
    raise ValueError(
        "state dict is neither a GPT-2 layout (transformer.h.N...), a GPT-NeoX layout "
        f"(gpt_neox.layers.N...) nor a Llama layout (model.layers.N...); first keys: {sample}"
    )


_LAYOUT_NEEDS = {  # layout -> (its name in messages, the settings it needs)
    "gpt2": ("GPT-2", (("pos_emb", "learned"), ("norm", "layernorm"), ("mlp", "gelu"))),
    "gpt_neox": ("GPT-NeoX", (("pos_emb", "rope"), ("norm", "layernorm"), ("mlp", "gelu"))),
    "llama": ("Llama", (("pos_emb", "rope"), ("norm", "rmsnorm"), ("mlp", "swiglu"))),
}


def hf_layout_of(config: GPTConfig) -> str:
    """``"gpt2"``, ``"gpt_neox"`` or ``"llama"``: the ``transformers`` architecture this
    configuration maps to (GPT-NeoX: GPT-2's blocks with rotary positions).

    Raises:
        ValueError: it fits none (the message lists each mismatch).
    """
    reasons = []
    for layout, (title, needs) in _LAYOUT_NEEDS.items():
        misfits = [
            f"{name}={getattr(config, name)!r} ({title} needs {want!r})"
            for name, want in needs
            if getattr(config, name) != want
        ]
        if layout != "llama" and config.num_kv_heads != config.n_head:
            misfits.append(f"n_kv_head={config.n_kv_head} ({title} needs n_head={config.n_head})")
        if not misfits:
            return layout
        reasons.append(f"{title}: " + ", ".join(misfits))
    raise ValueError("this configuration fits no Hugging Face layout. " + ". ".join(reasons))


# ---------------------------------------------------------------------------------------------
# Export: a folder transformers loads without minillm
# ---------------------------------------------------------------------------------------------


def hf_state_dict(hf_model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store for a ``transformers`` model: tied weights once, under the input
    embedding's name (the name ``transformers`` ties the output layer to on loading).

    Returns:
        ``(tensors, aliases)``: aliases maps each dropped name to the name kept.
    """
    state = hf_model.state_dict()
    embed = hf_model.get_input_embeddings().weight
    embed_name = next(name for name, t in state.items() if t.data_ptr() == embed.data_ptr())
    return safefile.dedup_tied(state, prefer=(embed_name,))


def export_hf(
    model: GPT,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    card: str | None = None,
    chat_template: str | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write ``model`` and ``tokenizer`` as a Hugging Face model folder, atomically.

    Args:
        model: a :class:`GPT` whose configuration fits a layout (:func:`hf_layout_of`).
        tokenizer: a :class:`minillm.tokenizer.BPETokenizer` with its merges.
        out_dir: the folder to create (written in a temporary sibling, then renamed).
        card: the ``README.md`` text; default: :func:`minillm.modelcard.build_card` from what
            the model and tokenizer say about themselves.
        chat_template: the Jinja chat template; default: lesson 08's
            :data:`minillm.sft.CHAT_TEMPLATE`.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        Every file written and its size in bytes (the manifest included).

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty, and ``overwrite`` is False.
        ValueError: the model fits no ``transformers`` layout, or its vocabulary is smaller
            than the tokenizer's.
    """
    from minillm.modelcard import build_card, facts_from_model
    from minillm.sft import CHAT_TEMPLATE, to_hf_tokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True")
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
        transformers.GenerationConfig(
            bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=False
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


# ---------------------------------------------------------------------------------------------
# Command line: minillm export
# ---------------------------------------------------------------------------------------------


def _export_command(args: argparse.Namespace) -> int:
    import logging

    from minillm.modelcard import build_card, course_facts, facts_from_model

    for noisy in ("torchao", "torch.utils._pytree"):  # optional kernels transformers may load
        logging.getLogger(noisy).setLevel(logging.ERROR)

    if args.qtype is not None and args.format != "gguf":
        raise ValueError("--qtype chooses how a GGUF file stores its weights; add --format gguf")
    if args.format == "gguf":
        from minillm.gguf_export import check_export_args

        check_export_args(args)
    if args.checkpoint == "course":
        from minillm.course import course_model

        model, tokenizer = course_model(verbose=False)
        facts = course_facts(model, tokenizer)
    else:
        from minillm.evaluate import load_for_eval

        model, tokenizer = load_for_eval(args.checkpoint, args.tokenizer)
        facts = facts_from_model(model, tokenizer)
    if args.format == "gguf":
        from minillm.gguf_export import export_command

        return export_command(args, model, tokenizer)
    sizes = export_hf(model, tokenizer, args.out, card=build_card(facts), overwrite=args.overwrite)
    for name, size in sizes.items():
        print(f"{size:>12,}  {name}")
    print(f"wrote {len(sizes)} files to {args.out}")
    if args.repo:
        for item in push_to_hub(args.out, args.repo, dry_run=not args.upload):
            print(
                f"{'uploaded' if args.upload else 'would upload'} {item.path} ({item.size:,} bytes)"
            )
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``minillm export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint as a Hugging Face model folder or a GGUF file",
        description="Write config.json, model.safetensors, generation_config.json, "
        "tokenizer.json, tokenizer_config.json, README.md (the model card) and SHA256SUMS: "
        "a folder transformers loads without minillm.",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a file written by minillm train, or 'course'"
    )
    parser.add_argument(
        "--out", required=True, help="the folder to write (with --format gguf: the .gguf file)"
    )
    parser.add_argument(
        "--format",
        choices=["hf", "gguf"],
        default="hf",
        help="hf: a Hugging Face folder (default); gguf: one file llama.cpp runs as is",
    )
    from minillm.gguf_export import GGUF_QTYPES

    parser.add_argument(
        "--qtype",
        choices=list(GGUF_QTYPES),
        default=None,
        help="with --format gguf, how the weights are stored (default q8_0): "
        + "; ".join(f"{k}: {v}" for k, v in GGUF_QTYPES.items()),
    )
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer file (default: found with the checkpoint)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--repo", default=None, help="owner/name: list what an upload would send")
    parser.add_argument(
        "--upload", action="store_true", help="with --repo: really upload (needs network, token)"
    )
    parser.set_defaults(handler=_export_command)
