"""Notebook 10, Table 7: extra OOD sets (Places, Textures, SUN, SSB-hard, NINCOv2)."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import EXTRA_OOD_SETS
from ..runner import Runner

METHODS = ("MCM", "PLP", "NegLabel", "NegLabel*", "PosMine", "ClusterMine")


def table7(run: Runner, methods=METHODS) -> pd.DataFrame:
    return run.table(methods, ood_sets=[s for s in EXTRA_OOD_SETS if s in run.bench.ood])


def table7_compare(t7: pd.DataFrame) -> pd.DataFrame:
    return paper.compare(t7, paper.table7(), on=("method", "ood_set"), values=("auroc",))
