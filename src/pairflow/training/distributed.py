"""What training under ``torchrun`` needs: process group, rank checks, shared decisions.

With ``WORLD_SIZE`` unset (one process) every helper here is a cheap no-op.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Processes", "init_processes"]


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, samples and writes files."""
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (the global batch's loss)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def gather(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every process's ``state`` (e.g. its noise generator's), in rank order."""
        if self.world_size == 1:
            return [state]
        import torch.distributed as dist

        states = [torch.empty_like(state) for _ in range(self.world_size)]
        dist.all_gather_object(states, state)
        return states

    def out_of_time(self, start: float, minutes: float) -> bool:
        """Whether the time budget is spent; rank 0's clock decides for every rank."""
        over = time.perf_counter() - start > 60 * minutes
        if self.world_size == 1:
            return over
        import torch.distributed as dist

        flag = torch.tensor([float(over)], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def check_in_sync(self, model: nn.Module) -> bool:
        """Every rank must hold the same weights; raise if they drifted apart."""
        import torch.distributed as dist

        with torch.no_grad():
            local = torch.stack([p.double().sum() for p in model.parameters()]).to(self.device)
            low, high = local.clone(), local.clone()
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError("distributed ranks hold different weights: gradient sync failed")
        return True


def close_processes(procs: Processes) -> None:
    """Leave the process group at the end of a distributed run: every rank waits for the
    others, then the group is destroyed. Left to interpreter exit, gloo's threads were torn
    down mid-flight and a rank aborted after its work was done (SIGABRT, "terminate called
    without an active exception"), failing torchrun."""
    if procs.world_size <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_processes(device: torch.device) -> Processes:
    """Read torchrun's environment; join the process group (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world_size, device)
