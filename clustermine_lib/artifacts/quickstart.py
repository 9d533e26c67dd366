"""Notebook 00, the quickstart: the method step by step on one benchmark (top-1 concepts, clusters,
mined labels, scores)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import analysis
from ..clustering import PLATEAU_TOL, plateau_ratio
from ..runner import Runner, subsample
from ..tables import with_means


def top1_examples(run: Runner, n: int = 8) -> pd.DataFrame:
    """Step 1 of mining: a few ID training images, their true class and zero-shot top-1 corpus concept."""
    b = run.bench
    top1 = run.top1()
    labels = b.train.labels
    idx = subsample(len(b.train), n, f"{run.settings.seed}:examples").tolist()
    return pd.DataFrame({"image": idx,
                         "true class (hidden from the method)": [b.class_names[int(labels[i])] for i in idx],
                         "zero-shot top-1 concept": [b.corpus.names[int(top1[i])] for i in idx]})


def mining_summary(run: Runner, methods=("PosMine", "ClusterMine")) -> pd.DataFrame:
    """|Y_pos| of each mining method and its agreement with the (hidden) class names."""
    b = run.bench
    params = {"PosMine": f"M={run.settings.m}", "ClusterMine": f"C={run.settings.n_clusters}"}
    rows = []
    for m in methods:
        mined = run.mined(m)
        q = analysis.label_set_quality(mined.names, b.class_names)
        rows.append({"method": m, "parameter": params.get(m, ""), "|Y_pos|": len(mined), "|Y_neg|": len(mined.neg),
                     "|Y_GT|": len(b.class_names), "overlap %": round(q["overlap"], 1),
                     "precision %": round(q["precision"], 1), "F1 %": round(q["f1"], 1)})
    return pd.DataFrame(rows)


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


def score_table(run: Runner, methods=("MCM", "PosMine", "ClusterMine"), sets=("test", "NINCO", "iNat")) -> pd.DataFrame:
    """Per-image scores (long: method, set, score) for histograms of ID vs OOD."""
    parts = [pd.DataFrame({"method": m, "set": run.feature_set(s).name, "score": run.scores(m, s)})
             for m in methods for s in sets]
    return pd.concat(parts, ignore_index=True)


def temi_convergence(run: Runner) -> pd.DataFrame:
    """TEMI's training loss at 10 / 50 / 90 / 100 % of its steps and the plateau criterion (the last 10 %
    of the steps lower the loss by less than 2 % of its total decrease), at this run's C."""
    curve = run.temi_curve()
    at = {f"loss at {p} %": float(curve[max(0, round(p / 100 * len(curve)) - 1)]) for p in (10, 50, 90, 100)}
    plateau = 100 * plateau_ratio(curve)
    return pd.DataFrame([{"C": run.settings.n_clusters, "steps": len(curve), **at,
                          "last 10 % of steps lower the loss by (% of total)": round(plateau, 2),
                          "converged (< 2 %)": plateau < 100 * PLATEAU_TOL}]).round(3)


def quickstart_table(run: Runner, methods=("MCM", "PosMine", "ClusterMine")) -> pd.DataFrame:
    """The three methods on the six OOD sets, with mean rows."""
    return with_means(run.table(methods))
