"""Does retraining the course model on this machine reproduce the shipped one?

The shipped weights (minillm/assets/course_model) were trained on one CPU; another CPU rounds
floats differently (other SIMD widths, fused multiply-adds, thread counts), so a retrained model
is never bit-identical. What must hold is the learning curve: this script trains the course
recipe (``minillm.course.COURSE_TRAIN``, the same code path as ``course_model(retrain=True)``)
from scratch for ``--steps`` steps (the learning-rate schedule still runs to the full length, so
the first steps are those of the full run) and compares its validation loss at each evaluation
with the curve recorded in the shipped card, within a stated tolerance.

    python bench/reproduce_course_model.py               # the first 1,000 steps (about 1.5 minutes)
    python bench/reproduce_course_model.py --steps 14000  # the whole run (about 15 minutes), then
                                                          # the whole-split bits per byte as well

Tolerance: 0.03 nats per token on the evaluation loss (16 batches of validation windows) and
0.01 bits per byte on the whole validation split. Two runs of the recipe on different CPUs
differ by far less than a change of recipe moves the curve (a learning rate of 6e-3 instead of
3e-3 moves the 1,000-step loss by more than 0.05 in bench/results/course_recipe.json).
Writes bench/results/reproduce_course_model.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import RESULTS_DIR, machine_info, write_results

from minillm.course import COURSE_TRAIN, course_data, shipped_card, split_bits_per_byte
from minillm.train import TrainConfig, train

LOSS_TOLERANCE = 0.03  # nats per token, evaluation loss at the same step
BPB_TOLERANCE = 0.01  # bits per byte, whole validation split, full run only


def shipped_curve() -> dict[int, float]:
    card = shipped_card()
    if card is None:
        raise SystemExit("error: no shipped course model (minillm/assets/course_model) to compare")
    return {int(r["step"]): float(r["val_loss"]) for r in card["log"] if r["kind"] == "eval"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps to train (default 1000)")
    args = parser.parse_args(argv)
    full = int(COURSE_TRAIN["max_steps"])
    if not 1 <= args.steps <= full:
        parser.error(f"--steps must be between 1 and {full}, got {args.steps}")
    curve = shipped_curve()
    data_dir = course_data(verbose=False)
    with tempfile.TemporaryDirectory(prefix="minillm-reproduce-") as out:
        config = TrainConfig.from_dict(
            {**COURSE_TRAIN, "data_dir": str(data_dir), "out_dir": out, "device": "cpu"}
            | {"checkpoint_interval": 0, "progress": False}
        )
        start = time.perf_counter()
        result = train(config, stop_after=args.steps)
        seconds = time.perf_counter() - start
        split = split_bits_per_byte(result.model, data_dir) if args.steps == full else None
    rows = []
    for record in result.history:
        if record.get("kind") == "eval" and record["step"] in curve:
            shipped = curve[record["step"]]
            rows.append(
                {
                    "step": record["step"],
                    "val_loss": round(record["val_loss"], 4),
                    "shipped_val_loss": round(shipped, 4),
                    "difference": round(record["val_loss"] - shipped, 4),
                }
            )
    print(f"{'step':>6} {'retrained':>10} {'shipped':>8} {'difference':>11}")
    for row in rows:
        print(
            f"{row['step']:>6} {row['val_loss']:>10.4f} {row['shipped_val_loss']:>8.4f} "
            f"{row['difference']:>+11.4f}"
        )
    worst = max(abs(row["difference"]) for row in rows)
    ok = worst <= LOSS_TOLERANCE
    summary = {
        "steps": args.steps,
        "train_seconds": round(seconds, 1),
        "worst_loss_difference": worst,
        "loss_tolerance": LOSS_TOLERANCE,
        "curve": rows,
    }
    if split is not None:
        shipped_bpb = shipped_card()["val"]["bits_per_byte"]
        summary |= {
            "val_bits_per_byte": round(split["bits_per_byte"], 4),
            "shipped_val_bits_per_byte": round(shipped_bpb, 4),
            "bpb_tolerance": BPB_TOLERANCE,
        }
        ok = ok and abs(split["bits_per_byte"] - shipped_bpb) <= BPB_TOLERANCE
        print(
            f"whole validation split: {split['bits_per_byte']:.4f} bits/byte, shipped {shipped_bpb:.4f}"
        )
    summary["reproduced"] = ok
    print(
        f"worst difference {worst:.4f} nats/token over {len(rows)} evaluations "
        f"(tolerance {LOSS_TOLERANCE}); {args.steps} steps in {seconds:.0f} s: "
        + ("REPRODUCED" if ok else "NOT REPRODUCED")
    )
    write_results(
        RESULTS_DIR / "reproduce_course_model.json", {"machine": machine_info(), **summary}
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
