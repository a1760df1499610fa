"""The ``minillm train`` and ``minillm sample`` commands.

``minillm train`` turns every :class:`minillm.train.TrainConfig` setting into a flag (a config file
given with ``--config`` is read first, flags override it); ``minillm sample`` continues a prompt
with a checkpoint or the course model. Taught in lesson 05 (pretraining).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import torch

from minillm import course
from minillm.cli.entry import checked_number
from minillm.course import course_model
from minillm.tokenizer.bpe import BPETokenizer
from minillm.train.checkpoint import (
    CHECKPOINT_NAME,
    TOKENIZER_NAME,
    check_tokenizer,
    load_checkpoint,
)
from minillm.train.config import TrainConfig
from minillm.train.distributed import dist_info
from minillm.train.loop import train
from minillm.train.runlog import LOG_NAME
from minillm.utils.environment import MAX_SEED, auto_device


def _parse_none(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as rmsnorm


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig setting; only flags given on the command line override."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_overrides":
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        kind = (
            next(a for a in typing.get_args(hint) if a is not type(None))
            if typing.get_args(hint)
            else hint
        )
        parse = _parse_none(kind) if type(None) in typing.get_args(hint) else kind
        choices = f.metadata.get("choices") or None  # argparse names them in its error
        metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
        parser.add_argument(
            flag, type=parse, choices=choices, default=None, metavar=metavar, help=help_text
        )
    parser.add_argument(
        "--model-override",
        dest="model_overrides",
        type=_parse_override,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="replace one GPTConfig field of the preset, e.g. n_layer=2 (repeatable; "
        "VALUE is read as JSON when it can be)",
    )


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if "model_overrides" in given:
        given["model_overrides"] = dict(given["model_overrides"])
    if args.config:
        base = TrainConfig.from_file(args.config).to_dict()
        if "model_overrides" in given:
            given["model_overrides"] = {**base["model_overrides"], **given["model_overrides"]}
        return TrainConfig.from_dict({**base, **given})
    return TrainConfig.from_dict(given)


def _train_cli(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    result = train(config, resume=args.resume)
    if dist_info().is_main:
        val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
        print(
            f"done: {result.step} steps in {result.seconds:.0f} s, validation loss {val}; "
            f"checkpoint {result.checkpoint_path}, log {result.out_dir / LOG_NAME}"
        )
    return 0


def _sample_cli(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        model, tokenizer = course_model(verbose=True)
    else:
        checkpoint_path = Path(args.checkpoint)
        if checkpoint_path.is_dir():
            checkpoint_path = checkpoint_path / CHECKPOINT_NAME
        checkpoint = load_checkpoint(checkpoint_path)
        tokenizer_path = Path(args.tokenizer or checkpoint_path.parent / TOKENIZER_NAME)
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"no tokenizer at {tokenizer_path}; pass --tokenizer PATH")
        tokenizer = BPETokenizer.load(tokenizer_path)
        check_tokenizer(checkpoint, tokenizer, tokenizer_path)
        model = checkpoint.build_model()
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"{tokenizer_path} has {tokenizer.vocab_size} ids but the model only "
                f"{model.config.vocab_size}; pass the run's own tokenizer (--tokenizer PATH)"
            )
    device = auto_device(args.device)
    model.to(device)
    prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    if not prompt_ids:
        prompt_ids = [tokenizer.eot_id]  # an empty prompt starts a fresh document
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = torch.tensor([prompt_ids] * args.num_samples, device=device)
    out = model.generate(
        idx,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        generator=generator,
    )
    for number, row in enumerate(out.tolist(), start=1):
        if args.num_samples > 1:
            print(f"--- sample {number} ---")
        print(tokenizer.decode(row))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm train``, ``minillm sample`` and ``minillm course``."""
    train_parser = subparsers.add_parser(
        "train",
        help="pretrain a GPT on prepared shards (config file and/or flags)",
        description="Pretrain a GPT on the shards written by `minillm prepare`. Settings come "
        "from --config (a .toml or .json file; configs/course.toml is the course default), then "
        "from the flags below, which override it. Under torchrun every rank trains on its "
        "shard of the data; only rank 0 writes the log and the checkpoint.",
    )
    train_parser.add_argument(
        "--config", type=Path, default=None, help="a .toml or .json file of settings"
    )
    train_parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT_DIR/checkpoint.safetensors exactly where it stopped",
    )
    _add_setting_flags(train_parser)
    train_parser.set_defaults(handler=_train_cli)

    sample_parser = subparsers.add_parser(
        "sample",
        help="generate text from a checkpoint",
        description="Continue a prompt with a trained model. Without --checkpoint the course "
        "model is used (trained and cached on first use, see minillm.course_model).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sample_parser.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint.safetensors file or the run folder holding one",
    )
    sample_parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer file; default: tokenizer.bpe beside the checkpoint",
    )
    sample_parser.add_argument("--prompt", default="", help="text to continue ('' = from scratch)")
    sample_parser.add_argument(
        "--max-new-tokens", type=checked_number(int, low=0), default=200, help="tokens to generate"
    )
    sample_parser.add_argument(
        "--temperature",
        type=checked_number(float, low=0, high=100),
        default=0.8,
        help="randomness: 0 = greedy, 1 = the model's",
    )
    sample_parser.add_argument(
        "--top-k",
        type=checked_number(int, low=1, allow_none=True),
        default=50,
        help="sample among the k most likely tokens ('none': all)",
    )
    sample_parser.add_argument(
        "--num-samples",
        type=checked_number(int, low=1, high=1024),
        default=1,
        help="how many continuations",
    )
    sample_parser.add_argument(
        "--seed", type=checked_number(int, low=0, high=MAX_SEED), default=1337, help="sampling seed"
    )
    sample_parser.add_argument(
        "--device", default=None, help="cpu, cuda, mps; default: the fastest available"
    )
    sample_parser.set_defaults(handler=_sample_cli)
    add_course_cli(subparsers)


def _course_cli(args: argparse.Namespace) -> int:
    removed = course.clean_stale_temporaries()
    for path in removed:
        print(f"removed the leftover {path.name}")
    data_dir = course.course_data(rebuild=args.rebuild_data, verbose=True)
    print(f"course data: {data_dir}")
    if args.retrain:
        model, _ = course.course_model(retrain=True, verbose=True)
        print(f"retrained the course model into {course.course_model_dir()}")
    else:
        model, _ = course.course_model(verbose=False)
    score = course.split_bits_per_byte(model, data_dir)
    print(f"course model: {score['bits_per_byte']:.4f} bits per byte on the validation split")
    return 0


def add_course_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``minillm course``: check, heal or rebuild the cached course data and model."""
    parser = subparsers.add_parser(
        "course",
        help="check or rebuild the cached course data and model",
        description="Check the cached course data (a damaged folder is rebuilt, saying so), remove "
        "leftovers of killed runs, and score the course model on the validation split. "
        "--rebuild-data prepares the data again; --retrain trains the course model from scratch "
        "(about 15 minutes on 2 CPU cores) into the cache.",
    )
    parser.add_argument("--rebuild-data", action="store_true", help="prepare the data again")
    parser.add_argument("--retrain", action="store_true", help="train the course model again")
    parser.set_defaults(handler=_course_cli)
