"""Measurements behind the paper's analysis tables and figures (Table 3, Fig. 5, Fig. 7, appendix B):
mined-label quality, WordNet distances, cluster statistics and the label-free choice of C.

Conventions: percentages (0-100) for overlap / precision / recall / F1, as the paper's Table 3 and
``metrics.evaluate``; cluster metrics as fractions (0-1); entropies in nats. (Result tables and their
means over OOD sets: ``tables``.)
"""
from __future__ import annotations

import math
import re
from collections import deque
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from .corpus import Corpus, clean
from .mining import Mined, cluster_vote
from .dense import DEFAULT_BUDGET, zero_shot_top1
from .validation import check_ids, check_matrix

# --------------------------------------------------------------------------------------------------
# Mined-label quality: Table 3 (overlap, F1) and Fig. 5 (text similarity, WordNet hops)
# --------------------------------------------------------------------------------------------------

_OFFSET = re.compile(r"^([nvasr])(\d{8})$")


def canonical_synset(s) -> str | None:
    """'dog.n.01' stays as is; an ImageNet wnid 'n02084071' becomes 'dog.n.01'; ''/None -> None."""
    if not s:
        return None
    m = _OFFSET.match(str(s))
    if m:
        from .wordnet import wordnet

        return wordnet().synset_from_pos_and_offset(m.group(1), int(m.group(2))).name()
    return str(s)


def label_set_quality(pos_names: Iterable[str], gt_names: Iterable[str], by: str = "name",
                      pos_synsets: Iterable[str] | None = None, gt_synsets: Iterable[str] | None = None) -> dict:
    """Agreement of the mined set Y_pos with Y_GT (Table 3), in percent.

    ``by='name'``: labels match when their cleaned names are equal (lower case, '_' -> ' ', stripped;
    ``corpus.clean``); duplicates count once. ``by='synset'``: a label matches when its WordNet synset
    (names like 'dog.n.01' or wnids like 'n02084071') is among the other set's synsets; labels without
    a synset never match but still count in |Y_pos| / |Y_GT|.

    precision = |{y ∈ Y_pos matched}| / |Y_pos|, recall = |{y ∈ Y_GT matched}| / |Y_GT|,
    overlap = recall (the paper's |Y_GT ∩ Y_pos| / |Y_GT|), F1 = 2PR / (P + R) (0 when P + R = 0).
    """
    if by == "name":
        pos = list(dict.fromkeys(clean(n) for n in pos_names))
        gt = list(dict.fromkeys(clean(n) for n in gt_names))
        pos_keys, gt_keys = pos, gt
    elif by == "synset":
        if pos_synsets is None or gt_synsets is None:
            raise ValueError("by='synset' needs pos_synsets and gt_synsets (one WordNet id per label, '' if none).")
        pos_keys = [canonical_synset(s) for s in pos_synsets]
        gt_keys = [canonical_synset(s) for s in gt_synsets]
    else:
        raise ValueError(f"by must be 'name' or 'synset', got {by!r}.")
    if not pos_keys or not gt_keys:
        raise ValueError(f"Y_pos ({len(pos_keys)}) and Y_GT ({len(gt_keys)}) must both be non-empty.")
    pos_set, gt_set = {k for k in pos_keys if k}, {k for k in gt_keys if k}
    pos_hit = sum(1 for k in pos_keys if k and k in gt_set)
    gt_hit = sum(1 for k in gt_keys if k and k in pos_set)
    precision, recall = pos_hit / len(pos_keys), gt_hit / len(gt_keys)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"by": by, "n_pos": len(pos_keys), "n_gt": len(gt_keys), "n_common": len(pos_set & gt_set),
            "overlap": 100 * recall, "precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


def mined_label_quality(mined: Mined, corpus: Corpus, class_names, class_synsets=None, by: str = "name") -> dict:
    """``label_set_quality`` of a ``Mined`` result (synsets of Y_pos read from the corpus)."""
    pos_syn = [corpus.synsets[i] for i in mined.pos.tolist()] if by == "synset" else None
    return label_set_quality(mined.names, class_names, by, pos_syn, class_synsets)


def top1_text_similarity(label_text: torch.Tensor, gt_text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                         device=None) -> torch.Tensor:
    """Fig. 5 left: each mined label's highest CLIP text-text cosine to Y_GT, (P,) float32.

    label_text: (P, D) e.g. ``corpus_text[mined.pos]``; gt_text: (C, D) the class text features.
    """
    return zero_shot_top1(label_text, gt_text, budget, device)[1]


