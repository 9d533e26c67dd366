"""Notebook 05, Table 5: OpenOOD v1.5's near / far OOD grouping (the paper: CLIP ViT-B-16 OpenAI)."""
from __future__ import annotations

import pandas as pd

from .. import paper
from ..benchmark import OPENOOD_FAR, OPENOOD_NEAR
from ..runner import Runner
from ..tables import near_far_means

OOD = OPENOOD_NEAR + OPENOOD_FAR


def table5(run: Runner, methods=("ClusterMine",)) -> pd.DataFrame:
    """Table 5: per set, then ``near`` / ``far`` means (sets named as in the paper: SSB-hard, Textures)."""
    t = run.table(methods, ood_sets=[s for s in OOD if s in run.bench.ood])
    t = pd.concat([t, near_far_means(t).drop(columns="sets")], ignore_index=True)
    t["ood_set"] = t["ood_set"].map(lambda s: paper.OOD_NAMES.get(s, s))
    t["group"] = t["ood_set"].map(lambda s: "near" if s in ("SSB-hard", "NINCO", "near") else "far")
    return t


def table5_compare(t5: pd.DataFrame) -> pd.DataFrame:
    return paper.compare(t5, paper.table5(), on=("method", "ood_set"))
