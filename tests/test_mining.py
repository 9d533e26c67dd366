import pytest
import torch

from clustermine_lib import mining
from clustermine_lib.corpus import Corpus

CORPUS = Corpus("toy", ("cat", "dog", "car", "tree", "sky"), ("",) * 5, ("n",) * 5)


def test_cluster_vote_hand_made():
    # cluster 0: cat cat dog -> cat; cluster 1: dog dog car -> dog; cluster 2: tree sky (tie) -> tree (lowest index)
    top1 = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4])
    clusters = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    ids, winners = mining.cluster_vote(top1, clusters)
    assert ids.tolist() == [0, 1, 2] and winners.tolist() == [0, 1, 3]
    m = mining.clustermine(top1, clusters, CORPUS)
    assert m.names == ["cat", "dog", "tree"] and m.neg.tolist() == [2, 4]
    assert m.counts.tolist() == [1, 1, 1]


def test_clustermine_redundant_winner_counts():
    top1 = torch.tensor([1, 1, 1, 1, 0])
    clusters = torch.tensor([0, 0, 1, 1, 2])
    m = mining.clustermine(top1, clusters, CORPUS)
    assert m.names == ["cat", "dog"] and m.counts.tolist() == [1, 2]  # dog wins two clusters


def test_posmine_threshold():
    top1 = torch.tensor([0, 0, 0, 1, 1, 2])
    assert mining.posmine(top1, CORPUS, m=2).names == ["cat", "dog"]
    assert mining.posmine(top1, CORPUS, m=3).names == ["cat"]
    with pytest.raises(ValueError, match="lower M"):
        mining.posmine(top1, CORPUS, m=4)
    with pytest.raises(ValueError, match="M"):
        mining.posmine(top1, CORPUS, m=0)


def test_gt_positives_reports_missing():
    m = mining.gt_positives(["dog", "tench", "cat"], CORPUS)
    assert m.names == ["cat", "dog"] and m.params["missing"] == ["tench"]
