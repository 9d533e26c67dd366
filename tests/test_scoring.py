"""Every score against a direct dense formula on small inputs; chunked == unchunked (tiny budget)."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clustermine_lib import scoring as S
from clustermine_lib.corpus import Corpus
from clustermine_lib.mining import posmine

TINY = 7  # budget in elements: forces one or a few rows per chunk


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def toy_corpus(n):
    names = tuple(f"c{i}" for i in range(n))
    return Corpus("toy", names, ("",) * n, ("n",) * n)


@pytest.fixture
def data():
    return {"img": unit(23, 8, 0), "pos": unit(5, 8, 1), "neg": unit(11, 8, 2)}


def cos(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


# ---------------------------------------------------------------- existing core: zero-shot, Eq. 1, MCM

def test_zero_shot_top1_dense_and_chunked(data):
    sim = cos(data["img"], data["neg"])
    idx, val = S.zero_shot_top1(data["img"], data["neg"])
    assert idx.tolist() == sim.argmax(1).tolist()
    np.testing.assert_allclose(val.numpy(), sim.max(1), atol=1e-6)
    idx2, val2 = S.zero_shot_top1(data["img"], data["neg"], budget=TINY)
    assert torch.equal(idx, idx2) and torch.allclose(val, val2)


def test_corpus_passes_merged_across_column_tiles_equal_the_dense_formulas(data, monkeypatch):
    # tiles of 3 images x 4 texts: the last tile of each row block is partial in both directions
    monkeypatch.setattr(S, "TILE_ROWS", 3)
    monkeypatch.setattr(S, "TILE_COLS", 4)
    tau = 0.05
    sim = cos(data["img"], data["neg"])
    idx, val = S.zero_shot_top1(data["img"], data["neg"])
    assert idx.tolist() == sim.argmax(1).tolist()
    np.testing.assert_allclose(val.numpy(), sim.max(1), atol=1e-6)
    np.testing.assert_allclose(S.lse_rows(data["img"], data["neg"], tau).numpy(),
                               np.log(np.exp(sim / tau).sum(1)), rtol=1e-5)
    sp = cos(data["img"], data["pos"]) / tau
    dense = np.log(np.exp(sp).sum(1)) - np.log(np.exp(sim / tau).sum(1))
    np.testing.assert_allclose(S.eq1_logit(data["img"], data["pos"], data["neg"], tau).numpy(), dense,
                               rtol=1e-5, atol=1e-5)


def test_eq1_dense_and_chunked(data):
    tau = 0.05
    sp, sn = cos(data["img"], data["pos"]) / tau, cos(data["img"], data["neg"]) / tau
    dense = np.exp(sp).sum(1) / (np.exp(sp).sum(1) + np.exp(sn).sum(1))
    got = S.eq1_score(data["img"], data["pos"], data["neg"], tau)
    np.testing.assert_allclose(got.numpy(), dense, rtol=1e-5)
    np.testing.assert_allclose(S.eq1_score(data["img"], data["pos"], data["neg"], tau, budget=TINY).numpy(),
                               got.numpy(), rtol=1e-5)


def test_eq1_with_a_shared_negative_part_equals_eq1_on_all_negatives(data):
    # Y_neg split in two: the big part's mass given as neg_lse (lse_rows), the rest as neg_text
    tau = 0.05
    shared, rest = data["neg"][:8], data["neg"][8:]
    lse = S.lse_rows(data["img"], shared, tau)
    np.testing.assert_allclose(lse.numpy(), np.log(np.exp(cos(data["img"], shared) / tau).sum(1)), rtol=1e-5)
    whole = S.eq1_logit(data["img"], data["pos"], data["neg"], tau)
    for text in (rest, rest[:0]):  # with and without negatives of its own
        lse_all = lse if len(text) else S.lse_rows(data["img"], data["neg"], tau)
        split = S.eq1_logit(data["img"], data["pos"], text, tau, budget=TINY, neg_lse=lse_all)
        torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="neg_lse has shape"):
        S.eq1_logit(data["img"], data["pos"], rest, tau, neg_lse=lse[:3])


def test_mcm_dense(data):
    s = cos(data["img"], data["pos"])
    dense = np.exp(s).max(1) / np.exp(s).sum(1)
    np.testing.assert_allclose(S.mcm_score(data["img"], data["pos"]).numpy(), dense, rtol=1e-5)
    np.testing.assert_allclose(S.mcm_score(data["img"], data["pos"], budget=TINY).numpy(), dense, rtol=1e-5)


# ---------------------------------------------------------------- MaxLogit, Energy

def test_maxlogit_energy_dense_and_chunked(data):
    scale = 50.0
    logits = scale * cos(data["img"], data["pos"])
    np.testing.assert_allclose(S.maxlogit_score(data["img"], data["pos"], scale).numpy(), logits.max(1), rtol=1e-5)
    for t in (1.0, 2.0):
        dense = t * np.log(np.exp(logits / t).sum(1))
        for budget in (S.DEFAULT_BUDGET, TINY):
            got = S.energy_score(data["img"], data["pos"], scale, temperature=t, budget=budget)
            np.testing.assert_allclose(got.numpy(), dense, rtol=1e-5)
    torch.testing.assert_close(S.maxlogit_score(data["img"], data["pos"], scale, budget=TINY),
                               S.maxlogit_score(data["img"], data["pos"], scale))
    with pytest.raises(ValueError, match="logit_scale"):
        S.energy_score(data["img"], data["pos"], 0.0)


# ---------------------------------------------------------------- Mahalanobis

def maha_reference(train, labels, test):
    """NumPy float64 MD / relative MD, written out directly (classes with >= 2 samples in the covariance)."""
    x = train.double().numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = test.double().numpy()
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    labels = labels.numpy()
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(0) for c in classes])
    covs = [np.cov(x[labels == c].T) for c in classes if (labels == c).sum() > 1]
    prec = np.linalg.inv(np.mean(covs, axis=0))
    d = np.stack([np.einsum("nd,de,ne->n", t - m, prec, t - m) for m in means], axis=1)
    mu0, prec0 = x.mean(0), np.linalg.inv(np.cov(x.T))
    d0 = np.einsum("nd,de,ne->n", t - mu0, prec0, t - mu0)
    return -d.min(1), -(d - d0[:, None]).min(1)


def clustered(n_per, d, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per), d, generator=g) * 2
    x = torch.cat([c + 0.5 * torch.randn(n, d, generator=g) for c, n in zip(centres, n_per)])
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(n_per)])
    return x, y


def test_mahalanobis_matches_numpy_reference():
    x, y = clustered([30, 40, 25], 5, 0)
    test = torch.randn(17, 5, generator=torch.Generator().manual_seed(1))
    md_ref, rel_ref = maha_reference(x, y, test)
    det = S.MahalanobisDetector().fit(x, y)
    np.testing.assert_allclose(det.score(test).numpy(), md_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(det.score(test, relative=True).numpy(), rel_ref, rtol=1e-8, atol=1e-8)
    chunked = S.MahalanobisDetector(budget=TINY).fit(x, y)
    np.testing.assert_allclose(chunked.score(test).numpy(), md_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(chunked.score(test, relative=True).numpy(), rel_ref, rtol=1e-8, atol=1e-8)
    assert det.score(test).dtype == torch.float64


def test_mahalanobis_single_sample_class_kept_as_mean_only():
    x, y = clustered([30, 40, 1], 5, 2)
    with pytest.warns(UserWarning, match="single training sample"):
        det = S.MahalanobisDetector().fit(x, y)
    md_ref, _ = maha_reference(x, y, x)  # the reference leaves the singleton out of the covariance too
    np.testing.assert_allclose(det.score(x).numpy(), md_ref, rtol=1e-8, atol=1e-8)
    # its mean is kept: the singleton image sits exactly on a class centre (distance 0)
    assert abs(float(det.score(x[-1:]))) < 1e-8
    with pytest.raises(ValueError, match="single training sample"):
        S.MahalanobisDetector().fit(x[:3], torch.tensor([0, 1, 2]))


def test_mahalanobis_bad_input():
    x, y = clustered([10, 10], 4, 3)
    with pytest.raises(RuntimeError, match="fit"):
        S.MahalanobisDetector().score(x)
    det = S.MahalanobisDetector().fit(x, y)
    with pytest.raises(ValueError, match="dimension"):
        det.score(torch.randn(3, 5))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        det.score(bad)
    with pytest.raises(ValueError, match="labels"):
        S.MahalanobisDetector().fit(x, y[:-1])


# ---------------------------------------------------------------- PLP

def test_plp_schedule():
    lr = S._cosine_lr(1.0, 100, 0.1)
    assert len(lr) == 100 and lr[0] == 0 and lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert np.all(np.diff(lr[10:]) <= 1e-12) and lr[-1] < 1e-3


def test_plp_fit_score_dense_seeded_chunked():
    x, y = clustered([60, 60, 60], 6, 4)
    probe = S.fit_plp(x, y, epochs=30, batch_size=64, lr=0.05, seed=0)
    assert (probe.predict(x) == y).float().mean() > 0.95
    again = S.fit_plp(x, y, epochs=30, batch_size=64, lr=0.05, seed=0)
    assert torch.equal(probe.weight, again.weight)
    test = torch.randn(9, 6, generator=torch.Generator().manual_seed(5))
    z = (F.normalize(test, dim=1) - probe.mean) / probe.std
    dense = torch.softmax(z @ probe.weight.T + probe.bias, dim=1).max(1).values
    torch.testing.assert_close(probe.score(test), dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.score(test, budget=TINY), dense, rtol=1e-5, atol=1e-6)
    assert probe.params["lr"] == 0.05 and probe.params["batch_size"] == 64


def test_plp_pseudo_labels_and_bad_labels():
    img, txt = unit(20, 8, 6), unit(4, 8, 7)
    assert torch.equal(S.plp_pseudo_labels(img, txt), torch.as_tensor(cos(img, txt).argmax(1)))
    with pytest.raises(ValueError, match="pseudo-labels"):
        S.fit_plp(img, torch.full((20,), 5), n_classes=4, epochs=1)


# ---------------------------------------------------------------- NegLabel negative mining

def known_quantile_case():
    """19 positives at e1, one at e2. Candidates: e2 (close to ONE positive), 0.3 e1 + e3, e3, e1.

    0.95-quantile of the 20 similarities (linear interpolation at 18.05 of 0..19): e2 -> 0.05,
    0.3e1+e3 -> 0.3/sqrt(1.09), e3 -> 0, e1 -> 1. The two most dissimilar are e3 and e2; a
    max-similarity criterion would instead reject e2 (max = 1).
    """
    e = torch.eye(3)
    pos = torch.cat([e[:1].repeat(19, 1), e[1:2]])
    corpus_text = torch.stack([e[1], 0.3 * e[0] + e[2], e[2], e[0]])
    return pos, corpus_text


def test_negative_similarity_known_values_and_selection():
    pos, ct = known_quantile_case()
    stat = S.negative_similarity(pos, ct)
    np.testing.assert_allclose(stat.numpy(), [0.05, 0.3 / math.sqrt(1.09), 0.0, 1.0], atol=1e-6)
    torch.testing.assert_close(S.negative_similarity(pos, ct, budget=TINY), stat)
    cand = torch.arange(4)
    assert S.select_negatives(pos, ct, cand, 2).tolist() == [2, 0]
    assert S.select_negatives(pos, ct, cand, 2, budget=TINY).tolist() == [2, 0]
    assert S.select_negatives(pos, ct, cand, None).tolist() == [0, 1, 2, 3]
    assert S.select_negatives(pos, ct, cand, "all").tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("q", [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize("p", [1, 2, 7, 1000])
def test_quantile_rows_matches_torch_quantile(q, p):
    s = torch.randn(13, p, generator=torch.Generator().manual_seed(p))
    torch.testing.assert_close(S.quantile_rows(s, q), torch.quantile(s, q, dim=1))


def test_negative_similarity_matches_numpy_quantile():
    pos, cand = unit(13, 6, 8), unit(40, 6, 9)
    ref = np.quantile(cos(cand, pos), 0.95, axis=1)
    np.testing.assert_allclose(S.negative_similarity(pos, cand, budget=TINY).numpy(), ref, atol=1e-6)


def test_select_negatives_clamps_k_with_warning():
    pos, ct = known_quantile_case()
    with pytest.warns(UserWarning, match="K=10"):
        out = S.select_negatives(pos, ct, torch.arange(4), 10)
    assert sorted(out.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="K"):
        S.select_negatives(pos, ct, torch.arange(4), 0)


def test_neglabel_mine_excludes_gt_and_reports_missing():
    pos, ct = known_quantile_case()
    corpus = Corpus("toy", ("a", "b", "c", "d"), ("",) * 4, ("n",) * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = S.neglabel_mine(["d"], ct[3:], corpus, ct, k=2)
    assert m.pos.tolist() == [3] and m.neg.tolist() == [0, 2] and m.params["missing"] == []
    with pytest.warns(UserWarning, match="not in corpus"):
        m = S.neglabel_mine(["d", "zebra"], torch.cat([ct[3:], ct[1:2]]), corpus, ct, k=None)
    assert m.params["missing"] == ["zebra"] and m.neg.tolist() == [0, 1, 2]


def test_prune_negatives_reuses_selection():
    ct = unit(30, 8, 10)
    mined = posmine(torch.tensor([0, 0, 3, 3, 3, 7, 7]), toy_corpus(30), m=2)
    pruned = S.prune_negatives(mined, ct, 5)
    expected = S.select_negatives(ct[mined.pos], ct, mined.neg, 5)
    assert pruned.neg.tolist() == sorted(expected.tolist()) and pruned.params["K"] == 5
    assert torch.equal(pruned.pos, mined.pos)
    assert torch.equal(S.prune_negatives(mined, ct, None).neg, mined.neg)


# ---------------------------------------------------------------- grouping (Fig. 10)

def test_grouping_g1_equals_eq1(data):
    for tau in (0.05, S.default_tau(100.0)):
        g1 = S.grouped_eq1_score(data["img"], data["pos"], data["neg"], tau, n_groups=1)
        torch.testing.assert_close(g1, S.eq1_score(data["img"], data["pos"], data["neg"], tau), rtol=1e-5, atol=1e-9)


def test_grouping_dense_and_chunked(data):
    tau, g = 0.05, 3  # 11 negatives -> 3 groups of 3, 2 dropped
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(4))[:9]
    sp = np.exp(cos(data["img"], data["pos"]) / tau).sum(1)
    sn = np.exp(cos(data["img"], data["neg"][perm]) / tau).reshape(-1, g, 3).sum(2)
    dense = (sp[:, None] / (sp[:, None] + sn)).mean(1)
    got = S.grouped_eq1_score(data["img"], data["pos"], data["neg"], tau, n_groups=g, seed=4)
    np.testing.assert_allclose(got.numpy(), dense, rtol=1e-5)
    chunked = S.grouped_eq1_score(data["img"], data["pos"], data["neg"], tau, g, 4, budget=TINY)
    np.testing.assert_allclose(chunked.numpy(), dense, rtol=1e-5)
    with pytest.raises(ValueError, match="n_groups"):
        S.grouped_eq1_score(data["img"], data["pos"], data["neg"], tau, n_groups=12)


# ---------------------------------------------------------------- CLIPScope

def test_clipscope_score_dense_and_chunked(data):
    scale, counts = 30.0, torch.tensor([1.0, 4.0, 2.0, 8.0, 1.0])
    lp = scale * cos(data["img"], data["pos"])
    ln = scale * cos(data["img"], data["neg"])
    msp = np.exp(lp).max(1) / np.exp(lp).sum(1)
    pid = np.exp(lp).sum(1) / (np.exp(lp).sum(1) + np.exp(ln).sum(1))
    prior = (counts / counts.sum()).double().numpy()[lp.argmax(1)]
    dense = np.log(msp * pid / prior)
    for budget in (S.DEFAULT_BUDGET, TINY):
        got = S.clipscope_score(data["img"], data["pos"], data["neg"], scale, counts, budget=budget)
        np.testing.assert_allclose(got.numpy(), dense, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="class_counts"):
        S.clipscope_score(data["img"], data["pos"], data["neg"], scale, torch.zeros(5))


def test_clipscope_counts_and_mining():
    img, txt = unit(30, 8, 11), unit(4, 8, 12)
    counts = S.clipscope_class_counts(img, txt)
    hist = torch.bincount(S.plp_pseudo_labels(img, txt), minlength=4).double()
    assert counts.sum() == 34 and torch.equal(counts - 1, hist)
    # cosine to the single GT class e1: b ≈ 0.1, c = 0, d ≈ 0.89, e ≈ 0.999; "gt" itself is excluded by name.
    # Farthest two: c, b; nearest one: e.
    e = torch.eye(3)
    ct = torch.stack([e[0], F.normalize(0.1 * e[0] + e[1], dim=0), e[2], F.normalize(e[0] + 0.5 * e[1], dim=0),
                      F.normalize(e[0] + 0.05 * e[2], dim=0)])
    corpus = Corpus("toy", ("gt", "b", "c", "d", "e"), ("",) * 5, ("n",) * 5)
    m = S.clipscope_mine(["gt"], e[:1], corpus, ct, n_far=2, n_near=1, budget=TINY)
    assert m.pos.tolist() == [0] and m.neg.tolist() == [1, 2, 4]
    with pytest.warns(UserWarning, match="n_far"):
        S.clipscope_mine(["gt"], e[:1], corpus, ct, n_far=3, n_near=3)


# ---------------------------------------------------------------- Table 4 augmentation

def test_augment_positives_dense():
    ct, gt_idx = unit(40, 8, 13), [3, 17, 25]
    corpus = toy_corpus(40)
    names = [corpus.names[i] for i in gt_idx]
    top1 = cos(ct, ct[gt_idx]).max(1)
    top1[gt_idx] = -np.inf
    expected = np.argsort(-top1, kind="stable")[:6].tolist()
    for budget in (S.DEFAULT_BUDGET, TINY):
        m = S.augment_positives(ct[gt_idx], ct, corpus, n_aug=6, class_names=names, budget=budget)
        assert m.params["aug"].tolist() == expected
        assert m.pos.tolist() == sorted(gt_idx + expected) and len(m.neg) == 40 - 9
    by_feature = S.augment_positives(ct[gt_idx], ct, corpus, n_aug=6)
    assert by_feature.params["aug"].tolist() == expected
    with pytest.warns(UserWarning, match="K=100"):
        S.augment_positives(ct[gt_idx], ct, corpus, n_aug=100, class_names=names)
    with pytest.warns(UserWarning, match="not in corpus"):
        m = S.augment_positives(ct[gt_idx], ct, corpus, n_aug=2, class_names=names + ["unicorn"])
    assert m.params["missing"] == ["unicorn"]


# ---------------------------------------------------------------- bad input

def test_bad_inputs(data):
    img, pos, neg = data["img"], data["pos"], data["neg"]
    for tau in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            S.eq1_score(img, pos, neg, tau)
    with pytest.raises(ValueError, match="tau"):
        S.grouped_eq1_score(img, pos, neg, 0.0, n_groups=1)
    bad = img.clone()
    bad[4, 0] = float("nan")
    for fn in (lambda x: S.eq1_score(x, pos, neg, 0.1), lambda x: S.maxlogit_score(x, pos, 100.0),
               lambda x: S.mcm_score(x, pos)):
        with pytest.raises(ValueError, match="NaN"):
            fn(bad)
    with pytest.raises(ValueError, match="dimension"):
        S.eq1_score(img, pos, unit(3, 9, 0), 0.1)
    with pytest.raises(ValueError, match="dimension"):
        S.energy_score(unit(3, 9, 0), pos, 100.0)
    with pytest.raises(ValueError, match="dimension"):
        S.negative_similarity(pos, unit(3, 9, 0))


def test_empty_positives_after_mining_names_m():
    with pytest.raises(ValueError, match="M"):
        posmine(torch.tensor([0, 1, 2]), toy_corpus(5), m=2)
