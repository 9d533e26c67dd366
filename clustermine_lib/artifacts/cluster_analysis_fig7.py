"""Notebook 11, Fig. 7: cluster analysis vs C (purity, entropy, redundancy, |Y_pos|/C) and the label-free
elbow proposal of C (appendix B)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import analysis
from ..clustering import PLATEAU_TOL, plateau_ratio
from ..runner import Runner


def fig7_data(run: Runner, c_values) -> pd.DataFrame:
    """Fig. 7: purity (true classes), entropy of top-1 concepts, redundancy ratio and |Y_pos|/C per C,
    as percentages where the paper uses them; and whether TEMI reached its loss plateau at each C
    (``temi_plateau_pct``: how much the last 10 % of the steps lowered the loss, % of its total decrease)."""
    sweep = analysis.cluster_sweep({c: run.clusters(c) for c in c_values}, run.top1(), run.bench.train.labels)
    plateau = [100 * plateau_ratio(run.temi_curve(c)) for c in sweep["C"]]
    return sweep.assign(purity_pct=100 * sweep.purity, redundancy_pct=100 * sweep.redundancy,
                        pos_per_cluster_pct=100 * sweep.pos_per_cluster, temi_plateau_pct=plateau,
                        temi_converged=[p < 100 * PLATEAU_TOL for p in plateau])


NO_ELBOW = "no elbow: the heuristic needs >= 3 values of C"


def fig7_proposal(f7: pd.DataFrame) -> pd.DataFrame:
    """The elbow heuristic of appendix B: C proposed by |Y_pos|/C and by the redundancy ratio (with fewer
    than 3 values of C, one row saying why none is proposed)."""
    if len(f7) < 3:
        return pd.DataFrame([{"metric": f"({NO_ELBOW})", "proposed C": np.nan}])
    p = analysis.propose_c(f7)
    rows = [{"metric": m, "proposed C": c} for m, c in p["by_metric"].items()]
    return pd.DataFrame(rows + [{"metric": "proposal (largest)", "proposed C": p["C"]}])


def proposed_c(proposal: pd.DataFrame) -> int | None:
    """The proposal of ``fig7_proposal`` as an int, None when there is none (fewer than 3 values of C)."""
    c = proposal["proposed C"].iloc[-1]
    return None if pd.isna(c) else int(c)
