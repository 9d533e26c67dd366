"""``Runner``: an ``experiments.Pipeline`` whose expensive results are cached on disk, shared by notebooks.

Zero-shot top-1 concepts, TEMI cluster labels, mined label sets and score vectors are cached under
``<project cache>/notebooks/`` ($CLUSTERMINE_CACHE or ``<repo>/.cache``), keyed by a content hash of
every input: the benchmark's tensors and names, the method, its parameters (defaults written out, so
NegLabel* and NegLabel with K = 40K share a file), the ``Settings`` (TEMI config included), the
evaluated set and the source code of the modules that compute them (an edit of ``clustering.py``
recomputes TEMI, one of ``scoring.py`` the scores, ...). Several notebooks thus share one TEMI run per
C and one score vector per (method, set). Files are written with ``fileio.atomic_write``.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import metrics, methods
from .benchmark import OOD_SETS, Benchmark, FeatureSet
from .experiments import Pipeline, Settings
from .fileio import atomic_write, content_hash, write_json
from .mining import Mined
from .tables import COLUMNS

ID_TEST = "ImageNet"  # name of the ID test set in every Benchmark (simulated or real)

# The modules whose source decides each kind of cached value: editing one recomputes that kind only.
_CODE_MODULES = {
    "top1": ("dense",),
    "temi": ("clustering", "knn", "temi_loss"),
    "kmeans": ("analysis",),
    "mined": ("analysis", "clustering", "dense", "experiments", "knn", "methods", "mining", "temi_loss"),
    "scores": ("analysis", "clustering", "dense", "experiments", "knn", "mahalanobis", "methods", "metrics",
               "mining", "plp", "scoring", "temi_loss"),
}


def code_version(kind: str = "scores") -> str:
    """Hash of the source of the modules that compute a cached ``kind`` (and of torch's version)."""
    here = Path(__file__).resolve().parent
    mods = _CODE_MODULES.get(kind, _CODE_MODULES["scores"])
    return content_hash(torch.__version__, *[(here / f"{m}.py").read_bytes() for m in mods
                                             if (here / f"{m}.py").exists()])[:16]


def bench_fingerprint(bench: Benchmark) -> str:
    """Content hash of everything a score can depend on: every tensor, name and the logit scale."""
    sets = [bench.train, bench.test, *[bench.ood[k] for k in sorted(bench.ood)],
            *[bench.shifted[k] for k in sorted(bench.shifted)]]
    parts = []
    for fs in sets:
        parts += [fs.name, fs.features, fs.labels if fs.labels is not None else "none"]
    c = bench.corpus
    parts += [bench.class_names, bench.class_synsets, bench.class_text, c.name, "\n".join(c.names).encode(),
              "\n".join(c.synsets).encode(), "\n".join(c.pos).encode(), bench.corpus_text, float(bench.logit_scale)]
    return content_hash(*parts)


def default_cache_dir() -> Path:
    from .wordnet import cache_dir

    return cache_dir() / "notebooks"


def subsample(n: int, k: int, key: str) -> torch.Tensor:
    """(k,) sorted indices of a subset of range(n), the same for the same ``key`` on every run."""
    seed = int(hashlib.blake2b(key.encode(), digest_size=7).hexdigest(), 16)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


@dataclass(eq=False)
class Runner(Pipeline):
    """``experiments.Pipeline`` whose top-1 concepts, TEMI clusters and score vectors are cached on disk.

    ``evaluate`` / ``table`` give the same numbers as the Pipeline's (same score functions, same
    ``metrics.evaluate``); each (method, parameters, set) is scored once and reused by every table
    that needs it, in this and in later notebooks. ``store=None`` disables the disk cache.
    ``max_eval``: score at most this many images per evaluation set (a seeded subset, the same for
    every method); None = all.
    Warnings raised while computing (e.g. Y_GT names missing from the corpus) are collected in
    ``notes`` instead of being printed, so that notebook outputs do not depend on the cache state.
    """

    store: Path | None = None
    max_eval: int | None = None
    notes: list = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        self._fp = None
        self._digests = {}
        self.store = Path(self.store) if self.store is not None else None

    @classmethod
    def from_config(cls, bench: Benchmark, cfg=None, cache: bool = True, max_eval: int | None = None,
                    **overrides) -> "Runner":
        """A Runner with ``Settings.for_benchmark`` and the notebook's C / M / K / tau / seed / device
        (``notebook.Config``; device "auto" = CUDA when present) and progress bars (``Config.show_progress``).
        K is NegLabel's number of negatives (NegLabel* keeps its own)."""
        opts = {}
        if cfg is not None:
            for name, attr in (("n_clusters", "C"), ("m", "M"), ("neglabel_k", "K"), ("tau", "tau")):
                if getattr(cfg, attr) is not None:
                    opts[name] = getattr(cfg, attr)
            from .models import default_device

            opts["seed"], opts["device"] = cfg.seed, str(default_device(cfg.device))
            opts["progress"] = cfg.show_progress
        opts.update(overrides)
        opts.setdefault("progress", False)
        if cfg is not None and max_eval is None:
            max_eval = cfg.max_eval
        return cls(bench, Settings.for_benchmark(bench, **opts), store=default_cache_dir() if cache else None,
                   max_eval=max_eval)

    def _tensor_digest(self, name: str, t: torch.Tensor) -> str:
        """Content hash of one of the benchmark's tensors, computed once per Runner (real ImageNet train
        features are ~5 GB)."""
        if name not in self._digests:
            self._digests[name] = content_hash(t)
        return self._digests[name]

    # ---- keys
    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = bench_fingerprint(self.bench)
        return self._fp

    def settings_key(self) -> dict:
        """The settings a cached value depends on: all but the device, progress bars and the FPR95 rule
        (evaluation only: scores are the same under every rule)."""
        d = asdict(self.settings)
        for name in ("device", "progress", "fpr95"):
            d.pop(name, None)
        return d

    def _disk(self, kind: str, key: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``compute()`` (a numpy array) cached as ``<store>/<kind>/<hash>.npy`` + ``<hash>.json``.

        The JSON (written last) holds the key and the value's shape, dtype and content hash; an entry
        is used only when its key, shape, dtype and hash all match, else the value is recomputed and
        both files rewritten (a truncated, overwritten or half-written entry is never returned). An
        entry of the earlier layout (JSON = the key alone) is adopted when its key matches and the
        ``.npy`` loads: its hash is then recorded."""
        import json

        from .fileio import read_json

        if self.store is None:
            return self.quiet(compute)
        full = {**key, "kind": kind, "code": code_version(kind)}
        path = self.store / kind / f"{content_hash(full)}.npy"
        side_path = path.with_suffix(".json")

        def describe(v: np.ndarray) -> dict:
            return {"shape": list(v.shape), "dtype": str(v.dtype), "hash": content_hash(v)}

        side = read_json(side_path)
        if isinstance(side, dict) and path.is_file():
            legacy = "value" not in side
            if (side if legacy else side.get("key")) == json.loads(json.dumps(full, default=str)):
                try:
                    value = np.load(path, allow_pickle=False)
                except (OSError, ValueError, EOFError):
                    value = None  # damaged: recomputed below
                if value is not None and legacy:  # written before entries carried a hash: adopt it
                    write_json(side_path, {"key": full, "value": describe(value)})
                    return value
                if value is not None and side.get("value") == describe(value):
                    return value
        value = np.asarray(self.quiet(compute))

        def write(p):
            with open(p, "wb") as f:
                np.save(f, value, allow_pickle=False)

        side_path.unlink(missing_ok=True)  # the old description never vouches for the new file
        atomic_write(path, write)
        write_json(side_path, {"key": full, "value": describe(value)})
        return value

    def quiet(self, compute):
        """``compute()`` with its warnings collected in ``notes`` instead of printed."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = compute()
        for w in caught:
            msg = f"{w.category.__name__}: {w.message}"
            if msg not in self.notes:
                self.notes.append(msg)
        return out

    # ---- shared steps, disk-cached
    def top1(self) -> torch.Tensor:
        b = self.bench
        k = ("top1", b.corpus.name, len(b.corpus))
        if k not in self._cache:
            key = {"train": self._tensor_digest("train", b.train.features),
                   "text": self._tensor_digest("corpus_text", b.corpus_text)}
            self._cache[k] = torch.from_numpy(self._disk("top1", key, lambda: Pipeline.top1(self).numpy()))
        return self._cache[k]

    def _temi_key(self, n_clusters) -> dict:
        config = self.settings.temi_config(n_clusters)
        dev = torch.device(self.settings.device).type if self.settings.device else "cpu"
        return {"train": self._tensor_digest("train", self.bench.train.features), "temi": asdict(config),
                "device": dev}

    def clusters(self, n_clusters: int | None = None) -> torch.Tensor:
        c = self.settings.temi_config(n_clusters).n_clusters
        k = ("clusters", c)
        if k not in self._cache:
            labels = self._disk("temi", self._temi_key(c), lambda: self._fit_temi(c).labels.numpy())
            self._cache[k] = torch.from_numpy(labels).long()
        return self._cache[k]

    def _fit_temi(self, c: int):
        """One TEMI fit; its loss curve goes to the disk cache at once, beside the clusters."""
        result = Pipeline.temi(self, c)
        self._disk("temi", {**self._temi_key(c), "what": "loss curve"}, lambda: result.loss_curve.numpy())
        return result

    def temi_curve(self, n_clusters: int | None = None) -> np.ndarray:
        """(steps,) TEMI's training loss for C = n_clusters, disk-cached beside its clusters (one fit
        gives both)."""
        c = self.settings.temi_config(n_clusters).n_clusters
        return self._disk("temi", {**self._temi_key(c), "what": "loss curve"},
                          lambda: self._fit_temi(c).loss_curve.numpy())

    def kmeans_clusters(self, n_clusters: int | None = None) -> torch.Tensor:
        c = n_clusters or self.settings.n_clusters
        k = ("kmeans", c)
        if k not in self._cache:
            key = {"train": self._tensor_digest("train", self.bench.train.features), "C": c,
                   "seed": self.settings.seed}
            labels = self._disk("kmeans", key, lambda: Pipeline.kmeans_clusters(self, c).numpy())
            self._cache[k] = torch.from_numpy(labels).long()
        return self._cache[k]

    def mined(self, method: str, **params) -> Mined:
        """``Pipeline.mined``, disk-cached (Y_pos, its counts and Y_neg as corpus indices) and quiet."""
        full = methods.with_defaults(method, self.settings, params)
        k = ("mined", method, tuple(sorted(full.items())))
        if k in self._cache:
            return self._cache[k]
        key = {"bench": self.fingerprint, "settings": self.settings_key(), "method": method, "params": full}

        def compute():
            m = Pipeline.mined(self, method, **params)
            return np.concatenate([[len(m.pos), len(m.neg)], m.pos.numpy(), m.counts.numpy(), m.neg.numpy()])

        packed = torch.from_numpy(self._disk("mined", key, compute)).long()
        p, q = int(packed[0]), int(packed[1])
        pos, counts, neg = packed[2:2 + p], packed[2 + p:2 + 2 * p], packed[2 + 2 * p:2 + 2 * p + q]
        self._cache[k] = Mined(method, pos, neg, [self.bench.corpus.names[i] for i in pos.tolist()], counts, full)
        return self._cache[k]

    # ---- evaluation sets and scores
    def feature_set(self, name: str) -> FeatureSet:
        """'test' / 'ImageNet' (ID test), a shifted ID set or an OOD set; subsampled to ``max_eval``."""
        b = self.bench
        if name in ("test", ID_TEST, b.test.name):
            fs = b.test
        elif name in b.shifted:
            fs = b.shifted[name]
        elif name in b.ood:
            fs = b.ood[name]
        else:
            raise KeyError(f"Unknown set {name!r}; this benchmark has ID test, shifted {list(b.shifted)} "
                           f"and OOD {list(b.ood)}.")
        if self.max_eval is not None and len(fs) > self.max_eval:
            def sub(fs=fs):
                idx = subsample(len(fs), self.max_eval, f"{self.settings.seed}:{fs.name}")
                return FeatureSet(fs.name, fs.features[idx], None if fs.labels is None else fs.labels[idx])

            fs = self._cached(("subset", fs.name), sub)  # one tensor per set: background_lse memoises on it
        return fs

    def scores(self, method: str, set_name: str, **params) -> np.ndarray:
        """(N,) scores (higher = more ID) of ``method`` on one set, disk-cached. A transductive method
        (``methods.is_pairwise``) has no scores of one set alone: use ``pair_scores``."""
        if methods.is_pairwise(method, self.settings):
            raise ValueError(f"{method} with these settings scores an ID set and an OOD set together (its ID "
                             "scores depend on the OOD set, e.g. CLIPScope's online histogram): use "
                             "run.pair_scores(method, id_set, ood_set), or Settings(clipscope_histogram='train').")
        fs = self.feature_set(set_name)
        name, full = methods.canonical(method, self.settings, params)
        key = {"bench": self.fingerprint, "settings": self.settings_key(), "method": name, "params": full,
               "set": fs.name, "max_eval": self.max_eval}
        return self._disk("scores", key, lambda: _as_numpy(self.score_fn(method, **params)(fs.features)))

    def pair_scores(self, method: str, id_set: str, ood_set: str, **params) -> tuple[np.ndarray, np.ndarray]:
        """(ID scores, OOD scores) of a transductive method (``methods.is_pairwise``) on one (ID set, OOD
        set) pair, disk-cached as one file per pair."""
        fs_id, fs_ood = self.feature_set(id_set), self.feature_set(ood_set)
        name, full = methods.canonical(method, self.settings, params)
        key = {"bench": self.fingerprint, "settings": self.settings_key(), "method": name, "params": full,
               "set": fs_id.name, "ood_set": fs_ood.name, "max_eval": self.max_eval}

        def compute():
            s_id, s_ood = self.score_fn(method, **params).pair(fs_id.features, fs_ood.features)
            return np.concatenate([_as_numpy(s_id), _as_numpy(s_ood)])

        both = self._disk("scores", key, compute)
        return both[:len(fs_id)], both[len(fs_id):]

    def custom_scores(self, label: str, key: dict, make_score_fn: Callable, set_name: str) -> np.ndarray:
        """Scores of an ad-hoc score function (``make_score_fn() -> (features -> scores)``), disk-cached
        under ``label`` + ``key`` (which must name every input the function depends on)."""
        fs = self.feature_set(set_name)
        full = {"bench": self.fingerprint, "settings": self.settings_key(), "custom": label, "key": key,
                "set": fs.name, "max_eval": self.max_eval}
        return self._disk("scores", full, lambda: _as_numpy(make_score_fn()(fs.features)))

    def evaluate(self, method: str, id_set: str = "test", ood_sets=OOD_SETS, label: str | None = None,
                 **params) -> pd.DataFrame:
        """Long table (method, id_set, ood_set, auroc, fpr95) of one method and one ID set."""
        if methods.is_pairwise(method, self.settings):
            return self._evaluate(label or method, id_set, ood_sets,
                                  pair_of=lambda n: self.pair_scores(method, id_set, n, **params))
        return self._evaluate(label or method, id_set, ood_sets, lambda s: self.scores(method, s, **params))

    def evaluate_custom(self, label: str, key: dict, make_score_fn: Callable, id_set: str = "test",
                        ood_sets=OOD_SETS) -> pd.DataFrame:
        return self._evaluate(label, id_set, ood_sets, lambda s: self.custom_scores(label, key, make_score_fn, s))

    def _evaluate(self, label, id_set, ood_sets, score_of=None, pair_of=None) -> pd.DataFrame:
        """``score_of(set) -> scores`` (the ID set scored once), or ``pair_of(ood_set) -> (ID scores, OOD
        scores)`` for a transductive method; FPR95 by ``settings.fpr95``."""
        sets = [n for n in ood_sets if n in self.bench.ood]
        id_name = self.feature_set(id_set).name
        if pair_of is None:
            s_id = score_of(id_set)
            pair_of = lambda n: (s_id, score_of(n))  # noqa: E731
        rows = [{"method": label, "id_set": id_name, "ood_set": n,
                 **metrics.evaluate(*pair_of(n), fpr95_rule=self.settings.fpr95)} for n in sets]
        return pd.DataFrame(rows, columns=COLUMNS)
