"""The command line: `python -m minillm` and the `minillm` entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from minillm import cli
from minillm.utils import environment as utils


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minillm", *args], capture_output=True, text=True, timeout=300
    )


def test_doctor_command_exits_zero_here():
    result = run("doctor", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch" in result.stdout and "ready for the course" in result.stdout


def test_doctor_command_exits_non_zero_when_the_course_cannot_run(monkeypatch, capsys):
    monkeypatch.setattr(utils, "_PACKAGES", [("not_a_real_module_xyz", "not-a-real-dist", "core")])
    assert cli.main(["doctor", "--quick"]) == 1
    assert "PROBLEM" in capsys.readouterr().out


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    assert "doctor" in result.stdout


def test_no_command_prints_help_and_fails():
    result = run()
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_unknown_command_is_rejected(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert capsys.readouterr().err.startswith("error: minillm: argument COMMAND: invalid choice")


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "/no/such/checkpoint.safetensors", "--tasks", "cloze"],
        ["sample", "--checkpoint", "/no/such/run"],
        ["train", "--data-dir", "/no/such/data", "--out-dir", "/tmp/minillm-cli-unused"],
    ],
    ids=["eval", "sample", "train"],
)
def test_bad_input_is_one_line_not_a_traceback(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/no/such" in err
    assert "Traceback" not in err
