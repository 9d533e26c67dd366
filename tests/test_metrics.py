import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from clustermine_lib import metrics


def _roc(s_id, s_ood, drop=True):
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    fpr, tpr, _ = roc_curve(y, np.r_[s_id, s_ood], drop_intermediate=drop)
    return fpr, tpr


def sk_fpr95(s_id, s_ood, drop=False):
    """First ROC point with TPR >= 0.95: over every threshold (``drop=False``, rule 'min') or on sklearn's
    default curve (rule 'first', OpenOOD's)."""
    fpr, tpr = _roc(s_id, s_ood, drop)
    return fpr[np.searchsorted(tpr, 0.95, side="left")]


def plp_fpr95(s_id, s_ood):  # PLP's eval/binary_metrics.py, re-stated: np.interp on sklearn's default curve
    fpr, tpr = _roc(s_id, s_ood)
    return float(np.interp(0.95, tpr, fpr))


def clipscope_fpr95(s_id, s_ood):  # CLIPScope.py, re-stated: first TPR strictly above 0.95
    fpr, tpr = _roc(s_id, s_ood)
    return fpr[np.argmax(tpr > 0.95)]


def mcm_fpr95(s_id, s_ood):
    """MCM / NegLabel's fpr_and_fdr_at_recall, re-stated from its description: one point per distinct
    score, recall levels k / n; the point nearest 0.95, ties to the lowest threshold."""
    s = np.r_[s_id, s_ood]
    best = None
    for thr in np.unique(s):  # ascending: the lowest threshold first, kept on ties
        if thr < np.min(s_id):
            continue  # below every ID score: the curve is cut at the first point of full recall
        rec = np.sum(np.asarray(s_id) >= thr) / len(s_id)
        d = abs(rec - 0.95)
        if best is None or d < best[0]:
            best = (d, np.mean(np.asarray(s_ood) >= thr))
    return best[1]


def test_hand_computed():
    # ID = [3, 4], OOD = [1, 3.5]: pairs (3>1), (3<3.5), (4>1), (4>3.5) -> 3/4
    assert metrics.auroc([3, 4], [1, 3.5]) == pytest.approx(0.75)
    # a tie counts one half: ID [2], OOD [2] -> 0.5
    assert metrics.auroc([2.0], [2.0]) == 0.5
    # 20 ID scores 1..20: the smallest threshold keeping 19 of them is 2; OOD [1.5, 2, 30] -> 2 of 3 (rule
    # 'min'). TPR stays 0.95 down to 1.5, so PLP's interpolation (the default) takes the right end: 3 of 3.
    assert metrics.fpr95(np.arange(1, 21), [1.5, 2, 30], rule="min") == pytest.approx(2 / 3)
    assert metrics.fpr95(np.arange(1, 21), [1.5, 2, 30]) == pytest.approx(1.0)


# The worked examples of issue 17 (ID scores, OOD scores, FPR95 per rule; OpenOOD = OOD positive, rule 'first').
EXAMPLES = {
    # no ties: every ID-positive rule agrees; OpenOOD's OOD-positive FPR is another quantity
    "Ex1": ([.9, .8, .6, .3], [.7, .5, .2], dict(min=2 / 3, first=2 / 3, nearest=2 / 3, interp=2 / 3, strict=2 / 3),
            0.5),
    # an ID-OOD tie at 0.5: the diagonal ROC segment (0, 0.5) -> (1/3, 1) interpolates to 0.9 * 1/3 = 0.30
    "Ex2": ([.9, .8, .5, .5], [.5, .4, .1], dict(min=1 / 3, first=1 / 3, nearest=1 / 3, interp=0.3, strict=1 / 3),
            0.5),
    # 0.95 n = 19: accepting >= 22 gives TPR 0.95 with one OOD (22.5); the curve stays at 0.95 until 21.5
    # is passed: nearest / interp / strict take the right end of that flat stretch (2 OOD)
    "Ex3": (list(range(40, 20, -1)), [22.5, 21.5, 10, 5],
            dict(min=.25, first=.25, nearest=.5, interp=.5, strict=.5), 0.1),
    # n = 21: 20/21 = 0.952 is nearest 0.95; MCM's code takes the lowest threshold at that recall (2 OOD)
    "Ex4": (list(range(21, 0, -1)), [2.5, 1.5, .5, 0],
            dict(min=.25, first=.25, nearest=.5, interp=.25, strict=.25), 2 / 21),
    # ties 22/22 and 21/21: the points at 22 and 21 are collinear with (0, 0.9), sklearn's default curve drops
    # the TPR 0.95 point, so "first >= 0.95" (OpenOOD's rule) lands on TPR 1
    "Ex5": (list(range(40, 22, -1)) + [22, 21], [22, 21, 10, 5],
            dict(min=.25, first=.5, nearest=.25, interp=.25, strict=.5), 0.1),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_fpr95_rules_on_the_worked_examples(name):
    s_id, s_ood, want, openood = EXAMPLES[name]
    for rule, value in want.items():
        assert metrics.fpr95(s_id, s_ood, rule=rule) == pytest.approx(value, abs=1e-12), rule
    assert metrics.fpr95(s_id, s_ood, id_positive=False, rule="first") == pytest.approx(openood, abs=1e-12)
    # AUROC does not depend on the convention
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    assert metrics.auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]), abs=1e-12)


