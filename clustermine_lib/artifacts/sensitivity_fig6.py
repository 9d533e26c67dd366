"""Notebook 06, Fig. 6: sensitivity to the number of negatives K, PosMine's M and ClusterMine's C."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS
from ..runner import Runner
from ..tables import k_label, with_means


def fig6_k(run: Runner, k_values, methods=("NegLabel", "PosMine", "ClusterMine")) -> pd.DataFrame:
    """Fig. 6 left: mean AUROC vs the number of negatives K (None = all of Eq. 2) per method.
    NegLabel: Y_pos = Y_GT, K least similar negatives; PosMine / ClusterMine: Y_neg pruned to K."""
    rows = []
    for m in methods:
        for k in k_values:
            params = {"k": k} if m == "NegLabel" else ({"neg_k": k} if k is not None else {})
            t = with_means(run.evaluate(m, **params), OOD_SETS)
            mined = run.mined("NegLabel", k=k) if m == "NegLabel" else run.mined(m, **params)
            t["K"], t["K_label"], t["n_pos"] = len(mined.neg), k_label(k), len(mined)
            rows.append(t)
    return pd.concat(rows, ignore_index=True)


def mining_sweep(run: Runner, method: str, param: str, column: str, values) -> pd.DataFrame:
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
    return mining_sweep(run, "PosMine", "m", "M", m_values)


def fig6_c(run: Runner, c_values) -> pd.DataFrame:
    """Fig. 6 right: ClusterMine mean AUROC and |Y_pos| vs C."""
    return mining_sweep(run, "ClusterMine", "n_clusters", "C", c_values)


def fig6_reference(k_df: pd.DataFrame) -> pd.DataFrame:
    """The paper tabulates Fig. 6 only where it meets Table 1: NegLabel at K = 10K, NegLabel* = NegLabel at
    K = 40K, PosMine / ClusterMine at K = all (at this run's M and C). Those points beside Table 1."""
    k = k_df[k_df.ood_set == "mean"]
    picks = [("NegLabel", "10K", "NegLabel"), ("NegLabel", "40K", "NegLabel*"), ("PosMine", "all", "PosMine"),
             ("ClusterMine", "all", "ClusterMine")]
    rows = [k[(k.method == m) & (k.K_label == kl)].assign(method=name, K=kl) for m, kl, name in picks]
    ours = pd.concat(rows, ignore_index=True)[["method", "K", "ood_set", "auroc", "fpr95"]]
    out = paper.compare(ours, paper.table1(), on=("method", "ood_set"))
    return out.assign(K=ours["K"].values).drop(columns="ood_set")[["method", "K"] + [
        c for c in out.columns if c not in ("method", "ood_set", "K")]]
