"""Distributed data parallel through ``torchrun``: process-group setup, model wrapping, SyncBatchNorm.

``torchrun`` (single or multi node) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous variables;
without them the run is a single process and nothing here changes the model. BatchNorm becomes SyncBatchNorm only
when more than one process trains (the official recipes use cross-replica BN at batch 256; on one device plain
BatchNorm is identical and SyncBatchNorm would be a needless dependency on a process group). PyTorch's SyncBatchNorm
runs on CUDA only, so several CPU processes (gloo; used for testing) keep per-process BatchNorm statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on CUDA); single process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, *, sync_bn: bool = True) -> nn.Module:
    """DistributedDataParallel when several processes train (with SyncBatchNorm on CUDA when `sync_bn`, as the
    official detection recipes' ``use_sync_bn: true``); the model otherwise."""
    model = model.to(device)
    if info.world_size == 1:
        return model
    if device.type == "cuda" and sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: float) -> float:
    """Mean of a Python number over all processes (the value itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 of the default process group, or the only process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gather_to_all(obj: object) -> list[object]:
    """Every process's `obj`, in rank order, on every process (``[obj]`` in a single process).

    For small per-rank results (COCO detections of a validation shard); tensors should use ``all_gather``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard_dataset(dataset: Dataset) -> Dataset:
    """This process's share of `dataset`: every ``world_size``-th item from its rank (all of it alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return dataset
    return Subset(dataset, list(range(dist.get_rank(), len(dataset), dist.get_world_size())))  # type: ignore[arg-type]