def _hypernym_depths(synset) -> dict:
    """Every ancestor (hypernyms and instance hypernyms, itself at 0) with its fewest hops, as nltk's
    ``Synset._shortest_hypernym_paths`` (which ``shortest_path_distance`` uses), without simulated root."""
    depths, queue = {}, deque([(synset, 0)])
    while queue:
        s, d = queue.popleft()
        if s in depths:
            continue
        depths[s] = d
        queue.extend((h, d + 1) for h in s.hypernyms() + s.instance_hypernyms())
    return depths


def wordnet_hops(label_synsets: Iterable[str], gt_synsets: Iterable[str]) -> np.ndarray:
    """Fig. 5 right: WordNet shortest-path length (hops) from each label to its nearest Y_GT synset.

    Same value as ``min_g label.shortest_path_distance(g)`` (nltk, ``simulate_root=False``: paths go
    through a common hypernym), computed in one pass: for every ancestor of a Y_GT synset keep its
    fewest hops down to Y_GT, then each label needs only its own ancestors. (P,) float64; NaN for a
    label without a synset or without any common ancestor with Y_GT (e.g. most adjectives).
    """
    from .wordnet import wordnet

    wn = wordnet()
    best: dict = {}
    for g in {canonical_synset(s) for s in gt_synsets} - {None}:
        for a, d in _hypernym_depths(wn.synset(g)).items():
            best[a] = min(best.get(a, math.inf), d)
    out = []
    for s in label_synsets:
        name = canonical_synset(s)
        if name is None:
            out.append(math.nan)
            continue
        hops = min((d + best[a] for a, d in _hypernym_depths(wn.synset(name)).items() if a in best),
                   default=math.nan)
        out.append(float(hops))
    return np.asarray(out, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Cluster analysis vs C (Fig. 7) and the elbow heuristic for C (appendix B)
# --------------------------------------------------------------------------------------------------

def _group_counts(clusters: np.ndarray, values: np.ndarray):
    """Counts of each (cluster, value) pair, grouped by cluster: (cnt, starts of each cluster's run)."""
    m = int(values.max()) + 1
    uniq, cnt = np.unique(clusters.astype(np.int64) * m + values.astype(np.int64), return_counts=True)
    cl = uniq // m
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
    return cnt, starts


def _as_np(x, name: str, n: int | None = None) -> np.ndarray:
    return check_ids(x, name, n).numpy()


def cluster_purity(clusters, labels, weighted: bool = False) -> float:
    """Share of a cluster's images carrying its majority label, averaged over non-empty clusters.

    ``weighted=False`` (Fig. 7): every cluster counts equally; ``True``: weighted by cluster size
    (the classic purity, = Σ_c majority_c / N).
    """
    clusters, labels = _as_np(clusters, "cluster ids"), _as_np(labels, "labels")
    if clusters.shape != labels.shape:
        raise ValueError(f"{clusters.size} cluster ids but {labels.size} labels.")
    cnt, starts = _group_counts(clusters, labels)
    top, size = np.maximum.reduceat(cnt, starts), np.add.reduceat(cnt, starts)
    return float(top.sum() / size.sum()) if weighted else float(np.mean(top / size))


def cluster_entropy(clusters, top1) -> float:
    """Mean over non-empty clusters of the entropy (nats) of its images' top-1 corpus concepts."""
    clusters, top1 = _as_np(clusters, "cluster ids"), _as_np(top1, "top-1 concepts")
    if clusters.shape != top1.shape:
        raise ValueError(f"{clusters.size} cluster ids but {top1.size} top-1 concepts.")
    cnt, starts = _group_counts(clusters, top1)
    size = np.add.reduceat(cnt, starts)
    p = cnt / np.repeat(size, np.diff(np.r_[starts, len(cnt)]))
    return float(np.mean(-np.add.reduceat(p * np.log(p), starts)))


def cluster_analysis(clusters, top1, labels=None, n_clusters: int | None = None) -> dict:
    """Fig. 7 for one clustering: ClusterMine's Y_pos and how the clusters relate to it.

    clusters, top1, labels: (N,) ints per training image (cluster id, zero-shot top-1 corpus concept,
    true class or None). Returns C (``n_clusters``, default max id + 1), n_nonempty, n_pos = |Y_pos|,
    pos_per_cluster = |Y_pos| / C, redundancy = share of Y_pos winning two or more clusters,
    purity / purity_weighted (true labels; NaN without ``labels``), entropy (top-1 concepts, nats).
    """
    c_t = torch.as_tensor(_as_np(clusters, "cluster ids"))
    t_t = torch.as_tensor(_as_np(top1, "top-1 concepts"))
    _, winners = cluster_vote(t_t, c_t)
    _, wins = torch.unique(winners, return_counts=True)
    n_clusters = int(c_t.max()) + 1 if n_clusters is None else int(n_clusters)
    have_labels = labels is not None
    return {"C": n_clusters, "n_nonempty": len(winners), "n_pos": len(wins),
            "pos_per_cluster": len(wins) / n_clusters,
            "redundancy": float((wins >= 2).double().mean()),
            "purity": cluster_purity(clusters, labels) if have_labels else math.nan,
            "purity_weighted": cluster_purity(clusters, labels, weighted=True) if have_labels else math.nan,
            "entropy": cluster_entropy(clusters, top1)}


def kmeans_labels(features, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """(N,) k-means cluster ids of the L2-normalised ``features`` (N, D): scikit-learn's ``KMeans``
    (k-means++, one initialisation, Lloyd, seeded) — the classic baseline TEMI is compared with."""
    from sklearn.cluster import KMeans

    x = torch.nn.functional.normalize(check_matrix(features, "features").double(), dim=1).numpy()
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters={n_clusters} must be in [1, N={len(x)}].")
    return torch.from_numpy(KMeans(n_clusters, n_init=1, random_state=seed).fit_predict(x)).long()


def cluster_sweep(clusterings: dict, top1, labels=None) -> pd.DataFrame:
    """``cluster_analysis`` for each ``{C: cluster ids (N,)}``, one row per C, sorted by C."""
    rows = [cluster_analysis(cl, top1, labels, n_clusters=c) for c, cl in sorted(clusterings.items())]
    return pd.DataFrame(rows)


def elbow(x, y, log_x: bool = False) -> tuple[int, np.ndarray]:
    """Elbow of a curve = the point farthest from the chord joining its first and last points.

    x, y are min-max scaled to [0, 1] first (Kneedle's normalisation; x on a log scale with ``log_x``),
    so the rule does not depend on units and works for rising or falling, concave or convex curves.
    Returns (index of the elbow in x-sorted order, distances to the chord). Needs >= 3 points.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or len(x) != len(y):
        raise ValueError(f"The elbow needs >= 3 (x, y) points, got {len(x)} x and {len(y)} y.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("The elbow needs finite values.")
    order = np.argsort(x)
    x, y = x[order], y[order]
    if log_x:
        x = np.log(x)

    def unit(v):
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    xs, ys = unit(x), unit(y)
    dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
    dist = np.abs(dx * (ys - ys[0]) - dy * (xs - xs[0])) / max(math.hypot(dx, dy), 1e-12)
    return int(np.argmax(dist)), dist


def propose_c(sweep, metrics: tuple[str, ...] = ("pos_per_cluster", "redundancy"), log_x: bool = True) -> dict:
    """Label-free choice of C (appendix B): the elbow of |Y_pos|/C and of the redundancy ratio vs C.

    sweep: a DataFrame with a ``C`` column and the metric columns (``cluster_sweep``), or a dict
    ``{C: {metric: value}}``. Each metric's elbow follows ``elbow`` (farthest point from the chord),
    on log C by default since C sweeps are geometric (1K, 2K, 4K, ...): the elbow is then the C where
    |Y_pos|/C stops being ~1 and clusters start to share labels. The proposal is the largest of the
    metrics' elbows, since the paper only needs "a rough overestimation of C" (over-clustering costs
    little, under-clustering merges classes).
    Returns ``{"C": proposal, "by_metric": {metric: C}, "table": sweep sorted by C with one
    ``<metric>_elbow_distance`` column per metric}`` so a notebook can plot the curves.
    """
    table = pd.DataFrame([{"C": c, **v} for c, v in sweep.items()]) if isinstance(sweep, dict) else sweep.copy()
    missing = [m for m in ("C", *metrics) if m not in table.columns]
    if missing:
        raise ValueError(f"The sweep lacks columns {missing}; it has {list(table.columns)}.")
    table = table.sort_values("C").reset_index(drop=True)
    by_metric = {}
    for m in metrics:
        i, dist = elbow(table["C"], table[m], log_x=log_x)
        by_metric[m] = int(table["C"].iloc[i])
        table[f"{m}_elbow_distance"] = dist
    return {"C": max(by_metric.values()), "by_metric": by_metric, "table": table}
