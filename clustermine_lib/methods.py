"""The method registry: every OOD method the notebooks run, what it needs, how it mines and scores.

One ``Method`` entry per name. Everything else is derived from it: ``METHODS`` (Table 1's ten, in the
paper's order), ``needs_gt``, the error message for an unknown name, the canonical cache key of a
parameterised score (``canonical``) and the colour / marker of every figure (``plots``).

A method's *scorer* turns a pipeline (``experiments.Pipeline``: the benchmark, the settings and the
shared cached steps) and the method's parameters into a score function ``features (N, D) -> (N,)``,
higher = more ID; a transductive method (``pairwise(settings)`` true: CLIPScope's online histogram)
returns a ``scoring.PairScore`` instead, which scores an (ID set, OOD set) pair together. A label-mining method also has a *miner* returning its ``mining.Mined`` (Y_pos,
Y_neg). Parameter defaults come from ``experiments.Settings`` (``defaults``), so a value written out
equal to its default is the same score (one cache entry), and each default literal lives once there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from . import mining, scoring
from .mahalanobis import MahalanobisDetector
from .plp import fit_plp, plp_pseudo_labels


@dataclass(frozen=True)
class Method:
    """One OOD method. ``scorer(pipe, **params)`` -> score function; ``miner(pipe, **params)`` ->
    ``Mined`` (label-mining methods only); ``defaults(settings)`` -> its parameters' defaults;
    ``key``: the method whose scores these are when they coincide (NegLabel* is NegLabel with
    K = 40K); ``style``: (palette index or None for grey, marker, desaturation or None) shared by every figure;
    ``pairwise(settings)``: whether its ID scores depend on the OOD set (then ``scorer`` returns a
    ``scoring.PairScore``)."""

    name: str
    needs_gt: bool
    scorer: Callable
    description: str
    style: tuple
    miner: Callable | None = None
    defaults: Callable = field(default=lambda s: {})
    key: str | None = None
    table1: bool = True
    pairwise: Callable = field(default=lambda s: False)
    diagnostic: bool = False  # not a method: shows what one of its steps costs (e.g. the clustering)


# ---------------------------------------------------------------------------- scorers
def _dev(pipe):
    return pipe.settings.device


def _mcm(pipe):
    b = pipe.bench
    return lambda x: scoring.mcm_score(x, b.class_text, device=_dev(pipe))


def _maxlogit(pipe):
    b = pipe.bench
    return lambda x: scoring.maxlogit_score(x, b.class_text, b.logit_scale, device=_dev(pipe))


def _energy(pipe):
    b, s = pipe.bench, pipe.settings
    scale = b.logit_scale if s.energy_logits == "scaled" else 1.0  # "cosine": plain cosine (official codes)
    return lambda x: scoring.energy_score(x, b.class_text, scale, device=_dev(pipe))


def _mahalanobis(relative: bool):
    def make(pipe):
        b, s = pipe.bench, pipe.settings
        md = pipe._cached("md", lambda: MahalanobisDetector(
            device=s.device, rtol=s.md_rtol, drop_singletons=s.md_drop_singletons).fit(
            b.train.features, pipe.train_labels()))
        return lambda x: md.score(x, relative=relative)
    return make


def _probe_score(pipe, key, class_text):
    """PLP's linear probe on zero-shot pseudo-labels over ``class_text``, fitted once per ``key``."""
    b, s = pipe.bench, pipe.settings
    probe = pipe._cached(("plp",) + key, lambda: fit_plp(
        b.train.features, plp_pseudo_labels(b.train.features, class_text, device=s.device),
        n_classes=class_text.shape[0], epochs=s.plp_epochs, seed=s.seed, device=s.device))
    return lambda x: probe.score(x, device=s.device)


def _plp(pipe):
    return _probe_score(pipe, ("gt",), pipe.bench.class_text)


def _mined_plp(base: str):
    """Table 8: PLP with the mined Y_pos of ``base`` as its classes."""
    def make(pipe, **params):
        mined = pipe.mined(base, **params)
        return _probe_score(pipe, (base + "+PLP", tuple(sorted(params.items()))),
                            pipe.bench.corpus_text[mined.pos])
    return make


def _neglabel(pipe, k, n_groups):
    b, s = pipe.bench, pipe.settings
    neg_text = b.corpus_text[pipe.mined("NegLabel", k=k).neg]
    if n_groups > 1:  # Fig. 10
        return lambda x: scoring.grouped_eq1_score(x, b.class_text, neg_text, pipe.tau, n_groups,
                                                   seed=s.seed, device=s.device)
    return lambda x: scoring.eq1_logit(x, b.class_text, neg_text, pipe.tau, device=s.device)


