"""Your own images: a label-free OOD detector fitted on any folder of in-distribution images, as the
library calls behind ``clustermine fit`` and ``clustermine score`` (``explain``: ``own_report``).

On feature arrays (no model needed; the simulated benchmark goes through the same calls):

- ``fit_detector(features, corpus, corpus_text, logit_scale, clusters="auto"|C, holdout=0.1, seed=0)``:
  a seeded share ``holdout`` of the images is held out; ClusterMine is fitted on the rest (TEMI with
  ``temi_for_size``; ``clusters="auto"``: ``sweep_c`` over ``auto_grid`` and the elbow of appendix
  B, ``analysis.propose_c``), then calibrated on the held-out images to ``recall`` (95 %) ID recall;
- ``temi_for_size(n, C)``: the TEMI settings for a folder of n images (below);

On folders (``fit_folder`` / ``score_folder``): the folder is encoded once into the feature store
(``extract.extract_folder_features``: cached, resumable, verified), the corpus text features are
computed or reused under the corpus's cache name (``text_features.corpus_text_features``), and the
detector folder (``detector_files``) records the model, weights, corpus and prompt fingerprints that
``score_folder`` checks before it encodes anything: scores from another model, corpus or prompt set
would mean nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .clustering import TEMIConfig, fit_temi
from .knn import knn_indices
from .corpus import DEFAULT_CORPUS, Corpus, resolve_corpus
from .detector import ClusterMine
from .fileio import atomic_write, content_hash
from .prompts import DEFAULT_PROMPTS
from .validation import check_matrix

PAPER_PRESET_IMAGES = 100_000  # from this many images on: the paper's TEMI (50 heads, 100 epochs, batch 1024)
DEMO_STEPS_PER_EPOCH = 50  # TEMIConfig.demo's steps per epoch on the demo's 12,800 images (batch 256)
MAX_AUTO_C = 4000  # the paper's C for ImageNet-1K (1.28M images): the top of the auto sweep
DEFAULT_HOLDOUT = 0.1
CURVE_COLUMNS = ["C", "n_nonempty", "n_pos", "pos_per_cluster", "redundancy", "entropy"]  # stored (no labels: no purity)


# ----------------------------------------------------------------------------- choosing TEMI and C
def temi_for_size(n_images: int, n_clusters: int, seed: int = 0) -> TEMIConfig:
    """TEMI settings for ``n_images`` training images and C = ``n_clusters``.

    From ``PAPER_PRESET_IMAGES`` (100K) images on: the paper's ``TEMIConfig`` (50 heads, 100 epochs,
    batch 1024, k = 50; a GPU job). Below: ``TEMIConfig.demo`` (the CPU preset, trained to its loss
    plateau on 12,800 images: its heads, MLP, lr and momentum) with three settings scaled to n:
    - batch = the power of two nearest below n / 8, within [16, 256]: at least ~8 steps per epoch;
    - epochs such that the run makes as many optimiser steps as the preset does on its 12,800
      images (``DEMO_STEPS_PER_EPOCH`` x its epochs: 1,000 - 1,500), within [3, 1000]: the paper's
      preset on 200 images is 100 epochs of ONE step (248 s with 50 heads, still near its start),
      the demo preset as it is would be 20 steps;
    - k = n / (4 C) nearest neighbours, within [3, 50]: neighbours should fall inside the cluster of
      ~n / C images they belong to (the paper's 50 at ImageNet's ~320 images per cluster).

    Measured on the tiny simulated benchmark (480 images, 20 classes, seeds 0 / 1, one CPU thread;
    mean AUROC over the six OOD sets): C = 20: NMI to the true classes 0.83 / 0.83, AUROC 90.9 / 88.5,
    2.4 s, loss plateau reached; the demo preset as it is: NMI 0.58 / 0.60, AUROC 80.5 / 81.6, not
    converged; k = n / (2C) = 12: NMI 0.76 / 0.75; half the steps: NMI 0.84 / 0.82. C = 80 (k = 3):
    NMI 0.79 / 0.77, AUROC 85.9 / 89.3 (the demo preset: 0.68 / 0.68, 87.6 / 90.1).
    """
    if n_images >= PAPER_PRESET_IMAGES:
        return TEMIConfig(n_clusters=n_clusters, seed=seed)
    base = TEMIConfig.demo(n_clusters, seed=seed)
    batch = min(256, max(16, 2 ** int(math.log2(max(1, n_images // 8)))), n_images)
    epochs = min(1000, max(3, math.ceil(DEMO_STEPS_PER_EPOCH * base.epochs / max(1, n_images // batch))))
    k = max(1, min(50, max(3, n_images // (4 * n_clusters)), n_images - 1))
    return TEMIConfig.demo(n_clusters, seed=seed, batch_size=batch, epochs=epochs, k=k)


def auto_grid(n_images: int) -> list[int]:
    """The C values ``clusters="auto"`` tries: 5 geometric steps from C_max / 16 to C_max =
    min(4000, n / 4) (at least 4), each >= 2 and <= n.

    The grid has to reach well past the number of real categories, where |Y_pos|/C falls and the
    redundancy rises, or the elbow lands on noise among the small C. Tiny simulated benchmark (432
    training images after the hold-out, 20 classes; ``temi_for_size``; mean AUROC over the six OOD
    sets): this grid is 6, 12, 25, 52, 108, the elbows C = 25 (|Y_pos|/C) and 52 (redundancy), so
    C = 52 (|Y_pos| = 33), AUROC 88.7 (C = 20: 87.1, C = 80: 88.4): the rough overestimate the paper
    asks for. With C_max = n / 10 (2 ... 43) both elbows fell on C = 9, under the 20 classes (AUROC
    73.6). ImageNet-1K (1.28M): 250 ... 4000 (the paper's C); 2,000 images: 31 ... 500; 40: 2 ... 10."""
    hi = max(4, min(MAX_AUTO_C, n_images // 4))
    lo = max(2, hi // 16)
    grid = sorted({int(round(c)) for c in np.geomspace(lo, hi, 5)})
    grid = [c for c in grid if 2 <= c <= n_images]
    if len(grid) < 3:
        raise ValueError(f"--clusters auto needs at least 4 training images to sweep 3 values of C, got {n_images}; "
                         "add images or give --clusters C.")
    return grid


def sweep_c(features, top1, grid, seed: int = 0, device=None, progress: bool = True):
    """TEMI for each C of ``grid`` (``temi_for_size``; one kNN graph shared by all), then the
    label-free curves of appendix B (``analysis.cluster_sweep``: |Y_pos|, |Y_pos|/C, redundancy)
    and their elbow (``analysis.propose_c``). Returns ``(table, proposal, {C: TEMIResult})``."""
    from tqdm.auto import tqdm

    from .analysis import cluster_sweep, propose_c

    n = features.shape[0]
    configs = {c: temi_for_size(n, c, seed) for c in grid}
    knn = knn_indices(features, max(cfg.k for cfg in configs.values()), device=device)
    results = {}
    for c in tqdm(grid, desc="C sweep", disable=not progress):
        results[c] = fit_temi(features, configs[c], knn=knn[:, :configs[c].k], device=device, progress=False)
    table = cluster_sweep({c: r.labels for c, r in results.items()}, top1)
    proposal = propose_c(table)
    return proposal["table"], proposal, results


# ----------------------------------------------------------------------------- fitting on arrays
@dataclass
class Fitted:
    """What ``fit_detector`` made: the calibrated detector and how it was chosen."""

    detector: ClusterMine
    train_index: torch.Tensor  # (N_train,) rows of the input the detector was fitted on
    holdout_index: torch.Tensor  # (N_hold,) rows that set the threshold
    curve: pd.DataFrame  # C, n_pos, pos_per_cluster, redundancy, ... (one row per C tried)
    proposal: dict | None  # analysis.propose_c's result (None: C was given)
    examples: dict = field(default_factory=dict)  # positive name -> input rows that voted for it (best first)

    @property
    def n_clusters(self) -> int:
        return self.detector.n_clusters


def split_holdout(n: int, holdout: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(train rows, held-out rows)`` of n images: a seeded random share ``holdout`` held out
    (at least 1 image; at least 2 stay for training)."""
    if not 0 < holdout < 1:
        raise ValueError(f"--holdout is the share of the images held out to set the threshold, in (0, 1); "
                         f"got {holdout}.")
    n_hold = max(1, int(round(holdout * n)))
    if n - n_hold < 2:
        raise ValueError(f"{n} images leave {n - n_hold} for fitting after holding out {n_hold} "
                         f"(--holdout {holdout:g}); a detector needs at least 3 images.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


def parse_clusters(clusters) -> int | str:
    """``"auto"`` or C >= 2 (an int, or its text from the command line)."""
    if isinstance(clusters, str) and clusters.strip().lower() == "auto":
        return "auto"
    try:
        c = int(clusters)
    except (TypeError, ValueError):
        raise ValueError(f"--clusters must be 'auto' or a whole number of clusters >= 2, got {clusters!r}.") from None
    if c < 2 or c != float(clusters):
        raise ValueError(f"--clusters must be 'auto' or a whole number of clusters >= 2, got {clusters!r}.")
    return c


def check_clusters(clusters, n_train: int, n_images: int, n_hold: int) -> None:
    """C must not exceed the training images (each cluster needs one)."""
    if clusters != "auto" and clusters > n_train:
        raise ValueError(f"--clusters {clusters} is larger than the number of training images: {n_images} images, "
                         f"{n_hold} held out for the threshold, {n_train} left to cluster; give --clusters <= "
                         f"{n_train} (a C of a few images per cluster or more), or --clusters auto.")


def _examples(det: ClusterMine, x: torch.Tensor, top1: torch.Tensor, rows: torch.Tensor, k: int = 4) -> dict:
    """For each positive: the training rows that voted for it (top-1 = it, in a cluster it won),
    most similar to its text first, at most ``k``."""
    from .mining import cluster_vote

    clusters = det.clusters_
    ids, winners = cluster_vote(top1, clusters)
    winner_of = torch.full((int(clusters.max()) + 1,), -1, dtype=torch.long)
    winner_of[ids] = winners
    voted = top1 == winner_of[clusters]
    out = {}
    for name, p, t in zip(det.mined_.names, det.mined_.pos.tolist(), det.pos_text_):
        mine = (voted & (top1 == p)).nonzero().flatten()
        sims = torch.nn.functional.normalize(x[mine].float(), dim=-1) @ t.float()
        out[name] = rows[mine[torch.argsort(sims, descending=True)[:k]]].tolist()
    return out


def fit_detector(features, corpus: Corpus, corpus_text, logit_scale: float, *, clusters="auto",
                 holdout: float = DEFAULT_HOLDOUT, seed: int = 0, recall: float = 0.95, tau: float | None = None,
                 device=None, progress: bool = True) -> Fitted:
    """ClusterMine on ID image ``features`` (N, D) with a seeded hold-out for the threshold; see the
    module docstring. ``clusters``: C, or ``"auto"`` (``sweep_c`` over ``auto_grid``)."""
    from .analysis import cluster_analysis
    from .dense import zero_shot_top1

    x = check_matrix(features, "features", min_rows=3)
    clusters = parse_clusters(clusters)
    train, held = split_holdout(x.shape[0], holdout, seed)
    check_clusters(clusters, len(train), x.shape[0], len(held))
    xt = x[train]
    top1 = zero_shot_top1(xt, check_matrix(corpus_text, "corpus_text", x.shape[1]), device=device,
                          progress="top-1 concepts" if progress else None)[0]
    proposal = None
    if clusters == "auto":
        curve, proposal, results = sweep_c(xt, top1, auto_grid(len(train)), seed, device, progress)
        clusters = proposal["C"]
        temi = results[clusters]
    else:
        temi = fit_temi(xt, temi_for_size(len(train), clusters, seed), device=device, progress=progress)
        curve = pd.DataFrame([cluster_analysis(temi.labels, top1, n_clusters=clusters)])
    det = ClusterMine(n_clusters=clusters, temi_result=temi, seed=seed, tau=tau, device=device, progress=progress)
    det.fit(xt, corpus, corpus_text, logit_scale, top1=top1)
    det.calibrate(x[held], recall)
    return Fitted(det, train, held, curve, proposal, _examples(det, xt, top1, train))


# ----------------------------------------------------------------------------- fingerprints
def prompt_fingerprint(prompts) -> dict:
    from .text_features import prompt_templates

    name, templates = prompt_templates(prompts)
    return {"name": name, "templates": templates, "hash": content_hash(templates)}


def describe_model(identity: dict) -> str:
    text = f"{identity.get('arch')} (pretrained={identity.get('pretrained')}"
    sha = identity.get("checkpoint_sha256")
    return text + (f", checkpoint sha256 {sha[:12]})" if sha else ")")


def _save(det: ClusterMine, out: Path, meta: dict) -> Path:
    """The detector folder written whole (``fileio.atomic_write`` of the folder): a reader sees no
    folder, the previous one (``overwrite``; replaced only once the new one is complete) or the new one."""
    return atomic_write(out, lambda tmp: det.save(tmp, meta=meta))


def check_out(out) -> Path:
    """``--out`` of ``fit``: a new or empty folder, or an existing detector (replaced with ``overwrite``)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the detector (it is created).")
    if out.is_dir() and any(out.iterdir()) and not (out / "detector.json").exists():
        raise ValueError(f"--out {out} is a folder that holds other files and no detector; give a new or empty "
                         "folder.")
    return out


# ----------------------------------------------------------------------------- folders
def fit_folder(images_dir, model, pretrained=None, *, checkpoint=None, corpus=DEFAULT_CORPUS,
               prompts=DEFAULT_PROMPTS, clusters="auto", holdout: float = DEFAULT_HOLDOUT, seed: int = 0, out,
               device="auto", cache_dir=None, batch_size: int = 256, num_workers=None, max_skipped: float = 0.01,
               overwrite: bool = False, progress: bool = True, download: bool = False, say=print) -> Fitted:
    """``clustermine fit``: every input is checked before anything is encoded (the folder lists
    images, C fits them, the corpus, the prompts, the model, ``out``); then the folder and the corpus
    text are encoded (or read from the cache), ``fit_detector`` runs and the detector folder is
    written whole to ``out``. Returns the ``Fitted``."""
    from .datasets import list_folder
    from .encoder import ModelRef
    from .extract import extract_folder_features
    from .models import device_problem, preprocess_config
    from .text_features import corpus_text_features

    out = check_out(out)
    if (out / "detector.json").exists() and not overwrite:
        raise ValueError(f"--out {out} holds a detector already: pass --overwrite to replace it, or another --out.")
    problem = device_problem(device)
    if problem:
        raise ValueError(problem)
    root = Path(images_dir).expanduser().resolve()
    listed = len(list_folder(root))
    clusters = parse_clusters(clusters)
    train, held = split_holdout(listed, holdout, seed)  # the share, the count and C, before any encoding
    check_clusters(clusters, len(train), listed, len(held))
    corp, corpus_info = resolve_corpus(corpus)
    prompt_info = prompt_fingerprint(prompts)
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    say(f"[fit] {root}: {listed} images; model {ref.model_id} on {ref.device}; corpus {corpus_info['name']} "
        f"({len(corp)} concepts), prompts {prompt_info['name']}")
    feats = extract_folder_features(ref, None, root, cache_dir=cache_dir, batch_size=batch_size,
                                    num_workers=num_workers, progress=progress, max_skipped=max_skipped)
    _, text, _ = corpus_text_features(ref, None, (corp, corpus_info), prompts=prompts, cache_dir=cache_dir,
                                      progress=progress)
    files = feats.row_files()
    fitted = fit_detector(feats.features, corp, text.features, float(feats.meta["logit_scale"]), clusters=clusters,
                          holdout=holdout, seed=seed, device=ref.device, progress=progress)
    det = fitted.detector
    config = str(Path(model).resolve()) if isinstance(model, (str, Path)) and str(model).endswith(".json") else None
    meta = {"model": ref.identity, "model_id": ref.model_id, "checkpoint": ref.checkpoint, "model_config": config,
            "preprocess": preprocess_config(ref.spec), "logit_scale": feats.meta["logit_scale"],
            "corpus": {**corpus_info, "size": len(corp)}, "prompts": prompt_info,
            "images": {"folder": str(root), "n_images": len(files), "n_skipped": len(feats.skipped),
                       "skipped": feats.skipped[:20], "n_train": len(fitted.train_index),
                       "n_holdout": len(fitted.holdout_index), "holdout": holdout, "seed": seed},
            "clusters": {"mode": "auto" if fitted.proposal else "fixed", "C": det.n_clusters,
                         "by_metric": fitted.proposal["by_metric"] if fitted.proposal else None,
                         "curve": fitted.curve[CURVE_COLUMNS].to_dict("records"), "temi": asdict(det.temi_.config)},
            "examples": {k: [files[i] for i in v] for k, v in fitted.examples.items()},
            "features": str(feats.path), "text_features": str(text.path)}
    _save(det, out, meta)
    return fitted


@dataclass
class Scored:
    table: pd.DataFrame  # path, score, ood, id_percentile, concept (one row per readable image)
    threshold: float
    skipped: list[str]
    info: dict  # the detector's detector.json


def _check_same(detector_dir, what: str, fitted: str, now: str, fix: str) -> None:
    if fitted != now:
        raise ValueError(f"{Path(detector_dir) / 'detector.json'}: the detector was fitted with {what} {fitted}, "
                         f"but {now} was given: its scores would mean nothing. {fix}")


def score_folder(detector_dir, images_dir, *, model=None, pretrained=None, checkpoint=None, corpus=None,
                 prompts=None, threshold: float | None = None, device="auto", cache_dir=None, batch_size: int = 256,
                 num_workers=None, max_skipped: float = 0.01, progress: bool = True, download: bool = False) -> Scored:
    """``clustermine score``: the detector is loaded (verified), the model it was fitted with is
    resolved (``model`` / ``checkpoint`` given: they must be the same weights; a moved checkpoint file
    can be given again), a given ``corpus`` / ``prompts`` must be the detector's; then the folder is
    encoded (cached) and scored. ``id_percentile``: the share (%) of held-out ID images that scored
    lower; ``concept``: the mined positive closest to the image."""
    from .detector_files import DetectorFileError, load
    from .encoder import ModelRef
    from .extract import extract_folder_features
    from .models import device_problem

    det = load(detector_dir)
    meta = det.info_.get("meta", {})
    fitted_with = meta.get("model")
    if not isinstance(fitted_with, dict) or "prompts" not in meta:
        raise DetectorFileError(f"{Path(detector_dir) / 'detector.json'} does not say which model and prompts it was "
                                "fitted with (saved by ClusterMine.save without meta=); score its features in Python "
                                "with ClusterMine.load(dir).score_samples(features).")
    problem = device_problem(device)
    if problem:
        raise ValueError(problem)
    fix = "Leave out --model/--pretrained/--checkpoint to use the detector's own, or fit a detector for these."
    if model is None:
        checkpoint = checkpoint or meta.get("checkpoint")
        if checkpoint and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"the checkpoint {checkpoint} the detector in {detector_dir} was fitted with is not "
                                    "there any more: give its new place with --checkpoint PATH.")
        config = meta.get("model_config")
        if config and not Path(config).is_file():
            raise FileNotFoundError(f"the model config {config} the detector in {detector_dir} was fitted with is not "
                                    "there any more: give it again with --model PATH.json.")
        ref = ModelRef.resolve(config or fitted_with["arch"], fitted_with.get("pretrained") or "none", checkpoint,
                               device, download)
    else:
        ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    _check_same(detector_dir, "the features of", describe_model(fitted_with), describe_model(ref.identity), fix)
    if corpus is not None:
        _, info = resolve_corpus(corpus)
        fitted_corpus = meta.get("corpus", {})
        _check_same(detector_dir, "the corpus", f"{fitted_corpus.get('name')} (hash {str(fitted_corpus.get('sha'))[:12]})",
                    f"{info['name']} (hash {info['sha'][:12]})", "Leave out --corpus (the detector holds its labels).")
    if prompts is not None:
        now = prompt_fingerprint(prompts)
        _check_same(detector_dir, "the prompts", f"{meta['prompts']['name']} ({meta['prompts']['hash'][:12]})",
                    f"{now['name']} ({now['hash'][:12]})", "Leave out --prompts (the detector holds its labels).")
    feats = extract_folder_features(ref, None, images_dir, cache_dir=cache_dir, batch_size=batch_size,
                                    num_workers=num_workers, progress=progress, max_skipped=max_skipped)
    if feats.features.shape[1] != det.pos_text_.shape[1]:
        raise DetectorFileError(f"{detector_dir}: the detector holds {det.pos_text_.shape[1]}-d text features but the "
                                f"model gives {feats.features.shape[1]}-d image features; it was fitted with another model.")
    scores = det.score_samples(feats.features).double()
    t = det.threshold_ if threshold is None else float(threshold)
    if t is None:
        raise ValueError(f"the detector in {detector_dir} has no threshold: pass --threshold T.")
    q = det.id_quantiles_.numpy() if det.id_quantiles_ is not None else None
    pct = np.interp(scores.numpy(), q, np.linspace(0, 100, len(q))) if q is not None else np.full(len(scores), np.nan)
    nearest = (torch.nn.functional.normalize(feats.features, dim=-1) @ det.pos_text_.T).argmax(dim=1)
    table = pd.DataFrame({"path": feats.row_files(), "score": scores.numpy(), "ood": (scores < t).numpy(),
                          "id_percentile": np.round(pct, 2), "concept": [det.positive_names[i] for i in nearest.tolist()]})
    return Scored(table, t, feats.skipped, det.info_)
