"""Freed memory kept for reuse: what `pawnet` commands set for their process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_freed_activations_are_reused_without_the_kernel_zeroing_them_again():
    # In child processes, so that this test's own allocator stays as it is. Each batch makes
    # two 32 MB activations (8,192 pages each) and frees them.
    code = """
import resource, torch
from pawnet import allocator
print(allocator.keep_freed_memory())
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
    assert int(kept[1]) <= 8192  # ten batches run in the pages of at most one new activation
    assert int(default[1]) > 10 * 8192  # glibc's default maps and zeroes every one of them again
