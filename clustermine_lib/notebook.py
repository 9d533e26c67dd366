"""Notebook plumbing: parameters, the benchmark of a profile, what a run says about itself, saving.

Every notebook in ``notebooks/`` is: a ``parameters`` cell, then::

    cfg = notebook.check_parameters(globals())     # validates papermill's injected names
    bench = notebook.open_benchmark(cfg)           # simulated (demo) or real cached features (paper)
    run = Runner.from_config(bench, cfg)           # experiments.Pipeline + a disk cache (runner.py)
    t1 = table1_main_results.table1(run)           # the module named after the notebook (artifacts/)

Profiles. ``demo``: the SIMULATED benchmark of ``simulate.make_benchmark`` (real WordNet, a CLIP-like
feature space; not CLIP, not ImageNet). The paper's numbers come from real CLIP ViT-H-14 on ImageNet
and are NOT expected to match it; they are printed beside ours only to show what the paper reports.
``paper``: real CLIP features cached by ``make features`` (``features.load_benchmark``); a missing
feature file raises at once with the ``make features`` command that makes it.
"""
from __future__ import annotations

import ast
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable

import pandas as pd

with warnings.catch_warnings():  # tqdm.auto warns once on stderr in a kernel without ipywidgets
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

from .benchmark import OOD_SETS, Benchmark
from .corpus import DEFAULT_CORPUS, DEFAULT_PREPROCESS
from .fileio import atomic_write, content_hash
from .models import DEFAULT_MODEL
from .prompts import DEFAULT_PROMPTS

PROFILES = ("demo", "paper")
SIMULATED_NOTE = ("SIMULATED benchmark (CLIP-like features built from real WordNet; not CLIP, not ImageNet). "
                  "The paper's numbers come from real CLIP ViT-H-14 on ImageNet and are NOT expected to match "
                  "these; they are printed beside ours only to show what the paper reports.")
# Sweeps: paper values (real ImageNet-1K) and their demo counterparts (200 classes, 64 train images per
# class: M scales as in ``Settings.for_benchmark``; C from 1x to 8x the number of ID classes, since the
# paper's claim is that over-estimating C costs little).
SWEEPS = {
    "demo": dict(k_values=(1_000, 10_000, 40_000, None), m_values=(1, 2, 5, 10, 20), c_values=(200, 400, 800, 1600),
                 group_sizes=(40_000, 10_000, 1_000, 100), fig11_k=40_000),
    "paper": dict(k_values=(1_000, 5_000, 10_000, 20_000, 40_000, None), m_values=(10, 25, 50, 100, 200, 400),
                  c_values=(1_200, 2_000, 4_000, 6_000, 8_000), group_sizes=(40_000, 10_000, 4_000, 1_000, 100),
                  fig11_k=40_000),
}
_MODEL, _TAG = DEFAULT_MODEL.split("/")


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
    model: str = _MODEL
    pretrained: str | None = _TAG
    checkpoint: str | None = None
    corpus: str = DEFAULT_CORPUS
    prompts: str = DEFAULT_PROMPTS
    C: int | None = None
    M: int | None = None
    K: int | None = None
    tau: float | None = None
    seed: int = 0
    data_root: str | None = None
    cache_dir: str | None = None
    output_dir: str | None = None
    device: str | None = "auto"
    max_eval: int | None = None
    progress: bool | None = None
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
        for name in ("pretrained", "checkpoint"):
            if getattr(self, name) in ("", "none", "None"):
                setattr(self, name, None)
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True, False or None (on in the paper profile), got {self.progress!r}.")

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
    def show_progress(self) -> bool:
        """Progress bars: the ``progress`` parameter, else on in the paper profile (minutes-long cells) and
        off in the demo (seconds; and nbval compares every output)."""
        return (not self.demo) if self.progress is None else self.progress

    @property
    def model_id(self) -> str:
        """The features' model: ``simulated`` (demo) or the feature cache's id, e.g. ``ViT-H-14--dfn5b`` or
        ``<arch>--ckpt-<fingerprint>`` for a local checkpoint."""
        if self.demo:
            return "simulated"
        if "_model_id" not in self.__dict__:
            from .encoder import ModelRef

            self.__dict__["_model_id"] = ModelRef.resolve(self.model, self.pretrained, self.checkpoint, "cpu").model_id
        return self.__dict__["_model_id"]

    @property
    def run_name(self) -> str:
        """``<model id>/<corpus>.<prompts>.seed<seed>[.C..][.M..][.K..][.tau..][.max_eval..][.x<hash>]``: the
        folder of this run's outputs, so that runs with other weights, corpus, prompts, seed or parameters
        (papermill sweeps included) never overwrite each other. ``x<hash>`` covers the notebook's own
        parameters when any is set from outside (papermill ``-p``, i.e. ``make ... NB_ARGS=``)."""
        tags = [f"{corpus_label(self.corpus)}.{self.prompts}.seed{self.seed}"]
        tags += [f"{n}{getattr(self, n)}" for n in ("C", "M", "K", "tau", "max_eval") if getattr(self, n) is not None]
        injected = self.extra.get("_injected", ())
        own = {k: v for k, v in sorted(self.extra.items()) if k in injected}
        if own:
            tags.append("x" + content_hash(own, size=4))
        return f"{self.model_id}/{'.'.join(tags)}"

    @property
    def results_dir(self) -> Path:
        return self.root / "results" / self.profile / self.run_name

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures" / self.profile / self.run_name

    def run_columns(self) -> dict:
        """What every CSV row of this run carries: the profile, the features' model, weights, corpus,
        prompts, seed, and whether the numbers are SIMULATED."""
        return {"profile": self.profile, "model": self.model_id, "pretrained": None if self.demo else self.pretrained,
                "checkpoint": None if self.demo else self.checkpoint, "corpus": self.corpus, "prompts": self.prompts,
                "seed": self.seed, "simulated": self.demo}

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
    for opt, v in (("display.max_rows", 200), ("display.max_columns", 40), ("display.width", 250)):
        pd.set_option(opt, v)  # notebooks show whole tables
    values = {n: namespace[n] for n in declared}
    common = {k: v for k, v in values.items() if k in _CONFIG_FIELDS}
    if {"model", "checkpoint"} & set(injected) and "pretrained" not in injected and "pretrained" in common:
        # the declared tag belongs to the declared model: resolve another model or a checkpoint as
        # `make features` does without PRETRAINED (the registry's first tag; no tag with a checkpoint)
        common["pretrained"] = None
    extra = {k: v for k, v in values.items() if k not in _CONFIG_FIELDS}
    return Config(**common, extra={**extra, "_t0": time.time(), "_injected": tuple(injected)})


