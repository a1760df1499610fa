"""Quantization benchmark: quality, sensitivity, library parity and speed of minillm.quantize.

1. Quality table on the whole course validation split, in one run: fp32, int8 per-channel,
   int8 per-tensor, int4 g32 symmetric / asymmetric, Q4_0 and int3 g32, each with and without
   the tied embedding: bits per byte and its change, mean KL(fp32 || quantized) per token, top-1
   agreement and bytes on disk (safetensors files written and measured), beside a bigram
   baseline.
2. Sensitivity: bits x group size x embedding on/off, and each linear layer quantized alone;
   the tied embedding / output matrix rounded for one of its two uses at a time (output layer,
   lookup), to show where its error enters.
3. Libraries: torchao's Int8WeightOnlyConfig (relative difference of the logits), torchao's CPU
   int4 path, torch.ao's quantize_dynamic (KL).
4. Speed at batch 1: the course layer shapes and a 4096 x 4096 layer, fp32 F.linear against
   QuantLinear dequantizing on the fly and QuantLinear on PyTorch's low-bit CPU kernels, with
   float32 and bfloat16 activations; decode tokens/s of a wide model with the memory bandwidth
   the weights are read at, against the machine's measured copy bandwidth.

    python bench/quantize.py            # full run, writes bench/results/quantize.json
    python bench/quantize.py --quick    # fewer tokens and repeats; the JSON says "mode": "quick"
    python bench/quantize.py --only tied  # only the tied-matrix rows, added to the stored JSON
    python bench/quantize.py --only llamacpp  # only the GGUF files run in llama.cpp (issue 26)

Targets (issue 13): int8 per-channel with the embedding: dbpb <= +0.1%, KL <= 1e-4, top-1 >= 99%,
bytes <= 0.30x fp32; int4 g32 packed: dbpb <= +0.5%, KL <= 0.01, top-1 >= 87%, bytes <= 0.18x;
packed int4 faster than fp32 on the 4096 x 4096 layer at batch 1 (float32 activations reach the
fast kernel through backend="kernel-bf16", which rounds them to bfloat16 for the matmul).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import machine_info, timed, write_results

import minillm
from minillm import quantize as Q
from minillm.course import course_data
from minillm.data import load_split
from minillm.model import GPT, GPTConfig

RESULTS = Path(__file__).resolve().parent / "results" / "quantize.json"

SCHEMES = {
    "int8 per-channel": dict(bits=8),
    "int8 per-tensor": dict(bits=8, per_tensor=True),
    "int4 g32 symmetric": dict(bits=4, group_size=32),
    "int4 g32 asymmetric": dict(bits=4, group_size=32, scheme="minmax"),
    "Q4_0": dict(bits=4, scheme="q4_0"),
    "int3 g32": dict(bits=3, group_size=32, scheme="minmax"),
}
TARGETS = {
    "int8 per-channel": dict(dbpb=0.001, kl=1e-4, top1=0.99, size=0.30),
    "int4 g32 symmetric": dict(dbpb=0.005, kl=0.01, top1=0.87, size=0.18),
}


def bigram_bpb(train: np.ndarray, ids: torch.Tensor, n_scored: int, n_bytes: int) -> float:
    """Bits per byte of an add-0.1 bigram count model from the training split."""
    V = int(max(train.max(), ids.max())) + 1
    counts = np.bincount(train[:-1].astype(np.int64) * V + train[1:], minlength=V * V)
    counts = counts.reshape(V, V) + 0.1
    logp = np.log(counts / counts.sum(1, keepdims=True))
    nll = -logp[ids[:n_scored].numpy(), ids[1 : n_scored + 1].numpy()].sum()
    return float(nll / math.log(2) / n_bytes)


def quality(model, tokenizer, val, train, tmp: Path) -> dict:
    block = model.config.block_size
    n_scored = (len(val) - 1) // block * block
    n_bytes = len(tokenizer.decode_bytes(val[1 : n_scored + 1].tolist()))
    fp32_bytes = Q.model_size_bytes(model)
    candidates, disk = {}, {}
    for name, kwargs in SCHEMES.items():
        for emb in (True, False):
            key = f"{name} | embedding {'int' if emb else 'float'}"
            candidates[key] = Q.quantize_model(model, include_embedding=emb, **kwargs)
            disk[key] = Q.save_quantized(candidates[key], tmp / "m.safetensors").stat().st_size
    seconds, agreement = timed(lambda: Q.logit_agreement(model, candidates, val))
    fp32_bpb = next(iter(agreement.values())).reference_nll / math.log(2) / n_bytes
    rows = {"fp32": dict(bpb=fp32_bpb, bytes=fp32_bytes, x_fp32=1.0)}
    for key, a in agreement.items():
        bpb = a.nll / math.log(2) / n_bytes
        rows[key] = dict(
            bpb=bpb,
            dbpb=bpb / fp32_bpb - 1,
            kl=a.mean_kl,
            top1=a.top1,
            bytes=disk[key],
            x_fp32=disk[key] / fp32_bytes,
        )
    checks = {}
    for name, t in TARGETS.items():
        r = rows[f"{name} | embedding int"]
        checks[name] = {
            "dbpb": r["dbpb"] <= t["dbpb"],
            "kl": r["kl"] <= t["kl"],
            "top1": r["top1"] >= t["top1"],
            "size": r["x_fp32"] <= t["size"],
        }
    return dict(
        tokens_scored=n_scored,
        bytes_scored=n_bytes,
        bigram_bpb=bigram_bpb(train, val, n_scored, n_bytes),
        rows=rows,
        targets=TARGETS,
        targets_met=checks,
        seconds=seconds,
    )


def sensitivity(model, ids) -> dict:
    grid = {}
    for bits in (2, 3, 4, 5, 6, 8):
        for g in (16, 32, model.config.n_embd):  # the last: one scale per row
            for emb in (True, False):
                grid[f"int{bits} g{g} {'int' if emb else 'float'}"] = Q.quantize_model(
                    model, bits, g, scheme="minmax", include_embedding=emb
                )
    sweep = {
        k: dict(kl=a.mean_kl, top1=a.top1) for k, a in Q.logit_agreement(model, grid, ids).items()
    }
    alone = {}
    for bits in (3, 4):
        layers = {
            name: Q.quantize_model(model, bits, 32, scheme="minmax", modules=[name])
            for name in Q.linear_names(model)
        }
        result = Q.logit_agreement(model, layers, ids)
        alone[f"int{bits} g32"] = {k: dict(kl=a.mean_kl, top1=a.top1) for k, a in result.items()}
    worst = {k: max(v, key=lambda n: v[n]["kl"]) for k, v in alone.items()}
    return dict(grid=sweep, layer_alone=alone, most_sensitive_layer=worst)


def _tied_variant(model, weight: torch.Tensor, *, head: bool, lookup: bool):
    """A copy of ``model`` whose output layer and/or embedding lookup use ``weight`` (untied)."""
    out = copy.deepcopy(model)
    float_weight = model.lm_head.weight.detach()
    out.lm_head.weight = torch.nn.Parameter((weight if head else float_weight).clone())
    out.transformer.wte.weight = torch.nn.Parameter((weight if lookup else float_weight).clone())
    return out.eval()


def tied_matrix(model, ids) -> dict:
    """Where the tied matrix's rounding error enters: the output layer, the lookup, or both.

    The tied embedding / output matrix is quantized once and read twice. Each row applies the
    rounded matrix to one use only (the other keeps the float weights), then to both, and
    compares with all the other linear layers quantized and the matrix left in float: when one
    use alone costs more KL than a target allows, no scheme that shares one rounded matrix
    between both uses (what the tied format stores) can meet that target.
    """
    weight = model.lm_head.weight.detach()
    schemes = {
        "int8 per-channel": dict(bits=8),
        "int8 per-channel min/max": dict(bits=8, scheme="minmax"),
        "int8 g32 min/max": dict(bits=8, group_size=32, scheme="minmax"),
        "int4 g32 symmetric": dict(bits=4, group_size=32),
    }
    candidates = {}
    for name, kwargs in schemes.items():
        rounded = Q.quantize_weight(weight, **kwargs).dequantize()
        candidates[f"{name} | output layer only"] = _tied_variant(
            model, rounded, head=True, lookup=False
        )
        candidates[f"{name} | lookup only"] = _tied_variant(model, rounded, head=False, lookup=True)
        candidates[f"{name} | both (tied)"] = _tied_variant(model, rounded, head=True, lookup=True)
        candidates[f"{name} | other layers only"] = Q.quantize_model(
            model, include_embedding=False, **kwargs
        )
    agreement = Q.logit_agreement(model, candidates, ids)
    return {
        "tokens": next(iter(agreement.values())).n_tokens,
        "rows": {k: dict(kl=a.mean_kl, top1=a.top1) for k, a in agreement.items()},
    }


def print_tied(t: dict) -> None:
    print(f"\nThe tied matrix: where its rounding error enters ({t['tokens']:,} tokens)")
    for key, r in t["rows"].items():
        print(f"  {key:<46} KL {r['kl']:9.2e}  top-1 {r['top1']:7.2%}")


def libraries(model, ids) -> dict:
    logging.disable(logging.WARNING)  # torchao logs about optional CUDA kernels on import
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    logging.disable(logging.NOTSET)

    def ao(config):
        m = GPT(model.config).eval()
        m.load_state_dict(model.state_dict())
        quantize_(
            m, config, filter_fn=lambda mod, n: isinstance(mod, torch.nn.Linear) and n != "lm_head"
        )
        return m

    out: dict = {"torchao": version("torchao")}
    x = ids[: 4 * model.config.block_size].reshape(4, -1)
    with torch.inference_mode():
        theirs = ao(Int8WeightOnlyConfig())(x)[0]
        ours = Q.quantize_model(
            model, 8, qmax=127.5, scale_dtype=torch.float32, include_embedding=False
        )(x)[0]
    out["int8_weight_only_relative_difference"] = float((theirs - ours).norm() / theirs.norm())
    mine = Q.quantize_model(model, 4, 32, scheme="minmax", include_embedding=False)
    runs = {"minillm int4 g32 minmax (embedding float)": mine}
    int4 = {}
    for label, config in [
        (
            "PrototypeInt4WeightOnlyConfig(group_size=32)",
            lambda: PrototypeInt4WeightOnlyConfig(group_size=32),
        ),
        (
            "PrototypeInt4WeightOnlyConfig(group_size=128)",
            lambda: PrototypeInt4WeightOnlyConfig(group_size=128),
        ),
        ("Int4WeightOnlyConfig(group_size=32)", lambda: Int4WeightOnlyConfig(group_size=32)),
        ("Int4WeightOnlyConfig(group_size=128)", lambda: Int4WeightOnlyConfig(group_size=128)),
    ]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = ao(config())
            stored = sorted(
                {
                    type(mod.weight).__name__
                    for mod in m.modules()
                    if isinstance(mod, torch.nn.Linear)
                }
            )
            runs[label] = m
            int4[label] = dict(runs=True, weights_stored_as=stored)
        except Exception as err:  # what does not run on this machine, and why
            int4[label] = dict(
                runs=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        runs["torch.ao quantize_dynamic int8 (weights + activations)"] = quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
    with torch.inference_mode():
        agreement = Q.logit_agreement(model, runs, ids)
    out["kl_top1"] = {k: dict(kl=a.mean_kl, top1=a.top1) for k, a in agreement.items()}
    out["int4_paths"] = int4
    return out


def layer_speed(width_in: int, width_out: int, repeats: int) -> dict:
    torch.manual_seed(0)
    linear = torch.nn.Linear(width_in, width_out, bias=False)
    fp32_bytes = width_in * width_out * 4
    layers = {
        "int8 per-channel dequantize": Q.QuantLinear.from_linear(linear, 8),
        "int8 per-channel kernel": Q.QuantLinear.from_linear(linear, 8, backend="kernel"),
        "int4 g32 dequantize": Q.QuantLinear.from_linear(linear, 4, group_size=32),
        "int4 g32 kernel": Q.QuantLinear.from_linear(linear, 4, group_size=32, backend="kernel"),
        "int8 per-channel kernel-bf16": Q.QuantLinear.from_linear(linear, 8, backend="kernel-bf16"),
        "int4 g32 kernel-bf16": Q.QuantLinear.from_linear(
            linear, 4, group_size=32, backend="kernel-bf16"
        ),
    }
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(1, width_in, dtype=dtype)
        w = linear.weight.detach().to(dtype)
        with torch.inference_mode():
            base, _ = timed(lambda x=x, w=w: F.linear(x, w), repeats)
            rows = {
                f"{dtype_name(dtype)} F.linear": dict(
                    us=base * 1e6, x_fp=1.0, gb_s=w.numel() * w.element_size() / base / 1e9
                )
            }
            for name, layer in layers.items():
                if name.endswith("bf16") and dtype != torch.float32:
                    continue  # the same as "kernel" when the activations are bfloat16 already
                layer(x)  # warm-up: the kernel backend packs its layout once
                t, _ = timed(lambda layer=layer, x=x: layer(x), repeats)
                rows[name] = dict(
                    us=t * 1e6, x_fp=t / base, gb_s=Q.model_size_bytes(layer) / t / 1e9
                )
        out[dtype_name(dtype)] = rows
    out["fp32_weight_bytes"] = fp32_bytes
    return out


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def copy_bandwidth() -> float:
    """GB/s of a large tensor copy (read + write), the machine's practical memory bandwidth."""
    src = torch.empty(64 * 2**20 // 4)
    dst = torch.empty_like(src)
    t, _ = timed(lambda: dst.copy_(src), 10)
    return 2 * src.numel() * 4 / t / 1e9


def decode_speed(new_tokens: int, repeats: int) -> dict:
    config = GPTConfig(vocab_size=4096, block_size=256, n_layer=2, n_head=16, n_embd=2048)
    torch.manual_seed(0)
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 8))
    out = {"config": config.to_dict(), "copy_bandwidth_gb_s": copy_bandwidth()}
    variants = {
        "fp32": model,
        "int8 per-channel kernel": Q.quantize_model(model, 8, backend="kernel"),
        "int4 g32 kernel": Q.quantize_model(model, 4, 32, backend="kernel"),
        "int8 per-channel kernel-bf16": Q.quantize_model(model, 8, backend="kernel-bf16"),
        "int4 g32 kernel-bf16": Q.quantize_model(model, 4, 32, backend="kernel-bf16"),
    }
    for name, m in variants.items():
        with torch.inference_mode():
            m.generate(prompt, 2, temperature=0)  # warm-up
            t, _ = timed(lambda m=m: m.generate(prompt, new_tokens, temperature=0), repeats)
        weights = Q.model_size_bytes(m)
        per_token = t / new_tokens
        out[name] = dict(
            tokens_per_s=1 / per_token,
            weight_bytes=weights,
            weight_gb_s=weights / per_token / 1e9,
            bandwidth_utilisation=weights / per_token / 1e9 / out["copy_bandwidth_gb_s"],
        )
    return out


