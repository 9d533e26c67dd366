"""One public entry per method of Table 1, on any ``Benchmark`` (simulated or real features).

    pipe = Pipeline(bench)                        # settings scaled to the benchmark
    table = pipe.table(["MCM", "PosMine", "ClusterMine"])   # long format, see analysis.COLUMNS

``Pipeline`` caches what several methods share (zero-shot top-1 of the training images, TEMI clusters
per C, fitted detectors), so notebooks that vary one parameter recompute only what depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd
import torch

from . import analysis, mining, scoring
from .benchmark import OOD_SETS, Benchmark

METHODS = ("MaxLogit", "MD", "RelativeMD", "MCM", "PLP", "NegLabel", "NegLabel*", "CLIPScope",
           "PosMine", "ClusterMine")
NEEDS_GT = {m: m not in ("PosMine", "ClusterMine") for m in METHODS}
PAPER_IMAGES_PER_CLASS = 1281  # ImageNet-1K train images per class, on average


@dataclass
class Settings:
    """Hyper-parameters of every method; paper defaults (ImageNet-1K, section 4.2)."""

    tau: float | None = None  # Eq. 1 temperature; None: scoring.default_tau(logit_scale)
    m: int = 100  # PosMine: min images per positive
    n_clusters: int = 4000  # ClusterMine: C
    temi: object | None = None  # clustering.TEMIConfig; None: paper defaults (50 heads)
    neg_k: int | None = None  # PosMine/ClusterMine: prune Y_neg to K (None: Eq. 2, no pruning)
    neglabel_k: int = 10_000
    neglabel_star_k: int = 40_000
    plp_epochs: int = scoring.PLP_EPOCHS
    seed: int = 0
    device: str | None = None
    progress: bool = True

    @classmethod
    def for_benchmark(cls, bench: Benchmark, **overrides) -> "Settings":
        """Paper defaults for real features; for the simulated benchmark, the same ratios scaled to
        its size: C = 4 x |Y_GT| (4000 / 1000), M = 100 x images-per-class / 1281, the TEMI demo
        preset and fewer PLP epochs (documented in clustering / scoring)."""
        if not bench.simulated:
            return cls(**overrides)
        from .clustering import TEMIConfig

        n_classes = len(bench.class_names)
        per_class = len(bench.train) / n_classes
        c = overrides.pop("n_clusters", 4 * n_classes)
        base = dict(m=max(2, round(100 * per_class / PAPER_IMAGES_PER_CLASS)), n_clusters=c,
                    temi=TEMIConfig.demo(c, seed=overrides.get("seed", 0)),
                    plp_epochs=scoring.PLP_DEMO_EPOCHS)
        return cls(**{**base, **overrides})


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
        return scoring.check_tau(s.tau) if s.tau is not None else scoring.default_tau(self.bench.logit_scale)

    def _cached(self, key, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # ---- shared steps
    def top1(self) -> torch.Tensor:
        """(N,) zero-shot top-1 corpus index of every ID training image."""
        b = self.bench
        return self._cached(("top1", b.corpus.name, len(b.corpus)), lambda: scoring.zero_shot_top1(
            b.train.features, b.corpus_text, device=self.settings.device)[0])

    def clusters(self, n_clusters: int | None = None) -> torch.Tensor:
        """(N,) TEMI cluster of every ID training image for C = n_clusters."""
        from .clustering import TEMIConfig, fit_temi

        s = self.settings
        c = n_clusters or s.n_clusters
        config = replace(s.temi, n_clusters=c) if s.temi is not None else TEMIConfig(n_clusters=c, seed=s.seed)
        return self._cached(("clusters", c), lambda: fit_temi(
            self.bench.train.features, config, device=s.device, progress=s.progress).labels)

    def candidates(self) -> torch.Tensor:
        """(T,) sorted corpus indices that are the top-1 concept of some training image: every Y_pos
        that PosMine or ClusterMine can mine (any M, any C) lies in it."""
        return self._cached("candidates", lambda: torch.unique(self.top1()))

    def background_lse(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) ``scoring.lse_rows`` of images ``x`` (N, D) over the corpus minus ``candidates()``: the
        part of Eq. 1's negative mass that PosMine and ClusterMine share at every M and C. Memoised
        per features tensor (same object), so a sweep pays the full corpus pass once per image set."""
        b = self.bench
        hit = self._cache.get(("background", id(x)))
        if hit is None or hit[0] is not x:
            rest = self._cached("rest_text", lambda: b.corpus_text[mining.complement(self.candidates(), len(b.corpus))])
            hit = (x, scoring.lse_rows(x, rest, self.tau, device=self.settings.device))
            self._cache[("background", id(x))] = hit
        return hit[1]

    # ---- mined label sets
    def mined(self, method: str, **params) -> mining.Mined:
        """Y_pos / Y_neg of a mining method: 'PosMine' (m=), 'ClusterMine' (n_clusters=), 'NegLabel' (k=)."""
        s, b = self.settings, self.bench
        key = ("mined", method, tuple(sorted(params.items())))

        def make():
            if method == "PosMine":
                out = mining.posmine(self.top1(), b.corpus, params.get("m", s.m))
            elif method == "ClusterMine":
                out = mining.clustermine(self.top1(), self.clusters(params.get("n_clusters")), b.corpus)
            elif method == "NegLabel":
                return scoring.neglabel_mine(b.class_names, b.class_text, b.corpus, b.corpus_text,
                                             k=params.get("k", s.neglabel_k), device=s.device)
            else:
                raise ValueError(f"Unknown mining method {method!r}; use PosMine, ClusterMine or NegLabel.")
            k = params.get("neg_k", s.neg_k)
            return out if k is None else scoring.prune_negatives(out, b.corpus_text, k, device=s.device)

        return self._cached(key, make)

    # ---- score functions (features (N, D) -> (N,), higher = more ID)
    def score_fn(self, method: str, **params) -> Callable[[torch.Tensor], torch.Tensor]:
        s, b = self.settings, self.bench
        dev = s.device
        if method == "MCM":
            return lambda x: scoring.mcm_score(x, b.class_text, device=dev)
        if method == "MaxLogit":
            return lambda x: scoring.maxlogit_score(x, b.class_text, b.logit_scale, device=dev)
        if method == "Energy":
            return lambda x: scoring.energy_score(x, b.class_text, b.logit_scale, device=dev)
        if method in ("MD", "RelativeMD"):
            md = self._cached("md", lambda: scoring.MahalanobisDetector(device=dev).fit(
                b.train.features, self._train_labels()))
            relative = method == "RelativeMD"
            return lambda x: md.score(x, relative=relative)
        if method == "PLP":
            probe = self._cached(("plp", "gt"), lambda: scoring.fit_plp(
                b.train.features, scoring.plp_pseudo_labels(b.train.features, b.class_text, device=dev),
                n_classes=len(b.class_names), epochs=s.plp_epochs, seed=s.seed, device=dev))
            return lambda x: probe.score(x, device=dev)
        if method in ("PosMine+PLP", "ClusterMine+PLP"):  # Table 8: PLP on mined Y_pos
            mined = self.mined(method.split("+")[0], **params)
            pos_text = b.corpus_text[mined.pos]
            probe = self._cached(("plp", method, tuple(sorted(params.items()))), lambda: scoring.fit_plp(
                b.train.features, scoring.plp_pseudo_labels(b.train.features, pos_text, device=dev),
                n_classes=len(mined), epochs=s.plp_epochs, seed=s.seed, device=dev))
            return lambda x: probe.score(x, device=dev)
        if method in ("NegLabel", "NegLabel*"):
            k = params.get("k", s.neglabel_k if method == "NegLabel" else s.neglabel_star_k)
            neg_text = b.corpus_text[self.mined("NegLabel", k=k).neg]
            groups = params.get("n_groups", 1)
            if groups > 1:  # Fig. 10
                return lambda x: scoring.grouped_eq1_score(x, b.class_text, neg_text, self.tau, groups,
                                                           seed=s.seed, device=dev)
            return lambda x: scoring.eq1_logit(x, b.class_text, neg_text, self.tau, device=dev)
        if method == "CLIPScope":
            mined = self._cached("clipscope", lambda: scoring.clipscope_mine(
                b.class_names, b.class_text, b.corpus, b.corpus_text, device=dev))
            counts = self._cached("clipscope_counts", lambda: scoring.clipscope_class_counts(
                b.train.features, b.class_text, device=dev))
            ood_text = b.corpus_text[mined.neg]
            return lambda x: scoring.clipscope_score(x, b.class_text, ood_text, b.logit_scale, counts, device=dev)
        if method in ("PosMine", "ClusterMine"):
            mined = self.mined(method, **params)
            pos_text = b.corpus_text[mined.pos]
            cand = self.candidates()
            in_cand = torch.isin(mined.pos, cand)
            if len(mined.pos) + len(mined.neg) == len(b.corpus) and bool(in_cand.all()):
                # Y_neg = (candidates - Y_pos) + (corpus - candidates); the second, big part is the
                # same for every M and C: its mass is computed once per image set (background_lse)
                near_text = b.corpus_text[cand[~torch.isin(cand, mined.pos)]]
                return lambda x: scoring.eq1_logit(x, pos_text, near_text, self.tau, device=dev,
                                                   neg_lse=self.background_lse(x))
            neg_text = b.corpus_text[mined.neg]  # pruned negatives (neg_k)
            return lambda x: scoring.eq1_logit(x, pos_text, neg_text, self.tau, device=dev)
        raise ValueError(f"Unknown method {method!r}. Known methods: {list(METHODS) + ['Energy', 'PosMine+PLP', 'ClusterMine+PLP']}.")

    def _train_labels(self) -> torch.Tensor:
        """True ID train labels when known (MD needs Y_GT, Table 1), else zero-shot pseudo-labels."""
        b = self.bench
        y = b.train.labels
        if y is not None and bool((y >= 0).all()):
            return y
        return scoring.plp_pseudo_labels(b.train.features, b.class_text, device=self.settings.device)

    # ---- tables
    def evaluate(self, method: str, id_set: str = "test", ood_sets=OOD_SETS, label: str | None = None,
                 **params) -> pd.DataFrame:
        """Long table (method, id_set, ood_set, auroc, fpr95) of one method."""
        sets = [n for n in ood_sets if n in self.bench.ood]
        return analysis.evaluate_score(self.score_fn(method, **params), self.bench, label or method,
                                       id_set=id_set, ood_sets=sets)

    def table(self, methods=METHODS, id_sets=("test",), ood_sets=OOD_SETS, progress: bool | None = None) -> pd.DataFrame:
        from tqdm.auto import tqdm

        show = self.settings.progress if progress is None else progress
        jobs = [(m, i) for i in id_sets for m in methods]
        parts = [self.evaluate(m, i, ood_sets) for m, i in tqdm(jobs, desc="methods", disable=not show)]
        return pd.concat(parts, ignore_index=True)


def summary(table: pd.DataFrame, sets=OOD_SETS) -> pd.DataFrame:
    """Paper-style wide view: AUROC / FPR95 per OOD set and their mean, one row per method/id_set."""
    full = pd.concat([table, analysis.mean_over_sets(table, sets).drop(columns="sets")], ignore_index=True)
    wide = full.pivot_table(index=["method", "id_set"], columns="ood_set", values=["auroc", "fpr95"], sort=False)
    return wide.round(2)
