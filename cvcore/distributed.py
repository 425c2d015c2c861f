"""Running on many GPUs or machines: ``torchrun`` process groups for training, and shards for per-image work.

Training: launch the usual entry point under ``torchrun``; :func:`init_distributed` reads the environment torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (NCCL on CUDA, gloo on CPU) and picks this
rank's device. :func:`wrap_ddp` wraps the model and :func:`distributed_sampler` gives each rank its share of the data;
the engine (:mod:`cvcore.engine`) writes checkpoints and logs on rank 0 only.

Per-image work (proposals, features): :func:`shard_items` splits an ordered list into ``n`` disjoint interleaved
shards, so ``--shard i/n`` on ``n`` machines covers every image exactly once and the per-image caches compose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "wrap_ddp", "distributed_sampler", "is_main_process", "parse_shard",
           "shard_items", "cleanup_distributed", "world_size", "rank", "barrier", "all_gather_objects",
           "mean_over_ranks", "broadcast_buffers", "epoch_groups"]

T = TypeVar("T")
log = logging.getLogger("cvcore")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); otherwise a single-process info.

    The device is ``cuda:LOCAL_RANK`` under torchrun on a CUDA machine, else the resolved ``device``.
    """
    from cvcore.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (str(device) == "auto" or str(device).startswith("cuda"))
    if use_cuda:
        if str(device).startswith("cuda:") and str(device) != f"cuda:{local_rank}":
            log.warning("under torchrun each rank uses cuda:LOCAL_RANK; ignoring --device %s (rank %d: cuda:%d)",
                        device, rank, local_rank)
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = resolve_device("cpu" if str(device) == "auto" else device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def world_size() -> int:
    """Processes in the group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank (nothing when not distributed)."""
    if world_size() > 1:
        dist.barrier()


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed); pickled between this job's own ranks."""
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The mean of each value over the ranks (the values themselves when not distributed)."""
    if world_size() == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / world_size()).tolist()))


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics, which each rank updates on its own batches)
    to every rank, so that all ranks evaluate one model."""
    if world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b, src)


def epoch_groups(n: int, size: int, epoch: int, seed: int = 0, rank_world: tuple[int, int] | None = None
                 ) -> list[list[int]]:
    """This rank's groups of item indices for one epoch: ``0 .. n-1`` in one random order per epoch (a generator
    seeded by ``seed`` and ``epoch``, so every rank draws the same order, and a resumed epoch the same again), cut
    into groups of ``size`` (the remainder dropped; at least one group); rank r of W takes groups r, r + W, ..., the
    same number on every rank (a rank left without one takes group ``r mod groups``). ``rank_world``: ``(r, W)``
    instead of this process's."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=g).tolist()
    groups = [order[b * size:(b + 1) * size] for b in range(max(1, n // size))]
    r, w = rank_world or (rank(), world_size())
    per_rank = max(1, len(groups) // w)
    return [groups[(r + k * w) % len(groups)] for k in range(per_rank)]


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0, or when not distributed: the one process that writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def wrap_ddp(model: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` (already on ``info.device``) when distributed; else ``model``."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                     find_unused_parameters=find_unused_parameters)


def distributed_sampler(dataset: torch.utils.data.Dataset, info: DistInfo, shuffle: bool = True, seed: int = 0):
    """A ``DistributedSampler`` (each rank a disjoint share) when distributed, else ``None`` (use the loader's own)."""
    if not info.enabled:
        return None
    return torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                                           shuffle=shuffle, seed=seed)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (0-based ``i``) -> ``(i, n)``; ``None`` or ``""`` -> ``(0, 1)``.

    Raises:
        ValueError: not of the form ``i/n`` with ``0 <= i < n``.
    """
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard '{text}' is not of the form i/n (e.g. 0/4)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard '{text}': need 0 <= i < n")
    return i, n


def shard_items(items: Sequence[T], shard: str | tuple[int, int] | None) -> list[T]:
    """Items ``i, i + n, i + 2n, ...`` of ``items`` for shard ``i`` of ``n`` (interleaved, so shards cost alike)."""
    i, n = parse_shard(shard) if not isinstance(shard, tuple) else shard
    return list(items[i::n])