def test_fpr95_rule_is_validated_and_the_default_is_plps():
    assert metrics.DEFAULT_FPR95 == "interp"
    with pytest.raises(ValueError, match="known rules: 'interp'"):
        metrics.fpr95([1.0, 2.0], [0.0], rule="closest")
    with pytest.raises(ValueError, match="tpr < 1"):
        metrics.fpr_at_tpr([1.0, 2.0], [0.0], tpr=1.0, rule="strict")
    assert metrics.evaluate([3.0, 4.0] * 10, [1.0, 3.5], fpr95_rule="min")["fpr95"] == 50.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    s_id = rng.integers(0, 20, 300).astype(float)  # many ties on purpose
    s_ood = rng.integers(-5, 15, 200).astype(float)
    y = np.r_[np.ones(300), np.zeros(200)]
    assert metrics.auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, rule="min") == pytest.approx(sk_fpr95(s_id, s_ood), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, rule="first") == pytest.approx(sk_fpr95(s_id, s_ood, drop=True), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood) == pytest.approx(plp_fpr95(s_id, s_ood), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, rule="strict") == pytest.approx(clipscope_fpr95(s_id, s_ood), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, rule="nearest") == pytest.approx(mcm_fpr95(s_id, s_ood), abs=1e-12)
    # OpenOOD convention: OOD positive, scores negated
    assert metrics.auroc(s_id, s_ood, id_positive=False) == pytest.approx(
        roc_auc_score(1 - y, -np.r_[s_id, s_ood]), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, id_positive=False, rule="first") == pytest.approx(
        sk_fpr95(-s_ood, -s_id, drop=True), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, id_positive=False, rule="min") == pytest.approx(
        sk_fpr95(-s_ood, -s_id), abs=1e-12)


def test_torch_input_and_percent():
    r = metrics.evaluate(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.5]))
    assert r == {"auroc": 100.0, "fpr95": 0.0}


def test_bad_scores():
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="ID scores are empty"):
        metrics.auroc([], [0.0])
    with pytest.raises(ValueError, match="OOD scores contain NaN"):
        metrics.fpr95([0.0], [np.inf])


def test_numpy_torch_and_list_input_agree():
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(1, 1, 50).astype(np.float32), rng.normal(0, 1, 40).astype(np.float32)
    expected = metrics.evaluate(s_id, s_ood)
    assert metrics.evaluate(torch.from_numpy(s_id), torch.from_numpy(s_ood)) == expected
    assert metrics.evaluate(s_id.tolist(), s_ood.tolist()) == expected
    assert metrics.evaluate(s_id[:, None], torch.from_numpy(s_ood).double()) == expected  # (N, 1) is raveled
    for fn in (metrics.auroc, metrics.fpr95):
        assert fn(s_id, s_ood, id_positive=False) == fn(torch.from_numpy(s_id), s_ood.tolist(), id_positive=False)
