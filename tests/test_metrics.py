import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from clustermine_lib import metrics


def sk_fpr95(s_id, s_ood):
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    fpr, tpr, _ = roc_curve(y, np.r_[s_id, s_ood])
    return fpr[np.searchsorted(tpr, 0.95, side="left")]


def test_hand_computed():
    # ID = [3, 4], OOD = [1, 3.5]: pairs (3>1), (3<3.5), (4>1), (4>3.5) -> 3/4
    assert metrics.auroc([3, 4], [1, 3.5]) == pytest.approx(0.75)
    # a tie counts one half: ID [2], OOD [2] -> 0.5
    assert metrics.auroc([2.0], [2.0]) == 0.5
    # 20 ID scores 1..20: threshold keeps 19 of them (>= 2); OOD [1.5, 2, 30] -> 2 of 3 above
    assert metrics.fpr95(np.arange(1, 21), [1.5, 2, 30]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    s_id = rng.integers(0, 20, 300).astype(float)  # many ties on purpose
    s_ood = rng.integers(-5, 15, 200).astype(float)
    y = np.r_[np.ones(300), np.zeros(200)]
    assert metrics.auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood) == pytest.approx(sk_fpr95(s_id, s_ood), abs=1e-12)
    # OpenOOD convention: OOD positive, scores negated
    assert metrics.auroc(s_id, s_ood, id_positive=False) == pytest.approx(
        roc_auc_score(1 - y, -np.r_[s_id, s_ood]), abs=1e-12)
    assert metrics.fpr95(s_id, s_ood, id_positive=False) == pytest.approx(sk_fpr95(-s_ood, -s_id), abs=1e-12)


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
