"""clustermine_lib.calibration: statistics against hand-computed and scikit-learn values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clustermine_lib import calibration as cal


def planted(n_cls=5, per=12, d=16, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_cls, d, generator=g), dim=1)
    y = torch.arange(n_cls).repeat_interleave(per)
    return F.normalize(centres[y] + noise * torch.randn(len(y), d, generator=g), dim=1), y, centres


def test_zero_shot_accuracy_by_hand():
    text = torch.eye(3)
    x = torch.tensor([[1.0, 0.1, 0], [0, 1, 0.2], [0.9, 0, 1.0], [0, 0.1, 1]])
    y = torch.tensor([0, 1, 2, 2])
    assert cal.zero_shot_accuracy(x, y, text) == pytest.approx(1.0)
    # image 2 is closer to class 2 than 0; restricted to classes {0, 1}, class-2 labels are wrong by force
    assert cal.zero_shot_accuracy(x[:2], y[:2], text, classes=[0, 1]) == 1.0
    y_bad = torch.tensor([0, 1, 0, 2])
    assert cal.zero_shot_accuracy(x, y_bad, text) == 0.75


def test_knn_accuracy_majority_and_weighted_by_hand():
    train = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 1.0], [0.2, 1.0]])
    ytr = torch.tensor([0, 0, 1, 1, 1])
    q = torch.tensor([[1.0, 0.05], [0.6, 0.8]])
    yq = torch.tensor([0, 1])
    # k=5 plain majority: class 1 has 3 of 5 votes for every query
    assert cal.knn_accuracy(train, ytr, q, yq, k=5, temperature=None) == 0.5
    # weighted with a tiny temperature: the nearest neighbour decides
    assert cal.knn_accuracy(train, ytr, q, yq, k=5, temperature=0.01) == 1.0


def test_knn_and_ncm_match_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    x, y, _ = planted(noise=0.9)
    xt, yt, _ = planted(noise=0.9, seed=0, per=12)
    g = torch.Generator().manual_seed(9)
    xt = F.normalize(xt + 0.5 * torch.randn(xt.shape, generator=g), dim=1)
    sk = KNeighborsClassifier(7, metric="cosine").fit(x.numpy(), y.numpy()).score(xt.numpy(), yt.numpy())
    assert cal.knn_accuracy(x, y, xt, yt, k=7, temperature=None) == pytest.approx(sk, abs=1 / len(xt))
    # nearest class mean by cosine = nearest normalised mean in Euclidean distance
    means = F.normalize(torch.stack([x[y == c].mean(0) for c in range(5)]), dim=1)
    dist = ((xt.numpy()[:, None, :] - means.numpy()[None]) ** 2).sum(-1)  # Euclidean on unit rows
    ref = (dist.argmin(1) == yt.numpy()).mean()
    assert cal.ncm_accuracy(x, y, xt, yt) == pytest.approx(ref)


def test_cluster_scores_by_hand():
    true = torch.tensor([0, 0, 0, 1, 1, 1])
    pred = torch.tensor([5, 5, 7, 7, 7, 9])  # 3 clusters
    s = cal.cluster_scores(true, pred)
    assert s["non_empty"] == 3
    assert s["purity"] == pytest.approx(5 / 6)  # {0,0} {0,1,1} {1}: 2 + 2 + 1
    assert s["acc"] == pytest.approx(4 / 6)  # one-to-one: 5->0 (2), 7->1 (2)
    from sklearn.metrics import normalized_mutual_info_score
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(true.numpy(), pred.numpy()))
    perfect = cal.cluster_scores(true, 1 - true)
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["acc"] == 1.0


def test_kmeans_scores_recovers_planted_classes():
    x, y, _ = planted(noise=0.1)
    s = cal.kmeans_scores(x, y, seed=0, n_init=3)
    assert s["nmi"] > 0.99 and s["acc"] == 1.0 and s["non_empty"] == 5
    assert s["labels_pred"].shape == y.shape


def test_cosine_stats_by_hand():
    text = torch.eye(2)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    s = cal.cosine_stats(x, y, text)
    assert s["it_true"] == pytest.approx(1.0) and s["it_other"] == pytest.approx(0.0)
    assert s["ii_within"] == pytest.approx(1.0)  # the one within pair (0, 1), self excluded
    assert s["ii_across"] == pytest.approx(0.0)
    # mean image (2/3, 1/3), mean text (1/2, 1/2)
    assert s["gap"] == pytest.approx(math.hypot(2 / 3 - 0.5, 1 / 3 - 0.5))


def test_linear_probe_separable():
    x, y, _ = planted(noise=0.1)
    assert cal.linear_probe_accuracy(x, y, x, y) == 1.0


def test_compare_and_table_roundtrip(tmp_path):
    targets = [cal.Target("a", 0.5, 0.05, 1.0, "paper X"), cal.Target("b", 0.2, 0.01, 0.0, 'says "q"')]
    rows = cal.compare({"a": 0.53, "b": 0.25}, targets)
    assert [r["within"] for r in rows] == [True, False]
    path = cal.write_table(rows, tmp_path / "t.csv")
    back = cal.read_table(path)
    assert [r["statistic"] for r in back] == ["a", "b"] and back[0]["simulated"] == pytest.approx(0.53)
    assert back[1]["within"] is False
    assert "NO" in cal.format_table(back)


def test_report_rows_have_no_target(tmp_path):
    rows = cal.compare({"x": 0.4}, [], report=("x",))
    back = cal.read_table(cal.write_table(rows, tmp_path / "t.csv"))
    assert math.isnan(back[0]["target"]) and back[0]["within"] is None and back[0]["simulated"] == 0.4
    assert " - " in cal.format_table(back)
