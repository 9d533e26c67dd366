"""Long-format result tables: how every notebook's numbers are evaluated, averaged and shown.

The long format is ``method, id_set, ood_set, auroc, fpr95`` (``COLUMNS``; AUROC / FPR95 in percent,
ID = positive class, scores higher = more ID), one row per (method, ID set, OOD set); means over sets
are extra rows (``ood_set = 'mean'``, ``'near'``, ``'far'``). Wide views are for display only; CSV
files keep the long format.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .benchmark import OPENOOD_FAR, OPENOOD_NEAR, Benchmark
from .metrics import DEFAULT_FPR95
from .metrics import evaluate as _evaluate
from .scoring import PairScore

COLUMNS = ["method", "id_set", "ood_set", "auroc", "fpr95"]


def evaluate_score(score_fn: Callable, benchmark: Benchmark, method: str, id_set: str = "test",
                   ood_sets: Iterable[str] | None = None, fpr95_rule: str = DEFAULT_FPR95) -> pd.DataFrame:
    """Score ID test images once and each OOD set, return the long table (AUROC / FPR95 in %).

    score_fn: features (N, D) -> (N,) scores, higher = more ID (e.g.
    ``lambda f: eq1_logit(f, pos_text, neg_text, tau)``), or a ``scoring.PairScore`` (a transductive
    score: the ID set is then scored again with each OOD set). id_set: 'test' or a key of
    ``benchmark.shifted`` (covariate-shifted ID, Table 9); ood_sets: keys of ``benchmark.ood``
    (default all). ID is the positive class; ``fpr95_rule``: ``metrics.FPR95_RULES``.
    """
    if id_set == "test":
        id_fs = benchmark.test
    elif id_set in benchmark.shifted:
        id_fs = benchmark.shifted[id_set]
    else:
        raise KeyError(f"Unknown ID set {id_set!r}; use 'test' or one of {sorted(benchmark.shifted)}.")
    names = list(benchmark.ood) if ood_sets is None else list(ood_sets)
    unknown = [n for n in names if n not in benchmark.ood]
    if unknown:
        raise KeyError(f"OOD sets {unknown} are not in this benchmark; it has {list(benchmark.ood)}.")
    if isinstance(score_fn, PairScore):
        pair_of = lambda n: score_fn.pair(id_fs.features, benchmark.ood[n].features)  # noqa: E731
    else:
        id_scores = score_fn(id_fs.features)
        pair_of = lambda n: (id_scores, score_fn(benchmark.ood[n].features))  # noqa: E731
    rows = [{"method": method, "id_set": id_fs.name, "ood_set": n, **_evaluate(*pair_of(n), fpr95_rule=fpr95_rule)}
            for n in names]
    return pd.DataFrame(rows, columns=COLUMNS)


def mean_over_sets(table: pd.DataFrame, sets: Iterable[str] | None = None, label: str = "mean") -> pd.DataFrame:
    """Mean AUROC / FPR95 per (method, id_set) over ``sets`` (default: all OOD sets of the table).

    Long format with ``ood_set = label`` and a ``sets`` column naming the sets averaged (only those
    present for that method are used; a method with none of them is left out).
    """
    rows = []
    for (method, id_set), g in table.groupby(["method", "id_set"], sort=False):
        g = g if sets is None else g[g["ood_set"].isin(list(sets))]
        if len(g):
            rows.append({"method": method, "id_set": id_set, "ood_set": label, "auroc": g["auroc"].mean(),
                         "fpr95": g["fpr95"].mean(), "sets": ",".join(g["ood_set"])})
    return pd.DataFrame(rows, columns=COLUMNS + ["sets"])


def near_far_means(table: pd.DataFrame) -> pd.DataFrame:
    """OpenOOD v1.5's grouping as the paper's Table 5 uses it: means over ``benchmark.OPENOOD_NEAR`` and
    ``OPENOOD_FAR`` sets present in the table, as rows ``ood_set = 'near'`` / ``'far'`` (with the ``sets``
    averaged)."""
    return pd.concat([mean_over_sets(table, OPENOOD_NEAR, "near"), mean_over_sets(table, OPENOOD_FAR, "far")],
                     ignore_index=True)


def with_means(table: pd.DataFrame, sets=None, label: str = "mean") -> pd.DataFrame:
    """The long table plus one ``ood_set='mean'`` row per (method, id_set) (mean over ``sets``)."""
    extra = [c for c in table.columns if c not in COLUMNS]
    means = mean_over_sets(table[COLUMNS], sets, label).drop(columns="sets")
    if extra:  # carry artifact-specific columns that are constant per (method, id_set)
        const = table.groupby(["method", "id_set"], sort=False)[extra].first().reset_index()
        means = means.merge(const, on=["method", "id_set"], how="left")
    return pd.concat([table, means], ignore_index=True)


def to_wide(table: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """Paper-style view: one row per (method, id_set), one column per OOD set."""
    return table.pivot_table(index=["method", "id_set"], columns="ood_set", values=value, sort=False)


def wide(table: pd.DataFrame, value: str = "auroc") -> pd.DataFrame:
    """``to_wide`` rounded to 2 decimals, as the notebooks show it."""
    return to_wide(table, value).round(2)


def summary(table: pd.DataFrame, sets) -> pd.DataFrame:
    """AUROC / FPR95 per OOD set and their mean over ``sets``, one row per method/id_set, rounded."""
    full = pd.concat([table, mean_over_sets(table, sets).drop(columns="sets")], ignore_index=True)
    wide_ = full.pivot_table(index=["method", "id_set"], columns="ood_set", values=["auroc", "fpr95"], sort=False)
    return wide_.round(2)


def k_label(k) -> str:
    """A number of negatives as the paper writes it: 40000 -> '40K', None -> 'all'."""
    return "all" if k is None else f"{k / 1000:g}K"


_SWEEP_COLUMNS = (("K_label", "K"), ("M", "M"), ("C", "C"), ("group_size", "group size"))


def sweep_long(*parts: pd.DataFrame) -> pd.DataFrame:
    """Sweep tables (Fig. 6's K / M / C, Fig. 10's group sizes ...) stacked, with ``sweep`` (which
    parameter varies) and ``value`` (its value) columns; long format for the CSV."""
    out = []
    for t in parts:
        col, name = next(((c, n) for c, n in _SWEEP_COLUMNS if c in t.columns), (None, ""))
        out.append(t.assign(sweep=name, value=t[col].astype(str) if col else ""))
    return pd.concat(out, ignore_index=True)


def sweep_table(*parts: pd.DataFrame) -> pd.DataFrame:
    """The mean rows of sweep tables: method, sweep, value, |Y_pos| / |Y_neg| where known, AUROC, FPR95."""
    t = sweep_long(*parts)
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
