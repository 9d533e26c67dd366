"""Method-agnostic statistics of a CLIP-like feature space, and the table target vs simulated.

These are the numbers the simulated benchmark is calibrated to (``scripts/calibrate_simulation.py``,
``docs/simulation.md``). None of them is an OOD score: they describe how separable the classes are
for a text classifier (zero-shot top-1), for image-only classifiers (k-NN, nearest class mean, a
linear probe), for clustering (k-means at C = number of classes) and how CLIP's cosines are laid
out (image-text, image-image, the modality gap). Every function takes plain (N, D) features and
(N,) integer labels and works the same on real CLIP features and on the simulation.

Conventions: features are L2-normalised here (cosine geometry, as CLIP is used); accuracies are
fractions in [0, 1]; labels index the rows of ``class_text``.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .validation import check_features, check_ids

__all__ = ["zero_shot_accuracy", "knn_accuracy", "ncm_accuracy", "linear_probe_accuracy",
           "cluster_scores", "kmeans_scores", "cosine_stats", "modality_gap", "benchmark_statistics",
           "Target", "load_targets", "compare", "write_table", "read_table", "format_table",
           "TABLE_PATH", "TARGETS_PATH"]

DATA = Path(__file__).resolve().parent / "data"
TARGETS_PATH = DATA / "sim_targets.csv"  # the targets the simulation is fitted to (with tolerances)
TABLE_PATH = DATA / "calibration_table.csv"  # frozen: target vs simulated, written by the script


def _xy(x, y, name: str, upper: int | None = None):
    x = check_features(x, name)
    return x, check_ids(y, f"{name} labels", n=x.shape[0], upper=upper)


# ----------------------------------------------------------------------------- classifiers
def zero_shot_accuracy(images, labels, class_text, classes=None) -> float:
    """Top-1 accuracy of the zero-shot classifier argmax_c cos(image, text_c).

    classes: optional subset of class ids the argmax runs over (as ImageNet-R/-A are evaluated on
    their 200 classes of ImageNet's 1000); labels must lie in it.
    """
    text = check_features(class_text, "class_text")
    x, y = _xy(images, labels, "images", upper=text.shape[0])
    if classes is not None:
        classes = check_ids(torch.as_tensor(classes), "classes", upper=text.shape[0]).unique()
        pred = classes[(x @ text[classes].T).argmax(1)]
    else:
        pred = (x @ text.T).argmax(1)
    return float((pred == y).float().mean())


def knn_accuracy(train, train_labels, test, test_labels, k: int = 20, temperature: float | None = 0.07,
                 chunk: int = 2048) -> float:
    """k-NN classification accuracy of ``test`` against ``train`` by cosine similarity.

    temperature: DINO's weighted vote (Wu et al. 2018; Caron et al. 2021, the protocol most k-NN
    numbers of CLIP features are reported with): each of the k neighbours votes exp(cos / T) for its
    class. ``None``: plain majority vote (ties go to the smaller class id).
    """
    xr, yr = _xy(train, train_labels, "train")
    xq, yq = _xy(test, test_labels, "test")
    n_cls = int(max(yr.max(), yq.max())) + 1
    correct = 0
    for s in range(0, len(xq), chunk):
        sims, idx = (xq[s:s + chunk] @ xr.T).topk(k, dim=1)
        w = torch.ones_like(sims) if temperature is None else (sims / temperature).exp()
        votes = torch.zeros(len(idx), n_cls).scatter_add_(1, yr[idx], w)
        correct += int((votes.argmax(1) == yq[s:s + chunk]).sum())
    return correct / len(xq)


def ncm_accuracy(train, train_labels, test, test_labels) -> float:
    """Nearest-class-mean accuracy: each test image goes to the class whose normalised mean train
    feature is most cosine-similar (a linear classifier with no training beyond the means)."""
    xr, yr = _xy(train, train_labels, "train")
    xq, yq = _xy(test, test_labels, "test")
    n_cls = int(max(yr.max(), yq.max())) + 1
    means = torch.zeros(n_cls, xr.shape[1]).index_add_(0, yr, xr)
    return float(((xq @ F.normalize(means, dim=1).T).argmax(1) == yq).float().mean())


def linear_probe_accuracy(train, train_labels, test, test_labels, c: float = 1.0, max_iter: int = 300,
                          seed: int = 0) -> float:
    """Accuracy of a multinomial logistic regression (scikit-learn, L-BFGS, L2 strength 1/c) trained
    on standardised ``train`` features, as CLIP's linear-probe protocol (Radford et al. 2021, sec. 3.2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xr, yr = _xy(train, train_labels, "train")
    xq, yq = _xy(test, test_labels, "test")
    scaler = StandardScaler().fit(xr.numpy())
    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    clf.fit(scaler.transform(xr.numpy()), yr.numpy())
    return float((clf.predict(scaler.transform(xq.numpy())) == yq.numpy()).mean())