def print_quality(q: dict) -> None:
    print(
        f"\nQuality on {q['tokens_scored']:,} validation tokens ({q['bytes_scored']:,} bytes); "
        f"bigram baseline {q['bigram_bpb']:.4f} bpb"
    )
    print(
        f"{'scheme':<42} {'bpb':>7} {'dbpb':>8} {'KL':>9} {'top-1':>7} {'bytes':>9} {'x fp32':>6}"
    )
    for key, r in q["rows"].items():
        extra = "" if key == "fp32" else f"{r['dbpb']:>+8.3%} {r['kl']:>9.2e} {r['top1']:>7.2%}"
        print(f"{key:<42} {r['bpb']:>7.4f} {extra:>26} {r['bytes']:>9,} {r['x_fp32']:>6.3f}")
    print("targets met:", q["targets_met"])


def llamacpp(model, tokenizer, val: torch.Tensor, data_dir: Path, quick: bool) -> dict:
    """The GGUF files in llama.cpp (bench/llamacpp_section.py), with the machine they ran on."""
    from llamacpp_section import llamacpp_section, print_llamacpp

    n_scored = (len(val) - 1) // model.config.block_size * model.config.block_size
    n_bytes = len(tokenizer.decode_bytes(val[1 : n_scored + 1].tolist()))
    section = {"machine": machine_info(), "mode": "quick" if quick else "full"}
    section.update(llamacpp_section(model, tokenizer, val, n_bytes, quick))
    print_llamacpp(section)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        choices=["tied", "llamacpp"],
        help="run one section and update it in the stored results (a full run first)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = minillm.course_model(verbose=False)
    data_dir = course_data(verbose=False)
    val = torch.from_numpy(load_split(data_dir, "val").astype(np.int64))
    train = load_split(data_dir, "train")
    if args.quick:
        val = val[:4097]
    sweep_ids = val[: 4097 if not args.quick else 1025]
    if args.only:
        if not RESULTS.is_file():
            raise SystemExit(f"error: no {RESULTS.name} to update; run the full benchmark first")
        stored = json.loads(RESULTS.read_text())
        if args.only == "tied":
            stored["tied_matrix"] = tied_matrix(model, sweep_ids)
            print_tied(stored["tied_matrix"])
        else:
            stored["llamacpp"] = llamacpp(model, tokenizer, val, data_dir, args.quick)
        write_results(RESULTS, stored)
        key = "tied_matrix" if args.only == "tied" else "llamacpp"
        print(f"\nupdated the {key} section of {RESULTS.name}")
        return
    repeats = 5 if args.quick else 30
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(gguf=version("gguf"), torchao=version("torchao")),
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["quality"] = quality(model, tokenizer, val, train, Path(tmp))
    print_quality(results["quality"])
    results["sensitivity"] = sensitivity(model, sweep_ids)
    print("\nmost sensitive layer alone:", results["sensitivity"]["most_sensitive_layer"])
    results["tied_matrix"] = tied_matrix(model, sweep_ids)
    print_tied(results["tied_matrix"])
    results["libraries"] = libraries(model, sweep_ids)
    print("\nlibraries:", {k: v for k, v in results["libraries"].items() if k != "int4_paths"})
    print("torchao int4 on this CPU:", results["libraries"]["int4_paths"])
    # the course model's own linear shapes (in, out), then the wide layer of the speed target
    shapes = sorted(
        {(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    ) + [(4096, 4096)]
    results["layer_speed"] = {f"{o}x{i}": layer_speed(i, o, repeats) for i, o in shapes}
    print("\nbatch-1 matmul, microseconds (x the same-dtype F.linear):")
    for shape, r in results["layer_speed"].items():
        for dtype in ("float32", "bfloat16"):
            cells = ", ".join(f"{k} {v['us']:.0f} ({v['x_fp']:.2f}x)" for k, v in r[dtype].items())
            print(f"  {shape:>9} {dtype:<8} {cells}")
    results["decode"] = decode_speed(16 if args.quick else 64, 2 if args.quick else 3)
    print("\ndecode, wide model:", {k: v for k, v in results["decode"].items() if k != "config"})
    big = results["layer_speed"]["4096x4096"]
    # float32 activations reach the fast kernel through kernel-bf16 (rounded to bfloat16 for the
    # matmul); bfloat16 activations use it directly
    results["speed_target_int4_faster_than_fp32_4096"] = {
        "float32 (kernel-bf16)": big["float32"]["int4 g32 kernel-bf16"]["x_fp"] < 1.0,
        "bfloat16 (kernel)": big["bfloat16"]["int4 g32 kernel"]["x_fp"] < 1.0,
    }
    print(
        "int4 kernel faster than F.linear at 4096x4096, batch 1:",
        results["speed_target_int4_faster_than_fp32_4096"],
    )
    results["llamacpp"] = llamacpp(model, tokenizer, val, data_dir, args.quick)
    write_results(RESULTS, results)
    print(f"\nwrote {RESULTS.relative_to(RESULTS.parents[2])} ({results['mode']} run)")


if __name__ == "__main__":
    main()
