"""What the notebooks run: one function per table / figure, each returning a tidy DataFrame.

The notebooks in ``notebooks/`` are thin: a ``parameters`` cell, then cells that call ONE function of
this module (or of ``plots``) and show its result. Everything that takes more than a few lines lives
here, so it is tested (``tests/test_notebook_helpers.py``) and reusable outside Jupyter::

    cfg = check_parameters(globals())          # validates papermill's injected names
    bench = load_benchmark(cfg)                # simulated (demo) or real cached features (paper)
    run = runner(bench, cfg)                   # experiments.Pipeline + a disk cache
    t1 = table1(run)                           # long format: method,id_set,ood_set,auroc,fpr95
    compare_with_paper(t1, paper.table1())     # ours beside the paper's number and the difference

Profiles. ``demo``: the SIMULATED benchmark of ``simulate.make_benchmark`` (real WordNet, a CLIP-like
feature space; not CLIP, not ImageNet). The paper's numbers come from real CLIP ViT-H-14 on ImageNet
and are NOT expected to match it; they are printed beside ours only to show what the paper reports.
``paper``: real CLIP features cached by ``make features`` (``features.load_benchmark``); a missing
feature file raises at once with the ``make features`` command that makes it.

Disk cache. Zero-shot top-1 concepts, TEMI cluster labels and score vectors are cached under
``<project cache>/notebooks/`` ($CLUSTERMINE_CACHE or ``<repo>/.cache``), keyed by a content hash of
every input: the benchmark's tensors and names, the method, its parameters, the ``Settings`` (TEMI
config included), the evaluated set and the source code of the modules that compute them (an edit of
``clustering.py`` recomputes TEMI, one of ``scoring.py`` the top-1 concepts and the scores, ...). Several notebooks thus share one TEMI run
per C and one score vector per (method, set). Files are written atomically (temp file + rename).
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

with warnings.catch_warnings():  # tqdm.auto warns once on stderr in a kernel without ipywidgets
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

from . import analysis, metrics, paper
from .benchmark import EXTRA_OOD_SETS, OOD_SETS, SHIFTED_SETS, Benchmark, FeatureSet
from .corpus import DEFAULT_PREPROCESS
from .experiments import METHODS, Pipeline, Settings

PROFILES = ("demo", "paper")
COLUMNS = analysis.COLUMNS  # method, id_set, ood_set, auroc, fpr95
ID_TEST = "ImageNet"  # name of the ID test set in every Benchmark (simulated or real)
SIMULATED_NOTE = ("SIMULATED benchmark (CLIP-like features built from real WordNet; not CLIP, not ImageNet). "
                  "The paper's numbers come from real CLIP ViT-H-14 on ImageNet and are NOT expected to match "
                  "these; they are printed beside ours only to show what the paper reports.")
# Table 5 (OpenOOD v1.5 grouping as the paper uses it): near = SSB-hard, NINCO; far = iNat, Textures, OpenImage-O.
TABLE5_NEAR = ("SSB", "NINCO")
TABLE5_FAR = ("iNat", "Texture", "OpenImage-O")
TABLE5_PAPER_NAMES = {"SSB": "SSB-hard", "Texture": "Textures"}
COVARIATE_METHODS = ("MCM", "NegLabel*", "PosMine", "ClusterMine")
TABLE7_METHODS = ("MCM", "PLP", "NegLabel", "NegLabel*", "PosMine", "ClusterMine")
TABLE8_METHODS = ("PLP", "PosMine", "PosMine+PLP", "ClusterMine", "ClusterMine+PLP")
FIG3_METHODS = ("MCM", "NegLabel", "PosMine", "ClusterMine")
FIG8_METHODS = ("MCM", "NegLabel", "PosMine", "ClusterMine")
PROMPT_NAMES = ("basic", "openai-80", "ming-5", "nice", "simple-7")  # Fig. 8's order (prompts.PROMPT_SETS)

# Sweeps: paper values (real ImageNet-1K) and their demo counterparts (200 classes, 64 train images per
# class: C and M scale as in ``Settings.for_benchmark``; few points so that a notebook runs in a minute).
SWEEPS = {
    "demo": dict(k_values=(1_000, 10_000, 40_000, None), m_values=(1, 2, 5, 10, 20), c_values=(240, 400, 800),
                 group_sizes=(40_000, 10_000, 1_000, 100), fig11_k=40_000),
    "paper": dict(k_values=(1_000, 5_000, 10_000, 20_000, 40_000, None), m_values=(10, 25, 50, 100, 200, 400),
                  c_values=(1_200, 2_000, 4_000, 6_000, 8_000), group_sizes=(40_000, 10_000, 4_000, 1_000, 100),
                  fig11_k=40_000),
}
# Fig. 3 in the demo profile: SIMULATED "models" = simulated feature spaces of different dimension and
# per-image noise. They stand in for CLIP weights of different quality; they are NOT CLIP weights.
SIM_MODELS = {
    "sim-D128-noisy": dict(dim=128, noise=0.6),
    "sim-D256 (demo)": dict(),
    "sim-D256-clean": dict(noise=0.4),
}


# ================================================================================================
# Parameters: the notebooks' first cell, and papermill's injected names
# ================================================================================================
class UnknownParameterError(ValueError):
    """A parameter was passed to a notebook (papermill ``-p``) that its parameters cell does not declare."""


PAPERMILL_MARKER = "# Parameters"  # first line of the cell papermill injects after the `parameters` cell
PARAMETERS_MARKER = "# Notebook parameters"  # first line of every notebook's own `parameters` cell


def assigned_names(source: str) -> list[str]:
    """Top-level names a cell assigns (``x = 1``, ``x: int = 1``, ``x = y = 2``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"Cannot parse the parameters cell: {e}") from e
    out = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and n.id not in out:
                    out.append(n.id)
    return out


def _first_line(src) -> str:
    return str(src).lstrip().split("\n", 1)[0].rstrip()


def parameter_cells(history) -> tuple[list[str], list[str]] | None:
    """(declared, injected) parameter names from IPython's input history ``In``, or None.

    The declared names are those the last executed cell starting with ``# Notebook parameters``
    assigns; papermill runs its injected cell (first line exactly ``# Parameters``) right after it.
    """
    hist = [str(h) for h in (history or [])]
    for i in range(len(hist) - 1, -1, -1):
        if _first_line(hist[i]).startswith(PARAMETERS_MARKER):
            injected = []
            if i + 1 < len(hist) and _first_line(hist[i + 1]) == PAPERMILL_MARKER:
                injected = assigned_names(hist[i + 1])
            return assigned_names(hist[i]), injected
    return None


@dataclass
class Config:
    """The notebook parameters every notebook declares, plus its own (``extra``), and derived paths."""

    profile: str = "demo"
    model: str = "ViT-H-14"
    pretrained: str | None = "dfn5b"
    corpus: str = "wordnet-na"
    prompts: str = "simple-7"
    C: int | None = None
    M: int | None = None
    K: int | None = None
    tau: float | None = None
    seed: int = 0
    data_root: str | None = None
    cache_dir: str | None = None
    output_dir: str | None = None
    device: str | None = None
    max_eval: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}.")
        for name in ("C", "M", "K", "max_eval"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}.")
        if self.tau is not None and not (isinstance(self.tau, (int, float)) and self.tau > 0):
            raise ValueError(f"tau must be a number > 0 or None, got {self.tau!r}.")
        if self.pretrained in ("", "none", "None"):
            self.pretrained = None

    def __getattr__(self, name):  # artifact-specific parameters: cfg.k_values, cfg.pos_corpus_file ...
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"Config has no parameter {name!r}")

    @property
    def demo(self) -> bool:
        return self.profile == "demo"

    @property
    def root(self) -> Path:
        """Where ``results/`` and ``figures/`` go: ``output_dir``, else the repository root."""
        return Path(self.output_dir).expanduser() if self.output_dir else Path(__file__).resolve().parent.parent

    @property
    def results_dir(self) -> Path:
        return self.root / "results" / self.profile

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures" / self.profile

    def sweep(self, name: str):
        """A sweep's values: the notebook's parameter if set, else the profile's default (``SWEEPS``)."""
        v = self.extra.get(name)
        if isinstance(v, str):  # papermill -p passes "[1000, 40000]" as text
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{name} must be a list like [1000, 40000], got {v!r}.") from e
        return tuple(v) if isinstance(v, (list, tuple)) else (v if v is not None else SWEEPS[self.profile][name])


