"""Train the course model and write it into the package, where ``minillm.course_model()`` finds it.

    python scripts/ship_course_model.py                  # train COURSE_TRAIN (about 15 min), ship it
    python scripts/ship_course_model.py --from-run DIR   # ship a run trained earlier into DIR

Writes ``minillm/assets/course_model/``: ``model.safetensors`` (the weights only, as a minillm
checkpoint), ``tokenizer.bpe`` and ``card.json`` (the model and training configuration, the data
settings, SHA-256 fingerprints of both files, the validation and test scores of the stored weights,
the training time and the machine it ran on). Every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from minillm.course import (
    COURSE_TRAIN,
    SHIPPED_CARD,
    SHIPPED_DIR,
    SHIPPED_WEIGHTS,
    course_data,
    split_bits_per_byte,
    train_course_model,
)
from minillm.tokenizer import BPETokenizer
from minillm.train import (
    CHECKPOINT_NAME,
    COURSE_DATA,
    TOKENIZER_NAME,
    load_checkpoint,
    read_log,
    save_checkpoint,
)
from minillm.utils import cpu_name, sha256_file

# Above this the weights are stored as bfloat16 (the package must stay small).
MAX_FLOAT32_BYTES = 10_000_000


def write_json_atomic(path: Path, data: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)


def ship(run_dir: Path, train_seconds: float | None) -> dict:
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME)
    model = checkpoint.build_model()
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    store_dtype = torch.float32 if n_bytes <= MAX_FLOAT32_BYTES else torch.bfloat16
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    stored = model.to(store_dtype)
    tokenizer = BPETokenizer.load(run_dir / TOKENIZER_NAME)
    save_checkpoint(
        SHIPPED_DIR / SHIPPED_WEIGHTS,
        stored,
        step=checkpoint.step,
        train_config=checkpoint.train_config,
        rng_states=[],
        tokenizer_fingerprint=tokenizer.fingerprint(),
    )
    tmp = SHIPPED_DIR / f".{TOKENIZER_NAME}.tmp"
    shutil.copyfile(run_dir / TOKENIZER_NAME, tmp)
    os.replace(tmp, SHIPPED_DIR / TOKENIZER_NAME)

    shipped = load_checkpoint(SHIPPED_DIR / SHIPPED_WEIGHTS).build_model()  # what users get
    data_dir = course_data(verbose=False)
    val = split_bits_per_byte(shipped, data_dir, "val")
    test = split_bits_per_byte(shipped, data_dir, "test")
    log = read_log(run_dir)
    card = {
        "format": "minillm-course-model",
        "version": 1,
        "model_config": checkpoint.model_config,
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "stored_dtype": str(store_dtype).removeprefix("torch."),
        "train_config": {
            k: v
            for k, v in checkpoint.train_config.items()
            if k not in ("data_dir", "out_dir", "progress")
        },
        "course_train": COURSE_TRAIN,
        "data": COURSE_DATA,
        "steps": checkpoint.step,
        "train_seconds": train_seconds,
        "val": val,
        "test": test,
        "log": [r for r in log if r.get("kind") in ("train", "eval")],
        "weights_sha256": sha256_file(SHIPPED_DIR / SHIPPED_WEIGHTS),
        "tokenizer_sha256": sha256_file(SHIPPED_DIR / TOKENIZER_NAME),
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "trained_at": time.strftime("%Y-%m-%d"),
    }
    write_json_atomic(SHIPPED_DIR / SHIPPED_CARD, card)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-run", type=Path, default=None, help="a run folder to ship")
    parser.add_argument("--run-dir", type=Path, default=None, help="where to train (kept)")
    args = parser.parse_args()
    seconds = None
    run_dir = args.from_run
    if run_dir is None:
        run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="course-model-"))
        result = train_course_model(run_dir, verbose=True, overwrite=True)
        seconds = round(result.seconds, 1)
    card = ship(run_dir, seconds)
    print(
        f"shipped {card['parameters']:,} parameters ({card['stored_dtype']}) to {SHIPPED_DIR}: "
        f"validation {card['val']['bits_per_byte']:.4f} bits/byte, "
        f"test {card['test']['bits_per_byte']:.4f}; trained in {seconds} s on {card['machine']['cpu']}"
    )


if __name__ == "__main__":
    main()