# ================================================================================================
# The benchmark of a profile
# ================================================================================================
def open_benchmark(cfg: Config, ood=OOD_SETS, shifted=(), *, corpus=None, preprocess: str = DEFAULT_PREPROCESS,
                   prompts: str | None = None, model: str | None = None, pretrained: str | None = None,
                   sim_config=None) -> Benchmark:
    """The benchmark of the profile: ``make_benchmark('demo', ...)`` or cached real features.

    paper: ``features.load_benchmark(model, pretrained, corpus, prompts, cache_dir, ood=, shifted=)``;
    it raises ``FileNotFoundError`` naming every missing feature file and the ``make features``
    command. demo: the simulated benchmark holds every set; ``model``/``pretrained`` are ignored.
    ``corpus`` (default ``cfg.corpus``) may be a registered name, the path of a corpus file (paper: its
    cached text, ``make features CORPUS=FILE``; demo: ``simulated_with_corpus`` of the loaded file) or a
    ``Corpus`` (e.g. ``corpus.load_corpus_file``).
    """
    from .corpus import CORPORA, Corpus

    corpus = corpus if corpus is not None else cfg.corpus
    prompts = prompts or cfg.prompts
    if cfg.demo:
        from .corpus import resolve_corpus
        from .simulate import make_benchmark

        if not isinstance(corpus, Corpus) and str(corpus) not in CORPORA:
            corpus = resolve_corpus(corpus)[0]  # a corpus file (anything else: an error naming it)
        if isinstance(corpus, Corpus):
            base = make_benchmark("demo", seed=cfg.seed, preprocess=preprocess, prompts=prompts, config=sim_config)
            return simulated_with_corpus(base, corpus, prompts, sim_config)
        return make_benchmark("demo", seed=cfg.seed, corpus=corpus, preprocess=preprocess, prompts=prompts,
                              config=sim_config)
    from . import features

    return features.load_benchmark(model or cfg.model, pretrained if model else cfg.pretrained, corpus=corpus,
                                   prompts=prompts, cache_dir=cfg.cache_dir, ood=tuple(ood), shifted=tuple(shifted),
                                   checkpoint=None if model else cfg.checkpoint, preprocess=preprocess,
                                   data_root=cfg.data_root)


