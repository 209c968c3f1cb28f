"""Where training runs and in which precision: `--device auto|cpu|cuda|mps`, `--precision`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX512-BF16); elsewhere bf16 is slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device `name` stands for; "auto" takes CUDA, else Apple's MPS, else the CPU.

    Under torchrun each process on a machine takes the GPU of its local rank.
    """
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda: no CUDA GPU is available to this PyTorch (torch.cuda.is_available() is False)"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not _mps_available():
        raise UserError("--device mps: Apple's MPS backend is not available on this machine")
    return torch.device(name)


@dataclass(frozen=True)
class Precision:
    """The autocast dtype for the forward pass (None: float32), and whether float16's gradients
    need scaling to survive."""

    name: str
    dtype: torch.dtype | None

    @property
    def scaled(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def precision(name: str, device: torch.device) -> Precision:
    """The Precision for `name` on `device`. "auto": bfloat16 on a CPU that has it in hardware
    (faster on the seed recipe, at the same accuracy: benchmarks/README.md) and on GPUs that
    support it, float16 with a gradient scaler on older GPUs, float32 elsewhere."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and native_bf16():
            name = "bf16"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16 needs a GPU; on a CPU choose bf16 or fp32")
    return Precision(name, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name])