def _clipscope(pipe):
    b, s, dev = pipe.bench, pipe.settings, _dev(pipe)
    mined = pipe._cached("clipscope", lambda: mining.clipscope_mine(
        b.class_names, b.class_text, b.corpus, b.corpus_text, device=dev))
    ood_text = b.corpus_text[mined.neg]
    if s.clipscope_histogram == "online":  # the official method: one fresh histogram per (ID, OOD) pair
        return scoring.PairScore(lambda x_id, x_ood: scoring.clipscope_online_scores(
            x_id, x_ood, b.class_text, ood_text, b.logit_scale, seed=s.seed, device=dev), "CLIPScope (online)")
    counts = pipe._cached("clipscope_counts", lambda: scoring.clipscope_class_counts(
        b.train.features, b.class_text, device=dev))
    return lambda x: scoring.clipscope_score(x, b.class_text, ood_text, b.logit_scale, counts, device=dev)


def _eq1_mined(method: str):
    """PosMine / ClusterMine: Eq. 1 with the mined Y_pos and Y_neg."""
    def make(pipe, **params):
        b, dev = pipe.bench, _dev(pipe)
        mined = pipe.mined(method, **params)
        pos_text = b.corpus_text[mined.pos]
        cand = pipe.candidates()
        if len(mined.pos) + len(mined.neg) == len(b.corpus) and bool(torch.isin(mined.pos, cand).all()):
            # Y_neg = (candidates - Y_pos) + (corpus - candidates); the second, big part is the same for
            # every M and C: its mass is computed once per image set (Pipeline.background_lse, lse_rows)
            near_text = b.corpus_text[cand[~torch.isin(cand, mined.pos)]]
            return lambda x: scoring.eq1_logit(x, pos_text, near_text, pipe.tau, device=dev,
                                               neg_lse=pipe.background_lse(x))
        neg_text = b.corpus_text[mined.neg]  # pruned negatives (neg_k)
        return lambda x: scoring.eq1_logit(x, pos_text, neg_text, pipe.tau, device=dev)
    return make


# ---------------------------------------------------------------------------- miners
def _pruned(pipe, mined, neg_k):
    return mined if neg_k is None else mining.prune_negatives(mined, pipe.bench.corpus_text, neg_k,
                                                              device=_dev(pipe))


def _mine_posmine(pipe, m, neg_k):
    return _pruned(pipe, mining.posmine(pipe.top1(), pipe.bench.corpus, m), neg_k)


def _mine_clustermine(pipe, n_clusters, neg_k):
    clusters = pipe.clusters(n_clusters)
    return _pruned(pipe, mining.clustermine(pipe.top1(), clusters, pipe.bench.corpus, n_clusters=n_clusters),
                   neg_k)


def _mine_kmeans_vote(pipe, n_clusters, neg_k):
    """Diagnostic: ClusterMine's vote over k-means clusters (same C) instead of TEMI's."""
    clusters = pipe.kmeans_clusters(n_clusters)
    return _pruned(pipe, mining.clustermine(pipe.top1(), clusters, pipe.bench.corpus, n_clusters=n_clusters),
                   neg_k)


def _mine_true_class_vote(pipe, neg_k):
    """Diagnostic: ClusterMine's vote with the true classes as clusters (the best a clustering can do)."""
    y = pipe.bench.train.labels
    if y is None or bool((y < 0).any()):
        raise ValueError("The true-class diagnostic needs the training images' class labels; this benchmark "
                         "has none for some images.")
    clusters = y.long()
    return _pruned(pipe, mining.clustermine(pipe.top1(), clusters, pipe.bench.corpus,
                                            n_clusters=len(pipe.bench.class_names)), neg_k)


def _mine_neglabel(pipe, k, n_groups=1):  # grouping (Fig. 10) changes the score, not the labels
    b, s = pipe.bench, pipe.settings
    return mining.neglabel_mine(b.class_names, b.class_text, b.corpus, b.corpus_text, k=k,
                                pos_split=s.neglabel_split, exclude_gt=s.neglabel_exclude_gt, device=s.device)


def _posmine_defaults(s):
    return {"m": s.m, "neg_k": s.neg_k}


def _clustermine_defaults(s):
    return {"n_clusters": s.n_clusters, "neg_k": s.neg_k}