_CONFIG_FIELDS = {f.name for f in fields(Config)} - {"extra"}


def check_parameters(namespace: dict, declared: Iterable[str] | None = None,
                     injected: Iterable[str] | None = None) -> Config:
    """Validate the notebook parameters and return them as a ``Config``.

    Call it in the first cell after ``parameters``: ``cfg = check_parameters(globals())``.
    papermill only *warns* about a parameter the notebook does not declare, and injects it anyway; here
    such a name is an error (``UnknownParameterError``). ``declared`` / ``injected`` default to what
    IPython's history ``In`` shows: the names assigned by the cell starting with ``# Notebook parameters``
    and by papermill's ``# Parameters`` cell right after it (none without papermill).
    """
    found = parameter_cells(namespace.get("In", []))
    if declared is None:
        if found is None and not any(str(c).strip() for c in namespace.get("In", [])):
            # no history at all (nbval executes cells without storing them; nothing is injected then):
            # every plain value defined so far is a declared parameter
            plain = (str, int, float, bool, list, tuple, dict, type(None))
            declared = [n for n, v in namespace.items()
                        if not n.startswith("_") and n not in ("In", "Out") and isinstance(v, plain)]
        elif found is None:
            raise ValueError(f"No executed cell starting with {PARAMETERS_MARKER!r} in this kernel's history: "
                             "run the notebook's first cell (its parameters) first.")
        else:
            declared = found[0]
    if injected is None:
        injected = found[1] if found else []
    declared, injected = list(declared), list(injected)
    unknown = [n for n in injected if n not in declared]
    if unknown:
        raise UnknownParameterError(
            f"Unknown notebook parameter(s) {unknown}: this notebook declares {sorted(declared)} "
            "(names are case-sensitive; see its first cell).")
    missing = [n for n in declared if n not in namespace]
    if missing:
        raise ValueError(f"Parameters {missing} are declared but not defined; run the parameters cell.")
    import time

    for opt, v in (("display.max_rows", 200), ("display.max_columns", 40), ("display.width", 250)):
        pd.set_option(opt, v)  # notebooks show whole tables
    values = {n: namespace[n] for n in declared}
    common = {k: v for k, v in values.items() if k in _CONFIG_FIELDS}
    extra = {k: v for k, v in values.items() if k not in _CONFIG_FIELDS}
    return Config(**common, extra={**extra, "_t0": time.time()})


# ================================================================================================
# Benchmarks and the cached pipeline
# ================================================================================================
def load_benchmark(cfg: Config, ood=OOD_SETS, shifted=(), *, corpus=None, preprocess: str = DEFAULT_PREPROCESS,
                   prompts: str | None = None, model: str | None = None, pretrained: str | None = None,
                   sim_config=None) -> Benchmark:
    """The benchmark of the profile: ``make_benchmark('demo', ...)`` or cached real features.

    paper: ``features.load_benchmark(model, pretrained, corpus, prompts, cache_dir, ood=, shifted=)``;
    it raises ``FileNotFoundError`` naming every missing feature file and the ``make features``
    command. demo: the simulated benchmark holds every set; ``model``/``pretrained`` are ignored.
    ``corpus`` may be a registered name or a ``Corpus`` (e.g. ``corpus.load_corpus_file``).
    """
    from .corpus import Corpus

    corpus = corpus if corpus is not None else cfg.corpus
    prompts = prompts or cfg.prompts
    if cfg.demo:
        from .simulate import make_benchmark

        if isinstance(corpus, Corpus):
            base = make_benchmark("demo", seed=cfg.seed, preprocess=preprocess, prompts=prompts, config=sim_config)
            return simulated_with_corpus(base, corpus, prompts, sim_config)
        return make_benchmark("demo", seed=cfg.seed, corpus=corpus, preprocess=preprocess, prompts=prompts,
                              config=sim_config)
    from . import features

    return features.load_benchmark(model or cfg.model, pretrained if model else cfg.pretrained, corpus=corpus,
                                   prompts=prompts, cache_dir=cfg.cache_dir, ood=tuple(ood), shifted=tuple(shifted),
                                   preprocess=preprocess, data_root=cfg.data_root)


def check_features(cfg: Config, variants: Iterable[dict], datasets=None) -> None:
    """paper: raise one ``FileNotFoundError`` naming every missing feature file a notebook will need: the
    image features of ``datasets`` (default: ImageNet train / val and the six OOD sets) and the text
    features of each benchmark variant (dicts of ``corpus`` / ``preprocess`` / ``prompts``), each with
    its ``make features`` command; so a notebook stops in its first cells, not after minutes of work.
    demo: nothing to check."""
    if cfg.demo:
        return None
    from . import features
    from .datasets import GROUPS

    ref = features._model_ref(cfg.model, cfg.pretrained, None, "cpu")
    missing = []
    absent = [d for d in (datasets or GROUPS["paper"])
              if not (features.image_dir(ref, d, cfg.cache_dir) / "meta.json").exists()]
    if absent:
        missing.append(f"image features of {', '.join(absent)}\n      " + features.make_command(
            ref, absent, None, None, cfg.data_root, cfg.cache_dir))
    from .corpus import Corpus

    for v in variants:
        corpus, preprocess = v.get("corpus", cfg.corpus), v.get("preprocess", DEFAULT_PREPROCESS)
        prompts = v.get("prompts", cfg.prompts)
        if isinstance(corpus, Corpus):
            continue  # a custom corpus is checked (and explained) by features.load_benchmark
        corp = features._corpus(corpus, preprocess)
        prompt_name, _ = features._templates(prompts)
        for tag, names in ((features._corpus_tag(corp, preprocess, True), corp.names),
                           ("imagenet-classes", features.imagenet_classnames())):
            d = features.text_dir(ref, tag, names, prompt_name, cfg.cache_dir)
            if not (d / "meta.json").exists():
                missing.append(f"text features of {tag} x {prompt_name} ({d / 'meta.json'})\n      "
                               + features.make_command(ref, [], corpus, prompt_name, cfg.data_root, cfg.cache_dir,
                                                       preprocess))
    if missing:
        raise FileNotFoundError(f"Cached features of {ref.model_id} are missing:\n  - " + "\n  - ".join(
            dict.fromkeys(missing)) + "\nMake them on a GPU machine (docs/gpu_workflow.md).")
    return None


def demo_variants(cfg: Config) -> list[dict]:
    """``load_benchmark`` keyword sets of every simulated benchmark the demo notebooks load: the default,
    the corpora of Table 3, the pre-processings of Table 6, the prompt sets of Fig. 8 and the simulated
    models of Fig. 3. ``make data`` builds them all once (the demo's ``make features``)."""
    from .simulate import SimConfig

    out = [{}]
    out += [dict(corpus=c) for c in TABLE3_CORPORA if c != cfg.corpus]
    out += [dict(preprocess=v) for v in TABLE6_VARIANTS if v != DEFAULT_PREPROCESS]
    out += [dict(prompts=p) for p in PROMPT_NAMES if p != cfg.prompts]
    out += [dict(sim_config=replace(SimConfig.profile("demo"), **m)) for m in SIM_MODELS.values() if m]
    return out


def simulated_with_corpus(bench: Benchmark, corpus, prompts: str | None = None, sim_config=None) -> Benchmark:
    """The simulated benchmark with another corpus (e.g. a POS corpus file): same images, text features of
    the new names from the same simulated text encoder (names without a WordNet sense get their first
    WordNet sense's vector, or a random one)."""
    from .simulate import SimConfig, Simulator

    cfg = sim_config or SimConfig(**bench.meta["config"])
    sim = Simulator(cfg, bench.meta["seed"])
    text = sim.text_features(list(corpus.names), list(corpus.synsets), prompts or bench.meta["prompts"])
    return bench.with_corpus(corpus, text)


