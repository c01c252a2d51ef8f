"""Sharding an audit across processes with ``torch.distributed`` (launched by ``torchrun``).

Every rank holds the whole data set and runs the same plan; within each cell the batches
are dealt round-robin (batch k to rank k mod world), attacked on the rank's own device, and
the per-sample outcomes are gathered after the cell so every rank continues with the same
state (the cascade needs the union of breaks). The batch partition and each batch's seed do
not depend on the rank, so the report equals a single-process run's, timings aside. Rank 0
writes the report. NCCL on GPUs, Gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: rank ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def owns(self, batch_number: int) -> bool:
        """Whether this rank attacks the batch with this number (round-robin)."""
        return batch_number % self.world == self.rank

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a plain list of one outside torchrun)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a collective decision)."""
        return any(self.gather(bool(flag)))


SINGLE = Shard()


def from_env() -> Shard:
    """The shard torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Shard(
        rank=int(os.environ.get("RANK", "0")),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def start(shard: Shard, device: torch.device) -> torch.device:
    """Join the process group (NCCL for CUDA, else Gloo); returns this rank's device."""
    if not shard.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", shard.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return device


def stop(shard: Shard) -> None:
    """Leave the process group (after the last collective)."""
    if shard.active and dist.is_initialized():
        dist.destroy_process_group()
