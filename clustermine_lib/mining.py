"""Positive label mining: PosMine and ClusterMine (paper section 3.2).

Both start from every training image's zero-shot top-1 concept over the corpus and return a
``Mined`` result: the positive concept indices into the corpus (Y_pos) and the rest (Y_neg, Eq. 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .corpus import Corpus


@dataclass
class Mined:
    """Y_pos / Y_neg as corpus indices (sorted), with the names and what produced them."""

    method: str
    pos: torch.Tensor  # (P,) long, indices into the corpus
    neg: torch.Tensor  # (K - P,) long
    names: list[str]  # names of Y_pos
    counts: torch.Tensor  # (P,) images (PosMine) or clusters (ClusterMine) voting for each positive
    params: dict

    def __len__(self) -> int:
        return len(self.pos)


def complement(pos: torch.Tensor, n: int) -> torch.Tensor:
    """(n - P,) sorted indices in [0, n) that are not in ``pos``."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[pos] = False
    return mask.nonzero().flatten()


def _mined(method, pos, counts, corpus: Corpus, params) -> Mined:
    if len(pos) == 0:
        hint = "lower M" if method == "PosMine" else "check the clustering (C) and the corpus"
        raise ValueError(f"{method} mined no positive labels ({params}); {hint}.")
    order = torch.argsort(pos)
    pos, counts = pos[order], counts[order]
    return Mined(method, pos, complement(pos, len(corpus)), [corpus.names[i] for i in pos.tolist()],
                 counts, params)


def posmine(top1: torch.Tensor, corpus: Corpus, m: int = 100) -> Mined:
    """PosMine: a concept is positive if at least ``m`` training images take it as top-1.

    top1: (N,) corpus index of each training image's zero-shot top-1.
    """
    if m < 1:
        raise ValueError(f"M (min images per positive label) must be >= 1, got {m}.")
    counts = torch.bincount(top1, minlength=len(corpus))
    pos = (counts >= m).nonzero().flatten()
    return _mined("PosMine", pos, counts[pos], corpus, {"M": m})


def cluster_vote(top1: torch.Tensor, clusters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Majority top-1 concept of every non-empty cluster.

    top1, clusters: (N,) long. Returns ``(cluster_ids (C',), winner (C',))``. Ties go to the
    smallest corpus index (deterministic).
    """
    if top1.shape != clusters.shape:
        raise ValueError(f"top1 {tuple(top1.shape)} and cluster labels {tuple(clusters.shape)} differ in shape.")
    # unique (cluster, concept) pairs with counts, then the max count per cluster
    n_concepts = int(top1.max()) + 1
    pair = clusters.long() * n_concepts + top1.long()
    uniq, cnt = torch.unique(pair, return_counts=True)
    cl, concept = uniq // n_concepts, uniq % n_concepts
    # sort by cluster, then count descending, then concept ascending; take the first per cluster
    order = torch.from_numpy(__import__("numpy").lexsort((concept.numpy(), -cnt.numpy(), cl.numpy())))
    cl, concept = cl[order], concept[order]
    first = torch.ones_like(cl, dtype=torch.bool)
    first[1:] = cl[1:] != cl[:-1]
    return cl[first], concept[first]


def clustermine(top1: torch.Tensor, clusters: torch.Tensor, corpus: Corpus) -> Mined:
    """ClusterMine: majority vote of top-1 concepts in each cluster; Y_pos = the set of winners.

    ``counts`` holds how many clusters each positive won (>1 = redundant, Fig. 7).
    """
    cluster_ids, winners = cluster_vote(top1, clusters)
    pos, n_clusters_won = torch.unique(winners, return_counts=True)
    return _mined("ClusterMine", pos, n_clusters_won, corpus, {"C": int(clusters.max()) + 1})


def gt_positives(class_names: list[str], corpus: Corpus) -> Mined:
    """Y_pos = Y_GT found in the corpus (for NegLabel-style methods), reporting the missing ones."""
    idx, missing = corpus.indices_of(class_names)
    pos = torch.tensor(sorted(set(idx)), dtype=torch.long)
    return _mined("GT", pos, torch.ones(len(pos), dtype=torch.long), corpus,
                  {"missing": missing})
