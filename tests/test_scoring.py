"""Every score against a direct dense formula on small inputs; chunked == unchunked (tiny budget)."""
import numpy as np
import pytest
import torch

from clustermine_lib import dense as D
from clustermine_lib import metrics
from clustermine_lib import scoring as S
from feature_helpers import TINY, cos, unit


@pytest.fixture
def data():
    return {"img": unit(23, 8, 0), "pos": unit(5, 8, 1), "neg": unit(11, 8, 2)}


# ---------------------------------------------------------------- Eq. 1, MCM

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
    lse = D.lse_rows(data["img"], shared, tau)
    np.testing.assert_allclose(lse.numpy(), np.log(np.exp(cos(data["img"], shared) / tau).sum(1)), rtol=1e-5)
    whole = S.eq1_logit(data["img"], data["pos"], data["neg"], tau)
    for text in (rest, rest[:0]):  # with and without negatives of its own
        lse_all = lse if len(text) else D.lse_rows(data["img"], data["neg"], tau)
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
        for budget in (D.DEFAULT_BUDGET, TINY):
            got = S.energy_score(data["img"], data["pos"], scale, temperature=t, budget=budget)
            np.testing.assert_allclose(got.numpy(), dense, rtol=1e-5)
    torch.testing.assert_close(S.maxlogit_score(data["img"], data["pos"], scale, budget=TINY),
                               S.maxlogit_score(data["img"], data["pos"], scale))
    with pytest.raises(ValueError, match="logit_scale"):
        S.energy_score(data["img"], data["pos"], 0.0)


def _images_with_cosines(rows):
    """Unit image features and unit class text features whose cosines are exactly ``rows`` (N, C):
    orthonormal class texts e_1..e_C, images = cosines on them + the rest of the norm on an extra axis."""
    c = torch.tensor(rows, dtype=torch.float64)
    n, k = c.shape
    text = torch.eye(k + 1, dtype=torch.float64)[:k]
    img = torch.cat([c, (1 - (c ** 2).sum(1, keepdim=True)).sqrt()], 1)
    return img.float(), text.float()


def test_energy_default_is_plain_cosine_and_ranks_like_the_official_code():
    # Issue 17's worked example: a: cos (0.30, 0.10, 0.10), b: (0.25, 0.22, 0.22).
    img, text = _images_with_cosines([[0.30, 0.10, 0.10], [0.25, 0.22, 0.22]])
    plain = S.energy_score(img, text)  # MCM / PLP / OpenOOD: logsumexp of plain cosines, T = 1
    np.testing.assert_allclose(plain.numpy(), [np.log(np.exp(.3) + 2 * np.exp(.1)),
                                               np.log(np.exp(.25) + 2 * np.exp(.22))], rtol=1e-6)
    np.testing.assert_allclose(plain.numpy(), [1.2698, 1.3287], atol=1e-4)
    assert plain[1] > plain[0]  # b ranks as more ID
    scaled = S.energy_score(img, text, 100.0)  # the logit-scaled option: a ranks as more ID
    np.testing.assert_allclose(scaled.numpy(), [30.0000, 25.0949], atol=1e-3)
    assert scaled[0] > scaled[1]


# ---------------------------------------------------------------- grouping (Fig. 10)

def test_grouping_g1_equals_eq1(data):
    for tau in (0.05, S.default_tau(100.0)):
        g1 = S.grouped_eq1_score(data["img"], data["pos"], data["neg"], tau, n_groups=1)
        # Both sum the same float32 logits cos / tau, in a different order (one chunk of all columns here,
        # column tiles per part in eq1_logit): they agree to float32 rounding of log-sums of size ~1 / tau
        # (seen up to ~0.3 eps / tau over random inputs), not to float64, so atol = eps / tau (2e-6 at
        # tau = 0.05, 1.2e-4 at 1e-3); atol=1e-9 failed intermittently on 1e-7 differences.
        atol = torch.finfo(torch.float32).eps / tau
        torch.testing.assert_close(g1, S.eq1_score(data["img"], data["pos"], data["neg"], tau), rtol=1e-5, atol=atol)


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
    for budget in (D.DEFAULT_BUDGET, TINY):
        got = S.clipscope_score(data["img"], data["pos"], data["neg"], scale, counts, budget=budget)
        np.testing.assert_allclose(got.numpy(), dense, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="class_counts"):
        S.clipscope_score(data["img"], data["pos"], data["neg"], scale, torch.zeros(5))


