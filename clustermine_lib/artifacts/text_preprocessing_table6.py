"""Notebook 09, Table 6: ClusterMine with each pre-processing of the corpus (duplicates, lemmas)."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS
from ..notebook import Config, open_benchmark
from ..runner import Runner
from ..tables import with_means

VARIANTS = tuple(paper.PREPROCESS_COLUMNS)  # dedup-1-lemma (the paper's), dup-all-lemmas, dup-1-lemma


def table6(cfg: Config, variants=VARIANTS) -> pd.DataFrame:
    """Table 6: ClusterMine with each corpus pre-processing (same images, corpus rebuilt)."""
    parts = []
    for v in variants:
        run = Runner.from_config(open_benchmark(cfg, preprocess=v), cfg)
        t = with_means(run.evaluate("ClusterMine"), OOD_SETS)
        t["preprocess"], t["corpus_size"], t["n_pos"] = v, len(run.bench.corpus), len(run.mined("ClusterMine"))
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def table6_compare(t6: pd.DataFrame, means_only: bool = False) -> pd.DataFrame:
    """Ours beside the paper's Table 6; ``means_only``: the mean rows with |corpus| and |Y_pos|."""
    cmp = paper.compare(t6, paper.table6(), on=("preprocess", "ood_set"))
    if not means_only:
        return cmp
    keep = (cmp.ood_set == "mean").values
    out = cmp[keep].drop(columns="ood_set").reset_index(drop=True)
    out.insert(1, "|corpus|", t6["corpus_size"].values[keep])
    out.insert(2, "|Y_pos|", t6["n_pos"].values[keep])
    return out