def check_feature_files(cfg: Config, variants: Iterable[dict], datasets=None, model: str | None = None) -> None:
    """paper: raise one ``FileNotFoundError`` naming every missing feature file a notebook will need: the
    image features of ``datasets`` (default: ImageNet train / val and the six OOD sets) and the text
    features of each benchmark variant (dicts of ``corpus`` / ``preprocess`` / ``prompts``; a custom
    ``Corpus`` object is checked when loaded), each with its ``make features`` command; so a notebook
    stops in its first cells, not after minutes of work. demo: nothing to check."""
    if cfg.demo:
        return None
    from . import feature_check
    from .corpus import Corpus
    from .datasets import GROUPS

    text = [{"corpus": v.get("corpus", cfg.corpus), "preprocess": v.get("preprocess", DEFAULT_PREPROCESS),
             "prompts": v.get("prompts", cfg.prompts)} for v in variants]
    feature_check.check_cached(model or cfg.model, None if model else cfg.pretrained,
                          checkpoint=None if model else cfg.checkpoint, datasets=tuple(datasets or GROUPS["paper"]),
                          text=[t for t in text if not isinstance(t["corpus"], Corpus)],
                          cache_dir=cfg.cache_dir, data_root=cfg.data_root)
    return None


def corpus_label(corpus) -> str:
    """How a run's folder names its corpus: a registered name (or a ``Corpus``'s name) as is; a corpus
    file as ``<file stem>-<content hash>`` (a path holds slashes; the same content is the same label)."""
    from .corpus import CORPORA, Corpus, resolve_corpus

    if isinstance(corpus, Corpus):
        return corpus.name
    if str(corpus) in CORPORA:
        return str(corpus)
    try:
        _, info = resolve_corpus(corpus)
    except (OSError, ValueError):
        return Path(str(corpus)).name or str(corpus)
    return f"{Path(info['path']).stem}-{info['sha'][:8]}"


def simulated_with_corpus(bench: Benchmark, corpus, prompts: str | None = None, sim_config=None) -> Benchmark:
    """The simulated benchmark with another corpus (e.g. a POS corpus file): same images, text features of
    the new names from the same simulated text encoder (names without a WordNet sense get their first
    WordNet sense's vector, or a random one)."""
    from .simulate import SimConfig, Simulator

    cfg = sim_config or SimConfig.from_dict(bench.meta["config"])
    sim = Simulator(cfg, bench.meta["seed"])
    text = sim.text_features(list(corpus.names), list(corpus.synsets), prompts or bench.meta["prompts"])
    return bench.with_corpus(corpus, text)


def describe(bench: Benchmark, run=None) -> str:
    """What the notebook runs on, its settings, the baselines' conventions (``Settings.conventions``: FPR95
    rule, NegLabel pools, Energy logits, CLIPScope histogram, MD cutoff) and (demo) that it is simulated."""
    lines = [bench.describe()]
    if run is not None:
        s = run.settings
        temi = s.temi
        lines.append(f"Settings: tau={run.tau:g}, PosMine M={s.m}, ClusterMine C={s.n_clusters}"
                     + (f" (TEMI {temi.n_heads} heads, {temi.epochs} epochs)" if temi is not None else " (TEMI paper defaults)")
                     + f", NegLabel K={s.neglabel_k}, NegLabel* K={s.neglabel_star_k}, seed={s.seed}")
        lines.append(s.conventions())
    if bench.simulated:
        lines.append(SIMULATED_NOTE)
    return "\n".join(lines)


# ================================================================================================
# Saving
# ================================================================================================
def save_table(df: pd.DataFrame, cfg: Config, name: str) -> str:
    """Write ``results/<profile>/<run>/<name>.csv`` atomically, every row stamped with ``cfg.run_columns()``
    (a column the table already has, e.g. Table 3's per-row corpus, is kept); return its path relative to
    the output root."""
    path = cfg.results_dir / f"{name}.csv"
    stamped = df.assign(**{k: v for k, v in cfg.run_columns().items() if k not in df.columns})
    atomic_write(path, lambda p: stamped.to_csv(p, index=False))
    return _rel(path, cfg)


def save_figure(fig, cfg: Config, name: str) -> list[str]:
    """Write ``figures/<profile>/<run>/<name>.png`` and ``.pdf`` atomically; return their relative paths."""
    from .plots import save

    return [_rel(p, cfg) for p in save(fig, cfg.figures_dir, name)]


def _rel(path: Path, cfg: Config) -> str:
    try:
        return str(Path(path).resolve().relative_to(cfg.root.resolve()))
    except ValueError:
        return str(path)


def elapsed(cfg: Config) -> str:
    """Wall time since ``check_parameters`` (the notebook's start)."""
    return f"notebook ran in {time.time() - cfg.extra.get('_t0', time.time()):.0f} s"
