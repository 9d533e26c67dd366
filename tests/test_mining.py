"""Positive (PosMine, ClusterMine) and negative (NegLabel, CLIPScope) mining and Y_aug, on hand-made
and small random inputs; NumPy input; top1 / clusters checked against each other."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clustermine_lib import mining
from clustermine_lib.corpus import Corpus
from clustermine_lib.dense import DEFAULT_BUDGET
from feature_helpers import TINY, cos, known_quantile_case, toy_corpus, unit

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


# ---------------------------------------------------------------- NegLabel negative mining

def test_negative_similarity_known_values_and_selection():
    pos, ct = known_quantile_case()
    stat = mining.negative_similarity(pos, ct)
    np.testing.assert_allclose(stat.numpy(), [0.05, 0.3 / math.sqrt(1.09), 0.0, 1.0], atol=1e-6)
    torch.testing.assert_close(mining.negative_similarity(pos, ct, budget=TINY), stat)
    cand = torch.arange(4)
    assert mining.select_negatives(pos, ct, cand, 2).tolist() == [2, 0]
    assert mining.select_negatives(pos, ct, cand, 2, budget=TINY).tolist() == [2, 0]
    assert mining.select_negatives(pos, ct, cand, None).tolist() == [0, 1, 2, 3]
    assert mining.select_negatives(pos, ct, cand, "all").tolist() == [0, 1, 2, 3]


def test_negative_similarity_matches_numpy_quantile():
    pos, cand = unit(13, 6, 8), unit(40, 6, 9)
    ref = np.quantile(cos(cand, pos), 0.95, axis=1)
    np.testing.assert_allclose(mining.negative_similarity(pos, cand, budget=TINY).numpy(), ref, atol=1e-6)


def test_select_negatives_clamps_k_with_warning():
    pos, ct = known_quantile_case()
    with pytest.warns(UserWarning, match="K=10"):
        out = mining.select_negatives(pos, ct, torch.arange(4), 10)
    assert sorted(out.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="K"):
        mining.select_negatives(pos, ct, torch.arange(4), 0)


def test_neglabel_mine_excludes_gt_and_reports_missing():
    pos, ct = known_quantile_case()
    corpus = Corpus("toy", ("a", "b", "c", "d"), ("",) * 4, ("n",) * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = mining.neglabel_mine(["d"], ct[3:], corpus, ct, k=2)
    assert m.pos.tolist() == [3] and m.neg.tolist() == [0, 2] and m.params["missing"] == []
    with pytest.warns(UserWarning, match="not in corpus"):
        m = mining.neglabel_mine(["d", "zebra"], torch.cat([ct[3:], ct[1:2]]), corpus, ct, k=None)
    assert m.params["missing"] == ["zebra"] and m.neg.tolist() == [0, 1, 2]


def _with_similarity(sims, d=4):
    """Unit text features whose cosine to the one positive e_0 is exactly ``sims`` (the 0.95-quantile over a
    single positive is that cosine)."""
    c = torch.tensor(sims, dtype=torch.float64)
    out = torch.zeros(len(sims), d, dtype=torch.float64)
    out[:, 0], out[:, 1] = c, (1 - c ** 2).sqrt()
    return out.float(), torch.eye(d)[:1]


def test_neglabel_pos_split_keeps_the_same_fraction_of_nouns_and_adjectives():
    # Issue 17's example: nouns n1..n6 at similarity 0.1 .. 0.6, adjectives a1..a4 at 0.05, 0.08, 0.12, 0.8
    # ('s' = a WordNet satellite adjective, an adjective for NegLabel).
    names = ("n1", "n2", "n3", "n4", "n5", "n6", "a1", "a2", "a3", "a4")
    ct, gt = _with_similarity([.1, .2, .3, .4, .5, .6, .05, .08, .12, .8])
    corpus = Corpus("toy", names, ("",) * 10, ("n",) * 6 + ("a", "s", "a", "s"))
    names_of = lambda m: sorted(corpus.names[i] for i in m.neg.tolist())  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the class name is not in this corpus
        split = mining.neglabel_mine(["thing"], gt, corpus, ct, k=5, pos_split=True)
        pool = mining.neglabel_mine(["thing"], gt, corpus, ct, k=5)
        # K = 7 of 10: 7 * 6 // 10 = 4 nouns, 7 * 4 // 10 = 2 adjectives (official rounding down: 6, not 7)
        short = mining.neglabel_mine(["thing"], gt, corpus, ct, k=7, pos_split=True)
    assert names_of(split) == ["a1", "a2", "n1", "n2", "n3"]  # 50 % of each pool: only the split keeps n3
    assert names_of(pool) == ["a1", "a2", "a3", "n1", "n2"]  # the 5 lowest of one pool
    assert names_of(short) == ["a1", "a2", "n1", "n2", "n3", "n4"] and short.params["K"] == 6
    assert split.params["pos_split"] and not pool.params["pos_split"]


def test_neglabel_exclude_gt_false_keeps_gt_names_as_negatives():
    # a corpus word equal to a Y_GT name with a low similarity: the official code keeps it as a negative
    # (its released 10K list holds 31 ImageNet names); Eq. 2 (the default) removes it
    ct, gt = _with_similarity([.1, .5, .2, .9])
    corpus = Corpus("toy", ("jackfruit", "b", "c", "d"), ("",) * 4, ("n",) * 4)
    paper = mining.neglabel_mine(["jackfruit"], gt, corpus, ct, k=2)
    official = mining.neglabel_mine(["jackfruit"], gt, corpus, ct, k=2, exclude_gt=False)
    assert paper.neg.tolist() == [1, 2] and official.neg.tolist() == [0, 2]
    assert paper.pos.tolist() == official.pos.tolist() == [0]


def test_prune_negatives_reuses_selection():
    ct = unit(30, 8, 10)
    mined = mining.posmine(torch.tensor([0, 0, 3, 3, 3, 7, 7]), toy_corpus(30), m=2)
    pruned = mining.prune_negatives(mined, ct, 5)
    expected = mining.select_negatives(ct[mined.pos], ct, mined.neg, 5)
    assert pruned.neg.tolist() == sorted(expected.tolist()) and pruned.params["K"] == 5
    assert torch.equal(pruned.pos, mined.pos)
    assert torch.equal(mining.prune_negatives(mined, ct, None).neg, mined.neg)


# ---------------------------------------------------------------- CLIPScope

def test_clipscope_mine():
    # cosine to the single GT class e1: b ≈ 0.1, c = 0, d ≈ 0.89, e ≈ 0.999; "gt" itself is excluded by name.
    # Farthest two: c, b; nearest one: e.
    e = torch.eye(3)
    ct = torch.stack([e[0], F.normalize(0.1 * e[0] + e[1], dim=0), e[2], F.normalize(e[0] + 0.5 * e[1], dim=0),
                      F.normalize(e[0] + 0.05 * e[2], dim=0)])
    corpus = Corpus("toy", ("gt", "b", "c", "d", "e"), ("",) * 5, ("n",) * 5)
    m = mining.clipscope_mine(["gt"], e[:1], corpus, ct, n_far=2, n_near=1, budget=TINY)
    assert m.pos.tolist() == [0] and m.neg.tolist() == [1, 2, 4]
    with pytest.warns(UserWarning, match="n_far"):
        mining.clipscope_mine(["gt"], e[:1], corpus, ct, n_far=3, n_near=3)


# ---------------------------------------------------------------- Table 4 augmentation

def test_augment_positives_dense():
    ct, gt_idx = unit(40, 8, 13), [3, 17, 25]
    corpus = toy_corpus(40)
    names = [corpus.names[i] for i in gt_idx]
    top1 = cos(ct, ct[gt_idx]).max(1)
    top1[gt_idx] = -np.inf
    expected = np.argsort(-top1, kind="stable")[:6].tolist()
    for budget in (DEFAULT_BUDGET, TINY):
        m = mining.augment_positives(ct[gt_idx], ct, corpus, n_aug=6, class_names=names, budget=budget)
        assert m.params["aug"].tolist() == expected
        assert m.pos.tolist() == sorted(gt_idx + expected) and len(m.neg) == 40 - 9
    by_feature = mining.augment_positives(ct[gt_idx], ct, corpus, n_aug=6)
    assert by_feature.params["aug"].tolist() == expected
    with pytest.warns(UserWarning, match="K=100"):
        mining.augment_positives(ct[gt_idx], ct, corpus, n_aug=100, class_names=names)
    with pytest.warns(UserWarning, match="not in corpus"):
        m = mining.augment_positives(ct[gt_idx], ct, corpus, n_aug=2, class_names=names + ["unicorn"])
    assert m.params["missing"] == ["unicorn"]


def test_empty_positives_after_mining_names_m():
    with pytest.raises(ValueError, match="M"):
        mining.posmine(torch.tensor([0, 1, 2]), toy_corpus(5), m=2)


# ---------------------------------------------------------------- validation, NumPy input

def test_top1_and_clusters_of_different_lengths_raise():
    top1, clusters = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4]), torch.tensor([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(ValueError, match="clusters has 7 entries"):
        mining.cluster_vote(top1, clusters)
    with pytest.raises(ValueError, match="clusters has 7 entries"):
        mining.clustermine(top1, clusters, CORPUS)
    with pytest.raises(ValueError, match="clusters has 9 entries"):
        mining.clustermine(top1, torch.zeros(9, dtype=torch.long), CORPUS)
    with pytest.raises(TypeError, match="integer ids"):
        mining.cluster_vote(top1.float(), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="top1 holds ids up to 5"):
        mining.posmine(torch.tensor([0, 5]), CORPUS, m=1)


def test_clustermine_records_the_requested_number_of_clusters():
    top1 = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4])
    clusters = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])  # clusters 3..9 of a C = 10 clustering are empty
    assert mining.clustermine(top1, clusters, CORPUS, n_clusters=10).params["C"] == 10
    assert mining.clustermine(top1, clusters, CORPUS).params["C"] == 3  # without it: largest id + 1
    with pytest.raises(ValueError, match="must be < 2"):
        mining.clustermine(top1, clusters, CORPUS, n_clusters=2)


def test_negative_similarity_dimension_mismatch():
    pos, _ = known_quantile_case()
    with pytest.raises(ValueError, match="dimension"):
        mining.negative_similarity(pos, unit(3, 9, 0))


def test_positive_mining_numpy_input_equals_tensor_input():
    top1 = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4])
    clusters = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    for a, b in zip(mining.cluster_vote(top1.numpy(), clusters.numpy()), mining.cluster_vote(top1, clusters)):
        assert torch.equal(a, b)
    for got, expected in [(mining.clustermine(top1.numpy(), clusters.numpy().astype(np.int32), CORPUS),
                           mining.clustermine(top1, clusters, CORPUS)),
                          (mining.posmine(top1.numpy(), CORPUS, m=2), mining.posmine(top1, CORPUS, m=2))]:
        assert torch.equal(got.pos, expected.pos) and torch.equal(got.neg, expected.neg)
        assert torch.equal(got.counts, expected.counts) and got.params == expected.params


def same_mined(a, b):
    return torch.equal(a.pos, b.pos) and torch.equal(a.neg, b.neg) and a.names == b.names


def test_negative_mining_numpy_input_equals_tensor_input():
    ct, gt_idx = unit(40, 8, 13), [3, 17, 25]
    corpus = toy_corpus(40)
    names, gt = [corpus.names[i] for i in gt_idx], ct[gt_idx]
    cand = torch.arange(5, 30)
    assert torch.equal(mining.negative_similarity(gt.numpy(), ct.numpy(), index=cand.numpy()),
                       mining.negative_similarity(gt, ct, index=cand))
    assert torch.equal(mining.select_negatives(gt.numpy(), ct.numpy(), cand.numpy(), 7),
                       mining.select_negatives(gt, ct, cand, 7))
    assert same_mined(mining.neglabel_mine(names, gt.numpy(), corpus, ct.numpy(), k=9),
                      mining.neglabel_mine(names, gt, corpus, ct, k=9))
    assert same_mined(mining.clipscope_mine(names, gt.numpy(), corpus, ct.numpy(), n_far=4, n_near=3),
                      mining.clipscope_mine(names, gt, corpus, ct, n_far=4, n_near=3))
    got = mining.augment_positives(gt.numpy(), ct.numpy(), corpus, n_aug=5, class_names=names)
    expected = mining.augment_positives(gt, ct, corpus, n_aug=5, class_names=names)
    assert same_mined(got, expected) and torch.equal(got.params["aug"], expected.params["aug"])
    mined = mining.posmine(torch.tensor([0, 0, 3, 3, 3, 7, 7]), corpus, m=2)
    assert torch.equal(mining.prune_negatives(mined, ct.numpy(), 6).neg, mining.prune_negatives(mined, ct, 6).neg)
