"""Label mining: which corpus concepts become positives (Y_pos) and negatives (Y_neg) of Eq. 1.

- Positive mining (paper section 3.2): ``posmine`` (PosMine: concepts that at least M training
  images take as top-1) and ``clustermine`` (ClusterMine: the majority top-1 concept of each cluster,
  ``cluster_vote``), from every training image's zero-shot top-1 over the corpus
  (``dense.zero_shot_top1``); ``gt_positives``: Y_pos = Y_GT.
- Negative mining: NegLabel (``neglabel_mine``: the K corpus concepts least similar to Y_GT by the
  0.95-quantile of their cosine similarities, ``negative_similarity`` / ``select_negatives``), the
  same pruning after positive mining (``prune_negatives``, Fig. 6 left, 9, 11), and CLIPScope's
  farthest + nearest nouns (``clipscope_mine``).
- Table 4: Y_GT augmented with its nearest corpus concepts (``augment_positives``).

Every miner returns a ``Mined``: Y_pos / Y_neg as sorted corpus indices, Y_neg defaulting to the
rest of the corpus (Eq. 2). Scoring them is ``scoring``'s job.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from .corpus import Corpus, clean
from .dense import DEFAULT_BUDGET, quantile_rows, row_stat
from .validation import as_tensor, check_features, check_ids


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
    if len(pos) == len(corpus):
        raise ValueError(f"{method} mined every concept of corpus {corpus.name!r} ({len(corpus)}) as positive: "
                         "no negative labels are left and Eq. 1 would score every image 1; use a larger corpus.")
    order = torch.argsort(pos)
    pos, counts = pos[order], counts[order]
    return Mined(method, pos, complement(pos, len(corpus)), [corpus.names[i] for i in pos.tolist()],
                 counts, params)


def posmine(top1: torch.Tensor, corpus: Corpus, m: int) -> Mined:
    """PosMine: a concept is positive if at least ``m`` training images take it as top-1.

    top1: (N,) corpus index of each training image's zero-shot top-1.
    """
    if m < 1:
        raise ValueError(f"M (min images per positive label) must be >= 1, got {m}.")
    top1 = check_ids(top1, "top1", upper=len(corpus))
    counts = torch.bincount(top1, minlength=len(corpus))
    pos = (counts >= m).nonzero().flatten()
    return _mined("PosMine", pos, counts[pos], corpus, {"M": m})


def cluster_vote(top1: torch.Tensor, clusters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Majority top-1 concept of every non-empty cluster.

    top1, clusters: (N,) integer ids of the same N training images (tensors or arrays, checked to
    have the same length). Returns ``(cluster_ids (C',), winner (C',))``. Ties go to the smallest
    corpus index (deterministic).
    """
    top1 = check_ids(top1, "top1").cpu()
    clusters = check_ids(clusters, "clusters", n=len(top1)).cpu()
    # unique (cluster, concept) pairs with counts, then the max count per cluster
    n_concepts = int(top1.max()) + 1
    pair = clusters * n_concepts + top1
    uniq, cnt = torch.unique(pair, return_counts=True)
    cl, concept = uniq // n_concepts, uniq % n_concepts
    # sort by cluster, then count descending, then concept ascending; take the first per cluster
    order = torch.from_numpy(np.lexsort((concept.numpy(), -cnt.numpy(), cl.numpy())))
    cl, concept = cl[order], concept[order]
    first = torch.ones_like(cl, dtype=torch.bool)
    first[1:] = cl[1:] != cl[:-1]
    return cl[first], concept[first]


def clustermine(top1: torch.Tensor, clusters: torch.Tensor, corpus: Corpus,
                n_clusters: int | None = None) -> Mined:
    """ClusterMine: majority vote of top-1 concepts in each cluster; Y_pos = the set of winners.

    top1: (N,) corpus indices; clusters: (N,) cluster ids in [0, n_clusters). ``params['C']`` records
    ``n_clusters``, the C the clustering was asked for (its last clusters may be empty); without it,
    the largest cluster id + 1. ``counts`` holds how many clusters each positive won (>1 = redundant,
    Fig. 7).
    """
    top1 = check_ids(top1, "top1", upper=len(corpus))
    clusters = check_ids(clusters, "clusters", n=len(top1), upper=n_clusters)
    cluster_ids, winners = cluster_vote(top1, clusters)
    pos, n_clusters_won = torch.unique(winners, return_counts=True)
    c = int(clusters.max()) + 1 if n_clusters is None else int(n_clusters)
    return _mined("ClusterMine", pos, n_clusters_won, corpus, {"C": c})


