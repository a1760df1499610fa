"""Reinforcement learning benchmark (issue 25): GRPO on the course model, ten-syllable lines.

The task (:mod:`minillm.finetune.rewards`): after a speaker's name and two lines of one of their
speeches, write the next line with ten syllables (CMU dictionary; every word real, none
repeated more than a quarter of the line). Training prompts come from the training plays only;
the reward is measured on prompts of the evaluation plays (``EVAL_PLAYS``), never trained on,
before and after, each prompt's reward the mean over ``--eval-samples`` completions, with a 95%
bootstrap interval over the prompts. The hackable reward (syllables of any text) is measured
beside it, and a few samples before and after are kept.

    python bench/rl.py                 # --minutes 6 of training, then the held-out scoring
    python bench/rl.py --quick         # 5 steps, a smoke run; the JSON says "mode": "quick"
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, machine_info, write_results  # noqa: E402

from minillm import course_model  # noqa: E402
from minillm.cli.finetune_grpo import line_end_ids  # noqa: E402
from minillm.data.pipeline import prepare_corpus, split_documents  # noqa: E402
from minillm.evaluate.metrics import bits_per_byte  # noqa: E402
from minillm.evaluate.stats import bootstrap_ci  # noqa: E402
from minillm.finetune.grpo import GRPOConfig  # noqa: E402
from minillm.finetune.grpo_rollout import grpo_step, sample_group  # noqa: E402
from minillm.finetune.rewards import naive_syllable_reward, verse_prompts, verse_reward  # noqa: E402


@torch.no_grad()
def held_out_reward(model, tokenizer, prompts, config, samples, seed, reward):
    """Per prompt: the mean reward of ``samples`` completions (a fixed generator)."""
    gen = torch.Generator().manual_seed(seed)
    scores, shown = [], []
    for prompt in prompts:
        ids, mask, _ = sample_group(
            model, tokenizer.encode_ordinary(prompt), samples, config.max_new_tokens,
            config.temperature, config.end_ids, gen,
        )  # fmt: skip
        texts = [
            tokenizer.decode(row[: int(m.sum())].tolist()) for row, m in zip(ids, mask, strict=True)
        ]
        scores.append(sum(map(reward, texts)) / samples)
        shown.append(texts[0])
    return scores, shown


def ci(values, seed=0):
    est = bootstrap_ci(values, n_resamples=2000, seed=seed)
    return {"mean": est.mean, "low": est.low, "high": est.high, "n": est.n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=10_000)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--epsilon", type=float, default=0.2)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--loss-type", default="grpo")
    parser.add_argument("--per-play", type=int, default=20, help="prompts per play")
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bpb-chars", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS_DIR / "rl.json"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MINILLM_THREADS", "1")))
    info = machine_info()
    torch.manual_seed(args.seed)
    base, tokenizer = course_model(verbose=False)
    base.eval()
    end_ids = line_end_ids(tokenizer)
    docs = prepare_corpus()
    prompts = verse_prompts(docs, per_play=args.per_play, seed=args.seed)
    # what RL costs: bits per byte of held-out pretraining text (the validation split's plays)
    val_text = "\n\n".join(d.text for d in split_documents(docs, (0.9, 0.05, 0.05), seed=0)["val"])
    val_text = val_text[: 4000 if args.quick else args.bpb_chars]
    config = GRPOConfig(
        group_size=args.group_size, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, epsilon=args.epsilon, beta=args.beta,
        loss_type=args.loss_type, end_ids=end_ids,
    )  # fmt: skip

    def reward(prompt_ids, completion_ids):  # the completion ends with its newline token
        return verse_reward(tokenizer.decode(list(completion_ids)))

    eval_prompts = prompts["eval"] if not args.quick else prompts["eval"][:8]
    before, before_text = held_out_reward(
        base, tokenizer, eval_prompts, config, args.eval_samples, args.seed + 1, verse_reward
    )
    naive_before, _ = held_out_reward(
        base,
        tokenizer,
        eval_prompts,
        config,
        args.eval_samples,
        args.seed + 1,
        naive_syllable_reward,
    )
    policy = copy.deepcopy(base)
    for p in base.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    train_ids = [tokenizer.encode_ordinary(p) for p in prompts["train"]]
    budget = 0.05 if args.quick else args.minutes
    max_steps = 5 if args.quick else args.max_steps
    curve, step, start = [], 0, time.perf_counter()
    while step < max_steps and time.perf_counter() - start < budget * 60:
        rows = torch.randint(0, len(train_ids), (args.prompts_per_step,), generator=gen).tolist()
        stats = grpo_step(
            policy, base, optimizer, [train_ids[i] for i in rows], reward, config, gen
        )
        curve.append({"step": step, "reward": stats.reward, "kl": stats.kl, "loss": stats.loss})
        step += 1
        if step % 10 == 0:
            recent = sum(c["reward"] for c in curve[-10:]) / 10
            print(
                f"step {step}: train reward (last 10) {recent:.3f}, kl {stats.kl:.4f}", flush=True
            )
    seconds = time.perf_counter() - start
    policy.eval()
    after, after_text = held_out_reward(
        policy, tokenizer, eval_prompts, config, args.eval_samples, args.seed + 1, verse_reward
    )
    naive_after, _ = held_out_reward(
        policy,
        tokenizer,
        eval_prompts,
        config,
        args.eval_samples,
        args.seed + 1,
        naive_syllable_reward,
    )
    rb, ra = ci(before), ci(after)
    bpb_before, bpb_after = (float(bits_per_byte(m, tokenizer, val_text)) for m in (base, policy))

    def distinct(texts):  # the share of different first lines: a collapse to one line shows here
        lines = [t.split("\n", 1)[0] for t in texts]
        return len(set(lines)) / len(lines)

    result = {
        "mode": "quick" if args.quick else "full",
        "task": "next line of a speech with ten syllables (minillm.finetune.rewards.verse_reward)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "quick")},
        "train_prompts": len(train_ids),
        "eval_prompts": len(eval_prompts),
        "reward_before": rb,
        "reward_after": ra,
        "intervals_overlap": not (ra["low"] > rb["high"] or rb["low"] > ra["high"]),
        "naive_reward_before": ci(naive_before),
        "naive_reward_after": ci(naive_after),
        "bits_per_byte_before": bpb_before,
        "bits_per_byte_after": bpb_after,
        "bpb_chars": len(val_text),
        "distinct_lines_before": distinct(before_text),
        "distinct_lines_after": distinct(after_text),
        "steps": step,
        "seconds": seconds,
        "cpu": info["cpu"],
        "load_average": list(os.getloadavg()),
        "machine": info,
        "curve": curve,
        "samples": [
            {"prompt": p, "before": b, "after": a}
            for p, b, a in list(zip(eval_prompts, before_text, after_text, strict=True))[:8]
        ],
    }
    write_results(Path(args.out), result)
    print(
        f"held-out reward {rb['mean']:.3f} [{rb['low']:.3f}, {rb['high']:.3f}] -> "
        f"{ra['mean']:.3f} [{ra['low']:.3f}, {ra['high']:.3f}] after {step} steps, {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
