"""Where a training process runs: its device, its precision, and its place in a DDP job.

On CUDA the forward runs under autocast (bf16 where supported, else fp16 with a grad scaler).
Under ``torchrun`` each process trains on its shard (DDP); only rank 0 writes files, validates
and shows progress.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from dbsi.train.run_folder import RunDirError


@dataclasses.dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: started by torchrun: a process group exists and the model trains under DDP, even as
    #: the only process (a one-GPU torchrun job runs the same code as an eight-GPU one)
    launched: bool = False
    #: where collectives put their tensors: NCCL takes CUDA tensors only
    collective_device: str = "cpu"
    #: the process group's backend ("nccl" on CUDA, "gloo" on the CPU), "" when not launched
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_type: str) -> Distributed:
        if not dist.is_torchelastic_launched():
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        collective_device = "cpu"
        if device_type == "cuda":
            # Before the process group: NCCL binds each rank's communicator to its device.
            torch.cuda.set_device(local_rank)
            collective_device = f"cuda:{local_rank}"
        backend = "nccl" if device_type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        return cls(rank, world, local_rank, True, collective_device, backend)

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.launched:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if not self.launched:
            return
        if self.collective_device.startswith("cuda"):
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    # An unavailable device is a usage error, reported (exit 2) like the run folder's.
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunDirError("--device cuda: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def autocast_settings(device: torch.device, amp: bool | None) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a grad scaler is needed)."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None, False
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16, True
    return torch.bfloat16, False
