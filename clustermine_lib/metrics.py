"""OOD metrics: AUROC and FPR at 95 % TPR, with the operating point of each official evaluation code.

Positive class. ``id_positive=True`` (default; MCM, NegLabel, PLP and CLIPScope's codes all do this):
in-distribution samples are the positive class and scores are "higher = more ID"; FPR95 is the fraction
of OOD samples accepted at the operating point that keeps 95 % of ID samples. ``id_positive=False`` is
OpenOOD v1.5's convention (``openood/evaluators/metrics.py``, ``auc_and_fpr_recall``): OOD is the
positive class and the score is negated, i.e. FPR95 is the fraction of ID samples flagged at the
operating point that catches 95 % of OOD samples (a different quantity; AUROC is the same number).

Operating point (``rule``; ``FPR95_RULES``). The official codes agree on the positive class but not on
which ROC point "TPR = 95 %" is. They differ on small sets, and wherever ID and OOD scores tie (a
saturated float32 softmax, Eq. 1 at small τ):

- ``"interp"`` (default): PLP's ``eval/binary_metrics.py`` (``fpr95_score``; HHU-MMBS/plp-official-tmlr2024):
  sklearn's ``roc_curve`` and FPR linearly interpolated at TPR = 0.95 along the ROC polyline (on a
  horizontal run exactly at 0.95, its largest FPR, as ``np.interp`` returns). The default because the
  ClusterMine authors are PLP's (HHU-MMBS): it is their own released evaluation code, and Table 1 / 8
  report PLP, MD and relative MD, which that code produces. (The ClusterMine code itself is not public.)
- ``"min"``: the smallest FPR over all distinct thresholds whose TPR >= 0.95 (sklearn's ``roc_curve``
  with ``drop_intermediate=False``, then the first TPR >= 0.95). This project's rule before issue 17.
- ``"first"``: the first point of sklearn's *default* curve (``drop_intermediate=True``) with TPR >= 0.95:
  OpenOOD v1.5's rule (with ``id_positive=False`` its exact metric). Differs from ``"min"`` only when
  dropped collinear points (ID-OOD ties) straddle 0.95.
- ``"nearest"``: MCM's ``utils/detection_util.py`` and NegLabel's ``mmcls/utils/ood_evaluate.py``
  (``fpr_and_fdr_at_recall``): the distinct-threshold point whose TPR is nearest 0.95 (float
  ``|TPR - 0.95|``, ties to the lowest threshold).
- ``"strict"``: CLIPScope's ``CLIPScope.py``: the first point of sklearn's default curve with TPR
  strictly above 0.95.

Closed forms without ties (s(1) >= ... >= s(n) the ID scores): ``min`` = #{OOD >= s(ceil(0.95 n))} / m;
``interp`` and ``strict`` equal it unless 0.95 n is an integer k, then #{OOD > s(k+1)} / m (``strict``:
>=); ``nearest`` takes k* = argmin |k/n - 0.95|. At ImageNet's 50,000 ID images they differ by the OOD
samples between two adjacent ID order statistics (hundredths of a point); the tests hold a worked example
for each. AUROC is the same under every convention (equal to ``sklearn.metrics.roc_auc_score``, ties
count one half). Scores: tensors, arrays or lists (``validation.check_scores``: non-empty, finite, float64).
"""
from __future__ import annotations

import numpy as np

from .validation import check_scores

DEFAULT_FPR95 = "interp"  # PLP's code, the ClusterMine authors' own (see above); experiments.Settings.fpr95
FPR95_RULES = {
    "interp": "PLP's code (eval/binary_metrics.py): np.interp at TPR 0.95 on sklearn's ROC curve",
    "min": "smallest FPR over all thresholds with TPR >= 0.95 (sklearn roc_curve, drop_intermediate=False)",
    "first": "first point of sklearn's default ROC curve with TPR >= 0.95 (OpenOOD v1.5 with id_positive=False)",
    "nearest": "MCM / NegLabel's fpr_and_fdr_at_recall: the point with TPR nearest 0.95",
    "strict": "CLIPScope's code: first point of sklearn's default ROC curve with TPR > 0.95",
}