# ----------------------------------------------------------------------------- clustering
def cluster_scores(labels_true, labels_pred) -> dict:
    """NMI (arithmetic normalisation, sklearn's default), Hungarian accuracy (one-to-one map of
    clusters to classes that maximises matches, ``scipy.optimize.linear_sum_assignment``; unmatched
    clusters count as wrong), purity (each cluster votes its majority class), and the number of
    non-empty clusters."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import normalized_mutual_info_score

    t = check_ids(labels_true, "labels_true").numpy()
    p = check_ids(labels_pred, "labels_pred", n=len(t)).numpy()
    _, t = np.unique(t, return_inverse=True)
    _, p = np.unique(p, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(-table)
    return dict(nmi=float(normalized_mutual_info_score(t, p)), acc=float(table[rows, cols].sum() / len(t)),
                purity=float(table.max(1).sum() / len(t)), non_empty=int(table.shape[0]))


def kmeans_scores(features, labels, n_clusters: int | None = None, seed: int = 0, n_init: int = 1,
                  max_iter: int = 100, greedy_init: bool = True) -> dict:
    """``cluster_scores`` of scikit-learn k-means (k-means++, Lloyd) on L2-normalised features;
    C defaults to the number of classes. ``labels_pred`` is added to the dict.

    greedy_init=False seeds with plain k-means++ (one candidate per centre, Arthur & Vassilvitskii
    2007) instead of scikit-learn's greedy variant (2 + log C candidates): at C = 200 on 12,800
    images the greedy seeding takes ~9 of the ~10 s (used by the calibration's inner loop only)."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    x, y = _xy(features, labels, "features")
    c = n_clusters or int(y.unique().numel())
    xn = x.numpy()
    init = "k-means++" if greedy_init else kmeans_plusplus(xn, c, random_state=seed, n_local_trials=1)[0]
    pred = KMeans(c, init=init, n_init=n_init, max_iter=max_iter, random_state=seed).fit_predict(xn)
    out = cluster_scores(y, torch.from_numpy(pred))
    out["labels_pred"] = torch.from_numpy(pred).long()
    return out


# ----------------------------------------------------------------------------- cosines
def modality_gap(images, texts) -> float:
    """|mean image feature - mean text feature| of unit rows (Liang et al. 2022, "Mind the gap"):
    0 when the modalities share one cone, up to 2."""
    return float((check_features(images, "images").mean(0) - check_features(texts, "texts").mean(0)).norm())


def cosine_stats(images, labels, class_text, max_images: int = 4000) -> dict:
    """Mean cosines: image to its own class text (``it_true``) and to the other classes' texts
    (``it_other``), their difference, image to image within a class (``ii_within``, self pairs
    excluded) and across classes (``ii_across``), and the modality gap between the images and the
    class texts. Image-image means use the first ``max_images`` rows (exact for fewer)."""
    text = check_features(class_text, "class_text")
    x, y = _xy(images, labels, "images", upper=text.shape[0])
    it = x @ text.T
    true = it.gather(1, y[:, None]).squeeze(1)
    n_cls = text.shape[0]
    other = (it.sum(1) - true) / (n_cls - 1)
    xs, ys = x[:max_images], y[:max_images]
    ii = xs @ xs.T
    same = ys[:, None] == ys[None, :]
    n = len(xs)
    within_sum = ii[same].sum() - ii.diagonal().sum()
    within_n = same.sum() - n
    across = ~same
    return dict(it_true=float(true.mean()), it_other=float(other.mean()),
                it_margin=float((true - other).mean()),
                ii_within=float(within_sum / within_n) if within_n else math.nan,
                ii_across=float(ii[across].mean()) if across.any() else math.nan,
                gap=modality_gap(x, text))


# ----------------------------------------------------------------------------- one benchmark
def benchmark_statistics(bench, kmeans: bool = True, linear_probe: bool = False, seed: int = 0,
                         shifted: bool = True) -> dict:
    """Every statistic of ``docs/simulation.md`` on a ``Benchmark`` (simulated or real):
    zero-shot top-1 on the ID test set and on each covariate-shifted set (ImageNet-R/-A over the
    classes they contain, as published), 20-NN and nearest-class-mean accuracy (train -> test),
    k-means NMI/accuracy on the train images at C = number of classes, the cosines. No OOD set is
    read and no OOD score is computed."""
    tr, te = bench.train, bench.test
    out = {"zero_shot": zero_shot_accuracy(te.features, te.labels, bench.class_text)}
    if shifted:
        for name, fs in bench.shifted.items():
            subset = fs.labels.unique() if name in ("ImageNet-R", "ImageNet-A") else None
            out[f"zero_shot.{name}"] = zero_shot_accuracy(fs.features, fs.labels, bench.class_text, subset)
            if subset is not None:  # the same class subset on the clean test set: the drop itself
                keep = torch.isin(te.labels, subset)
                out[f"zero_shot.ImageNet@{name}"] = zero_shot_accuracy(
                    te.features[keep], te.labels[keep], bench.class_text, subset)
    out["knn20"] = knn_accuracy(tr.features, tr.labels, te.features, te.labels, k=20)
    out["ncm"] = ncm_accuracy(tr.features, tr.labels, te.features, te.labels)
    if linear_probe:
        out["linear_probe"] = linear_probe_accuracy(tr.features, tr.labels, te.features, te.labels)
    if kmeans:
        km = kmeans_scores(tr.features, tr.labels, seed=seed)
        out["kmeans_nmi"], out["kmeans_acc"] = km["nmi"], km["acc"]
    for k, v in cosine_stats(te.features, te.labels, bench.class_text).items():
        out[f"cos.{k}"] = v
    return out


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Target:
    """One calibration target: the value a statistic has on real CLIP features, how far the
    simulation may be from it (absolute, same unit), its weight in the joint fit (0: report only)
    and where it comes from."""

    statistic: str
    target: float
    tolerance: float
    weight: float
    source: str
    conversion: str = ""


def load_targets(path: Path | str = TARGETS_PATH) -> list[Target]:
    with open(path, newline="", encoding="utf-8") as f:
        return [Target(r["statistic"], float(r["target"]), float(r["tolerance"]), float(r["weight"]),
                       r["source"], r.get("conversion", "")) for r in csv.DictReader(f)]


def compare(stats: dict, targets: list[Target], report: tuple = ()) -> list[dict]:
    """Rows statistic / target / tolerance / simulated / within / source (simulated NaN if absent).
    ``report``: further statistics without a published target (target NaN, within None)."""
    rows = []
    for t in targets:
        sim = stats.get(t.statistic, math.nan)
        rows.append(dict(statistic=t.statistic, target=t.target, tolerance=t.tolerance, simulated=sim,
                         within=bool(abs(sim - t.target) <= t.tolerance), source=t.source))
    for name in report:
        rows.append(dict(statistic=name, target=math.nan, tolerance=math.nan, simulated=stats.get(name, math.nan),
                         within=None, source="no published target: reported only"))
    return rows


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def write_table(rows: list[dict], path: Path | str = TABLE_PATH) -> Path:
    from .fileio import atomic_write

    cols = ["statistic", "target", "tolerance", "simulated", "within", "source"]
    lines = [",".join(cols)]
    for r in rows:
        src = '"' + str(r["source"]).replace('"', "'") + '"'
        within = "n/a" if r["within"] is None else str(r["within"])
        lines.append(f"{r['statistic']},{_num(r['target'])},{_num(r['tolerance'])},{_num(r['simulated'])},"
                     f"{within},{src}")
    return atomic_write(path, "\n".join(lines) + "\n")


def read_table(path: Path | str = TABLE_PATH) -> list[dict]:
    """The frozen calibration table (what ``make demo`` and the README print)."""
    def num(v):
        return float(v) if v else math.nan

    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r, target=num(r["target"]), tolerance=num(r["tolerance"]), simulated=num(r["simulated"]),
                     within=None if r["within"] == "n/a" else r["within"] == "True") for r in csv.DictReader(f)]


