"""The scores clustermine computes, computed the way the official codes compute them (for ``bench.py``'s
section H: speed and memory side by side, on the same features in the same run).

Re-written from reading the official repositories (issue 17's notes); no code is copied. What the official
codes do at scale, and what is kept here:

- **per dataloader batch** of ``BATCH = 256`` images (NegLabel's ``custom_config/clip.py``,
  ``samples_per_gpu = 256``; MCM uses 512, PLP 1,024): the features of one batch are multiplied with every
  text feature, giving the **full (B x K) logits matrix** of that batch;
- **Eq. 1 / NegLabel's score** (NegLabel ``mmcls/models/classifiers/multi_modal.py`` + ``mmcls/models/ood/
  clip_ood.py``): positive and negative logits from two matmuls (each scaled, a new tensor), concatenated
  (a copy), divided by the temperature (a copy), ``softmax`` over the row (a copy), sum of the positive
  columns. In float32, as the official code: at τ = 1e-3 the softmax saturates, so many images tie at
  S = 1 (or 0), which ``saturated`` counts;
- **NegLabel's grouping** (``clip_ood.py``, ``grouping``): the last Q mod G negative columns dropped, a fixed
  permutation (``torch.manual_seed(0)``, re-drawn identically for every batch) of the rest, then a Python
  loop over the G groups, each concatenating the positives with one group, softmax, positive sum; the
  mean over groups;
- **top-1** (PosMine / ClusterMine's mining; MCM's and PLP's per-batch argmax): the full (B x K) logits
  of a batch, ``argmax`` along the row.

The library's versions (``scoring.eq1_logit``, ``scoring.grouped_eq1_score``, ``dense.zero_shot_top1``)
compute the same rankings without ever holding more than one cache-sized tile of logits, and Eq. 1 as a
log-odds that does not saturate.
"""
from __future__ import annotations

import torch

BATCH = 256


def _batches(n: int, batch: int):
    for s in range(0, n, batch):
        yield slice(s, min(s + batch, n))


def eq1_official(image: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor, tau: float,
                 batch: int = BATCH) -> torch.Tensor:
    """S(x) of Eq. 1, (N,) float32, per batch: full logits, concatenation, softmax, positive sum.

    image, pos_text, neg_text: unit rows (the official code normalises them before; not timed here).
    The logits are ``cos / τ`` as ``100 · cos / t`` in NegLabel's code (logit scale 100, t = τ · 100).
    """
    scale, t = 100.0, tau * 100.0
    n_pos = pos_text.shape[0]
    out = torch.empty(image.shape[0])
    for rows in _batches(image.shape[0], batch):
        x = image[rows]
        pos_logits = scale * (x @ pos_text.T)
        neg_logits = scale * (x @ neg_text.T)
        logits = torch.cat([pos_logits, neg_logits], dim=1) / t
        out[rows] = torch.softmax(logits, dim=1)[:, :n_pos].sum(dim=1)
    return out


def grouped_official(image: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor, tau: float,
                     n_groups: int, batch: int = BATCH) -> torch.Tensor:
    """NegLabel's grouped score, (N,) float32: mean over ``n_groups`` groups of the softmax mass of the
    positives among [positives, that group's negatives], computed group by group in a Python loop."""
    scale, t = 100.0, tau * 100.0
    n_pos = pos_text.shape[0]
    keep = neg_text.shape[0] - neg_text.shape[0] % n_groups  # drop the last Q mod G (before permuting)
    size = keep // n_groups
    out = torch.empty(image.shape[0])
    for rows in _batches(image.shape[0], batch):
        x = image[rows]
        pos_logits = scale * (x @ pos_text.T)
        neg_logits = scale * (x @ neg_text.T)
        torch.manual_seed(0)  # the same permutation for every batch, as the official code
        perm = torch.randperm(keep)
        neg_logits = neg_logits[:, :keep][:, perm]
        scores = []
        for g in range(n_groups):
            logits = torch.cat([pos_logits, neg_logits[:, g * size:(g + 1) * size]], dim=1) / t
            scores.append(torch.softmax(logits, dim=1)[:, :n_pos].sum(dim=1))
        out[rows] = torch.stack(scores, dim=1).mean(dim=1)
    return out


def top1_official(image: torch.Tensor, text: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """(N,) index of each image's most similar text: per batch the full (B x K) logits, then argmax."""
    out = torch.empty(image.shape[0], dtype=torch.long)
    for rows in _batches(image.shape[0], batch):
        out[rows] = (image[rows] @ text.T).argmax(dim=1)
    return out


def saturated(scores: torch.Tensor) -> dict:
    """How many images share their score with another image (float32 ties), and how many sit exactly at
    S = 1 or S = 0 (the softmax saturated)."""
    _, counts = torch.unique(scores, return_counts=True)
    return {"tied": int(counts[counts > 1].sum()), "at_1": int((scores == 1).sum()),
            "at_0": int((scores == 0).sum())}
