"""Notebook 02, Table 2 / Table 9 / Fig. 4: covariate-shifted ID sets (ImageNet-Sketch, -R, -A, -V2, -C)."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS, SHIFTED_SETS
from ..runner import ID_TEST, Runner
from ..tables import with_means

METHODS = ("MCM", "NegLabel*", "PosMine", "ClusterMine")


def table9(run: Runner, methods=METHODS) -> pd.DataFrame:
    """Table 9: each method with each ID test set (ImageNet + the 5 shifted ones) against the 6 OOD sets."""
    id_sets = ["test"] + [s for s in SHIFTED_SETS if s in run.bench.shifted]
    return with_means(run.table(methods, id_sets=id_sets), OOD_SETS)


def table2(t9: pd.DataFrame) -> pd.DataFrame:
    """Table 2 = Table 9's mean columns: mean AUROC / FPR95 per (ID set, method), beside the paper."""
    means = t9[t9.ood_set == "mean"]
    return paper.compare(means, paper.table9(), on=("id_set", "method", "ood_set")).drop(columns="ood_set")


def table9_compare(t9: pd.DataFrame) -> pd.DataFrame:
    """AUROC per OOD set and mean, ours beside the paper's (Table 9 gives FPR95 only as a mean)."""
    return paper.compare(t9, paper.table9(), on=("id_set", "method", "ood_set"), values=("auroc",))


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
