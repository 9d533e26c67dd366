"""Label-mining OOD detectors with a scikit-learn feel: ``fit`` on ID training features, then
``score_samples`` (higher = more ID).

A fitted detector holds Y_pos, Y_neg (corpus indices), their text features and τ; its score is
Eq. 1 returned as the log-odds ``log S - log(1 - S)`` (``scoring.eq1_logit``; same ranking as S).

    det = ClusterMine().fit(train_features, corpus, corpus_text, logit_scale=100.)
    s = det.score_samples(test_features)

Inputs are validated like scikit-learn's: tensors or NumPy arrays; ``top1`` / ``clusters`` must have
one entry per training image; using an unfitted detector raises before any attribute is read.
Defaults are the paper's (``experiments.Settings``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import dense, mining, scoring
from .corpus import Corpus
from .experiments import Settings
from .validation import check_ids, check_is_fitted, check_matrix, check_positive


@dataclass
class _LabelMiner:
    tau: float | None = None  # None: scoring.default_tau(logit_scale)
    neg_k: int | None = None  # prune Y_neg to the K least similar to Y_pos (None: Eq. 2, no pruning)
    budget: int = dense.DEFAULT_BUDGET
    device: str | None = None
    mined_: mining.Mined | None = field(default=None, init=False, repr=False)
    top1_: torch.Tensor | None = field(default=None, init=False, repr=False)

    def _mine(self, train_features, top1, corpus) -> mining.Mined:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, train_features, corpus: Corpus, corpus_text, logit_scale: float = 100.0,
            top1=None) -> "_LabelMiner":
        """train_features: (N, D) ID images; corpus_text: (K, D) in corpus order.

        ``top1`` (N,) may be passed when already computed (it only depends on features and corpus).
        """
        train_features = check_matrix(train_features, "train_features", min_rows=2)
        corpus_text = check_matrix(corpus_text, "corpus_text", train_features.shape[1])
        if corpus_text.shape[0] != len(corpus):
            raise ValueError(f"corpus_text has {corpus_text.shape[0]} rows but the corpus {corpus.name!r} "
                             f"has {len(corpus)} concepts; recompute the text features for this corpus.")
        self.tau_ = check_positive(self.tau, "tau") if self.tau is not None else scoring.default_tau(logit_scale)
        if top1 is None:
            top1 = dense.zero_shot_top1(train_features, corpus_text, self.budget, self.device)[0]
        self.top1_ = check_ids(top1, "top1", n=train_features.shape[0], upper=len(corpus))
        mined = self._mine(train_features, self.top1_, corpus)
        if self.neg_k is not None:  # combined positive + negative mining (section 3.2, end)
            mined = mining.prune_negatives(mined, corpus_text, self.neg_k, budget=self.budget, device=self.device)
        self.mined_ = mined
        self.pos_text_ = corpus_text[mined.pos]
        self.neg_text_ = corpus_text[mined.neg]
        return self

    def score_samples(self, features) -> torch.Tensor:
        """(N,) Eq. 1 log-odds; higher = more ID."""
        check_is_fitted(self, "mined_")
        return scoring.eq1_logit(features, self.pos_text_, self.neg_text_, self.tau_, self.budget, self.device)

    @property
    def positive_names(self) -> list[str]:
        """The mined Y_pos, by name."""
        check_is_fitted(self, "mined_")
        return self.mined_.names


@dataclass
class PosMine(_LabelMiner):
    """PosMine: positives = concepts that are the zero-shot top-1 of at least ``m`` training images."""

    m: int = Settings.m

    def _mine(self, train_features, top1, corpus):
        return mining.posmine(top1, corpus, self.m)


@dataclass
class ClusterMine(_LabelMiner):
    """ClusterMine: TEMI clusters (C = ``n_clusters``) + majority vote of zero-shot top-1 concepts."""

    n_clusters: int = Settings.n_clusters
    temi: object | None = None  # clustering.TEMIConfig; None: paper defaults for n_clusters
    clusters: torch.Tensor | None = None  # precomputed cluster labels (N,), skips TEMI (C = max id + 1)
    seed: int = 0
    progress: bool = True

    def _mine(self, train_features, top1, corpus):
        if self.clusters is None:
            from .clustering import TEMIConfig, fit_temi

            config = self.temi or TEMIConfig(n_clusters=self.n_clusters, seed=self.seed)
            self.temi_ = fit_temi(train_features, config, device=self.device, progress=self.progress)
            clusters, n_clusters = self.temi_.labels, config.n_clusters
        else:
            clusters = check_ids(self.clusters, "clusters", n=train_features.shape[0])
            n_clusters = int(clusters.max()) + 1  # all a precomputed clustering says about its C
        self.clusters_ = clusters
        return mining.clustermine(top1, clusters, corpus, n_clusters=n_clusters)