def _pos_neg(id_scores, ood_scores, id_positive: bool):
    s_id, s_ood = check_scores(id_scores, "ID scores"), check_scores(ood_scores, "OOD scores")
    return (s_id, s_ood) if id_positive else (-s_ood, -s_id)


def check_rule(rule: str) -> str:
    """``rule`` if it is a known FPR95 operating point, else a ValueError listing them."""
    if rule not in FPR95_RULES:
        raise ValueError(f"Unknown FPR95 rule {rule!r}; known rules: "
                         + "; ".join(f"{k!r} ({v})" for k, v in FPR95_RULES.items()) + ".")
    return rule


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


def roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tps, fps): cumulative positive / negative counts accepted at each distinct threshold, from the
    highest score down (one point per distinct value, no (0, 0) point), float64."""
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last]
    return tps, (last + 1) - tps


def _sklearn_curve(tps: np.ndarray, fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's default ``roc_curve``: collinear interior points dropped (``drop_intermediate=True``),
    then a (0, 0) point prepended. Returns (tpr, fpr)."""
    if len(fps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0), True]
        tps, fps = tps[keep], fps[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return tps / tps[-1], fps / fps[-1]


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95, id_positive: bool = True,
               rule: str = DEFAULT_FPR95) -> float:
    """False-positive rate at the operating point ``rule`` (module docstring) for true-positive rate ``tpr``.

    Positives are accepted when ``score >= threshold``. ``"strict"`` needs ``tpr < 1``.
    """
    pos, neg = _pos_neg(id_scores, ood_scores, id_positive)
    check_rule(rule)
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}.")
    if rule == "min":
        k = int(np.ceil(tpr * len(pos)))  # number of positives that must be accepted
        threshold = np.sort(pos)[::-1][k - 1]
        return float((neg >= threshold).mean())
    tps, fps = roc_points(pos, neg)
    if rule == "nearest":
        # MCM / NegLabel: the curve up to the first point of full recall, read from the lowest threshold
        # up (with the (recall 1, fps 0) point their code appends), first minimum of |recall - tpr|
        rec = tps / tps[-1]
        full = int(np.searchsorted(tps, tps[-1]))
        rec, f = np.r_[rec[full::-1], 1.0], np.r_[fps[full::-1], 0.0]
        return float(f[np.argmin(np.abs(rec - tpr))] / len(neg))
    t, f = _sklearn_curve(tps, fps)
    if rule == "first":
        return float(f[np.argmax(t >= tpr)])
    if rule == "strict":
        if tpr >= 1:
            raise ValueError("rule='strict' (first TPR > tpr) needs tpr < 1.")
        return float(f[np.argmax(t > tpr)])
    # "interp": np.interp(tpr, t, f) as PLP's fpr95_score; its two guard branches (every TPR below /
    # above tpr) cannot fire on a curve from (0, 0) to (1, 1).
    return float(np.interp(tpr, t, f))


def fpr95(id_scores, ood_scores, id_positive: bool = True, rule: str = DEFAULT_FPR95) -> float:
    """``fpr_at_tpr`` at TPR = 0.95."""
    return fpr_at_tpr(id_scores, ood_scores, 0.95, id_positive, rule)


def evaluate(id_scores, ood_scores, id_positive: bool = True, fpr95_rule: str = DEFAULT_FPR95) -> dict:
    """{'auroc': %, 'fpr95': %} in percent, as the paper reports; ``fpr95_rule``: ``FPR95_RULES``."""
    return {"auroc": 100 * auroc(id_scores, ood_scores, id_positive),
            "fpr95": 100 * fpr95(id_scores, ood_scores, id_positive, fpr95_rule)}
