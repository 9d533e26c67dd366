"""Notebook 14, Table 8: PLP trained on the mined positives instead of the true class names."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OOD_SETS
from ..runner import Runner
from ..tables import with_means

METHODS = ("PLP", "PosMine", "PosMine+PLP", "ClusterMine", "ClusterMine+PLP")


def table8(run: Runner, methods=METHODS) -> pd.DataFrame:
    return with_means(run.table(methods), OOD_SETS)


def table8_compare(t8: pd.DataFrame, means_only: bool = True) -> pd.DataFrame:
    cmp = paper.compare(t8, paper.table8(), on=("method", "ood_set"))
    return cmp[cmp.ood_set == "mean"].drop(columns="ood_set").reset_index(drop=True) if means_only else cmp
