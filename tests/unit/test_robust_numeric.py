"""Issue 17, class 3: values that used to pass validation and then crash or lie are refused.

Every float setting must be finite, every numeric flag in range, and task files are validated by
type where they are read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing

import pytest

from minillm import evaluate as E
from minillm.cli import checked_number
from minillm.train import TrainConfig, dist_info
from minillm.utils import seed_everything

FLOAT_SETTINGS = [
    f.name
    for f in dataclasses.fields(TrainConfig)
    if typing.get_type_hints(TrainConfig)[f.name] in (float, float | None)
]


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_float_setting_must_be_finite(name, bad):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{name: bad})


@pytest.mark.parametrize("peak", [0, 0.0, -5.0])
def test_peak_gflops_must_be_positive(peak):
    with pytest.raises(ValueError, match="peak_gflops must be > 0"):
        TrainConfig(peak_gflops=peak)
    assert TrainConfig(peak_gflops=None).peak_gflops is None
    assert TrainConfig(peak_gflops=12.5).peak_gflops == 12.5


@pytest.mark.parametrize("seed", [2**64, 2**63, 10**30, -1])
def test_seeds_beyond_63_bits_are_refused_where_they_enter(seed):
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=seed)
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (checked_number(float, low=0), "nan"),
        (checked_number(float, low=0), "inf"),
        (checked_number(float, low=0), "-0.5"),
        (checked_number(int, low=1), "0"),
        (checked_number(int, low=1), "1.5"),
        (checked_number(int, low=0, high=2**63 - 1), str(2**64)),
    ],
)
def test_numeric_flags_refuse_non_finite_and_out_of_range(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


def test_numeric_flags_accept_their_range():
    assert checked_number(float, low=0)("0") == 0.0
    assert checked_number(int, low=1, allow_none=True)("none") is None
    assert checked_number(int, low=1)("7") == 7


@pytest.mark.parametrize(
    ("variable", "value"), [("WORLD_SIZE", "abc"), ("WORLD_SIZE", "0"), ("RANK", "-1")]
)
def test_torchrun_variables_are_checked(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        dist_info()


def test_rank_must_be_below_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="below WORLD_SIZE"):
        dist_info()


# --- task files --------------------------------------------------------------------------------

GOOD_ITEM = {"context": "To be, or not to", "choices": [" be", " sing"], "answer": 0}
GOOD_PROBE = {"category": "gender", "template": "{} is a doctor.", "a": "He", "b": "She"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"choices": " be sing"}, "choices"),
        ({"choices": [" be"]}, "choices"),
        ({"choices": [" be", 3]}, "choices"),
        ({"answer": 1.7}, "answer"),
        ({"answer": True}, "answer"),
        ({"answer": "0"}, "answer"),
        ({"context": ["To be"]}, "context"),
        ({"id": 5}, "id"),
        ({"answer": 2}, "answer 2 is not an index"),
    ],
)
def test_multiple_choice_files_are_validated_by_type(tmp_path, change, field):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps(GOOD_ITEM) + "\n" + json.dumps({**GOOD_ITEM, **change}) + "\n")
    with pytest.raises(ValueError, match=field) as info:
        E.load_multiple_choice(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"a": 1}, "'a'"), ({"favours": "c"}, "favours"), ({"template": None}, "template")],
)
def test_bias_probe_files_are_validated_by_type(tmp_path, change, field):
    path = tmp_path / "bias.jsonl"
    path.write_text(json.dumps({**GOOD_PROBE, **change}) + "\n")
    with pytest.raises(ValueError, match=field):
        E.load_bias_probes(path)


@pytest.mark.parametrize("line", ["[1, 2]", "5", '"text"'])
def test_task_lines_must_be_objects(tmp_path, line):
    path = tmp_path / "mc.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match="must be a JSON object"):
        E.load_multiple_choice(path)


def test_valid_task_files_still_load():
    assert len(E.load_multiple_choice()) > 0
    assert len(E.load_bias_probes()) > 0