_REGISTRY = [
    Method("MaxLogit", True, _maxlogit, "max CLIP logit over Y_GT", (7, "v")),
    Method("MD", True, _mahalanobis(False), "Mahalanobis distance to class means", (5, "<")),
    Method("RelativeMD", True, _mahalanobis(True), "relative Mahalanobis distance", (6, ">")),
    Method("MCM", True, _mcm, "max softmax of cosines over Y_GT", (0, "o")),
    Method("PLP", True, _plp, "pseudo-label linear probe on Y_GT", (4, "P")),
    Method("NegLabel", True, _neglabel, "Eq. 1 with Y_GT and the K most dissimilar negatives", (1, "s"),
           miner=_mine_neglabel, defaults=lambda s: {"k": s.neglabel_k, "n_groups": 1}),
    Method("NegLabel*", True, _neglabel, "NegLabel with K = 40K", (9, "D"),
           defaults=lambda s: {"k": s.neglabel_star_k, "n_groups": 1}, key="NegLabel"),
    Method("CLIPScope", True, _clipscope, "Bayesian score with near and far OOD labels", (8, "X"),
           pairwise=lambda s: s.clipscope_histogram == "online"),
    Method("PosMine", False, _eq1_mined("PosMine"), "Eq. 1 with concepts that are the top-1 of >= M images",
           (2, "^"), miner=_mine_posmine, defaults=_posmine_defaults),
    Method("ClusterMine", False, _eq1_mined("ClusterMine"), "Eq. 1 with the cluster-vote concepts",
           (3, "*"), miner=_mine_clustermine, defaults=_clustermine_defaults),
    Method("Energy", True, _energy, "negative free energy of CLIP logits", (None, "o"), table1=False),
    Method("PosMine+PLP", False, _mined_plp("PosMine"), "PLP on PosMine's Y_pos (Table 8)", (2, "^", 0.5),
           defaults=_posmine_defaults, table1=False),
    Method("ClusterMine+PLP", False, _mined_plp("ClusterMine"), "PLP on ClusterMine's Y_pos (Table 8)",
           (3, "*", 0.5), defaults=_clustermine_defaults, table1=False),
    # Diagnostics, not methods: ClusterMine's vote and Eq. 1 with other clusters than TEMI's
    Method("ClusterMine (k-means clusters)", False, _eq1_mined("ClusterMine (k-means clusters)"),
           "diagnostic: ClusterMine with k-means clusters (same C)", (3, "X", 0.35), miner=_mine_kmeans_vote,
           defaults=_clustermine_defaults, table1=False, diagnostic=True),
    Method("ClusterMine (true classes)", True, _eq1_mined("ClusterMine (true classes)"),
           "diagnostic: ClusterMine with the true classes as clusters", (3, "P", 0.2), miner=_mine_true_class_vote,
           defaults=lambda s: {"neg_k": s.neg_k}, table1=False, diagnostic=True),
]
REGISTRY = {m.name: m for m in _REGISTRY}
METHODS = tuple(m.name for m in _REGISTRY if m.table1)  # Table 1, in the paper's order
NEEDS_GT = {m.name: m.needs_gt for m in _REGISTRY}
DIAGNOSTICS = tuple(m.name for m in _REGISTRY if m.diagnostic)


def get(name: str) -> Method:
    """The registered method ``name``; an unknown name lists every known one."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown method {name!r}. Known methods: {list(REGISTRY)}.")
    return REGISTRY[name]


def miner(name: str) -> Callable:
    """The miner of a label-mining method (PosMine, ClusterMine, NegLabel)."""
    m = get(name)
    if m.miner is None:
        mining_methods = [x.name for x in _REGISTRY if x.miner is not None]
        raise ValueError(f"{name!r} mines no labels; label-mining methods: {mining_methods}.")
    return m.miner


def is_pairwise(name: str, settings) -> bool:
    """Whether ``name``'s ID scores depend on the OOD set under ``settings`` (its scorer returns a
    ``scoring.PairScore``)."""
    return bool(get(name).pairwise(settings))


def with_defaults(name: str, settings, params: dict) -> dict:
    """``params`` completed with the method's defaults from ``settings``; an unknown parameter is an
    error naming the method's parameters."""
    defaults = get(name).defaults(settings)
    unknown = [p for p in params if p not in defaults]
    if unknown:
        raise TypeError(f"{name} has no parameter(s) {unknown}; its parameters: {sorted(defaults) or 'none'}.")
    return {**defaults, **params}


def canonical(name: str, settings, params: dict) -> tuple[str, dict]:
    """(method, every parameter written out): one key per distinct score, e.g. NegLabel* and NegLabel
    with k = 40K give the same key."""
    m = get(name)
    return m.key or m.name, with_defaults(name, settings, params)
