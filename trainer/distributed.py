"""DDP plumbing: which process this is and agreement between ranks (``trainer.job`` builds the torchrun command).

A run is distributed when a process group already exists (tests start one with ``torch.multiprocessing``) or
when ``torchrun`` set ``RANK``/``WORLD_SIZE``: gloo on CPU, NCCL on GPU. One process without either is rank 0 of
a world of 1, and every collective below is then a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from core.configs import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int  # global rank of this process
    world_size: int  # processes in the job
    device: torch.device  # cuda:LOCAL_RANK on a GPU machine, else cpu
    owns_group: bool  # this module started the process group, so it also ends it

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, validates, checkpoints and exports."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: Tensor) -> Tensor:
        """Elementwise sum of ``values`` over all ranks (a copy; the input is untouched)."""
        if not self.active:
            return values
        total = values.to(self.device, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.cpu()

    def global_mean(self, values: Tensor) -> Tensor:
        """The mean of ``values`` (n,) over every rank's (a collective), differentiable: its value is the global
        mean and its gradient flows into this rank's ``values`` only. Backpropagating ``world_size`` times a loss
        built on it on every rank, then averaging gradients as DDP does, gives the gradient of the global loss."""
        local = values.sum()
        if not self.active:
            return local / values.numel()
        total = self.all_sum(torch.stack([local.detach().float().cpu(), torch.tensor(float(values.numel()))]))
        return (local - local.detach() + total[0].to(local)) / total[1].item()

    def gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's ``tensor`` (same shape and dtype on all ranks), in rank order, on the CPU."""
        if not self.active:
            return [tensor]
        local = tensor.to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return [p.cpu() for p in parts]

    def gather_objects(self, value: object) -> list:
        """Every rank's picklable ``value`` (any size: per-user results of a rank's own users), in rank order."""
        if not self.active:
            return [value]
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, value)
        return parts

    def close(self, barrier: bool = False) -> None:
        """End the process group this module started. ``barrier`` (after a clean run) first waits for every rank:
        a rank that tears gloo down while a peer still sends can crash that peer at exit."""
        if self.owns_group and dist.is_initialized():
            if barrier and self.active:
                dist.barrier()
            dist.destroy_process_group()


def setup() -> Distributed:
    """Join the process group this process belongs to (if any) and pick its device."""
    cuda = torch.cuda.is_available()
    owns = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if cuda:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"--nproc: local rank {local_rank} has no GPU of its own "
                                  f"({torch.cuda.device_count()} visible); start one process per GPU")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        owns = True
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return Distributed(rank, world, device, owns)
