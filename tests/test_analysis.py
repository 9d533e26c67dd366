"""Analysis measurements on hand-made inputs whose answers are known."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clustermine_lib import analysis as A
from clustermine_lib.benchmark import Benchmark, FeatureSet
from clustermine_lib.corpus import Corpus
from clustermine_lib.metrics import evaluate
from clustermine_lib.mining import clustermine
from clustermine_lib.wordnet import wordnet


# ---------------------------------------------------------------- Table 3: overlap / F1

def test_label_set_quality_by_name():
    q = A.label_set_quality(["dog", "Cat", "tree", "tree", "car_wheel"], ["dog", "cat", "fish", "car wheel"])
    # Y_pos = {dog, cat, tree, car wheel} (4), Y_GT 4, common 3
    assert (q["n_pos"], q["n_gt"], q["n_common"]) == (4, 4, 3)
    assert q["precision"] == pytest.approx(75) and q["recall"] == pytest.approx(75)
    assert q["overlap"] == q["recall"] and q["f1"] == pytest.approx(75)
    q = A.label_set_quality(["dog"] + [f"x{i}" for i in range(9)], ["dog", "cat"])
    p, r = 0.1, 0.5
    assert q["f1"] == pytest.approx(100 * 2 * p * r / (p + r))
    assert A.label_set_quality(["a"], ["b"])["f1"] == 0


def test_label_set_quality_by_synset():
    # different names, same synset: a match only by synset; '' never matches; wnid n02084071 = dog.n.01
    q = A.label_set_quality(["domestic dog", "kitty", "blob"], ["dog", "house cat"], by="synset",
                            pos_synsets=["dog.n.01", "kitty.n.04", ""], gt_synsets=["n02084071", "house_cat.n.01"])
    assert q["n_common"] == 1 and q["precision"] == pytest.approx(100 / 3) and q["recall"] == pytest.approx(50)
    assert A.label_set_quality(["domestic dog"], ["dog"])["f1"] == 0  # by name they differ
    with pytest.raises(ValueError, match="synset"):
        A.label_set_quality(["a"], ["a"], by="synset")
    with pytest.raises(ValueError, match="by"):
        A.label_set_quality(["a"], ["a"], by="lemma")


def test_mined_label_quality_reads_corpus_synsets():
    # a 4th concept no image picks stays negative (a corpus mined whole is an error)
    corpus = Corpus("toy", ("dog", "tabby", "rock", "pebble"), ("dog.n.01", "tabby.n.01", "", ""), ("n",) * 4)
    mined = clustermine(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1, 2]), corpus)
    assert A.mined_label_quality(mined, corpus, ["dog", "cat"])["n_common"] == 1
    q = A.mined_label_quality(mined, corpus, ["dog", "cat"], ["dog.n.01", "tabby.n.01"], by="synset")
    assert q["n_common"] == 2 and q["recall"] == pytest.approx(100)


# ---------------------------------------------------------------- Fig. 5

def test_top1_text_similarity_dense():
    lab = F.normalize(torch.randn(9, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    gt = F.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    dense = (lab @ gt.T).max(1).values
    torch.testing.assert_close(A.top1_text_similarity(lab, gt), dense)
    torch.testing.assert_close(A.top1_text_similarity(lab, gt, budget=3), dense)


def test_wordnet_hops_known_pairs_and_nltk_agreement():
    wn = wordnet()
    hops = A.wordnet_hops(["puppy.n.01", "dog.n.01", "canine.n.02", "", "red.s.01"], ["dog.n.01"])
    assert hops[0] == 1 and hops[1] == 0 and hops[2] == 1
    assert math.isnan(hops[3]) and math.isnan(hops[4])
    gt = ["dog.n.01", "house_cat.n.01", "n04037443"]  # n04037443 = racer.n.02 (race car)
    labels = ["puppy.n.01", "tabby.n.01", "car.n.01", "oak.n.02", "kitten.n.01", "wolf.n.01"]
    got = A.wordnet_hops(labels, gt)
    gt_syn = [wn.synset(A.canonical_synset(g)) for g in gt]
    for lab, h in zip(labels, got):
        ref = min(d for d in (wn.synset(lab).shortest_path_distance(g) for g in gt_syn) if d is not None)
        assert h == ref, lab


# ---------------------------------------------------------------- Fig. 7: clusters

def test_purity_entropy_redundancy_hand_made():
    # cluster 0: true labels [0,0,0,1] top1 [5,5,5,5]; cluster 1: [1,1] top1 [5,6]; cluster 2: [2,2,2] top1 [7,7,8]
    clusters = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    top1 = torch.tensor([5, 5, 5, 5, 5, 6, 7, 7, 8])
    assert A.cluster_purity(clusters, labels) == pytest.approx((0.75 + 1 + 1) / 3)
    assert A.cluster_purity(clusters, labels, weighted=True) == pytest.approx(8 / 9)
    h1 = math.log(2)
    h2 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert A.cluster_entropy(clusters, top1) == pytest.approx((0 + h1 + h2) / 3)
    r = A.cluster_analysis(clusters, top1, labels, n_clusters=4)
    # winners: cluster 0 -> 5, cluster 1 -> 5 (tie 5/6 -> smallest), cluster 2 -> 7: Y_pos = {5, 7}
    assert (r["n_pos"], r["n_nonempty"], r["C"]) == (2, 3, 4)
    assert r["redundancy"] == pytest.approx(0.5) and r["pos_per_cluster"] == pytest.approx(0.5)
    assert math.isnan(A.cluster_analysis(clusters, top1)["purity"])


def test_elbow_known_knee():
    x = np.arange(1, 10)
    i, dist = A.elbow(x, np.minimum(x, 3))  # rises, then flat from x = 3
    assert x[i] == 3 and dist[0] == pytest.approx(0) and dist[-1] == pytest.approx(0)
    i, _ = A.elbow(x, -np.minimum(x, 6))  # falling curve, knee at 6
    assert x[i] == 6
    with pytest.raises(ValueError, match=">= 3"):
        A.elbow([1, 2], [1, 2])


def test_propose_c_geometric_sweep():
    c = np.array([250, 500, 1000, 2000, 4000, 8000])
    ratio = np.array([1.0, 0.98, 0.95, 0.55, 0.3, 0.16])  # ~1 until C = 1000, then clusters share labels
    redundancy = np.array([0.0, 0.01, 0.03, 0.30, 0.45, 0.52])
    sweep = pd.DataFrame({"C": c[::-1], "pos_per_cluster": ratio[::-1], "redundancy": redundancy[::-1]})
    out = A.propose_c(sweep)
    assert out["by_metric"] == {"pos_per_cluster": 1000, "redundancy": 1000} and out["C"] == 1000
    assert list(out["table"]["C"]) == sorted(c) and "redundancy_elbow_distance" in out["table"]
    linear = A.propose_c(sweep, log_x=False)  # on linear C the chord rule moves right
    assert linear["by_metric"]["pos_per_cluster"] == 4000 and linear["C"] == max(linear["by_metric"].values())
    as_dict = A.propose_c({int(k): {"pos_per_cluster": p, "redundancy": q} for k, p, q in zip(c, ratio, redundancy)})
    assert as_dict["C"] == 1000
    with pytest.raises(ValueError, match="lacks"):
        A.propose_c(sweep.drop(columns="redundancy"))


def test_cluster_sweep_rows():
    top1 = torch.tensor([0, 0, 1, 1, 2, 2])
    sweep = A.cluster_sweep({3: torch.tensor([0, 0, 1, 1, 2, 2]), 2: torch.tensor([0, 0, 0, 1, 1, 1])}, top1)
    assert list(sweep["C"]) == [2, 3] and list(sweep["n_pos"]) == [2, 3]
