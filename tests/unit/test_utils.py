"""minillm.utils: seeding, device choice and the doctor."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from minillm.utils import auto_device, doctor, measure_matmul_gflops, seed_everything
from minillm.utils import environment as utils


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_everything_repeats_every_generator():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
    seed_everything(8)
    assert draws() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        seed_everything(bad)


def test_auto_device_defaults_to_an_available_device(monkeypatch):
    monkeypatch.delenv(utils.DEVICE_ENV_VAR, raising=False)
    device = auto_device()
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    assert device.type == expected


def test_auto_device_environment_override(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV_VAR, "cpu")
    assert auto_device() == torch.device("cpu")


def test_auto_device_argument_beats_environment(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV_VAR, "not-a-device")
    assert auto_device("cpu") == torch.device("cpu")


def test_auto_device_rejects_unknown_names(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="allowed: cpu, cuda, mps"):
        auto_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_auto_device_rejects_unavailable_devices():
    with pytest.raises(ValueError, match="not available on this machine"):
        auto_device("cuda")


def test_measure_matmul_gflops_is_positive():
    assert measure_matmul_gflops(torch.float32, size=64, seconds=0.03) > 0


def test_doctor_reports_ready_here(capsys):
    report = doctor(verbose=True, measure=False)
    out = capsys.readouterr().out
    assert report.ok, report.problems
    for needed in ("python", "torch", "numpy", "device", "cpu threads", "forward/backward"):
        assert needed in out
    assert "ready for the course" in out


def test_doctor_measures_both_dtypes():
    report = doctor(verbose=False, measure=True)
    assert set(report.gflops) == {"float32", "bfloat16"}
    assert all(value > 0 for value in report.gflops.values())


def test_doctor_names_the_fix_for_a_missing_package(monkeypatch):
    monkeypatch.setattr(
        utils, "_PACKAGES", [("not_a_real_module_xyz", "not-a-real-dist", "course")]
    )
    report = doctor(verbose=False, measure=False)
    assert not report.ok
    assert any("not-a-real-dist is missing" in p and "pip install" in p for p in report.problems)


def test_doctor_fails_when_the_smoke_run_breaks(monkeypatch):
    def broken(device):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(utils, "_smoke_forward_backward", broken)
    report = doctor(verbose=False, measure=False)
    assert not report.ok
    assert any("simulated failure" in p for p in report.problems)