def gt_positives(class_names: list[str], corpus: Corpus) -> Mined:
    """Y_pos = Y_GT found in the corpus (for NegLabel-style methods), reporting the missing ones."""
    idx, missing = corpus.indices_of(class_names)
    pos = torch.tensor(sorted(set(idx)), dtype=torch.long)
    return _mined("GT", pos, torch.ones(len(pos), dtype=torch.long), corpus,
                  {"missing": missing})


# --------------------------------------------------------------------------------------------------
# Negative label mining (NegLabel, Jiang et al. 2024) and its use after positive mining
# --------------------------------------------------------------------------------------------------

def _check_k(k, available: int, what: str = "negative labels") -> int:
    """K = None / 'all' means no pruning; K > available is clamped with a warning."""
    if k is None or (isinstance(k, str) and k.lower() == "all"):
        return available
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"K must be a positive int, None or 'all', got {k!r}.")
    if k < 1:
        raise ValueError(f"K (number of {what}) must be >= 1, got {k}.")
    if k > available:
        warnings.warn(f"K={k} exceeds the {available} available {what}; using K={available}.", stacklevel=3)
        return available
    return int(k)


def negative_similarity(pos_text: torch.Tensor, cand_text: torch.Tensor, quantile: float = 0.95,
                        budget: int = DEFAULT_BUDGET, device=None, index=None) -> torch.Tensor:
    """NegLabel's closeness of each candidate to the positives, (Q,) float32.

    The ``quantile`` (0.95) of the candidate's cosine similarities to all P positives, exact per row
    (linear interpolation, as ``torch.quantile`` in NegLabel's ``multi_modal.py``), chunked over
    candidates. pos_text: (P, D); cand_text: (Q, D), or the rows ``index`` of it. Lower = more
    dissimilar = better negative.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}.")
    pos_text = check_features(pos_text, "positive text features")
    return row_stat(cand_text, pos_text, lambda s: quantile_rows(s, quantile), budget, device, index)


def select_negatives(pos_text: torch.Tensor, corpus_text: torch.Tensor, candidates: torch.Tensor, k,
                     quantile: float = 0.95, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """The K candidates least similar to the positives, as corpus indices, most dissimilar first.

    candidates: (Q,) long corpus indices of Y_neg (Eq. 2); k: int, or None / 'all' for no pruning
    (then ``candidates`` come back unchanged, Eq. 2); K > Q is clamped with a warning. Ties keep the
    candidates' order (stable sort).
    """
    candidates = as_tensor(candidates, "candidates").flatten()
    # an empty Y_neg (every concept positive) stays empty: there is nothing to rank
    candidates = check_ids(candidates, "candidates", upper=len(corpus_text)) if len(candidates) else candidates.long()
    k = _check_k(k, len(candidates))
    if k == len(candidates):
        return candidates.clone()
    stat = negative_similarity(pos_text, corpus_text, quantile, budget, device, index=candidates)
    order = torch.sort(stat, stable=True).indices[:k]
    return candidates[order]


def _gt_in_corpus(class_names, corpus: Corpus, method: str) -> tuple[list[int], list[str]]:
    found, missing = corpus.indices_of(class_names)
    if missing:
        warnings.warn(f"{method}: {len(missing)} of {len(class_names)} Y_GT names are not in corpus "
                      f"{corpus.name!r} (e.g. {missing[:5]}); continuing with the {len(found)} found.",
                      stacklevel=3)
    return found, missing


def _non_gt_candidates(class_names, corpus: Corpus) -> torch.Tensor:
    # Eq. 2 by name: every occurrence of a Y_GT name leaves Y_neg (corpora with duplicates included).
    gt = {clean(n) for n in class_names}
    return torch.tensor([i for i, n in enumerate(corpus.names) if n not in gt], dtype=torch.long)


def _with_negatives(method, pos_idx, neg, corpus: Corpus, params) -> Mined:
    pos = torch.tensor(sorted(set(pos_idx)), dtype=torch.long)
    neg = torch.sort(torch.as_tensor(neg).long()).values
    return Mined(method, pos, neg, [corpus.names[i] for i in pos.tolist()],
                 torch.ones(len(pos), dtype=torch.long), params)


POS_POOLS = {"n": "n", "a": "a", "s": "a"}  # WordNet POS tag -> NegLabel's pool (satellite adjectives are adjectives)


def pos_pools(corpus: Corpus, candidates: torch.Tensor) -> list[torch.Tensor]:
    """``candidates`` split by part of speech as NegLabel's word lists are: nouns, then adjectives (WordNet
    'a' and satellite 's'), then any other tag (each its own pool; untagged concepts form one pool)."""
    tags = [POS_POOLS.get(corpus.pos[i], corpus.pos[i]) for i in candidates.tolist()]
    order = ["n", "a"] + sorted(set(tags) - {"n", "a"})
    pools = [candidates[torch.tensor([t == tag for t in tags], dtype=torch.bool)] for tag in order]
    return [p for p in pools if len(p)]


def neglabel_mine(class_names, class_text: torch.Tensor, corpus: Corpus, corpus_text: torch.Tensor,
                  k, quantile: float = 0.95, pos_split: bool = False, exclude_gt: bool = True,
                  budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """NegLabel: Y_pos = Y_GT, Y_neg = the K corpus concepts least similar to Y_GT.

    K = 10,000 is NegLabel, K = 40,000 NegLabel* (Table 1; ``experiments.Settings``), None / 'all' no pruning.
    Similarity = the 0.95-quantile of cosine similarities to all Y_GT text features (``class_text``, (C, D);
    names not in the corpus still count as positives here, and are reported in a warning and in
    ``params['missing']``), as ``torch.quantile`` in NegLabel's ``mmcls/models/classifiers/multi_modal.py``.
    ``Mined.pos`` holds the corpus indices of the Y_GT names found; score with
    ``eq1_logit(image, class_text, corpus_text[mined.neg], tau)``.

    Defaults: the ClusterMine paper's description (Eq. 2 and section 3.1): one pool, K a count, Y_GT
    names excluded. The paper defines NegLabel through Eq. 2 ("excluding overlapping concepts", "the K most
    dissimilar"), gives NegLabel* as K = 4·10⁴ instead of 10⁴, and runs it on corpora without parts of
    speech (Table 3); NegLabel's own pipeline could not have produced those rows unchanged. Options that
    follow NegLabel's code (``XueJiang16/NegLabel``, ``multi_modal.py``):

    - ``pos_split=True``: nouns and adjectives are ranked separately and the same fraction of each is kept
      (the code keeps ``int(0.15 · N)`` nouns and ``int(0.15 · N)`` adjectives). K stays a total, so the
      fraction is K / N over all candidates and each pool keeps ``⌊K · N_pool / N⌋`` (the official rounding
      down; the sum can fall short of K by up to the number of pools - 1). Pools: ``pos_pools``. A corpus
      without POS tags is one pool.
    - ``exclude_gt=False``: Y_GT names stay candidates (the official code excludes them only when
      ``pos_topk`` is set, which its configuration does not; its released 10K list holds 31 ImageNet
      class names as negatives).
    """
    found, missing = _gt_in_corpus(class_names, corpus, "NegLabel")
    cand = _non_gt_candidates(class_names, corpus) if exclude_gt else torch.arange(len(corpus))
    if not pos_split:
        neg = select_negatives(class_text, corpus_text, cand, k, quantile, budget, device)
    else:
        k_all = _check_k(k, len(cand))
        parts = [select_negatives(class_text, corpus_text, pool, k_all * len(pool) // len(cand), quantile,
                                  budget, device) for pool in pos_pools(corpus, cand)
                 if k_all * len(pool) // len(cand) > 0]
        neg = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
    return _with_negatives("NegLabel", found, neg, corpus,
                           {"K": len(neg), "quantile": quantile, "pos_split": pos_split, "exclude_gt": exclude_gt,
                            "missing": missing})


def prune_negatives(mined: Mined, corpus_text: torch.Tensor, k, quantile: float = 0.95,
                    budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """Combined positive + negative mining (Fig. 6 left, 9, 11): keep the K negatives of ``mined``
    least similar to its positives (``corpus_text[mined.pos]``), by the same 0.95-quantile criterion
    as NegLabel (``select_negatives``). k = None / 'all' keeps Eq. 2's Y_neg unchanged.
    """
    corpus_text = as_tensor(corpus_text, "corpus text features")
    neg = select_negatives(corpus_text[mined.pos], corpus_text, mined.neg, k, quantile, budget, device)
    return replace(mined, neg=torch.sort(neg).values,
                   params={**mined.params, "K": len(neg), "quantile": quantile})


# --------------------------------------------------------------------------------------------------
# CLIPScope (Fu et al., arXiv 2405.14737, WACV 2025)
# --------------------------------------------------------------------------------------------------

def clipscope_mine(class_names, class_text: torch.Tensor, corpus: Corpus, corpus_text: torch.Tensor,
                   n_far: int = 5000, n_near: int = 5000, top_fraction: float = 0.05,
                   nouns_only: bool = True, budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """CLIPScope's OOD label mining: the ``n_far`` farthest and ``n_near`` nearest corpus nouns to Y_GT.

    Closeness of a candidate = its k-th largest cosine similarity to the Y_GT text features with
    ``k = ceil(top_fraction · |Y_GT|)`` (the official ``mining.py`` uses the 50th largest of ImageNet's
    1000 classes, i.e. top_fraction = 0.05). Candidates: corpus nouns (``corpus.pos == 'n'``, as the
    official code mines WordNet nouns; all concepts when ``nouns_only=False`` or the corpus has no
    POS tags) whose name is not in Y_GT. If fewer than ``n_far + n_near`` candidates exist, all are
    used (warning). Missing Y_GT names are reported as for NegLabel.
    """
    found, missing = _gt_in_corpus(class_names, corpus, "CLIPScope")
    cand = _non_gt_candidates(class_names, corpus)
    if nouns_only and any(p == "n" for p in corpus.pos):
        cand = cand[torch.tensor([corpus.pos[i] == "n" for i in cand.tolist()], dtype=torch.bool)]
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}.")
    class_text = check_features(class_text, "class text features")
    kth = min(class_text.shape[0], max(1, math.ceil(top_fraction * class_text.shape[0])))
    if n_far < 0 or n_near < 0:
        raise ValueError(f"n_far and n_near must be >= 0, got {n_far}, {n_near}.")
    if n_far + n_near >= len(cand):
        if n_far + n_near > len(cand):
            warnings.warn(f"CLIPScope: n_far + n_near = {n_far + n_near} exceeds the {len(cand)} candidate "
                          "labels; using all of them.", stacklevel=2)
        neg = cand
    else:
        stat = row_stat(corpus_text, class_text, lambda s: s.topk(kth, dim=1).values[:, -1], budget, device,
                         index=cand)
        order = torch.sort(stat, stable=True).indices
        neg = torch.cat([cand[order[:n_far]], cand[order[len(order) - n_near:]]])
    return _with_negatives("CLIPScope", found, neg, corpus,
                           {"n_far": n_far, "n_near": n_near, "kth": kth, "missing": missing})


# --------------------------------------------------------------------------------------------------
# Table 4: Y_GT augmented with its nearest corpus concepts
# --------------------------------------------------------------------------------------------------

def augment_positives(class_text: torch.Tensor, corpus_text: torch.Tensor, corpus: Corpus, n_aug: int = 500,
                      class_names=None, budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """Y_GT ∪ Y_aug: the ``n_aug`` corpus concepts with the highest top-1 text cosine to Y_GT (Table 4).

    Concepts already in Y_GT are excluded: by name when ``class_names`` is given (missing names are
    reported), else those whose text feature coincides with a class's (cosine > 1 - 1e-6).
    Returns a ``Mined`` with ``pos`` = Y_GT names found in the corpus ∪ Y_aug, ``neg`` = the rest of the
    corpus (Eq. 2), and ``params['aug']`` = Y_aug's corpus indices, most similar first. Positive text
    for MCM / Eq. 1 = ``torch.cat([class_text, corpus_text[mined.params['aug']]])``.
    """
    class_text = check_features(class_text, "class text features")
    if len(corpus) != corpus_text.shape[0]:
        raise ValueError(f"corpus has {len(corpus)} names but corpus_text {corpus_text.shape[0]} rows.")
    top1 = row_stat(corpus_text, class_text, lambda s: s.max(dim=1).values, budget, device)
    if class_names is not None:
        found, missing = _gt_in_corpus(class_names, corpus, "augment_positives")
        cand = _non_gt_candidates(class_names, corpus)
    else:
        found, missing = (top1 > 1 - 1e-6).nonzero().flatten().tolist(), []
        cand = (top1 <= 1 - 1e-6).nonzero().flatten()
    n = _check_k(n_aug, len(cand), "augmentation labels")
    aug = cand[torch.sort(top1[cand], descending=True, stable=True).indices[:n]]
    pos = torch.tensor(sorted(set(found) | set(aug.tolist())), dtype=torch.long)
    return Mined("GT+aug", pos, complement(pos, len(corpus)), [corpus.names[i] for i in pos.tolist()],
                 torch.ones(len(pos), dtype=torch.long), {"aug": aug, "n_aug": n, "missing": missing})
