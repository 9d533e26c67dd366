"""OOD metrics: AUROC and FPR at 95 % TPR.

Convention (``id_positive=True``, default, as MCM / NegLabel / PLP report): in-distribution samples
are the positive class and scores are "higher = more ID"; FPR95 is the fraction of OOD samples scored
above the threshold that keeps 95 % of ID samples. ``id_positive=False`` is OpenOOD's convention:
OOD is the positive class and the score is negated, i.e. FPR95 is the fraction of ID samples flagged
at the threshold that catches 95 % of OOD samples.
Ties are handled exactly (AUROC equals ``sklearn.metrics.roc_auc_score``). Scores: tensors, arrays or
lists (``validation.check_scores``: non-empty, finite, float64).
"""
from __future__ import annotations

import numpy as np

from .validation import check_scores


def _pos_neg(id_scores, ood_scores, id_positive: bool):
    s_id, s_ood = check_scores(id_scores, "ID scores"), check_scores(ood_scores, "OOD scores")
    return (s_id, s_ood) if id_positive else (-s_ood, -s_id)


def auroc(id_scores, ood_scores, id_positive: bool = True) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + 0.5 P(tie), by ranks (O(n log n))."""
    pos, neg = _pos_neg(id_scores, ood_scores, id_positive)
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95, id_positive: bool = True) -> float:
    """False-positive rate at the smallest threshold whose true-positive rate reaches ``tpr``.

    Positives are accepted when ``score >= threshold``; the threshold is the largest score value that
    still keeps at least ``tpr`` of the positives (as sklearn's ``roc_curve`` would interpolate-free).
    """
    pos, neg = _pos_neg(id_scores, ood_scores, id_positive)
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}.")
    k = int(np.ceil(tpr * len(pos)))  # number of positives that must be accepted
    threshold = np.sort(pos)[::-1][k - 1]
    return float((neg >= threshold).mean())


def fpr95(id_scores, ood_scores, id_positive: bool = True) -> float:
    return fpr_at_tpr(id_scores, ood_scores, 0.95, id_positive)


def evaluate(id_scores, ood_scores, id_positive: bool = True) -> dict:
    """{'auroc': %, 'fpr95': %} in percent, as the paper reports."""
    return {"auroc": 100 * auroc(id_scores, ood_scores, id_positive),
            "fpr95": 100 * fpr95(id_scores, ood_scores, id_positive)}
