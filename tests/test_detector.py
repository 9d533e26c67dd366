import pytest
import torch

from clustermine_lib import dense, mining, scoring
from clustermine_lib.detector import ClusterMine, PosMine
from clustermine_lib.experiments import Pipeline, Settings


def test_clustermine_detector_with_given_clusters(tiny_bench):
    b = tiny_bench
    clusters = b.train.labels  # oracle clusters: the majority vote must give one label per class
    det = ClusterMine(clusters=clusters).fit(b.train.features, b.corpus, b.corpus_text, b.logit_scale)
    top1 = dense.zero_shot_top1(b.train.features, b.corpus_text)[0]
    expected = mining.clustermine(top1, clusters, b.corpus)
    assert det.positive_names == expected.names
    assert len(det.mined_) <= len(b.class_names)
    assert det.tau_ == pytest.approx(1 / (10 * b.logit_scale))
    s = det.score_samples(b.test.features)
    ref = scoring.eq1_logit(b.test.features, b.corpus_text[expected.pos], b.corpus_text[expected.neg], det.tau_)
    assert torch.allclose(s, ref)


def test_posmine_detector_and_pruning(tiny_bench):
    b = tiny_bench
    det = PosMine(m=3, neg_k=1000).fit(b.train.features, b.corpus, b.corpus_text, b.logit_scale)
    assert len(det.neg_text_) == 1000 and len(det.pos_text_) == len(det.mined_.pos)
    with pytest.raises(RuntimeError, match="PosMine instance is not fitted"):
        PosMine().score_samples(b.test.features)
    with pytest.raises(RuntimeError, match="ClusterMine instance is not fitted"):
        ClusterMine().positive_names  # noqa: B018  (scikit-learn style, before any attribute access)


def test_detectors_check_top1_and_clusters_against_the_features(tiny_bench):
    b = tiny_bench
    n = len(b.train)
    with pytest.raises(ValueError, match=rf"top1 has {n - 1} entries but there are {n} feature rows"):
        PosMine(m=3).fit(b.train.features, b.corpus, b.corpus_text, top1=torch.zeros(n - 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"top1 holds ids up to .* must be < "):
        PosMine(m=3).fit(b.train.features, b.corpus, b.corpus_text, top1=torch.full((n,), len(b.corpus)))
    with pytest.raises(ValueError, match=rf"clusters has {n + 1} entries"):
        ClusterMine(clusters=torch.zeros(n + 1, dtype=torch.long)).fit(b.train.features, b.corpus, b.corpus_text)
    with pytest.raises(ValueError, match="negative ids"):
        ClusterMine(clusters=b.train.labels - 1).fit(b.train.features, b.corpus, b.corpus_text)
    with pytest.raises(TypeError, match="integer ids"):
        ClusterMine(clusters=b.train.labels.float()).fit(b.train.features, b.corpus, b.corpus_text)


def test_detectors_take_numpy_input_and_give_the_tensor_result(tiny_bench):
    b = tiny_bench
    ref = ClusterMine(clusters=b.train.labels).fit(b.train.features, b.corpus, b.corpus_text, b.logit_scale)
    det = ClusterMine(clusters=b.train.labels.numpy()).fit(b.train.features.numpy(), b.corpus,
                                                          b.corpus_text.numpy(), b.logit_scale)
    assert det.positive_names == ref.positive_names
    assert det.mined_.params["C"] == int(b.train.labels.max()) + 1
    assert torch.equal(det.score_samples(b.test.features.numpy()), ref.score_samples(b.test.features))


def test_bad_tau_and_corpus_mismatch(tiny_bench):
    b = tiny_bench
    with pytest.raises(ValueError, match="tau must be"):
        PosMine(m=3, tau=0.0).fit(b.train.features, b.corpus, b.corpus_text)
    with pytest.raises(ValueError, match="recompute the text features"):
        PosMine(m=3).fit(b.train.features, b.corpus, b.corpus_text[:10])
    with pytest.raises(ValueError, match="dimension"):
        PosMine(m=3).fit(b.train.features[:, :5], b.corpus, b.corpus_text)


def test_pipeline_table_all_gt_methods(tiny_bench):
    pipe = Pipeline(tiny_bench, Settings.for_benchmark(tiny_bench, progress=False))
    table = pipe.table(["MCM", "MaxLogit", "NegLabel", "PosMine"], ood_sets=["iNat", "NINCO"])
    assert list(table.columns) == ["method", "id_set", "ood_set", "auroc", "fpr95"]
    assert len(table) == 8 and table.auroc.between(0, 100).all()
    # far OOD (plants) is easier than near OOD (cousins) for MCM on the simulation
    mcm = table[table.method == "MCM"].set_index("ood_set").auroc
    assert mcm["iNat"] > mcm["NINCO"]


def test_pipeline_posmine_clustermine_share_the_corpus_pass(tiny_bench, monkeypatch):
    """PosMine and ClusterMine (any M, C) score with one full-corpus pass per image set; the scores
    equal Eq. 1 on Y_pos and the whole complement Y_neg."""
    b = tiny_bench
    pipe = Pipeline(b, Settings.for_benchmark(b, progress=False))
    calls = []
    real = dense.lse_rows
    monkeypatch.setattr(dense, "lse_rows", lambda x, *a, **k: calls.append(len(x)) or real(x, *a, **k))
    x = b.test.features
    for method, params in (("PosMine", {}), ("PosMine", {"m": 2}), ("ClusterMine", {})):
        mined = pipe.mined(method, **params)
        assert bool(torch.isin(mined.pos, pipe.candidates()).all())
        ref = scoring.eq1_logit(x, b.corpus_text[mined.pos], b.corpus_text[mined.neg], pipe.tau)
        torch.testing.assert_close(pipe.score_fn(method, **params)(x), ref, rtol=1e-5, atol=1e-4)
    assert calls == [len(x)]  # the corpus minus the candidates: once for all three label sets
    pruned = pipe.mined("PosMine", neg_k=100)
    ref = scoring.eq1_logit(x, b.corpus_text[pruned.pos], b.corpus_text[pruned.neg], pipe.tau)
    assert torch.equal(pipe.score_fn("PosMine", neg_k=100)(x), ref)  # pruned Y_neg: the direct path
