"""Notebook 13, Fig. 9 / 10 / 11: negative mining on top of positive mining, per corpus, with NegLabel's
grouping, and under covariate shift."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS, SHIFTED_SETS
from ..notebook import Config
from ..runner import Runner
from ..tables import k_label, with_means
from .sensitivity_fig6 import fig6_k


def fig9_corpus(cfg: Config, pos_corpus_file: str | None = None, name: str = "POS-NA"):
    """The corpus of Fig. 9: the POS-NA file when given, else (it cannot be shipped) the default corpus."""
    from ..corpus import load_corpus_file

    if pos_corpus_file:
        return load_corpus_file(pos_corpus_file, name=name), name
    return cfg.corpus, f"{paper.CORPUS_NAMES.get(cfg.corpus, cfg.corpus)} (POS-NA not available)"


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
    return paper.compare(m.reset_index(drop=True), paper.table1(), on=("method", "ood_set")).drop(columns="ood_set")


def fig11_data(run: Runner, k: int | None = None) -> pd.DataFrame:
    """Fig. 11: on each ID set, NegLabel* vs PosMine / ClusterMine without (K = all) and with negative mining
    (Y_neg pruned to ``k``, default NegLabel*'s K): mean AUROC over the six OOD sets."""
    k = k or run.settings.neglabel_star_k
    id_sets = ["test"] + [s for s in SHIFTED_SETS if s in run.bench.shifted]
    parts = [run.table(("NegLabel*", "PosMine", "ClusterMine"), id_sets=id_sets)]
    for m in ("PosMine", "ClusterMine"):
        for i in id_sets:
            parts.append(run.evaluate(m, i, label=f"{m} + neg. mining (K={k_label(k)})", neg_k=k))
    return with_means(pd.concat(parts, ignore_index=True), OOD_SETS)


def fig11_reference(f11: pd.DataFrame) -> pd.DataFrame:
    """K = all rows are Table 9's; ours beside the paper's mean AUROC / FPR95."""
    m = f11[f11.ood_set == "mean"][["id_set", "method", "ood_set", "auroc", "fpr95"]].reset_index(drop=True)
    return paper.compare(m, paper.table9(), on=("id_set", "method", "ood_set")).drop(columns="ood_set")
