"""``minillm finetune --method grpo``: reinforcement learning from a verifiable reward (lesson 14).

The task and reward are :mod:`minillm.finetune.rewards`' (after a speaker's name and two lines of
their speech, write the next line, ten syllables of real words); the update is
:mod:`minillm.finetune.grpo`'s. Each step samples ``--group-size`` completions for each of
``--batch-size`` training prompts, scores them, and returns the clipped loss with the KL penalty
(``--beta``) to the base model, which the recipe's loop
(:func:`minillm.cli.finetune_recipe.run_finetune`) then minimises, checkpoints and resumes like every other method. The held-out reward is measured
on prompts of the held-out plays only, before (the base model) and after.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from minillm.data.pipeline import prepare_corpus
from minillm.finetune.grpo import GRPOConfig
from minillm.finetune.grpo_rollout import rollout, rollout_loss, sample_group
from minillm.finetune.rewards import naive_syllable_reward, verse_prompts, verse_reward

__all__ = ["grpo_config", "grpo_parts", "line_end_ids"]


def line_end_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every token whose text holds a newline: a completion's line ends at the first of them."""
    ids = []
    for i in range(tokenizer.vocab_size):
        try:
            text = tokenizer.decode([i])
        except (KeyError, ValueError):  # an id without text (a special token some tokenizers skip)
            continue
        if "\n" in text:
            ids.append(i)
    return tuple(ids)


def grpo_config(settings: Any, end_ids: tuple[int, ...]) -> GRPOConfig:
    """The :class:`GRPOConfig` of a run's settings (one iteration per batch, the paper's loss)."""
    return GRPOConfig(
        group_size=settings.group_size,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        epsilon=settings.clip_epsilon,
        beta=settings.beta,
        end_ids=end_ids,
    )


def grpo_parts(
    settings: Any,
    base: nn.Module,
    tokenizer: Any,
    docs: Sequence | None,
    held_out: Sequence[str],
    ci: Callable[[Sequence[float]], dict[str, float]],
) -> tuple[nn.Module, Callable[[torch.Generator], torch.Tensor], Callable[[], dict[str, Any]]]:
    """(policy, loss of one batch, held-out scoring) of a GRPO run from ``base``."""
    end_ids = line_end_ids(tokenizer)
    if not end_ids:
        raise ValueError("--method grpo needs a tokenizer with a newline token")
    prompts = verse_prompts(
        prepare_corpus() if docs is None else docs,
        per_play=settings.per_play,
        eval_plays=held_out,
        seed=settings.seed,
    )
    if not prompts["train"] or not prompts["eval"]:
        raise ValueError("no prompts for --method grpo: the plays have no speech of three lines")
    config = grpo_config(settings, end_ids)
    reference = base.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = copy.deepcopy(base)
    for p in policy.parameters():
        p.requires_grad_(True)
    train = [tokenizer.encode_ordinary(p) for p in prompts["train"]]
    held = [tokenizer.encode_ordinary(p) for p in prompts["eval"]]

    def reward(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> float:
        return verse_reward(tokenizer.decode(list(completion_ids)))

    def loss(gen: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, len(train), (settings.batch_size,), generator=gen).tolist()
        batch = rollout(policy, [train[i] for i in rows], reward, config, gen)
        return rollout_loss(policy, reference, batch, config).loss

    @torch.no_grad()
    def held_out_rewards(model: nn.Module) -> tuple[list[float], list[float]]:
        gen = torch.Generator().manual_seed(settings.seed + 1)  # the same draws before and after
        strong, naive = [], []
        for prompt in held:
            ids, mask, _ = sample_group(
                model, prompt, config.group_size, config.max_new_tokens, config.temperature,
                config.end_ids, gen,
            )  # fmt: skip
            texts = [
                tokenizer.decode(r[: int(m.sum())].tolist()) for r, m in zip(ids, mask, strict=True)
            ]
            strong.append(sum(map(verse_reward, texts)) / len(texts))
            naive.append(sum(map(naive_syllable_reward, texts)) / len(texts))
        return strong, naive

    def score() -> dict[str, Any]:
        before, naive_before = held_out_rewards(reference)
        after, naive_after = held_out_rewards(policy)
        return {
            "reward_before": ci(before),
            "reward_after": ci(after),
            "naive_reward_before": ci(naive_before),
            "naive_reward_after": ci(naive_after),
            "eval_prompts": len(held),
            "train_prompts": len(train),
        }

    return policy, loss, score
