"""Data-parallel helpers: ``torchrun --nproc-per-node N -m explorer train ...`` (gloo on CPU, NCCL on GPU).

Each process takes a shard of every batch; features are all-gathered with their gradients so the
loss, including the batch-level KL term, is exactly the single-process loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's rank and the world size (1 = not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op when not distributed)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def shard_sizes(self, n: int) -> list[int]:
        """How a batch of ``n`` is split over the processes (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        return [base + (1 if i < extra else 0) for i in range(self.world)]


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (if any); returns it and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    d = Dist(dist.get_rank(), dist.get_world_size())
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", d.rank)))
        torch.cuda.set_device(device)
    return d, device


def gather_uneven(x: torch.Tensor, sizes: list[int], d: Dist) -> torch.Tensor:
    """All-gather shards whose sizes differ by at most one (pad, gather with gradients, trim)."""
    if not d.active:
        return x
    from torch.distributed.nn.functional import all_gather

    size = max(sizes)
    pad = size - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
    gathered = torch.cat(all_gather(x.contiguous()), dim=0)
    return torch.cat([gathered[i * size : i * size + n] for i, n in enumerate(sizes)])
