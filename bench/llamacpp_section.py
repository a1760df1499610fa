"""The course model's GGUF files run in llama.cpp: quality, bytes and speed (issue 26).

A section of ``bench/quantize.py`` (``python bench/quantize.py --only llamacpp`` adds it to the
stored ``bench/results/quantize.json``; the full run includes it); this file only holds the code.

For each file type (the ``--qtype`` recipes of ``minillm export --format gguf`` and a few other
splits of precision between the linear layers and the two uses of the tied matrix), on the whole
validation split in the model's 128-token windows: file bytes, bits per byte and its change, mean
KL(minillm float || llama.cpp) per token and top-1 agreement, beside minillm running the same
rounded weights with float activations (so the difference is llama.cpp's own arithmetic: it
rounds activations to 8 bits for quantized matrix products). Then greedy decoding speed, batch 1,
llama.cpp against minillm on the same CPU and thread count.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from common import timed
from torch import nn

from minillm import quantize as Q
from minillm.quantize import gguf_name, read_gguf
from minillm.quantize.gguf_export import export_gguf
from minillm.quantize.llamacpp import LlamaCppLM

RECIPES: dict[str, str | dict[str, str]] = {
    "f32": "f32",
    "f16": "f16",
    "q8_0": "q8_0",
    "q4_0": "q4_0",
    "mixed": "mixed",
    "linear q8_0 | embedding f16, output f16": dict(linear="q8_0", token_embd="f16", output="f16"),
    "linear q4_0 | embedding f16, output f16": dict(linear="q4_0", token_embd="f16", output="f16"),
    "linear q4_0 | embedding q8_0, output f16": dict(
        linear="q4_0", token_embd="q8_0", output="f16"
    ),
    "linear q4_0 | embedding q4_0, output q8_0": dict(
        linear="q4_0", token_embd="q4_0", output="q8_0"
    ),
}
"""The five ``--qtype`` names, then alternative recipes measured to choose ``mixed``."""


def same_weights(model: nn.Module, path: Path) -> nn.Module:
    """minillm's model with the GGUF file's rounded weights (read back by the gguf package),
    the embedding and output untied when the file stores them differently."""
    tensors = {name: torch.tensor(a) for name, (_, a) in read_gguf(path).items()}  # a copy
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, param in out.named_parameters():
            if name != "lm_head.weight":
                param.copy_(tensors[gguf_name(name)].reshape(param.shape))
        out.lm_head.weight = nn.Parameter(tensors["output.weight"].clone())
        out.transformer.wte.weight = nn.Parameter(tensors["token_embd.weight"].clone())
    return out


def quality(model, tokenizer, val: torch.Tensor, n_bytes: int, tmp: Path) -> dict:
    files, runners, minis = {}, {}, {}
    for i, (name, recipe) in enumerate(RECIPES.items()):
        files[name] = export_gguf(model, tokenizer, tmp / f"{i}.gguf", recipe)
        runners[name] = LlamaCppLM(files[name])
        minis[name] = same_weights(model, files[name])
    try:
        with torch.inference_mode():
            seconds, theirs = timed(lambda: Q.logit_agreement(model, runners, val))
            ours = Q.logit_agreement(model, minis, val)
    finally:
        for lm in runners.values():
            lm.close()
    first = next(iter(theirs.values()))
    ref_bpb = first.reference_nll / math.log(2) / n_bytes
    f32_bytes = files["f32"].stat().st_size
    rows = {}
    for name, a in theirs.items():
        size = files[name].stat().st_size
        bpb = a.nll / math.log(2) / n_bytes
        mini = ours[name]
        rows[name] = dict(
            recipe=RECIPES[name],
            bytes=size,
            x_f32_file=size / f32_bytes,
            bpb=bpb,
            dbpb=bpb / ref_bpb - 1,
            kl=a.mean_kl,
            top1=a.top1,
            minillm_same_weights=dict(
                dbpb=mini.nll / math.log(2) / n_bytes / ref_bpb - 1,
                kl=mini.mean_kl,
                top1=mini.top1,
            ),
        )
    return dict(
        tokens_scored=first.n_tokens,
        bytes_scored=n_bytes,
        minillm_float_bpb=ref_bpb,
        rows=rows,
        seconds=seconds,
    )


def speed(model, tokenizer, prompt: list[int], new_tokens: int, repeats: int, tmp: Path) -> dict:
    """Greedy decoding tokens/s at batch 1: minillm fp32 (KV cache) and llama.cpp per file."""
    x = torch.tensor([prompt])
    with torch.inference_mode():
        model.generate(x, 2, temperature=0)  # warm-up
        t, _ = timed(lambda: model.generate(x, new_tokens, temperature=0), repeats)
    out = {"minillm fp32": dict(tokens_per_s=new_tokens / t, x_minillm=1.0)}
    base = new_tokens / t
    for name in ("f32", "f16", "q8_0", "q4_0", "mixed"):
        lm = LlamaCppLM(export_gguf(model, tokenizer, tmp / f"speed-{name}.gguf", name))
        try:
            lm.greedy(prompt, 2)  # warm-up
            t, _ = timed(lambda lm=lm: lm.greedy(prompt, new_tokens), repeats)
        finally:
            lm.close()
        out[f"llama.cpp {name}"] = dict(
            tokens_per_s=new_tokens / t, x_minillm=new_tokens / t / base
        )
    return dict(prompt_tokens=len(prompt), new_tokens=new_tokens, threads=lm.threads, rows=out)


def llamacpp_section(model, tokenizer, val: torch.Tensor, n_bytes: int, quick: bool) -> dict:
    """Everything above, as the ``llamacpp`` section of quantize.json."""
    import tempfile
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        result = dict(
            llama_cpp_python=version("llama-cpp-python"),
            quality=quality(model, tokenizer, val, n_bytes, Path(tmp)),
            speed=speed(
                model,
                tokenizer,
                val[:8].tolist(),
                new_tokens=32 if quick else 64,
                repeats=2 if quick else 5,
                tmp=Path(tmp),
            ),
        )
    return result


def print_llamacpp(section: dict) -> None:
    q = section["quality"]
    print(
        f"\nllama.cpp (llama-cpp-python {section['llama_cpp_python']}) against minillm's float "
        f"model on {q['tokens_scored']:,} validation tokens ({q['minillm_float_bpb']:.4f} bpb)"
    )
    print(
        f"{'file':<44} {'bytes':>9} {'x f32':>6} {'dbpb':>8} {'KL':>9} {'top-1':>7}"
        f" | minillm same weights: {'KL':>9} {'top-1':>7}"
    )
    for name, r in q["rows"].items():
        m = r["minillm_same_weights"]
        print(
            f"{name:<44} {r['bytes']:>9,} {r['x_f32_file']:>6.3f} {r['dbpb']:>+8.3%} "
            f"{r['kl']:>9.2e} {r['top1']:>7.2%} | {'':>21}{m['kl']:>9.2e} {m['top1']:>7.2%}"
        )
    s = section["speed"]
    print(
        f"\ngreedy decoding, batch 1, {s['new_tokens']} new tokens after {s['prompt_tokens']}, "
        f"{s['threads']} threads:"
    )
    for name, r in s["rows"].items():
        print(f"  {name:<20} {r['tokens_per_s']:>9.0f} tokens/s  ({r['x_minillm']:.2f}x minillm)")


if __name__ == "__main__":
    print("a section of bench/quantize.py: run python bench/quantize.py --only llamacpp")
