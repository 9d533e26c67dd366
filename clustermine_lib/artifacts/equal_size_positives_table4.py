"""Notebook 04, Table 4: MCM and Eq. 1 with Y_GT ∪ Y_aug against ClusterMine at equal |Y_pos|."""
from __future__ import annotations

import pandas as pd
import torch

from .. import mining, paper, scoring
from ..benchmark import OOD_SETS
from ..fileio import content_hash
from ..runner import Runner
from ..tables import with_means


C_SMALL_PER_CLASS = 1.2  # column 1's C: the paper's 1.2K for 1000 classes


def table4(run: Runner, c_small: int | None = None, c_large: int | None = None) -> pd.DataFrame:
    """Table 4: MCM and Eq. 1 with Y_GT ∪ Y_aug vs ClusterMine at equal |Y_pos|.

    Column 1: |Y_pos| ≈ |Y_GT| (Y_aug = ∅; ClusterMine with ``c_small``, paper 1.2K = 1.2 |Y_GT|).
    Column 2: |Y_pos| = |Y_pos of ClusterMine at ``c_large``| (paper: C = 4K, 1500): Y_aug = that many
    minus |Y_GT| nearest corpus concepts to Y_GT (paper: 500). Columns: size_group ('ypos_1000' /
    'ypos_1500'), n_pos (actual |Y_pos|), C (ClusterMine) and n_aug.
    """
    b = run.bench
    n_gt = len(b.class_names)
    c_small = c_small or max(2, round(C_SMALL_PER_CLASS * n_gt))
    c_large = c_large or run.settings.n_clusters
    big = run.mined("ClusterMine", n_clusters=c_large)
    dev, tau = run.settings.device, run.tau
    rows = []
    for group, n_aug, c in (("ypos_1000", 0, c_small), ("ypos_1500", max(0, len(big) - n_gt), c_large)):
        if n_aug:
            aug = run.quiet(lambda: mining.augment_positives(b.class_text, b.corpus_text, b.corpus, n_aug,
                                                             class_names=b.class_names))
            aug_idx, neg_idx = aug.params["aug"], aug.neg
        else:
            aug_idx = torch.empty(0, dtype=torch.long)
            neg_idx = run.quiet(lambda: mining.gt_positives(b.class_names, b.corpus)).neg
        pos_text, neg_text = torch.cat([b.class_text, b.corpus_text[aug_idx]]), b.corpus_text[neg_idx]
        key = {"n_aug": int(n_aug), "aug": content_hash(aug_idx), "neg": content_hash(neg_idx)}
        mcm = run.evaluate_custom("MCM (Y_GT ∪ Y_aug)", key, lambda: (
            lambda x: scoring.mcm_score(x, pos_text, device=dev)))
        eq1 = run.evaluate_custom("Eq.1 (Y_GT ∪ Y_aug)", {**key, "tau": tau}, lambda: (
            lambda x: scoring.eq1_logit(x, pos_text, neg_text, tau, device=dev)))
        cm = run.evaluate("ClusterMine", label="ClusterMine", n_clusters=c)
        n_cm = len(run.mined("ClusterMine", n_clusters=c))
        for t, n_pos, cc in ((mcm, n_gt + n_aug, None), (eq1, n_gt + n_aug, None), (cm, n_cm, c)):
            t = with_means(t, OOD_SETS)
            t["size_group"], t["n_pos"], t["C"], t["n_aug"] = group, n_pos, cc, (None if cc else n_aug)
            rows.append(t)
    return pd.concat(rows, ignore_index=True)


def table4_compare(t4: pd.DataFrame) -> pd.DataFrame:
    m = t4[t4.ood_set == "mean"].reset_index(drop=True)
    cmp = paper.compare(m, paper.table4(), on=("size_group", "method", "ood_set")).drop(columns="ood_set")
    cmp.insert(2, "|Y_pos|", m["n_pos"].values)
    cmp.insert(3, "C", m["C"].values)
    return cmp
