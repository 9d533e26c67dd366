"""``torchrun`` process-group helpers for feature extraction (one process also works, unchanged).

- ``init_distributed(device)``: join the process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, gloo on
  CPU) and return this rank's device;
- ``rank_world()``: ``(rank, world size)``, ``(0, 1)`` without a process group;
- ``barrier()``: wait for every rank (a no-op without a process group);
- ``share_from_rank0(obj)``: rank 0's JSON-serialisable ``obj`` on every rank (e.g. "rank 0 failed
  to record the result, and why", so that no rank waits for a result that never comes).

The feature store splits its shards over ranks with these (shard ``i`` on rank ``i % world``).
"""
from __future__ import annotations

import json
import os
from datetime import timedelta

import torch


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside ``torchrun``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def share_from_rank0(obj):
    """Rank 0's ``obj`` (JSON-serialisable) on every rank; ``obj`` itself without a process group.
    Sent as bytes in a tensor (nothing is unpickled); it also acts as a barrier."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = json.dumps(obj).encode() if dist.get_rank() == 0 else b""
    n = torch.tensor([len(data)], dtype=torch.long, device=dev)
    dist.broadcast(n, 0)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=dev)
    if dist.get_rank() == 0 and data:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev))
    dist.broadcast(buf, 0)
    return json.loads(bytes(buf.cpu().numpy()).decode()) if dist.get_rank() != 0 else obj


def init_distributed(device=None) -> torch.device:
    """Join the ``torchrun`` process group (when ``WORLD_SIZE`` > 1) and return this rank's device:
    ``cuda:<LOCAL_RANK>`` with NCCL when CUDA is used (``device`` None, ``"auto"`` or ``"cuda..."`` on a
    machine with CUDA), else CPU with gloo."""
    import torch.distributed as dist

    if device is not None and str(device).lower() == "auto":
        device = None  # CUDA when present (models.default_device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device(device or "cpu")
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=6))
    return dev
