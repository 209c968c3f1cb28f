"""Choosing the device: the best one present, and a missing one named in one line."""

from __future__ import annotations

import os
import subprocess
import sys

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_freed_activations_are_reused_without_the_kernel_zeroing_them_again():
    # In child processes, so that this test's own allocator stays as it is. Each batch makes
    # two 32 MB activations (8,192 pages each) and frees them.
    code = """
import resource, torch
from pawnet import devices
print(devices.keep_freed_memory())
x, w = torch.rand(64, 32, 64, 64), torch.rand(32, 32, 3, 3)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.nn.functional.conv2d(x, w, padding=1).relu()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(faults())
"""
    env = {k: v for k, v in os.environ.items() if k != "PAWNET_KEEP_FREED_MEMORY"}
    kept, default = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=e).stdout.split()
        for e in (env, {**env, "PAWNET_KEEP_FREED_MEMORY": "0"})
    )
    assert kept[0] == "True" and default[0] == "False"
    assert int(kept[1]) < 8192  # ten batches' activations come back without the kernel
    assert int(default[1]) > 10 * 8192  # glibc's default maps and zeroes every one of them again
