"""Mixed-precision benchmark: matmul speed per dtype, training speed and activation memory.

1. Matmul GFLOP/s of float32, bfloat16 and float16 at 256, 512 and 1024 (square products).
2. Training tokens/s (AdamW steps on one batch) on the course preset and on a wide preset
   (width 512, context 256): float32, bfloat16 autocast, float16 autocast with a loss scaler,
   (on the course preset; float16 matmuls have no fast CPU kernel), and torch.compile
   (fullgraph=True) in float32 and in bfloat16, with its compile time (the first step, minus a
   steady one). Each row: one untimed step, then ``--steps`` timed ones.
3. Activation memory per dtype: bytes autograd keeps for backward in one forward pass
   (:func:`minillm.train.precision.saved_activation_bytes`), and CUDA's peak when a GPU is present.

    python bench/precision.py            # full run, writes bench/results/precision.json
    python bench/precision.py --quick    # no torch.compile on the wide preset

Target (issue 11, bench only): bfloat16 autocast >= 1.5x float32 tokens/s on the wide preset on a
CPU whose bfloat16 matmul is >= 2x its float32; on the course preset the ratio is reported (its
matmuls are small: casts and overheads weigh as much as the arithmetic).
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import torch
import torch._inductor.config
from common import machine_info, write_results

from minillm.model import GPT, GPTConfig
from minillm.train import precision as P
from minillm.utils import measure_matmul_gflops, seed_everything

RESULT = Path(__file__).resolve().parent / "results" / "precision.json"

PRESETS = {
    "course": dict(config=GPTConfig.preset("course"), batch_size=16),
    "wide": dict(
        config=GPTConfig.preset("course", n_embd=512, n_head=8, block_size=256), batch_size=4
    ),
}


def matmul_table(sizes: list[int], device: torch.device) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name, dtype in P.DTYPES.items():
        table[name] = {}
        for size in sizes:
            try:
                table[name][str(size)] = round(measure_matmul_gflops(dtype, size, device=device), 2)
            except RuntimeError as err:  # a device without kernels for this dtype
                table[name][str(size)] = float("nan")
                print(f"  {name} {size}: {err}")
    return table


def _batch(config: GPTConfig, batch_size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch_size, config.block_size + 1), generator=g)
    return ids[:, :-1].to(device), ids[:, 1:].to(device)


def speed_row(model, x, y, dtype: str, compiled: bool, steps: int) -> dict[str, float]:
    """Tokens/s of ``steps`` timed steps (and the compile time when ``compiled``)."""
    model = copy.deepcopy(model)
    forward, first_s = model, 0.0
    if compiled:
        torch._dynamo.reset()
        forward = torch.compile(model, fullgraph=True)
        started = time.perf_counter()
        P.train_tokens_per_s(model, x, y, dtype, steps=1, warmup=0, forward=forward)
        first_s = time.perf_counter() - started
    tokens_per_s = P.train_tokens_per_s(model, x, y, dtype, steps=steps, warmup=1, forward=forward)
    row = {"tokens_per_s": round(tokens_per_s, 1)}
    if compiled:  # the first step's time beyond a steady step's
        row["compile_s"] = round(first_s - x.numel() / tokens_per_s, 2)
    return row


def preset_results(name: str, spec: dict, device: torch.device, quick: bool, steps: int) -> dict:
    config, batch_size = spec["config"], spec["batch_size"]
    seed_everything(0)
    model = GPT(config).to(device)
    x, y = _batch(config, batch_size, device)
    runs = [("float32", False), ("bfloat16", False)]
    if name == "course":  # float16 matmuls have no fast CPU kernel: one preset is enough to show it
        runs.append(("float16", False))
    if not (quick and name == "wide"):
        runs += [("float32", True), ("bfloat16", True)]
    speed = {}
    for dtype, compiled in runs:
        label = f"{dtype} + compile" if compiled else dtype
        print(f"  {name}: {label} ...", flush=True)
        n = 1 if dtype == "float16" and device.type == "cpu" else steps
        speed[label] = speed_row(model, x, y, dtype, compiled, n)
        print(f"    {speed[label]}", flush=True)
    memory = {}
    for dtype in P.DTYPES:
        memory[dtype] = P.saved_activation_bytes(model, x, y, dtype, device)
    if device.type == "cuda":
        for dtype in P.DTYPES:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with P.autocast_context(dtype, device):
                _, loss = model(x, y)
            memory[f"{dtype} cuda_peak"] = torch.cuda.max_memory_allocated() - base
            del loss
    fp32 = speed["float32"]["tokens_per_s"]
    return {
        "model": {
            "n_layer": config.n_layer,
            "n_embd": config.n_embd,
            "block_size": config.block_size,
            "batch_size": batch_size,
            "parameters": model.num_params(),
        },
        "tokens_per_s": speed,
        "speed_vs_float32": {k: round(v["tokens_per_s"] / fp32, 3) for k, v in speed.items()},
        "saved_activation_bytes": memory,
        "memory_vs_float32": {
            k: round(v / memory["float32"], 3) for k, v in memory.items() if "cuda" not in k
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per row")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # time cold compilations, as a first run pays them (Inductor otherwise reuses cached kernels)
    torch._inductor.config.force_disable_caches = True
    results = {
        "machine": machine_info(device=str(device)),
        "mode": "quick" if args.quick else "full",
        "steps": args.steps,
        "compile_caches": "disabled (cold compile times)",
    }
    print("matmul GFLOP/s ...", flush=True)
    results["matmul_gflops"] = matmul_table([256, 512, 1024], device)
    for name, row in results["matmul_gflops"].items():
        print(f"  {name:<9}" + "".join(f"{size:>6}: {v:>8.1f}" for size, v in row.items()))
    for name, spec in PRESETS.items():
        results[name] = preset_results(name, spec, device, args.quick, args.steps)
    bf16_matmul = results["matmul_gflops"]["bfloat16"]["1024"]
    fp32_matmul = results["matmul_gflops"]["float32"]["1024"]
    wide_ratio = results["wide"]["speed_vs_float32"]["bfloat16"]
    results["target"] = {
        "bf16_matmul_vs_fp32": round(bf16_matmul / fp32_matmul, 2),
        "wide_bf16_vs_fp32_tokens_per_s": wide_ratio,
        "applies": bf16_matmul >= 2 * fp32_matmul,
        "met": wide_ratio >= 1.5 if bf16_matmul >= 2 * fp32_matmul else None,
    }

    print(f"\n{'preset':<8}{'run':<20}{'tokens/s':>10}{'x fp32':>8}{'compile s':>11}")
    for name in PRESETS:
        r = results[name]
        for label, row in r["tokens_per_s"].items():
            ratio = r["speed_vs_float32"][label]
            compile_s = row.get("compile_s", "")
            print(f"{name:<8}{label:<20}{row['tokens_per_s']:>10,.0f}{ratio:>8.2f}{compile_s:>11}")
    print(f"\n{'preset':<8}{'dtype':<10}{'saved for backward':>20}{'x fp32':>8}")
    for name in PRESETS:
        for dtype, ratio in results[name]["memory_vs_float32"].items():
            saved = results[name]["saved_activation_bytes"][dtype]
            print(f"{name:<8}{dtype:<10}{saved / 2**20:>17.1f} MiB{ratio:>8.2f}")
    print(f"\ntarget: {results['target']}")
    write_results(RESULT, results)
    print(f"wrote {RESULT.relative_to(RESULT.parents[2])}")


if __name__ == "__main__":
    main()
