"""Exact k nearest neighbours by cosine similarity, chunked: TEMI's neighbour pairs, k-NN statistics."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .validation import check_matrix

__all__ = ["knn_indices"]


@torch.no_grad()
def knn_indices(features, k: int = 50, chunk_size: int = 4096, device=None, progress: bool = False,
                queries=None) -> torch.Tensor:
    """Exact top-k cosine neighbours of every row of ``features`` (self excluded), or of ``queries``.

    features: (N, D), L2-normalised here. Returns (N, k) long indices on ``features.device``, most
    similar first. queries: optional (M, D) other rows (e.g. test images against a train set): then
    nothing is excluded and the result is (M, k) indices into ``features``. Only one
    (chunk_size, N) similarity block lives in memory, reused for every chunk (4096 x 1.28M float32 =
    21 GB at ImageNet scale: lower ``chunk_size`` on a smaller GPU).

    Self is removed by *index* (the block's diagonal is set to -inf before topk), not by value:
    exact duplicates have the same similarity as self, so a value-based rule could drop a genuine
    duplicate neighbour or keep self; and the diagonal must be offset by the chunk start, which the
    official chunked code gets wrong (it blanks entry (i, i) of every chunk, i.e. keeps self
    for N > 80K).
    """
    x = check_matrix(features, "features", min_rows=2)
    if x.dtype != torch.float64:
        x = x.float()  # half/bf16 matmuls are slow or unsupported on CPU
    n = x.shape[0]
    self_excluded = queries is None
    limit = n - 1 if self_excluded else n
    if not isinstance(k, int) or not 1 <= k <= limit:
        raise ValueError(f"k={k} is out of range: need 1 <= k <= " +
                         (f"N-1 = {limit} because self is excluded" if self_excluded else f"N = {limit}") +
                         "; lower k (or add images).")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1.")
    out_device = x.device
    device = torch.device(device) if device is not None else x.device
    x = F.normalize(x.to(device), dim=1)
    q = x if self_excluded else F.normalize(check_matrix(queries, "queries", dim=x.shape[1]).to(
        device=device, dtype=x.dtype), dim=1)
    m = q.shape[0]
    out = torch.empty(m, k, dtype=torch.long, device=device)
    block = torch.empty(min(chunk_size, m), n, device=device, dtype=x.dtype)
    for start in tqdm(range(0, m, chunk_size), disable=not progress, desc="kNN", leave=False):
        stop = min(start + chunk_size, m)
        sims = torch.mm(q[start:stop], x.T, out=block[: stop - start])  # (b, N)
        if self_excluded:
            rows = torch.arange(stop - start, device=device)
            sims[rows, rows + start] = -math.inf
        out[start:stop] = sims.topk(k, dim=1).indices
    return out.to(out_device)
