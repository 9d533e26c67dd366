"""Notebook 01, Table 1: every method on the six OOD sets with ImageNet as ID."""
from __future__ import annotations

import pandas as pd

from .. import methods as registry, paper
from ..benchmark import OOD_SETS
from ..runner import Runner
from ..tables import with_means


def table1(run: Runner, methods=registry.METHODS) -> pd.DataFrame:
    """Table 1: every method on the six OOD sets, long format with ``mean`` rows and ``needs_gt_labels``."""
    t = with_means(run.table(methods), OOD_SETS)
    t["needs_gt_labels"] = t["method"].map(lambda m: "yes" if registry.get(m).needs_gt else "no")
    return t


def table1_compare(t1: pd.DataFrame, means_only: bool = True) -> pd.DataFrame:
    """Ours beside the paper's Table 1 (the mean rows, or every OOD set)."""
    cmp = paper.compare(t1, paper.table1(), on=("method", "ood_set"))
    return cmp[cmp.ood_set == "mean"].drop(columns="ood_set").reset_index(drop=True) if means_only else cmp


def diagnostics(run: Runner) -> pd.DataFrame:
    """Not methods: ClusterMine's vote and Eq. 1 with k-means clusters (same C) and with the true classes as
    clusters (``methods.DIAGNOSTICS``), beside TEMI's, so a reader sees what the clustering costs. Mean rows
    per method; ``kind`` says which rows are diagnostics."""
    t = with_means(run.table(("ClusterMine",) + registry.DIAGNOSTICS), OOD_SETS)
    t["kind"] = t["method"].map(lambda m: "diagnostic" if registry.get(m).diagnostic else "method")
    return t
