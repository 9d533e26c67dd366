"""Every method of the paper on any ``Benchmark`` (simulated or real features), with shared steps cached.

    pipe = Pipeline(bench)                                  # settings scaled to the benchmark
    table = pipe.table(["MCM", "PosMine", "ClusterMine"])   # long format, see tables.COLUMNS

``Pipeline`` caches what several methods share (zero-shot top-1 of the training images, TEMI clusters
per C, fitted detectors), so notebooks that vary one parameter recompute only what depends on it. What
each method computes is in its ``methods`` registry entry; ``runner.Runner`` adds a disk cache.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd
import torch

from . import analysis, dense, methods, mining, scoring, tables
from .benchmark import OOD_SETS, Benchmark
from .clustering import TEMIConfig, fit_temi
from .mahalanobis import DEFAULT_RTOL
from .metrics import DEFAULT_FPR95, FPR95_RULES
from .plp import PLP_DEMO_EPOCHS, PLP_EPOCHS, plp_pseudo_labels
from .validation import check_positive

PAPER_IMAGES_PER_CLASS = 1281  # ImageNet-1K train images per class, on average
C_PER_CLASS = 4  # the paper's C = 4000 for 1000 classes: the simulated benchmark's C is 4 x its classes


ENERGY_LOGITS = ("cosine", "scaled")
CLIPSCOPE_HISTOGRAMS = ("online", "train")


@dataclass
class Settings:
    """Hyper-parameters of every method; paper defaults (ImageNet-1K, section 4.2). The one place each
    default is written: the method registry and the detectors read them from here.

    Conventions of the baselines (issue 17; each chosen as the paper most likely ran it, reasons in the
    docstring named, printed by ``conventions()``):
    ``fpr95``: the FPR95 operating point, ``metrics.FPR95_RULES`` (default 'interp', PLP's code: the
    ClusterMine authors' own); ``neglabel_split`` / ``neglabel_exclude_gt``: ``mining.neglabel_mine``'s
    ``pos_split`` / ``exclude_gt`` (default one pool, Y_GT excluded: the paper's Eq. 2);
    ``energy_logits``: 'cosine' (plain cosine, T = 1, as MCM / PLP / OpenOOD's codes) or 'scaled'
    (``scoring.energy_score``); ``clipscope_histogram``: 'online' (the official transductive histogram,
    ``scoring.clipscope_online_scores``, stream seeded by ``seed``) or 'train'
    (``scoring.clipscope_class_counts``); ``md_rtol`` / ``md_drop_singletons``: ``MahalanobisDetector``'s
    eigenvalue cutoff and PLP's dropping of single-sample classes.
    """

    tau: float | None = None  # Eq. 1 temperature; None: scoring.default_tau(logit_scale)
    m: int = 100  # PosMine: min images per positive
    n_clusters: int = TEMIConfig.n_clusters  # ClusterMine: C (4000)
    temi: TEMIConfig | None = None  # None: TEMIConfig(n_clusters=C, seed=seed), the paper's (50 heads)
    neg_k: int | None = None  # PosMine/ClusterMine: prune Y_neg to K (None: Eq. 2, no pruning)
    neglabel_k: int = 10_000
    neglabel_star_k: int = 40_000
    plp_epochs: int = PLP_EPOCHS
    fpr95: str = DEFAULT_FPR95
    neglabel_split: bool = False
    neglabel_exclude_gt: bool = True
    energy_logits: str = "cosine"
    clipscope_histogram: str = "online"
    md_rtol: float = DEFAULT_RTOL
    md_drop_singletons: bool = False
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        for name, valid in (("fpr95", tuple(FPR95_RULES)), ("energy_logits", ENERGY_LOGITS),
                            ("clipscope_histogram", CLIPSCOPE_HISTOGRAMS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"Settings.{name} must be one of {list(valid)}, got {getattr(self, name)!r}.")
        if not (isinstance(self.md_rtol, (int, float)) and 0 <= self.md_rtol < 1):
            raise ValueError(f"Settings.md_rtol must be a number in [0, 1), got {self.md_rtol!r}.")

    def conventions(self) -> str:
        """The baselines' conventions this run uses, with their sources, one line (notebooks and the demo
        print it)."""
        fpr = {"interp": "interp (PLP's code)", "min": "min over all thresholds", "first": "first TPR >= 0.95 "
               "(OpenOOD's rule)", "nearest": "nearest TPR (MCM / NegLabel's code)",
               "strict": "first TPR > 0.95 (CLIPScope's code)"}[self.fpr95]
        neg = ("per part of speech (NegLabel's code)" if self.neglabel_split else "one pool (paper Eq. 2)") + \
            (", Y_GT excluded" if self.neglabel_exclude_gt else ", Y_GT kept (NegLabel's code)")
        energy = "plain cosine, T=1 (MCM / PLP code)" if self.energy_logits == "cosine" else "logit-scaled cosine"
        hist = (f"online over a seeded ID ∪ OOD stream (official, seed {self.seed})"
                if self.clipscope_histogram == "online" else "from the ID training images")
        return (f"Conventions: FPR95 {fpr}, ID positive; NegLabel negatives {neg}; Energy on {energy}; "
                f"CLIPScope histogram {hist}; MD precision eigenvalue cutoff {self.md_rtol:g} x max"
                + (", singleton classes dropped (PLP)" if self.md_drop_singletons else ""))

    @classmethod
    def for_benchmark(cls, bench: Benchmark, **overrides) -> "Settings":
        """Paper defaults for real features; for the simulated benchmark, the same ratios scaled to
        its size: C = 4 x |Y_GT| (4000 / 1000), M = 100 x images-per-class / 1281, the TEMI demo
        preset and fewer PLP epochs (documented in clustering / plp)."""
        if not bench.simulated:
            return cls(**overrides)
        n_classes = len(bench.class_names)
        per_class = len(bench.train) / n_classes
        c = overrides.pop("n_clusters", C_PER_CLASS * n_classes)
        base = dict(m=max(2, round(cls.m * per_class / PAPER_IMAGES_PER_CLASS)), n_clusters=c,
                    temi=TEMIConfig.demo(c, seed=overrides.get("seed", 0)), plp_epochs=PLP_DEMO_EPOCHS)
        return cls(**{**base, **overrides})

    def temi_config(self, n_clusters: int | None = None) -> TEMIConfig:
        """The TEMI configuration for C = ``n_clusters`` (default: this C)."""
        c = n_clusters or self.n_clusters
        return replace(self.temi, n_clusters=c) if self.temi is not None else TEMIConfig(n_clusters=c, seed=self.seed)


@dataclass
class Pipeline:
    bench: Benchmark
    settings: Settings | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.settings = self.settings or Settings.for_benchmark(self.bench)

    @property
    def tau(self) -> float:
        s = self.settings
        return check_positive(s.tau, "tau") if s.tau is not None else scoring.default_tau(self.bench.logit_scale)

    def _bar(self, desc: str) -> str | None:
        """A progress-bar description when the settings ask for bars, else None."""
        return desc if self.settings.progress else None

    def _cached(self, key, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # ---- shared steps
    def top1(self) -> torch.Tensor:
        """(N,) zero-shot top-1 corpus index of every ID training image."""
        b = self.bench
        return self._cached(("top1", b.corpus.name, len(b.corpus)), lambda: dense.zero_shot_top1(
            b.train.features, b.corpus_text, device=self.settings.device, progress=self._bar("top-1 concepts"))[0])

    def temi(self, n_clusters: int | None = None):
        """The ``clustering.TEMIResult`` for C = n_clusters (loss curve, plateau, convergence)."""
        s = self.settings
        config = s.temi_config(n_clusters)
        return self._cached(("temi", config.n_clusters), lambda: fit_temi(
            self.bench.train.features, config, knn=self.train_knn(config.k), device=s.device, progress=s.progress))

    def train_knn(self, k: int) -> torch.Tensor | None:
        """(N, >= k) neighbour indices of the train features from the feature cache (``make features
        FEATURE_ARGS="--knn 50"``, listed by ``features.load_benchmark`` in ``meta["train_knn"]``), or None
        (TEMI computes them): the first stored file with at least k columns that verifies."""
        for entry in self.bench.meta.get("train_knn") or ():
            if entry["k"] >= k:
                from .extract import CacheError, read_stored_knn

                try:
                    return self._cached(("knn", entry["path"]), lambda: read_stored_knn(entry))
                except CacheError as e:
                    warnings.warn(f"{e}; TEMI computes the kNN itself (make features FEATURE_ARGS=--knn "
                                  f"{entry['k']} rebuilds the file).", stacklevel=2)
        return None

    def clusters(self, n_clusters: int | None = None) -> torch.Tensor:
        """(N,) TEMI cluster of every ID training image for C = n_clusters."""
        return self.temi(n_clusters).labels

    def kmeans_clusters(self, n_clusters: int | None = None) -> torch.Tensor:
        """(N,) k-means cluster of every ID training image for C = n_clusters (``analysis.kmeans_labels``):
        the clustering of the diagnostic beside TEMI."""
        c = n_clusters or self.settings.n_clusters
        return self._cached(("kmeans", c), lambda: analysis.kmeans_labels(self.bench.train.features, c,
                                                                          seed=self.settings.seed))

    def candidates(self) -> torch.Tensor:
        """(T,) sorted corpus indices that are the top-1 concept of some training image: every Y_pos
        that PosMine or ClusterMine can mine (any M, any C) lies in it."""
        return self._cached("candidates", lambda: torch.unique(self.top1()))

    def background_lse(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) ``dense.lse_rows`` of images ``x`` (N, D) over the corpus minus ``candidates()``: the
        part of Eq. 1's negative mass that PosMine and ClusterMine share at every M and C. Memoised
        per features tensor (same object), so a sweep pays the full corpus pass once per image set."""
        b = self.bench
        hit = self._cache.get(("background", id(x)))
        if hit is None or hit[0] is not x:
            rest = self._cached("rest_text", lambda: b.corpus_text[mining.complement(self.candidates(), len(b.corpus))])
            hit = (x, dense.lse_rows(x, rest, self.tau, device=self.settings.device,
                                     progress=self._bar("corpus-wide negative mass")))
            self._cache[("background", id(x))] = hit
        return hit[1]

    def train_labels(self) -> torch.Tensor:
        """True ID train labels when known (MD needs Y_GT, Table 1), else zero-shot pseudo-labels."""
        b = self.bench
        y = b.train.labels
        if y is not None and bool((y >= 0).all()):
            return y
        return plp_pseudo_labels(b.train.features, b.class_text, device=self.settings.device)

    # ---- mined label sets and score functions (methods registry)
    def mined(self, method: str, **params) -> mining.Mined:
        """Y_pos / Y_neg of a label-mining method: 'PosMine' (m=, neg_k=), 'ClusterMine' (n_clusters=,
        neg_k=), 'NegLabel' (k=)."""
        mine = methods.miner(method)
        full = methods.with_defaults(method, self.settings, params)
        return self._cached(("mined", method, tuple(sorted(full.items()))), lambda: mine(self, **full))

    def score_fn(self, method: str, **params) -> Callable[[torch.Tensor], torch.Tensor]:
        """features (N, D) -> (N,) scores of ``method`` (higher = more ID); for a transductive method
        (``methods.is_pairwise``: CLIPScope's online histogram) a ``scoring.PairScore``."""
        return methods.get(method).scorer(self, **methods.with_defaults(method, self.settings, params))

    # ---- tables
    def evaluate(self, method: str, id_set: str = "test", ood_sets=OOD_SETS, label: str | None = None,
                 **params) -> pd.DataFrame:
        """Long table (method, id_set, ood_set, auroc, fpr95) of one method."""
        sets = [n for n in ood_sets if n in self.bench.ood]
        return tables.evaluate_score(self.score_fn(method, **params), self.bench, label or method,
                                     id_set=id_set, ood_sets=sets, fpr95_rule=self.settings.fpr95)

    def table(self, methods=methods.METHODS, id_sets=("test",), ood_sets=OOD_SETS,
              progress: bool | None = None) -> pd.DataFrame:
        from tqdm.auto import tqdm

        show = self.settings.progress if progress is None else progress
        jobs = [(m, i) for i in id_sets for m in methods]
        parts = [self.evaluate(m, i, ood_sets) for m, i in tqdm(jobs, desc="methods", disable=not show, leave=False)]
        return pd.concat(parts, ignore_index=True)
