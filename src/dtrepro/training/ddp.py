"""Data-parallel training under `torchrun`: one process per GPU (or per CPU process on gloo), as nanoGPT sets it up.

`torchrun --nproc_per_node=N stages/train.py ...` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE set. Each one takes the GPU of its LOCAL_RANK (`cuda:LOCAL_RANK`, made current with
`torch.cuda.set_device`), and DDP averages the gradients of the N shares of the global batch. Rank 0
evaluates and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dtrepro.runtime.errors import DtreproError


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of the process with this LOCAL_RANK: its own GPU under CUDA, the CPU otherwise."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DtreproError(
            f"Process LOCAL_RANK={local_rank} has no GPU of its own: this node has {count}. Start at most {count} "
            f"processes per node (torchrun --nproc_per_node={count})."
        )
    return torch.device("cuda", local_rank)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        """Single-process unless WORLD_SIZE says otherwise; then the process group, on this rank's device."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(device=device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = rank_device(device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world, local_rank, device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as DDP sees it: gradients averaged over the ranks after each backward."""
        if self.world == 1:
            return model
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def loss_denominator(self, mask: torch.Tensor) -> torch.Tensor | None:
        """What each rank divides its summed loss by so that DDP's average is the loss of the global batch: the
        global count of real positions over the ranks (None in one process: the local count)."""
        if self.world == 1:
            return None
        count = mask.sum().float()
        dist.all_reduce(count)
        return count / self.world

    def gather(self, obj: object) -> list:
        """Every rank's `obj` (all ranks call it), for rank 0 to save."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()
