"""Choosing the device: the best one present, and a missing one named in one line."""

from __future__ import annotations

import pytest
import torch

from pawnet import devices
from pawnet.errors import UserError

from conftest import run_cli


def test_auto_device_is_the_best_present_and_a_missing_one_is_one_line():
    assert devices.pick("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if devices._mps_available() else "cpu"
    assert devices.pick("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            devices.pick("cuda")
    with pytest.raises(UserError, match="unknown device"):
        devices.pick("tpu")
    with pytest.raises(UserError, match="needs a GPU"):
        devices.precision("fp16", torch.device("cpu"))
    assert devices.precision("fp32", torch.device("cpu")).dtype is None
    assert devices.precision("fp16", torch.device("cuda")).scaled  # float16 gradients get a scaler
    assert not devices.precision("bf16", torch.device("cuda")).scaled


def test_train_on_a_missing_device_is_one_line(data):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli("train", data, "--device", "cuda", "--out", data.parent / "nowhere")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in r.stderr
