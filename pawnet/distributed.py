"""Several processes, on one machine or many, through PyTorch's own engine: torchrun + DDP.

`torchrun --nproc-per-node N -m pawnet train ...` starts N copies of the command with RANK,
WORLD_SIZE and LOCAL_RANK set. Every process holds the whole (memory-mapped) data set and walks
the same shuffled global batches; each takes its own contiguous part of every batch, and
DistributedDataParallel averages the gradients, so N processes take the same steps as one
process with the same global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Rank 0 alone logs and writes the run directory."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This process's contiguous part of `n` items split as evenly as possible."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Each value summed over all processes (no-op for one process)."""
        if not self.active:
            return list(values)
        out = []
        for v in values:
            v = v.clone()
            dist.all_reduce(v)
            out.append(v)
        return out

    def gather_rows(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """The rows every process computed for its `part(n)`, in order, on every process."""
        if not self.active:
            return part
        sizes = [s.stop - s.start for s in (Group(r, self.world).part(n) for r in range(self.world))]
        # all_gather takes tensors of one shape: pad every part to the largest, then trim.
        padded = torch.zeros((max(sizes), *part.shape[1:]), dtype=part.dtype, device=part.device)
        padded[: len(part)] = part
        gathered = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(gathered, padded)
        return torch.cat([g[:size] for g, size in zip(gathered, sizes)])

    def shared(self, read: Callable[[], bytes]) -> bytes:
        """What `read()` returns on the first process, received by every process (`read` runs
        on the first alone): how the others read the run folder, which only the first process's
        machine need hold."""
        if not self.active:
            return read()
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        size = torch.tensor([-1], dtype=torch.long, device=device)
        data = b""
        if self.leader:
            try:
                data = read()
            except BaseException:
                dist.broadcast(size, 0)  # -1: the others stop too, rather than wait
                raise
            size[0] = len(data)
        dist.broadcast(size, 0)
        n = int(size.item())
        if n < 0:
            raise UserError("the first process could not read the run folder (its message says why)")
        if n == 0 or self.leader:
            if n:
                dist.broadcast(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device), 0)
            return data
        received = torch.empty(n, dtype=torch.uint8, device=device)
        dist.broadcast(received, 0)
        return received.cpu().numpy().tobytes()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def from_environment() -> Group:
    """The process group torchrun describes in the environment; a single process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    return Group(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )


def timeout() -> timedelta | None:
    """How long a process waits for the others at any exchange before it gives up with an error:
    $PAWNET_DIST_TIMEOUT seconds, else PyTorch's default (30 minutes for gloo, 10 for NCCL).

    A process that dies outright closes its connections, and the others fail at their next
    exchange at once; a machine that vanishes (power, network) or a process that hangs closes
    nothing, and the others wait this long. It must exceed the longest wait of a healthy run:
    the first process decoding the photos or writing the report while the others wait.
    """
    seconds = os.environ.get("PAWNET_DIST_TIMEOUT")
    if not seconds:
        return None
    try:
        value = float(seconds)
    except ValueError:
        value = 0
    if value <= 0:
        raise UserError(f"PAWNET_DIST_TIMEOUT={seconds!r}: give a number of seconds above 0")
    return timedelta(seconds=value)


def start(group: Group, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPUs."""
    if group.active and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout())


def stop(group: Group) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()