def format_table(rows: list[dict]) -> str:
    """Plain-text table: statistic, real CLIP target ± tolerance, simulated, within, source."""
    w = max(len(r["statistic"]) for r in rows)
    out = [f"{'statistic':<{w}}  {'target':>7} {'± tol':>6}  {'simulated':>9}  within  source"]
    for r in rows:
        tgt = "      -       -" if math.isnan(r["target"]) else f"{r['target']:7.3f} {r['tolerance']:6.3f}"
        ok = "-" if r["within"] is None else "yes" if r["within"] else "NO"
        out.append(f"{r['statistic']:<{w}}  {tgt}  {r['simulated']:9.3f}  {ok:<6}  {r['source']}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the simulation's values
def simulated_statistics(config=None, seed: int = 0, kmeans: bool = True, linear_probe: bool = False,
                         knn: bool = True, fast: bool = False, shifted: bool = True, train: bool = True) -> dict:
    """The calibration statistics of the simulated CLIP with ``config`` (default: the frozen demo
    constants), computed as the targets were measured on real CLIP:

    - ``...@1000``: all 1000 ImageNet-1K classes (profile 'imagenet-1k': 64 train and 10 test images
      per class): zero-shot top-1 against all 1000 names, its retention on each shifted set
      (ImageNet-R/-A over their 200 classes, as published, divided by the clean 1000-way value), the
      drop from the clean test images of the same classes scored the same way (``shift_drop``), 20-NN
      and nearest-class-mean accuracy (train -> test) and, if asked, a linear probe;
    - the rest on the demo's 200 classes (the same class geometry, a subset of the 1000): 200-way
      zero-shot, k-means NMI / accuracy / ARI on the 12,800 train images at C = 200, 20-NN, and the
      cosines of ``cosine_stats`` plus the mean cosine of random class-text pairs.

    k-means is seeded with plain k-means++ (``greedy_init=False``: 10x faster here; scikit-learn's
    greedy seeding gives ~0.03 higher NMI on these features). fast: half the 1000-class test and
    shifted images (the fit's inner loop; the frozen table uses fast=False). No OOD set is generated and no OOD score is computed."""
    from dataclasses import replace

    from .simulate import SimConfig, Simulator, _pick_classes, id_sets

    demo = config or SimConfig.profile("demo")
    train = train or knn or kmeans or linear_probe
    full = replace(demo, n_classes=1000, train_per_class=demo.train_per_class if train else 0,
                   test_per_class=5 if fast else 10, shifted_size=5000 if fast else 10_000)
    sim = Simulator(full, seed)
    ids = id_sets(sim, seed, shifted=shifted)
    text = sim.text_features(ids["class_names"], ids["class_synsets"])
    tr, te = ids["train"], ids["test"]
    out = {"zero_shot@1000": zero_shot_accuracy(te.features, te.labels, text)}
    for name, fs in ids["shifted"].items():
        subset = fs.labels.unique() if name in ("ImageNet-R", "ImageNet-A") else None
        acc = zero_shot_accuracy(fs.features, fs.labels, text, subset)
        out[f"retention.{name}@1000"] = acc / out["zero_shot@1000"]
        # the clean test images of the same classes, scored the same way: what the shift costs
        keep = torch.isin(te.labels, fs.labels.unique())
        clean = zero_shot_accuracy(te.features[keep], te.labels[keep], text, subset)
        out[f"shift_drop.{name}@1000"] = clean - acc
    if knn:
        out["knn20@1000"] = knn_accuracy(tr.features, tr.labels, te.features, te.labels, k=20)
        out["knn20_minus_zero_shot@1000"] = out["knn20@1000"] - out["zero_shot@1000"]
    if train:
        out["ncm@1000"] = ncm_accuracy(tr.features, tr.labels, te.features, te.labels)
    if linear_probe:
        out["linear_probe@1000"] = linear_probe_accuracy(tr.features, tr.labels, te.features, te.labels, max_iter=100)

    # the demo's 200 classes: same geometry, rows of the 1000-class sets
    pick = torch.tensor(_pick_classes(demo, seed))
    remap = torch.full((1000,), -1, dtype=torch.long)
    remap[pick] = torch.arange(len(pick))

    def sub(fs):
        keep = torch.isin(fs.labels, pick)
        return fs.features[keep], remap[fs.labels[keep]]

    (xtr, ytr), (xte, yte), t200 = sub(tr), sub(te), text[pick]  # (train empty if not train)
    out["zero_shot"] = zero_shot_accuracy(xte, yte, t200)
    if knn:
        out["knn20"] = knn_accuracy(xtr, ytr, xte, yte, k=20)
    if kmeans:
        from sklearn.metrics import adjusted_rand_score

        km = kmeans_scores(xtr, ytr, seed=seed, greedy_init=False)
        out["kmeans_nmi"], out["kmeans_acc"] = km["nmi"], km["acc"]
        out["kmeans_ari"] = float(adjusted_rand_score(ytr.numpy(), km["labels_pred"].numpy()))
    for k, v in cosine_stats(xte, yte, t200).items():
        out[f"cos.{k}"] = v
    tt = t200 @ t200.T
    out["cos.tt_across"] = float((tt.sum() - tt.diagonal().sum()) / (len(tt) * (len(tt) - 1)))
    return out
