"""The processes of a run: joining the torchrun group, this rank's share of a batch, reductions, seeding.

Multi-GPU / multi-process training uses torchrun + DDP: `torchrun --nproc_per_node N -m hart train
...`. Each rank draws its own slice of every global batch, so the data a step sees does not depend
on the number of processes, only on the step; the gloo backend serves CPU runs, NCCL GPU runs.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from hart.errors import HartError


@dataclass(frozen=True)
class Process:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise HartError(f"batch size {global_batch} must be divisible by the {self.world_size} processes")
        return global_batch // self.world_size

    def own_part(self, values: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This process's slice of a tensor drawn for the whole global batch (along `dim`).

        Random choices are drawn for the global batch from a generator every rank seeds alike, so
        a run on N processes sees the same numbers as a run on one."""
        local = self.local_batch(values.shape[dim])
        return values.narrow(dim, self.rank * local, local).to(self.device)


def start_process(device: str) -> Process:
    """Join the torchrun process group if there is one (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and world > 1:
        torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(torch_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return Process(rank, world, torch_device)


def end_process() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def average(value: torch.Tensor) -> float:
    """The mean of a scalar over processes (for logging)."""
    return (summed(value) / (dist.get_world_size() if dist.is_initialized() else 1)).item()


def summed(value: torch.Tensor) -> torch.Tensor:
    """A tensor summed over processes (every rank must call this at the same point)."""
    value = value.detach().float().clone()
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy alike on every rank (identical initialisation); return the generator the
    loop draws its global-batch random choices from (see Process.own_part).

    Seeds run up to 2**63 (torch's range); numpy's legacy seed stops at 2**32, so it gets the seed
    modulo 2**32, which leaves every smaller seed, and so every earlier run, as it was."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed + 1)
