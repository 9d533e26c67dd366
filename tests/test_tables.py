"""Long-format result tables: evaluation of a score function, means over OOD sets, wide views."""
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clustermine_lib import tables as T
from clustermine_lib.benchmark import Benchmark, FeatureSet
from clustermine_lib.corpus import Corpus
from clustermine_lib.metrics import evaluate
from clustermine_lib.scoring import PairScore


# ---------------------------------------------------------------- long tables

def tiny_benchmark():
    g = torch.Generator().manual_seed(0)
    def fs(name, n, shift):
        return FeatureSet(name, F.normalize(torch.randn(n, 4, generator=g) + shift, dim=1))
    corpus = Corpus("toy", ("a", "b"), ("", ""), ("n", "n"))
    return Benchmark("tiny", True, fs("train", 20, 1.0), fs("ImageNet", 30, 1.0),
                     {"NINCO": fs("NINCO", 25, 0.0), "iNat": fs("iNat", 15, -1.0)},
                     {"ImageNet-R": fs("ImageNet-R", 12, 0.5)}, ["a", "b"], torch.eye(4)[:2], ["", ""],
                     corpus, torch.eye(4)[:2], 100.0)


def test_evaluate_score_long_table():
    b = tiny_benchmark()
    fn = lambda f: f[:, 0]  # noqa: E731
    t = T.evaluate_score(fn, b, "first-dim")
    assert list(t.columns) == T.COLUMNS and list(t["ood_set"]) == ["NINCO", "iNat"]
    ref = evaluate(b.test.features[:, 0], b.ood["iNat"].features[:, 0])
    assert t.iloc[1]["auroc"] == pytest.approx(ref["auroc"]) and t.iloc[1]["fpr95"] == pytest.approx(ref["fpr95"])
    shifted = T.evaluate_score(fn, b, "first-dim", id_set="ImageNet-R", ood_sets=["iNat"])
    assert shifted["id_set"].tolist() == ["ImageNet-R"] and len(shifted) == 1
    with pytest.raises(KeyError, match="Places"):
        T.evaluate_score(fn, b, "m", ood_sets=["Places"])
    with pytest.raises(KeyError, match="ImageNet-Z"):
        T.evaluate_score(fn, b, "m", id_set="ImageNet-Z")


def test_evaluate_score_takes_the_fpr95_rule_and_pair_scores():
    b = tiny_benchmark()
    fn = lambda f: f[:, 0]  # noqa: E731
    for rule in ("interp", "min", "nearest", "strict", "first"):
        t = T.evaluate_score(fn, b, "first-dim", fpr95_rule=rule)
        ref = evaluate(b.test.features[:, 0], b.ood["NINCO"].features[:, 0], fpr95_rule=rule)
        assert t.iloc[0]["fpr95"] == pytest.approx(ref["fpr95"])
    # a transductive score: the ID set is scored again with each OOD set
    seen = []

    def pair(x_id, x_ood):
        seen.append(len(x_ood))
        return x_id[:, 0] - x_ood[:, 0].mean(), x_ood[:, 0] - x_ood[:, 0].mean()

    t = T.evaluate_score(PairScore(pair), b, "pair")
    assert seen == [25, 15] and t.iloc[0]["auroc"] == pytest.approx(evaluate(
        b.test.features[:, 0], b.ood["NINCO"].features[:, 0])["auroc"])
    with pytest.raises(TypeError, match="pair"):
        PairScore(pair)(b.test.features)


def test_means_near_far_and_wide():
    t = pd.DataFrame([("m", "IN", "SSB", 80, 60), ("m", "IN", "NINCO", 90, 40), ("m", "IN", "iNat", 99, 2),
                      ("m", "IN", "Texture", 95, 20), ("k", "IN", "iNat", 70, 70)], columns=T.COLUMNS)
    nf = T.near_far_means(t).set_index(["method", "ood_set"])
    assert nf.loc[("m", "near"), "auroc"] == 85 and nf.loc[("m", "near"), "sets"] == "SSB,NINCO"
    assert nf.loc[("m", "far"), "fpr95"] == 11 and nf.loc[("k", "far"), "auroc"] == 70
    assert ("k", "near") not in nf.index
    mean = T.mean_over_sets(t).set_index("method")
    assert mean.loc["m", "auroc"] == pytest.approx(91) and mean.loc["m", "ood_set"] == "mean"
    assert T.to_wide(t).loc[("m", "IN"), "iNat"] == 99