def describe(bench: Benchmark, run: "Runner | None" = None) -> str:
    """What the notebook runs on, and (demo) that it is simulated."""
    lines = [bench.describe()]
    if run is not None:
        s = run.settings
        temi = s.temi
        lines.append(f"Settings: tau={run.tau:g}, PosMine M={s.m}, ClusterMine C={s.n_clusters}"
                     + (f" (TEMI {temi.n_heads} heads, {temi.epochs} epochs)" if temi is not None else " (TEMI paper defaults)")
                     + f", NegLabel K={s.neglabel_k}, NegLabel* K={s.neglabel_star_k}, seed={s.seed}")
    if bench.simulated:
        lines.append(SIMULATED_NOTE)
    return "\n".join(lines)


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        elif isinstance(p, (bytes, bytearray)):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


# The modules whose source decides each kind of cached value: editing one recomputes that kind only.
_CODE_MODULES = {
    "top1": ("scoring",),
    "temi": ("clustering",),
    "mined": ("clustering", "experiments", "mining", "scoring"),
    "scores": ("analysis", "clustering", "experiments", "metrics", "mining", "scoring"),
}


def code_version(kind: str = "scores") -> str:
    """Hash of the source of the modules that compute a cached ``kind`` (and of torch's version)."""
    here = Path(__file__).resolve().parent
    mods = _CODE_MODULES.get(kind, _CODE_MODULES["scores"])
    return _digest(torch.__version__, *[(here / f"{m}.py").read_bytes() for m in mods])[:16]


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
    return _digest(*parts)


def default_cache_dir() -> Path:
    from .wordnet import cache_dir

    return cache_dir() / "notebooks"


