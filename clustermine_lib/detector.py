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

import math

import torch

from . import dense, mining, scoring
from .corpus import Corpus
from .experiments import Settings
from .fileio import content_hash
from .validation import check_ids, check_is_fitted, check_matrix, check_positive


@dataclass
class _LabelMiner:
    tau: float | None = None  # None: scoring.default_tau(logit_scale)
    neg_k: int | None = None  # prune Y_neg to the K least similar to Y_pos (None: Eq. 2, no pruning)
    budget: int = dense.DEFAULT_BUDGET
    device: str | None = None
    mined_: mining.Mined | None = field(default=None, init=False, repr=False)
    top1_: torch.Tensor | None = field(default=None, init=False, repr=False)
    threshold_: float | None = field(default=None, init=False, repr=False)
    id_quantiles_: torch.Tensor | None = field(default=None, init=False, repr=False)

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
        self.corpus_ = {"name": corpus.name, "size": len(corpus), "names_hash": content_hash("\n".join(corpus.names)),
                        "text_hash": content_hash(corpus_text)}
        return self

    def calibrate(self, id_features, recall: float = 0.95) -> "_LabelMiner":
        """Set ``threshold_`` so that ``recall`` of these held-out ID images score at or above it (the
        smallest such score: ``metrics``' FPR95 operating point), and ``id_quantiles_`` (101 quantiles of
        their scores, float64) for reading a new score as an ID percentile."""
        check_is_fitted(self, "mined_")
        if not 0 < recall <= 1:
            raise ValueError(f"recall must be in (0, 1], got {recall}.")
        scores = self.score_samples(id_features).double()
        k = math.ceil(recall * len(scores))
        self.threshold_ = float(torch.sort(scores, descending=True).values[k - 1])
        self.id_quantiles_ = torch.quantile(scores, torch.linspace(0, 1, 101, dtype=torch.float64))
        self.recall_ = recall
        return self

    def predict(self, features, threshold: float | None = None) -> torch.Tensor:
        """(N,) bool, True = OOD: the score is below ``threshold`` (default ``threshold_`` from ``calibrate``)."""
        check_is_fitted(self, "mined_")
        t = self.threshold_ if threshold is None else threshold
        if t is None:
            raise RuntimeError(f"This {type(self).__name__} has no threshold: call calibrate(held_out_id_features) "
                               "or pass threshold=.")
        return self.score_samples(features) < t

    def save(self, directory, meta: dict | None = None, embed_negatives: bool = True):
        """Write the fitted detector to ``directory`` (``detector.safetensors`` + ``detector.json``;
        ``detector_files``). ``meta``: what the features came from (model, weights fingerprint, prompts ...)."""
        from .detector_files import save

        return save(self, directory, meta=meta, embed_negatives=embed_negatives)

    @classmethod
    def load(cls, directory, corpus_text=None):
        """A detector saved by ``save``, verified (format, hashes); ``corpus_text`` only when it was saved
        without its negatives (``embed_negatives=False``)."""
        from .detector_files import DetectorFileError, load

        det = load(directory, corpus_text=corpus_text)
        if not isinstance(det, cls):
            raise DetectorFileError(f"{directory} holds a {type(det).__name__} detector, not a {cls.__name__}.")
        return det

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
    temi_result: object | None = None  # a clustering.TEMIResult fitted on these features: skips TEMI, kept
    seed: int = 0
    progress: bool = True

    def predict_clusters(self, features) -> torch.Tensor:
        """(M,) cluster ids of new features from the best TEMI head (fitted, or loaded by ``load``)."""
        check_is_fitted(self, "mined_")
        if getattr(self, "temi_", None) is None:
            raise RuntimeError("This ClusterMine holds no TEMI head (it was fitted on precomputed clusters).")
        return self.temi_.predict(features, device=self.device)

    def _mine(self, train_features, top1, corpus):
        if self.temi_result is not None:
            n = len(self.temi_result.labels)
            if n != train_features.shape[0]:
                raise ValueError(f"temi_result holds {n} cluster labels but there are {train_features.shape[0]} "
                                 "training images; fit it on these features.")
            self.temi_ = self.temi_result
            clusters, n_clusters = self.temi_.labels, self.temi_.config.n_clusters
        elif self.clusters is None:
            from .clustering import TEMIConfig, fit_temi

            config = self.temi or TEMIConfig(n_clusters=self.n_clusters, seed=self.seed)
            self.temi_ = fit_temi(train_features, config, device=self.device, progress=self.progress)
            clusters, n_clusters = self.temi_.labels, config.n_clusters
        else:
            clusters = check_ids(self.clusters, "clusters", n=train_features.shape[0])
            n_clusters = int(clusters.max()) + 1  # all a precomputed clustering says about its C
        self.clusters_ = clusters
        return mining.clustermine(top1, clusters, corpus, n_clusters=n_clusters)