def test_clipscope_online_prior_worked_example():
    # Issue 17's example: x1, x2 (ID, ŷ = 0, MSP·P_ID 0.8, 0.7), o1 (OOD, ŷ = 1, 0.3), two classes.
    pred, base = torch.tensor([0, 0, 1]), torch.tensor([0.8, 0.7, 0.3], dtype=torch.float64)
    first = base / S.clipscope_online_prior(pred, 2, torch.tensor([0, 1, 2]))  # stream x1, x2, o1
    np.testing.assert_allclose(first.numpy(), [1.6, 1.05, 1.2])
    assert metrics.auroc(first[:2], first[2:]) == 0.5  # o1 lands above x2
    last = base / S.clipscope_online_prior(pred, 2, torch.tensor([2, 0, 1]))  # stream o1, x1, x2
    np.testing.assert_allclose(last.numpy(), [2.4, 1.4, 0.6])
    fixed = base / (torch.tensor([6.0, 6.0]) / 12)[pred]  # a training histogram (1 + 5, 1 + 5)
    np.testing.assert_allclose(fixed.numpy(), [1.6, 1.4, 0.6])
    with pytest.raises(ValueError, match="permutation"):
        S.clipscope_online_prior(pred, 2, torch.tensor([0, 0, 1]))


def test_clipscope_online_scores_equal_a_sequential_histogram(data):
    """The official loop re-stated: histogram of ones, each image scored with the histogram before its
    own count, then counted, over a seeded stream of ID ∪ OOD."""
    scale, id_img, ood_img = 30.0, data["img"][:7], unit(5, data["img"].shape[1], 21)
    got_id, got_ood = S.clipscope_online_scores(id_img, ood_img, data["pos"], data["neg"], scale, seed=3)
    x = torch.cat([id_img, ood_img])
    lp, ln = scale * cos(x, data["pos"]), scale * cos(x, data["neg"])
    count = np.ones(data["pos"].shape[0])
    want = np.empty(len(x))
    for i in torch.randperm(len(x), generator=torch.Generator().manual_seed(3)).tolist():
        probs = np.exp(lp[i]) / np.exp(lp[i]).sum()
        y = int(probs.argmax())
        p_id = np.exp(lp[i]).sum() / (np.exp(lp[i]).sum() + np.exp(ln[i]).sum())
        want[i] = np.log(probs[y] * p_id / (count[y] / count.sum()))
        count[y] += 1
    np.testing.assert_allclose(torch.cat([got_id, got_ood]).numpy(), want, rtol=1e-5, atol=1e-6)
    # a fresh histogram per call: the same ID images score differently against another OOD set
    other_id, _ = S.clipscope_online_scores(id_img, ood_img[:2], data["pos"], data["neg"], scale, seed=3)
    assert not torch.equal(other_id, got_id)


def test_clipscope_class_counts():
    img, txt = unit(30, 8, 11), unit(4, 8, 12)
    counts = S.clipscope_class_counts(img, txt)
    hist = torch.bincount(D.zero_shot_top1(img, txt)[0], minlength=4).double()
    assert counts.sum() == 34 and torch.equal(counts - 1, hist)
    assert torch.equal(S.clipscope_class_counts(img.numpy(), txt.numpy()), counts)


# ---------------------------------------------------------------- NumPy input, bad input

def test_default_tau():
    assert S.default_tau(100.0) == 1e-3 and S.default_tau(100) == S.default_tau(100.0)
    assert S.default_tau(50.0, factor=1.0) == 0.02


def test_numpy_input_equals_tensor_input(data):
    img, pos, neg = data["img"], data["pos"], data["neg"]
    npy = {k: v.numpy() for k, v in data.items()}
    tau, scale, counts = 0.05, 30.0, torch.tensor([1.0, 4.0, 2.0, 8.0, 1.0])
    lse = D.lse_rows(img, neg[:6], tau)
    pairs = [
        (S.eq1_logit(npy["img"], npy["pos"], npy["neg"], tau), S.eq1_logit(img, pos, neg, tau)),
        (S.eq1_logit(npy["img"], npy["pos"], npy["neg"][6:], tau, neg_lse=lse.numpy()),
         S.eq1_logit(img, pos, neg[6:], tau, neg_lse=lse)),
        (S.eq1_score(npy["img"], npy["pos"], npy["neg"], tau), S.eq1_score(img, pos, neg, tau)),
        (S.grouped_eq1_score(npy["img"], npy["pos"], npy["neg"], tau, n_groups=3),
         S.grouped_eq1_score(img, pos, neg, tau, n_groups=3)),
        (S.mcm_score(npy["img"], npy["pos"]), S.mcm_score(img, pos)),
        (S.maxlogit_score(npy["img"], npy["pos"], np.float32(scale)), S.maxlogit_score(img, pos, scale)),
        (S.energy_score(npy["img"], npy["pos"], scale), S.energy_score(img, pos, scale)),
        (S.clipscope_score(npy["img"], npy["pos"], npy["neg"], scale, counts.numpy()),
         S.clipscope_score(img, pos, neg, scale, counts)),
    ]
    for got, expected in pairs:
        assert torch.equal(got, expected)
    # float64 arrays (NumPy's default) are scored as float32, like float64 tensors
    assert torch.equal(S.mcm_score(img.double().numpy(), pos.double().numpy()), S.mcm_score(img.double(), pos))




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
    with pytest.raises(ValueError, match="temperature"):
        S.mcm_score(img, pos, temperature=0)
    with pytest.raises(ValueError, match="logit_scale"):
        S.default_tau(0.0)