def _atomic_save(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _subsample(n: int, k: int, key: str) -> torch.Tensor:
    seed = int(hashlib.blake2b(key.encode(), digest_size=7).hexdigest(), 16)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


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

    def _tensor_digest(self, name: str, t: torch.Tensor) -> str:
        """Content hash of one of the benchmark's tensors, computed once per Runner (real ImageNet train
        features are ~5 GB)."""
        if name not in self._digests:
            self._digests[name] = _digest(t)
        return self._digests[name]

    # ---- keys
    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = bench_fingerprint(self.bench)
        return self._fp

    def settings_key(self) -> dict:
        d = asdict(self.settings)
        d.pop("device", None), d.pop("progress", None)
        return d

    def _disk(self, kind: str, key: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``compute()`` (a numpy array) cached as ``<store>/<kind>/<hash>.npy`` + a JSON of its key."""
        if self.store is None:
            return self._quiet(compute)
        full = {**key, "kind": kind, "code": code_version(kind)}
        path = self.store / kind / f"{_digest(full)}.npy"
        if path.exists():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                pass  # a damaged file is recomputed
        value = np.asarray(self._quiet(compute))

        def write(p):
            with open(p, "wb") as f:
                np.save(f, value, allow_pickle=False)

        _atomic_save(path, write)
        _atomic_save(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(full, default=str, indent=1)))
        return value

    def _quiet(self, compute):
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

    def temi_config(self, n_clusters: int | None = None):
        from .clustering import TEMIConfig

        s = self.settings
        c = n_clusters or s.n_clusters
        return replace(s.temi, n_clusters=c) if s.temi is not None else TEMIConfig(n_clusters=c, seed=s.seed)

    def clusters(self, n_clusters: int | None = None) -> torch.Tensor:
        c = n_clusters or self.settings.n_clusters
        k = ("clusters", c)
        if k not in self._cache:
            dev = torch.device(self.settings.device).type if self.settings.device else "cpu"
            key = {"train": self._tensor_digest("train", self.bench.train.features),
                   "temi": asdict(self.temi_config(c)), "device": dev}
            labels = self._disk("temi", key, lambda: Pipeline.clusters(self, c).numpy())
            self._cache[k] = torch.from_numpy(labels).long()
        return self._cache[k]

    def mined(self, method: str, **params):
        """``Pipeline.mined``, disk-cached (Y_pos, its counts and Y_neg as corpus indices) and quiet."""
        from .mining import Mined

        k = ("mined", method, tuple(sorted(params.items())))
        if k in self._cache:
            return self._cache[k]
        cm, cp = self.canonical(method, params)
        key = {"bench": self.fingerprint, "settings": self.settings_key(), "method": cm, "params": cp}

        def compute():
            m = Pipeline.mined(self, method, **params)
            return np.concatenate([[len(m.pos), len(m.neg)], m.pos.numpy(), m.counts.numpy(), m.neg.numpy()])

        packed = torch.from_numpy(self._disk("mined", key, compute)).long()
        p, q = int(packed[0]), int(packed[1])
        pos, counts, neg = packed[2:2 + p], packed[2 + p:2 + 2 * p], packed[2 + 2 * p:2 + 2 * p + q]
        self._cache[k] = Mined(method, pos, neg, [self.bench.corpus.names[i] for i in pos.tolist()], counts,
                               dict(params))
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
                idx = _subsample(len(fs), self.max_eval, f"{self.settings.seed}:{fs.name}")
                return FeatureSet(fs.name, fs.features[idx], None if fs.labels is None else fs.labels[idx])

            fs = self._cached(("subset", fs.name), sub)  # one tensor per set: background_lse memoises on it
        return fs

    def scores(self, method: str, set_name: str, **params) -> np.ndarray:
        """(N,) scores (higher = more ID) of ``method`` on one set, disk-cached."""
        fs = self.feature_set(set_name)
        cm, cp = self.canonical(method, params)
        key = {"bench": self.fingerprint, "settings": self.settings_key(), "method": cm,
               "params": cp, "set": fs.name, "max_eval": self.max_eval}
        return self._disk("scores", key, lambda: _as_numpy(self.score_fn(method, **params)(fs.features)))

    def canonical(self, method: str, params: dict) -> tuple[str, dict]:
        """One cache key per distinct score: defaults written out are dropped (PosMine m=M, ClusterMine
        n_clusters=C, neg_k=None, n_groups=1) and NegLabel* is NegLabel with k = neglabel_star_k."""
        s = self.settings
        p = dict(params)
        if method in ("NegLabel", "NegLabel*"):
            p["k"] = p.get("k", s.neglabel_k if method == "NegLabel" else s.neglabel_star_k)
            method = "NegLabel"
            if p.get("n_groups", 1) == 1:
                p.pop("n_groups", None)
        base = method.split("+")[0]
        if base == "PosMine" and p.get("m") == s.m:
            p.pop("m")
        if base == "ClusterMine" and p.get("n_clusters") == s.n_clusters:
            p.pop("n_clusters")
        if "neg_k" in p and p["neg_k"] == s.neg_k:
            p.pop("neg_k")
        return method, p

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
        return self._evaluate(label or method, id_set, ood_sets, lambda s: self.scores(method, s, **params))

    def evaluate_custom(self, label: str, key: dict, make_score_fn: Callable, id_set: str = "test",
                        ood_sets=OOD_SETS) -> pd.DataFrame:
        return self._evaluate(label, id_set, ood_sets, lambda s: self.custom_scores(label, key, make_score_fn, s))

    def _evaluate(self, label, id_set, ood_sets, score_of) -> pd.DataFrame:
        sets = [n for n in ood_sets if n in self.bench.ood]
        s_id = score_of(id_set)
        id_name = self.feature_set(id_set).name
        rows = [{"method": label, "id_set": id_name, "ood_set": n, **metrics.evaluate(s_id, score_of(n))}
                for n in sets]
        return pd.DataFrame(rows, columns=COLUMNS)

    def table(self, methods=METHODS, id_sets=("test",), ood_sets=OOD_SETS, progress: bool | None = None) -> pd.DataFrame:
        parts = [self.evaluate(m, i, ood_sets) for i in id_sets for m in methods]
        return pd.concat(parts, ignore_index=True)


def _as_numpy(x) -> np.ndarray:
    return (x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64))


def runner(bench: Benchmark, cfg: Config | None = None, cache: bool = True, max_eval: int | None = None,
           **overrides) -> Runner:
    """A ``Runner`` with ``Settings.for_benchmark`` and the notebook's C / M / K / tau / seed / device.

    K is NegLabel's number of negatives (paper: 10,000; NegLabel* keeps 40,000). No progress bars.
    """
    opts = {}
    if cfg is not None:
        for name, attr in (("n_clusters", "C"), ("m", "M"), ("neglabel_k", "K"), ("tau", "tau")):
            if getattr(cfg, attr) is not None:
                opts[name] = getattr(cfg, attr)
        opts["seed"], opts["device"] = cfg.seed, cfg.device
    opts.update(overrides)
    opts.setdefault("progress", False)
    settings = Settings.for_benchmark(bench, **opts)
    if cfg is not None and max_eval is None:
        max_eval = cfg.max_eval
    return Runner(bench, settings, store=default_cache_dir() if cache else None, max_eval=max_eval)


# ================================================================================================
# Output: tables beside the paper, CSV and figure files
# ================================================================================================
def with_means(table: pd.DataFrame, sets=None, label: str = "mean") -> pd.DataFrame:
    """The long table plus one ``ood_set='mean'`` row per (method, id_set) (mean over ``sets``)."""
    extra = [c for c in table.columns if c not in COLUMNS]
    means = analysis.mean_over_sets(table[COLUMNS], sets, label).drop(columns="sets")
    if extra:  # carry artifact-specific columns that are constant per (method, id_set)
        const = table.groupby(["method", "id_set"], sort=False)[extra].first().reset_index()
        means = means.merge(const, on=["method", "id_set"], how="left")
    return pd.concat([table, means], ignore_index=True)


def compare_with_paper(ours: pd.DataFrame, reference: pd.DataFrame, on=("method", "id_set", "ood_set"),
                       values=("auroc", "fpr95")) -> pd.DataFrame:
    """Ours beside the paper's numbers and the difference (ours - paper), rounded to 2 decimals.

    Columns: the ``on`` keys, then for each value ``<value>``, ``<value>_paper``, ``<value>_diff``.
    Rows of ``ours`` without a paper number keep NaN there; the row order of ``ours`` is kept.
    """
    keys = list(on)
    vals = [v for v in values if v in ours.columns]
    ref = reference[keys + [v for v in vals if v in reference.columns]].drop_duplicates(keys)
    ref = ref.rename(columns={v: f"{v}_paper" for v in vals})
    out = ours[keys + vals].merge(ref, on=keys, how="left", sort=False)
    for v in vals:
        if f"{v}_paper" not in out.columns:
            out[f"{v}_paper"] = np.nan
        out[f"{v}_paper"] = pd.to_numeric(out[f"{v}_paper"], errors="coerce")
        out[f"{v}_diff"] = out[v] - out[f"{v}_paper"]
    order = keys + [c for v in vals for c in (v, f"{v}_paper", f"{v}_diff")]
    return out[order].round(2)


def save_table(df: pd.DataFrame, cfg: Config, name: str) -> str:
    """Write ``results/<profile>/<name>.csv`` atomically; return its path relative to the output root."""
    path = cfg.results_dir / f"{name}.csv"
    _atomic_save(path, lambda p: df.to_csv(p, index=False))
    return _rel(path, cfg)


def save_figure(fig, cfg: Config, name: str) -> list[str]:
    """Write ``figures/<profile>/<name>.png`` and ``.pdf`` atomically; return their relative paths."""
    from .plots import save

    return [_rel(p, cfg) for p in save(fig, cfg.figures_dir, name)]


def _rel(path: Path, cfg: Config) -> str:
    try:
        return str(Path(path).resolve().relative_to(cfg.root.resolve()))
    except ValueError:
        return str(path)


def stamp(df: pd.DataFrame, **columns) -> pd.DataFrame:
    """Add constant columns (e.g. profile, model) to a table for the CSV."""
    out = df.copy()
    for k, v in columns.items():
        out[k] = v
    return out


def elapsed(cfg: Config) -> str:
    """Wall time since ``check_parameters`` (the notebook's start)."""
    import time

    return f"notebook ran in {time.time() - cfg.extra.get('_t0', time.time()):.0f} s"


def wide(table: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Paper-style view of a long table: one row per (method, id_set), one column per OOD set, rounded."""
    return analysis.to_wide(table, value).round(2)


def with_paper(table: pd.DataFrame, reference: pd.DataFrame, on=("method", "id_set", "ood_set")) -> pd.DataFrame:
    """The long table with ``paper_auroc`` / ``paper_fpr95`` columns: what the CSV files hold."""
    return paper_columns(table, reference, on)


_SWEEP_COLUMNS = (("K_label", "K"), ("M", "M"), ("C", "C"), ("group_size", "group size"))


def sweep_long(*tables: pd.DataFrame) -> pd.DataFrame:
    """Sweep tables (``fig6_k`` / ``fig6_m`` / ``fig6_c`` / ``fig10_data`` ...) stacked, with ``sweep``
    (which parameter varies) and ``value`` (its value) columns; long format for the CSV."""
    parts = []
    for t in tables:
        col, name = next(((c, n) for c, n in _SWEEP_COLUMNS if c in t.columns), (None, ""))
        parts.append(t.assign(sweep=name, value=t[col].astype(str) if col else ""))
    return pd.concat(parts, ignore_index=True)


def sweep_table(*tables: pd.DataFrame) -> pd.DataFrame:
    """The mean rows of sweep tables: method, sweep, value, |Y_pos| / |Y_neg| where known, AUROC, FPR95."""
    t = sweep_long(*tables)
    t = t[t.ood_set == "mean"]
    cols = ["method", "sweep", "value"] + [c for c in ("n_pos", "K", "n_groups") if c in t.columns and c != "K"]
    if "K" in t.columns and "K_label" in t.columns:
        t = t.assign(n_neg=t["K"])
        cols.append("n_neg")
    out = t[cols + ["auroc", "fpr95"]].reset_index(drop=True)
    return out.rename(columns={"n_pos": "|Y_pos|", "n_neg": "|Y_neg|"}).round(2)


def ordered(df: pd.DataFrame, column: str, order) -> pd.DataFrame:
    """Rows sorted by the position of ``column`` in ``order`` (stable), unknown values last."""
    pos = {v: i for i, v in enumerate(order)}
    return df.iloc[np.argsort([pos.get(v, len(pos)) for v in df[column]], kind="stable")].reset_index(drop=True)


# ================================================================================================
# 00 quickstart
# ================================================================================================
def top1_examples(run: Runner, n: int = 8) -> pd.DataFrame:
    """Step 1 of mining: a few ID training images, their true class and zero-shot top-1 corpus concept."""
    b = run.bench
    top1 = run.top1()
    labels = b.train.labels
    idx = _subsample(len(b.train), n, f"{run.settings.seed}:examples").tolist()
    return pd.DataFrame({"image": idx,
                         "true class (hidden from the method)": [b.class_names[int(labels[i])] for i in idx],
                         "zero-shot top-1 concept": [b.corpus.names[int(top1[i])] for i in idx]})


def mining_summary(run: Runner, methods=("PosMine", "ClusterMine")) -> pd.DataFrame:
    """|Y_pos| of each mining method and its agreement with the (hidden) class names."""
    b = run.bench
    rows = []
    for m in methods:
        mined = run.mined(m)
        q = analysis.label_set_quality(mined.names, b.class_names)
        rows.append({"method": m, "parameter": _param_text(run, m), "|Y_pos|": len(mined), "|Y_neg|": len(mined.neg),
                     "|Y_GT|": len(b.class_names), "overlap %": round(q["overlap"], 1),
                     "precision %": round(q["precision"], 1), "F1 %": round(q["f1"], 1)})
    return pd.DataFrame(rows)


def _param_text(run: Runner, method: str) -> str:
    return {"PosMine": f"M={run.settings.m}", "ClusterMine": f"C={run.settings.n_clusters}"}.get(method, "")


def cluster_examples(run: Runner, n: int = 6) -> pd.DataFrame:
    """The largest TEMI clusters: size, winning concept of the vote, its share, and the true majority class."""
    b = run.bench
    cl, top1, y = run.clusters().numpy(), run.top1().numpy(), b.train.labels.numpy()
    sizes = np.bincount(cl)
    rows = []
    for c in np.argsort(-sizes, kind="stable")[:n]:
        members = cl == c
        votes = np.bincount(top1[members])
        win = int(np.argmax(votes))
        true = np.bincount(y[members])
        rows.append({"cluster": int(c), "images": int(sizes[c]), "voted concept (Y_pos)": b.corpus.names[win],
                     "vote share %": round(100 * votes[win] / members.sum(), 1),
                     "true majority class": b.class_names[int(np.argmax(true))],
                     "purity %": round(100 * true.max() / members.sum(), 1)})
    return pd.DataFrame(rows)


def score_samples(run: Runner, methods=("MCM", "PosMine", "ClusterMine"), sets=("test", "NINCO", "iNat")) -> pd.DataFrame:
    """Per-image scores (long: method, set, score) for histograms of ID vs OOD."""
    parts = []
    for m in methods:
        for s in sets:
            sc = run.scores(m, s)
            parts.append(pd.DataFrame({"method": m, "set": run.feature_set(s).name, "score": sc}))
    return pd.concat(parts, ignore_index=True)


def quickstart_table(run: Runner, methods=("MCM", "PosMine", "ClusterMine")) -> pd.DataFrame:
    return with_means(run.table(methods))


# ================================================================================================
# Table 1
# ================================================================================================
def table1(run: Runner, methods=METHODS) -> pd.DataFrame:
    """Table 1: every method on the six OOD sets, long format with ``mean`` rows and ``needs_gt``."""
    from .experiments import NEEDS_GT

    t = with_means(run.table(methods), OOD_SETS)
    t["needs_gt_labels"] = t["method"].map(lambda m: "yes" if NEEDS_GT.get(m, True) else "no")
    return t


def table1_compare(t1: pd.DataFrame, means_only: bool = True) -> pd.DataFrame:
    cmp = compare_with_paper(t1, paper.table1(), on=("method", "ood_set"))
    return cmp[cmp.ood_set == "mean"].drop(columns="ood_set").reset_index(drop=True) if means_only else cmp


def paper_columns(ours: pd.DataFrame, reference: pd.DataFrame, on) -> pd.DataFrame:
    """``ours`` with ``paper_auroc`` / ``paper_fpr95`` columns (for the CSV)."""
    keys = list(on)
    ref = reference[keys + [c for c in ("auroc", "fpr95") if c in reference.columns]].drop_duplicates(keys)
    ref = ref.rename(columns={"auroc": "paper_auroc", "fpr95": "paper_fpr95"})
    out = ours.merge(ref, on=keys, how="left", sort=False)
    for c in ("paper_auroc", "paper_fpr95"):
        if c not in out.columns:
            out[c] = np.nan
    return out


# ================================================================================================
# Table 2 / Table 9 / Fig. 4: covariate-shifted ID sets
# ================================================================================================
def table9(run: Runner, methods=COVARIATE_METHODS) -> pd.DataFrame:
    """Table 9: each method with each ID test set (ImageNet + the 5 shifted ones) against the 6 OOD sets."""
    id_sets = ["test"] + [s for s in SHIFTED_SETS if s in run.bench.shifted]
    return with_means(run.table(methods, id_sets=id_sets), OOD_SETS)


def table2(t9: pd.DataFrame) -> pd.DataFrame:
    """Table 2 = Table 9's mean columns: mean AUROC / FPR95 per (ID set, method), beside the paper."""
    means = t9[t9.ood_set == "mean"]
    return compare_with_paper(means, paper.table9(), on=("id_set", "method", "ood_set")).drop(columns="ood_set")


def table9_compare(t9: pd.DataFrame) -> pd.DataFrame:
    """AUROC per OOD set and mean, ours beside the paper's (Table 9 gives FPR95 only as a mean)."""
    return compare_with_paper(t9, paper.table9(), on=("id_set", "method", "ood_set"), values=("auroc",))


def fig4_data(t9: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4: mean AUROC per (ID set, method) and its relative change (%) vs the method's ImageNet AUROC."""
    m = t9[t9.ood_set == "mean"][["method", "id_set", "auroc", "fpr95"]].copy()
    base = m[m.id_set == ID_TEST].set_index("method")["auroc"]
    m["relative_change_pct"] = 100 * (m["auroc"] - m["method"].map(base)) / m["method"].map(base)
    ref = paper.table9()
    ref = ref[ref.ood_set == "mean"][["method", "id_set", "auroc"]].rename(columns={"auroc": "paper_auroc"})
    m = m.merge(ref, on=["method", "id_set"], how="left")
    pbase = m[m.id_set == ID_TEST].set_index("method")["paper_auroc"]
    m["paper_relative_change_pct"] = 100 * (m["paper_auroc"] - m["method"].map(pbase)) / m["method"].map(pbase)
    m.insert(2, "ood_set", "mean")
    return m.round(2)


# ================================================================================================
# Table 3: corpora
# ================================================================================================
TABLE3_PAPER_NAMES = {"wordnet-in21k": "WordNet-IN21K", "wordnet-n": "WordNet-N", "wordnet-na": "WordNet-NA"}


def table3_row(run: Runner, corpus_label: str) -> pd.DataFrame:
    """One corpus of Table 3: mean AUROC of NegLabel*, PosMine, ClusterMine; |Y_pos|, overlap and F1."""
    b = run.bench
    t = analysis.mean_over_sets(run.table(("NegLabel*", "PosMine", "ClusterMine")), OOD_SETS).drop(columns="sets")
    rows = []
    for _, r in t.iterrows():
        row = {**r.to_dict(), "corpus": corpus_label, "corpus_size": len(b.corpus), "n_pos": np.nan,
               "overlap": np.nan, "f1": np.nan}
        if r["method"] in ("PosMine", "ClusterMine"):
            mined = run.mined(r["method"])
            q = analysis.label_set_quality(mined.names, b.class_names)
            row.update(n_pos=len(mined), overlap=q["overlap"], f1=q["f1"])
        rows.append(row)
    return pd.DataFrame(rows)


TABLE3_CORPORA = ("wordnet-in21k", "wordnet-n", "wordnet-na")


def table3(cfg: Config, corpora=TABLE3_CORPORA, pos_corpus_file: str | None = None,
           pos_corpus_name: str = "POS-NA") -> pd.DataFrame:
    """Table 3: one row per (corpus, method). POS corpora cannot be shipped: with ``pos_corpus_file``
    (one concept per line, or ``word,pos`` CSV) the file and the file ∪ Y_GT are added."""
    from .corpus import load_corpus_file

    parts = []
    for c in corpora:
        bench = load_benchmark(cfg, corpus=c)
        parts.append(table3_row(runner(bench, cfg), TABLE3_PAPER_NAMES.get(c, c)))
    if pos_corpus_file:
        pos = load_corpus_file(pos_corpus_file, name=pos_corpus_name)
        for corp, label in ((pos, pos_corpus_name), (None, f"{pos_corpus_name}+GT")):
            if corp is None:
                names = load_benchmark(cfg).class_names
                corp = pos.union(names, name=f"{pos_corpus_name}+GT")
            bench = load_benchmark(cfg, corpus=corp)
            parts.append(table3_row(runner(bench, cfg), label))
    return pd.concat(parts, ignore_index=True)


def paper_table3() -> pd.DataFrame:
    """Table 3 in long format: method, corpus, corpus_size, auroc (mean), overlap, f1."""
    w = paper.read_csv("table3")
    rows = []
    for _, r in w.iterrows():
        for m, p in (("NegLabel*", "neglabel_star"), ("PosMine", "posmine"), ("ClusterMine", "clustermine")):
            rows.append({"method": m, "corpus": r["corpus"], "paper_corpus_size": r["corpus_size"],
                         "auroc": r[f"{p}_auroc"], "overlap": r.get(f"{p}_overlap", np.nan),
                         "f1": r.get(f"{p}_f1", np.nan)})
    return pd.DataFrame(rows)


def table3_compare(t3: pd.DataFrame) -> pd.DataFrame:
    cmp = compare_with_paper(t3, paper_table3(), on=("corpus", "method"), values=("auroc", "overlap", "f1"))
    cmp.insert(2, "|Y_pos|", t3["n_pos"].values)
    return cmp


# ================================================================================================
# Table 4: equal-size positives
# ================================================================================================
def table4(run: Runner, c_small: int | None = None, c_large: int | None = None) -> pd.DataFrame:
    """Table 4: MCM and Eq. 1 with Y_GT ∪ Y_aug vs ClusterMine at equal |Y_pos|.

    Column 1: |Y_pos| ≈ |Y_GT| (Y_aug = ∅; ClusterMine with ``c_small``, paper 1.2K = 1.2 |Y_GT|).
    Column 2: |Y_pos| = |Y_pos of ClusterMine at ``c_large``| (paper: C = 4K, 1500): Y_aug = that many
    minus |Y_GT| nearest corpus concepts to Y_GT (paper: 500). Columns: size_group ('|Y_GT|' /
    'ClusterMine C_large'), n_pos (actual |Y_pos|), C (ClusterMine) and n_aug.
    """
    from . import scoring

    b = run.bench
    n_gt = len(b.class_names)
    c_small = c_small or max(2, round(1.2 * n_gt))
    c_large = c_large or run.settings.n_clusters
    big = run.mined("ClusterMine", n_clusters=c_large)
    rows = []
    for group, n_aug, c in (("ypos_1000", 0, c_small), ("ypos_1500", max(0, len(big) - n_gt), c_large)):
        aug = run._quiet(lambda: scoring.augment_positives(b.class_text, b.corpus_text, b.corpus, n_aug,
                                                            class_names=b.class_names)) if n_aug else None
        aug_idx = aug.params["aug"] if aug is not None else torch.empty(0, dtype=torch.long)
        pos_text = torch.cat([b.class_text, b.corpus_text[aug_idx]])
        if aug is not None:
            neg_idx = aug.neg
        else:
            from .mining import gt_positives

            neg_idx = run._quiet(lambda: gt_positives(b.class_names, b.corpus)).neg
        neg_text = b.corpus_text[neg_idx]
        dev, tau = run.settings.device, run.tau
        key = {"n_aug": int(n_aug), "aug": _digest(aug_idx), "neg": _digest(neg_idx)}
        mcm = run.evaluate_custom("MCM (Y_GT ∪ Y_aug)", key, lambda: (
            lambda x: scoring.mcm_score(x, pos_text, device=dev)))
        eq1 = run.evaluate_custom("Eq.1 (Y_GT ∪ Y_aug)", {**key, "tau": tau}, lambda: (
            lambda x: scoring.eq1_logit(x, pos_text, neg_text, tau, device=dev)))
        cm = run.evaluate("ClusterMine", label="ClusterMine", n_clusters=c)
        n_cm = len(run.mined("ClusterMine", n_clusters=c))
        for t, n_pos, cc in ((mcm, n_gt + n_aug, None), (eq1, n_gt + n_aug, None), (cm, n_cm, c)):
            t = with_means(t, OOD_SETS)
            t["size_group"], t["n_pos"], t["C"], t["n_aug"] = group, n_pos, cc, (None if cc else n_aug)
            rows.append(t)
    return pd.concat(rows, ignore_index=True)


def paper_table4() -> pd.DataFrame:
    w = paper.read_csv("table4")
    names = {"MCM (Y_GT ∪ Y_aug)": "MCM (Y_GT ∪ Y_aug)", "Eq.1 (Y_GT ∪ Y_aug)": "Eq.1 (Y_GT ∪ Y_aug)"}
    rows = []
    for _, r in w.iterrows():
        m = names.get(r["method"], "ClusterMine")
        for g in ("ypos_1000", "ypos_1500"):
            rows.append({"method": m, "size_group": g, "ood_set": "mean", "auroc": r[f"{g}_auroc"],
                         "fpr95": r[f"{g}_fpr95"]})
    return pd.DataFrame(rows)


def table4_compare(t4: pd.DataFrame) -> pd.DataFrame:
    m = t4[t4.ood_set == "mean"].reset_index(drop=True)
    cmp = compare_with_paper(m, paper_table4(), on=("size_group", "method", "ood_set")).drop(columns="ood_set")
    cmp.insert(2, "|Y_pos|", m["n_pos"].values)
    cmp.insert(3, "C", m["C"].values)
    return cmp


# ================================================================================================
# Table 5: OpenOOD near / far (ViT-B-16 OpenAI in the paper)
# ================================================================================================
def table5_sets(run_or_bench) -> tuple[list[str], list[str]]:
    b = run_or_bench.bench if isinstance(run_or_bench, Runner) else run_or_bench
    return [s for s in TABLE5_NEAR if s in b.ood], [s for s in TABLE5_FAR if s in b.ood]


def table5(run: Runner, methods=("ClusterMine",)) -> pd.DataFrame:
    """Table 5: per set, then ``near`` / ``far`` means (sets named as in the paper: SSB-hard, Textures)."""
    near, far = table5_sets(run)
    t = run.table(methods, ood_sets=near + far)
    means = pd.concat([analysis.mean_over_sets(t, near, "near"), analysis.mean_over_sets(t, far, "far")],
                      ignore_index=True).drop(columns="sets")
    t = pd.concat([t, means], ignore_index=True)
    t["ood_set"] = t["ood_set"].map(lambda s: TABLE5_PAPER_NAMES.get(s, s))
    t["group"] = t["ood_set"].map(lambda s: "near" if s in ("SSB-hard", "NINCO", "near") else "far")
    return t


def paper_table5() -> pd.DataFrame:
    w = paper.read_csv("table5")
    rows = []
    for _, r in w.iterrows():
        for s in ("SSB-hard", "NINCO", "iNat", "Textures", "OpenImage-O", "near", "far"):
            rows.append({"method": r["method"], "ood_set": s, "auroc": r.get(f"{s}_auroc"), "fpr95": r.get(f"{s}_fpr95")})
    return pd.DataFrame(rows)


def table5_compare(t5: pd.DataFrame) -> pd.DataFrame:
    return compare_with_paper(t5, paper_table5(), on=("method", "ood_set"))


def table5_reported() -> pd.DataFrame:
    """The paper's Table 5 as printed, AdaNeg and SynOOD included (their authors' numbers)."""
    return paper_table5().pivot_table(index="method", columns="ood_set", values="auroc", sort=False).round(2)


# ================================================================================================
# Fig. 6: sensitivity to K, M, C
# ================================================================================================
def _k_label(k) -> str:
    return "all" if k is None else f"{k / 1000:g}K"


def fig6_k(run: Runner, k_values, methods=("NegLabel", "PosMine", "ClusterMine")) -> pd.DataFrame:
    """Fig. 6 left: mean AUROC vs the number of negatives K (None = all of Eq. 2) per method.
    NegLabel: Y_pos = Y_GT, K least similar negatives; PosMine / ClusterMine: Y_neg pruned to K."""
    rows = []
    for m in methods:
        for k in k_values:
            params = {"k": k} if m == "NegLabel" else ({"neg_k": k} if k is not None else {})
            t = with_means(run.evaluate(m, **params), OOD_SETS)
            mined = run.mined("NegLabel", k=k) if m == "NegLabel" else run.mined(m, **params)
            t["K"], t["K_label"], t["n_pos"] = len(mined.neg), _k_label(k), len(mined)
            rows.append(t)
    return pd.concat(rows, ignore_index=True)


def _mining_sweep(run: Runner, method: str, param: str, column: str, values) -> pd.DataFrame:
    """``method``'s mean AUROC and |Y_pos| for each value of its mining parameter ``param`` (the
    ``column`` of the table)."""
    rows = []
    for v in values:
        t = with_means(run.evaluate(method, **{param: v}), OOD_SETS)
        t[column], t["n_pos"] = v, len(run.mined(method, **{param: v}))
        rows.append(t)
    return pd.concat(rows, ignore_index=True)


def fig6_m(run: Runner, m_values) -> pd.DataFrame:
    """Fig. 6 center: PosMine mean AUROC and |Y_pos| vs M."""
    return _mining_sweep(run, "PosMine", "m", "M", m_values)


def fig6_c(run: Runner, c_values) -> pd.DataFrame:
    """Fig. 6 right: ClusterMine mean AUROC and |Y_pos| vs C."""
    return _mining_sweep(run, "ClusterMine", "n_clusters", "C", c_values)


def fig6_reference(k_df: pd.DataFrame) -> pd.DataFrame:
    """The paper tabulates Fig. 6 only where it meets Table 1: NegLabel at K = 10K, NegLabel* = NegLabel at
    K = 40K, PosMine / ClusterMine at K = all (at this run's M and C). Those points beside Table 1."""
    k = k_df[k_df.ood_set == "mean"]
    picks = [("NegLabel", "10K", "NegLabel"), ("NegLabel", "40K", "NegLabel*"), ("PosMine", "all", "PosMine"),
             ("ClusterMine", "all", "ClusterMine")]
    rows = [k[(k.method == m) & (k.K_label == kl)].assign(method=name, K=kl) for m, kl, name in picks]
    ours = pd.concat(rows, ignore_index=True)[["method", "K", "ood_set", "auroc", "fpr95"]]
    out = compare_with_paper(ours, paper.table1(), on=("method", "ood_set"))
    return out.assign(K=ours["K"].values).drop(columns="ood_set")[["method", "K"] + [
        c for c in out.columns if c not in ("method", "ood_set", "K")]]


# ================================================================================================
# Fig. 3: models
# ================================================================================================
def fig3_models(cfg: Config):
    """The models of Fig. 3: simulated feature spaces (demo) or ``models.FIG3_MODELS`` (paper)."""
    if cfg.demo:
        return list(cfg.extra.get("models") or SIM_MODELS)
    from .models import FIG3_MODELS

    return list(cfg.extra.get("models") or FIG3_MODELS)


def check_fig3_features(cfg: Config, models=None) -> list[str]:
    """The models of Fig. 3; paper: first raise one ``FileNotFoundError`` listing every model whose image
    features are missing, with the ``make features`` command of each (text features are checked when each
    model is loaded)."""
    if cfg.demo:
        unknown = [m for m in models or () if m not in SIM_MODELS]
        if unknown:
            raise ValueError(f"Unknown simulated models {unknown}; the demo has {list(SIM_MODELS)}.")
        return list(models or fig3_models(cfg))
    from . import features
    from .datasets import GROUPS

    missing = []
    for key in models or fig3_models(cfg):
        ref = features._model_ref(key, None, None, "cpu")
        absent = [d for d in GROUPS["paper"] if not (features.image_dir(ref, d, cfg.cache_dir) / "meta.json").exists()]
        if absent:
            missing.append(f"{ref.model_id}: {', '.join(absent)}\n    " + features.make_command(
                ref, GROUPS["paper"], cfg.corpus, cfg.prompts, cfg.data_root, cfg.cache_dir))
    if missing:
        raise FileNotFoundError("Cached image features are missing for Fig. 3 (one line per model, then the command "
                                "that makes them on a GPU machine; docs/gpu_workflow.md):\n  " + "\n  ".join(missing))
    return list(models or fig3_models(cfg))


def fig3(cfg: Config, models=None, methods=FIG3_METHODS) -> pd.DataFrame:
    """Fig. 3: mean AUROC over the 6 OOD sets per model and method (models sorted by ClusterMine).
    demo: SIMULATED models (``SIM_MODELS``: feature dimension and per-image noise), NOT CLIP weights."""
    from .simulate import SimConfig

    parts = []
    for name in models or fig3_models(cfg):
        if cfg.demo:
            sim = replace(SimConfig.profile("demo"), **SIM_MODELS[name])
            bench = load_benchmark(cfg, sim_config=sim)
            kind = "simulated"
        else:
            bench = load_benchmark(cfg, model=name, pretrained=None)
            kind = "CLIP"
        t = with_means(runner(bench, cfg).table(methods), OOD_SETS)
        t["model"], t["kind"] = name, kind
        parts.append(t)
        del bench
    out = pd.concat(parts, ignore_index=True)
    cm = out[(out.method == "ClusterMine") & (out.ood_set == "mean")].set_index("model")["auroc"]
    rank = {m: i for i, m in enumerate(cm.sort_values().index)}
    return out.assign(_r=out["model"].map(rank)).sort_values(["_r"], kind="stable").drop(columns="_r").reset_index(drop=True)


def fig3_reference(f3: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC per model and method; the paper's only tabulated point is ViT-H-14/dfn5b (Table 1)."""
    m = f3[f3.ood_set == "mean"][["model", "method", "ood_set", "auroc", "fpr95"]].reset_index(drop=True)
    ref = paper.table1().assign(model="ViT-H-14/dfn5b")
    return compare_with_paper(m, ref, on=("model", "method", "ood_set")).drop(columns="ood_set")


# ================================================================================================
# Fig. 5: label quality
# ================================================================================================
def fig5_data(run: Runner, methods=("PosMine", "ClusterMine")) -> pd.DataFrame:
    """Fig. 5: for each mined label, top-1 text-text cosine to Y_GT and WordNet hops to Y_GT (NaN: no synset
    or no common ancestor). Long: method, label, similarity, hops."""
    b = run.bench
    parts = []
    for m in methods:
        mined = run.mined(m)
        sim = analysis.top1_text_similarity(b.corpus_text[mined.pos], b.class_text, device=run.settings.device)
        hops = analysis.wordnet_hops([b.corpus.synsets[i] for i in mined.pos.tolist()], b.class_synsets)
        parts.append(pd.DataFrame({"method": m, "label": mined.names, "similarity": sim.numpy().astype(float),
                                   "hops": hops}))
    return pd.concat(parts, ignore_index=True)


def fig5_summary(f5: pd.DataFrame) -> pd.DataFrame:
    """Per method: |Y_pos|, mean/median similarity, share of labels at 0 / 1 / 2 / >=3 hops (percent)."""
    rows = []
    for m, g in f5.groupby("method", sort=False):
        h = g["hops"]
        rows.append({"method": m, "|Y_pos|": len(g), "mean similarity": g["similarity"].mean(),
                     "median similarity": g["similarity"].median(),
                     "0 hops %": 100 * (h == 0).mean(), "1 hop %": 100 * (h == 1).mean(),
                     "2 hops %": 100 * (h == 2).mean(), ">=3 hops %": 100 * (h >= 3).mean(),
                     "no path %": 100 * h.isna().mean()})
    return pd.DataFrame(rows).round(2)


def fig5_reference(run: Runner, methods=("PosMine", "ClusterMine")) -> pd.DataFrame:
    """Overlap and F1 of Y_pos vs Y_GT beside the paper's (Table 3, WordNet-NA row), which Fig. 5 illustrates."""
    b = run.bench
    rows = []
    for m in methods:
        q = analysis.label_set_quality(run.mined(m).names, b.class_names)
        rows.append({"corpus": TABLE3_PAPER_NAMES.get(b.corpus.name, b.corpus.name), "method": m,
                     "overlap": q["overlap"], "f1": q["f1"]})
    return compare_with_paper(pd.DataFrame(rows), paper_table3(), on=("corpus", "method"), values=("overlap", "f1"))


# ================================================================================================
# Table 6: text pre-processing
# ================================================================================================
TABLE6_VARIANTS = {"dedup-1-lemma": "no_dup_1_lemma", "dup-all-lemmas": "dup_all_lemmas", "dup-1-lemma": "dup_1_lemma"}


def table6(cfg: Config, variants=tuple(TABLE6_VARIANTS)) -> pd.DataFrame:
    """Table 6: ClusterMine with each corpus pre-processing (same images, corpus rebuilt)."""
    parts = []
    for v in variants:
        run = runner(load_benchmark(cfg, preprocess=v), cfg)
        t = with_means(run.evaluate("ClusterMine"), OOD_SETS)
        t["preprocess"], t["corpus_size"], t["n_pos"] = v, len(run.bench.corpus), len(run.mined("ClusterMine"))
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def paper_table6() -> pd.DataFrame:
    w = paper.read_csv("table6")
    rows = []
    for _, r in w.iterrows():
        for v, col in TABLE6_VARIANTS.items():
            rows.append({"method": "ClusterMine", "preprocess": v, "ood_set": "mean" if r["ood_set"] == "Mean" else r["ood_set"],
                         "auroc": r[f"{col}_auroc"], "fpr95": r[f"{col}_fpr95"]})
    return pd.DataFrame(rows)


def table6_compare(t6: pd.DataFrame, means_only: bool = False) -> pd.DataFrame:
    """Ours beside the paper's Table 6; ``means_only``: the mean rows with |corpus| and |Y_pos|."""
    cmp = compare_with_paper(t6, paper_table6(), on=("preprocess", "ood_set"))
    if not means_only:
        return cmp
    keep = (cmp.ood_set == "mean").values
    out = cmp[keep].drop(columns="ood_set").reset_index(drop=True)
    out.insert(1, "|corpus|", t6["corpus_size"].values[keep])
    out.insert(2, "|Y_pos|", t6["n_pos"].values[keep])
    return out


# ================================================================================================
# Table 7: extra OOD sets
# ================================================================================================
def table7(run: Runner, methods=TABLE7_METHODS) -> pd.DataFrame:
    return run.table(methods, ood_sets=[s for s in EXTRA_OOD_SETS if s in run.bench.ood])


def paper_table7() -> pd.DataFrame:
    w = paper.read_csv("table7")
    return w.melt(id_vars="method", var_name="ood_set", value_name="auroc")


def table7_compare(t7: pd.DataFrame) -> pd.DataFrame:
    return compare_with_paper(t7, paper_table7(), on=("method", "ood_set"), values=("auroc",))


# ================================================================================================
# Fig. 7: cluster analysis vs C
# ================================================================================================
def fig7_data(run: Runner, c_values) -> pd.DataFrame:
    """Fig. 7: purity (true classes), entropy of top-1 concepts, redundancy ratio and |Y_pos|/C per C,
    as percentages where the paper uses them; plus the label-free elbow proposal of C (appendix B)."""
    top1 = run.top1()
    sweep = analysis.cluster_sweep({c: run.clusters(c) for c in c_values}, top1, run.bench.train.labels)
    out = sweep.assign(purity_pct=100 * sweep.purity, redundancy_pct=100 * sweep.redundancy,
                       pos_per_cluster_pct=100 * sweep.pos_per_cluster)
    return out


def fig7_proposal(f7: pd.DataFrame) -> pd.DataFrame:
    """The elbow heuristic of appendix B: C proposed by |Y_pos|/C and by the redundancy ratio."""
    if len(f7) < 3:
        return pd.DataFrame([{"metric": "(needs >= 3 values of C)", "proposed C": np.nan}])
    p = analysis.propose_c(f7)
    rows = [{"metric": m, "proposed C": c} for m, c in p["by_metric"].items()]
    return pd.DataFrame(rows + [{"metric": "proposal (largest)", "proposed C": p["C"]}])


# ================================================================================================
# Fig. 8: prompts
# ================================================================================================
def fig8_data(cfg: Config, prompt_sets=None, methods=FIG8_METHODS) -> pd.DataFrame:
    from .prompts import PROMPT_SETS

    parts = []
    for p in prompt_sets or PROMPT_NAMES:
        run = runner(load_benchmark(cfg, prompts=p), cfg)
        t = with_means(run.table(methods), OOD_SETS)
        t["prompts"], t["n_templates"] = p, len(PROMPT_SETS[p])
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def fig8_reference(f8: pd.DataFrame) -> pd.DataFrame:
    """The paper tabulates only the simple-7 prompts (Table 1); Fig. 8's other bars are in the figure."""
    m = f8[(f8.ood_set == "mean")][["prompts", "method", "ood_set", "auroc", "fpr95"]].reset_index(drop=True)
    ref = paper.table1().assign(prompts="simple-7")
    return compare_with_paper(m, ref, on=("prompts", "method", "ood_set")).drop(columns="ood_set")


# ================================================================================================
# Fig. 9 / 10 / 11: negative mining
# ================================================================================================
def fig9_corpus(cfg: Config, pos_corpus_file: str | None = None, name: str = "POS-NA"):
    """The corpus of Fig. 9: the POS-NA file when given, else (it cannot be shipped) the default corpus."""
    from .corpus import load_corpus_file

    if pos_corpus_file:
        return load_corpus_file(pos_corpus_file, name=name), name
    return cfg.corpus, f"{TABLE3_PAPER_NAMES.get(cfg.corpus, cfg.corpus)} (POS-NA not available)"


def fig9_data(run: Runner, k_values, corpus_label: str) -> pd.DataFrame:
    """Fig. 9: PosMine / ClusterMine with Y_neg pruned to K (and NegLabel with K) on one corpus."""
    t = fig6_k(run, k_values)
    t["corpus"] = corpus_label
    return t


def fig10_data(run: Runner, group_sizes, methods=("NegLabel", "NegLabel*")) -> pd.DataFrame:
    """Fig. 10: NegLabel / NegLabel* with negatives split into groups of ``size`` labels (n_groups = K // size;
    size >= K means one group, i.e. no grouping)."""
    s = run.settings
    rows = []
    for m in methods:
        k = s.neglabel_k if m == "NegLabel" else s.neglabel_star_k
        n_neg = len(run.mined("NegLabel", k=k).neg)
        for size in sorted({min(g, n_neg) for g in group_sizes}, reverse=True):
            groups = max(1, n_neg // size)
            t = with_means(run.evaluate(m, **({"n_groups": groups} if groups > 1 else {})), OOD_SETS)
            t["K"], t["group_size"], t["n_groups"] = n_neg, n_neg // groups, groups
            rows.append(t)
    return pd.concat(rows, ignore_index=True)


def fig10_reference(f10: pd.DataFrame) -> pd.DataFrame:
    """Without grouping (one group) NegLabel / NegLabel* are Table 1's rows: ours beside the paper's."""
    m = f10[(f10.n_groups == 1) & (f10.ood_set == "mean")][["method", "ood_set", "auroc", "fpr95"]]
    return compare_with_paper(m.reset_index(drop=True), paper.table1(), on=("method", "ood_set")).drop(columns="ood_set")


def fig11_data(run: Runner, k: int = 40_000) -> pd.DataFrame:
    """Fig. 11: on each ID set, NegLabel* vs PosMine / ClusterMine without (K = all) and with negative mining
    (Y_neg pruned to ``k``): mean AUROC over the six OOD sets."""
    id_sets = ["test"] + [s for s in SHIFTED_SETS if s in run.bench.shifted]
    parts = [run.table(("NegLabel*", "PosMine", "ClusterMine"), id_sets=id_sets)]
    for m in ("PosMine", "ClusterMine"):
        for i in id_sets:
            parts.append(run.evaluate(m, i, label=f"{m} + neg. mining (K={_k_label(k)})", neg_k=k))
    return with_means(pd.concat(parts, ignore_index=True), OOD_SETS)


def fig11_reference(f11: pd.DataFrame) -> pd.DataFrame:
    """K = all rows are Table 9's; ours beside the paper's mean AUROC / FPR95."""
    m = f11[f11.ood_set == "mean"][["id_set", "method", "ood_set", "auroc", "fpr95"]].reset_index(drop=True)
    return compare_with_paper(m, paper.table9(), on=("id_set", "method", "ood_set")).drop(columns="ood_set")


# ================================================================================================
# Table 8: PLP on mined positives
# ================================================================================================
def table8(run: Runner, methods=TABLE8_METHODS) -> pd.DataFrame:
    return with_means(run.table(methods), OOD_SETS)


def paper_table8() -> pd.DataFrame:
    w = paper.read_csv("table8")
    rows = []
    for _, r in w.iterrows():
        for s in OOD_SETS:
            rows.append({"method": r["method"], "ood_set": s, "auroc": r[s], "fpr95": np.nan})
        rows.append({"method": r["method"], "ood_set": "mean", "auroc": r["mean_auroc"], "fpr95": r["mean_fpr95"]})
    return pd.DataFrame(rows)


def table8_compare(t8: pd.DataFrame, means_only: bool = True) -> pd.DataFrame:
    cmp = compare_with_paper(t8, paper_table8(), on=("method", "ood_set"))
    return cmp[cmp.ood_set == "mean"].drop(columns="ood_set").reset_index(drop=True) if means_only else cmp
