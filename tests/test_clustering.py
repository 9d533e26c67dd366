"""Tests for clustermine_lib.clustering: exact kNN and batched multi-head TEMI."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from clustermine_lib.clustering import PLATEAU_TOL, TEMIConfig, _forward, _init_heads, fit_temi, plateau_ratio
from clustermine_lib.temi_loss import temi_head_losses
from clustermine_lib.knn import knn_indices


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tensors are tiny, so intra-op threads only add sync overhead, and on a busy 2-core
    runner OpenMP spin-waits make a 2-second fit take ~40 s. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dense_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Brute-force reference: full similarity matrix, self removed by index."""
    xn = F.normalize(x.double(), dim=1)
    sims = xn @ xn.T
    sims.fill_diagonal_(-float("inf"))
    return sims.topk(k, dim=1).indices


# ---------------------------------------------------------------- kNN
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 100, 203, 4096])
def test_knn_equals_dense_reference(chunk_size):
    x = torch.randn(203, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = knn_indices(x, k=9, chunk_size=chunk_size)
    assert got.shape == (203, 9) and got.dtype == torch.long
    assert torch.equal(got, dense_knn(x, 9))


def test_knn_float32_and_unnormalised_input_matches_reference_similarities():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(150, 8, generator=g) * torch.rand(150, 1, generator=g) * 10
    got = knn_indices(x, k=5, chunk_size=32)
    xn = F.normalize(x.double(), dim=1)
    sims = xn @ xn.T
    sims.fill_diagonal_(-float("inf"))
    # compare similarity values (robust to float32 near-ties), not just indices
    assert torch.allclose(sims.gather(1, got), sims.topk(5, dim=1).values, atol=1e-6)


@pytest.mark.parametrize("n,chunk_size", [(65, 64), (129, 64), (97, 32), (30, 4096)])
def test_knn_never_contains_self_with_exact_duplicates(n, chunk_size):
    # every point appears three times (plus a tail), so several rows tie with self exactly
    base = torch.randn((n + 2) // 3, 6, generator=torch.Generator().manual_seed(n))
    x = base.repeat_interleave(3, dim=0)[:n]
    knn = knn_indices(x, k=2, chunk_size=chunk_size)
    rows = torch.arange(n)
    assert not (knn == rows[:, None]).any()
    # a point with two exact copies has exactly those copies as its 2 nearest neighbours
    group = rows // 3
    full = torch.bincount(group)[group] == 3
    assert (group[knn][full] == group[full][:, None]).all()


def test_knn_all_identical_points_excludes_self():
    x = torch.ones(70, 4)
    knn = knn_indices(x, k=69, chunk_size=16)
    for i in range(70):
        assert sorted(knn[i].tolist()) == [j for j in range(70) if j != i]


@pytest.mark.parametrize("k", [0, 10, 11])
def test_knn_rejects_bad_k(k):
    with pytest.raises(ValueError, match=r"k=.*1 <= k <= N-1 = 9"):
        knn_indices(torch.randn(10, 3), k=k)


# ---------------------------------------------------------------- batched heads and loss
def test_batched_forward_equals_per_head_modules():
    cfg = TEMIConfig(n_clusters=7, n_heads=3, hidden=16, bottleneck=8)
    p = _init_heads(cfg, 5, torch.Generator().manual_seed(0))
    p["g"] = p["g"] * torch.rand(3, 1, 7) + 0.5  # trained gains are not all 1
    x = torch.randn(4, 5)
    out = _forward(p, x, temp=0.1)
    for h in range(3):
        z = F.gelu(x @ p["w1"][h] + p["b1"][h]) @ p["w2"][h] + p["b2"][h]
        z = F.normalize(z, dim=-1)
        weight = p["v"][h].T  # nn.Linear layout (C, bottleneck); weight_norm over dim 0
        weight = p["g"][h].T * weight / weight.norm(dim=1, keepdim=True)
        assert torch.allclose(out[h], (z @ weight.T) / 0.1, atol=1e-5)


def loop_reference_loss(student_logits, teacher_probs, pk, beta, temp):
    """Per-head Python loop in the official form: -w * log sum_k (p_s p_t)^beta / pk."""
    heads, two_b, _ = student_logits.shape
    b = two_b // 2
    weight = sum((teacher_probs[h, :b] * teacher_probs[h, b:]).sum(-1) for h in range(heads)) / heads
    losses = []
    for h in range(heads):
        ps = F.softmax(student_logits[h] / temp, dim=-1)
        pt = teacher_probs[h]
        total = 0.0
        for v_s, v_t in [(1, 0), (0, 1)]:  # student view, teacher view (never the same)
            s_rows = ps[v_s * b:(v_s + 1) * b]
            t_rows = pt[v_t * b:(v_t + 1) * b]
            pmi = torch.log((((s_rows * t_rows) ** beta) / pk[h]).sum(-1))
            total = total + (-(weight * pmi)).mean()
        losses.append(total / 2)
    return torch.stack(losses)


def test_batched_loss_equals_per_head_loop_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    heads, b, c = 4, 6, 9
    logits = (torch.randn(heads, 2 * b, c, generator=g, dtype=torch.float64) * 3).requires_grad_()
    teacher = F.softmax(torch.randn(heads, 2 * b, c, generator=g, dtype=torch.float64) * 3, -1)
    pk = F.softmax(torch.randn(heads, c, generator=g, dtype=torch.float64), -1)
    got = temi_head_losses(logits, teacher, pk, beta=0.6, student_temp=0.1)
    ref = loop_reference_loss(logits, teacher, pk, beta=0.6, temp=0.1)
    assert got.shape == (heads,)
    assert got.dtype == torch.float64
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
    grad_got, = torch.autograd.grad(got.sum(), logits)
    grad_ref, = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(grad_got, grad_ref, rtol=1e-8, atol=1e-12)


def test_loss_finite_when_teacher_probabilities_underflow_to_zero():
    teacher = torch.zeros(2, 4, 5)
    teacher[..., 0] = 1.0  # one-hot teacher: (p_s p_t)^beta has an infinite slope at the zeros
    logits = torch.randn(2, 4, 5).mul(30).requires_grad_()
    loss = temi_head_losses(logits, teacher, torch.full((2, 5), 0.2))
    grad, = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


# ---------------------------------------------------------------- end-to-end TEMI
def planted_blobs(n=300, d=32, classes=10, noise=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, d, generator=g), dim=1)
    y = torch.arange(n) % classes
    x = F.normalize(centres[y] + noise * torch.randn(n, d, generator=g), dim=1)
    return x, y


def small_config(**kw):
    kw = {"n_clusters": 10, "n_heads": 3, "k": 10, "epochs": 30, "batch_size": 64, "lr": 1e-2, "min_lr": 1e-4, **kw}
    return TEMIConfig.demo(kw.pop("n_clusters"), **kw)


@pytest.fixture(scope="module")
def blobs_fit():
    x, y = planted_blobs()
    return x, y, fit_temi(x, small_config(), progress=False)


def test_temi_recovers_planted_clusters(blobs_fit):
    x, y, res = blobs_fit
    assert res.labels.shape == (len(x),) and res.labels.dtype == torch.long
    assert adjusted_rand_score(y.numpy(), res.labels.numpy()) >= 0.9
    assert res.head_losses.shape == (3,) and res.best_head == int(res.head_losses.argmin())
    assert torch.equal(res.predict(x), res.labels)


def test_temi_standardize_handles_common_offset():
    # CLIP-like features share a big common direction; without z-scoring, all heads start with
    # near-identical outputs and TEMI collapses to one cluster on exactly this data
    x, y = planted_blobs()
    offset = F.normalize(torch.randn(32, generator=torch.Generator().manual_seed(5)), dim=0)
    res = fit_temi(x + 3 * offset, small_config(), progress=False)
    assert adjusted_rand_score(y.numpy(), res.labels.numpy()) >= 0.9
    with pytest.warns(RuntimeWarning, match="TEMI did not converge"):
        fit_temi(x + 3 * offset, small_config(standardize=False), progress=False)


def test_temi_same_seed_same_labels(blobs_fit):
    x, _, res = blobs_fit
    again = fit_temi(x, small_config(), progress=False)
    assert torch.equal(again.labels, res.labels)
    assert torch.equal(again.head_losses, res.head_losses)


def test_temi_accepts_precomputed_knn_and_returns_probs():
    x, _ = planted_blobs(n=120)
    cfg = small_config(epochs=5, k=5)
    knn = knn_indices(x, k=8)  # wider than k: only the first k columns are used
    with pytest.warns(RuntimeWarning, match="cannot be judged"):  # 5 steps
        res = fit_temi(x, cfg, knn=knn, progress=False, return_probs=True)
    assert res.probs.shape == (120, 10)
    assert torch.allclose(res.probs.sum(1), torch.ones(120), atol=1e-5)
    assert torch.equal(res.probs.argmax(1), res.labels)
    assert torch.equal(res.predict(x), res.labels)  # predict re-applies the standardisation
    with pytest.warns(RuntimeWarning, match="plateaued"):
        assert torch.equal(fit_temi(x, cfg, knn=knn[:, :5], progress=False).labels, res.labels)


# ---------------------------------------------------------------- validation
def test_too_many_clusters_message():
    x = torch.randn(50, 4)
    with pytest.raises(ValueError, match=r"C=60 is larger than the number of images N=50; lower n_clusters"):
        fit_temi(x, small_config(n_clusters=60), progress=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_rejected(bad):
    x = torch.randn(50, 4)
    x[7, 2] = bad
    with pytest.raises(ValueError, match=r"features contains NaN or Inf.*\[7\]"):
        fit_temi(x, small_config(), progress=False)
    with pytest.raises(ValueError, match="NaN or Inf"):
        knn_indices(x, k=3)


def test_features_must_be_2d():
    with pytest.raises(ValueError, match=r"features must be 2-D \(N, D\)"):
        fit_temi(torch.randn(50), small_config(), progress=False)
    with pytest.raises(ValueError, match="2-D"):
        knn_indices(torch.randn(5, 4, 3), k=2)


def test_k_too_large_for_temi():
    with pytest.raises(ValueError, match=r"k=50 is out of range"):
        fit_temi(torch.randn(40, 4), small_config(k=50, n_clusters=4), progress=False)


def test_bad_precomputed_knn_rejected():
    x = torch.randn(40, 4)
    with pytest.raises(ValueError, match=r"knn must have shape \(N=40, >=k=10\)"):
        fit_temi(x, small_config(n_clusters=4), knn=torch.zeros(40, 3, dtype=torch.long),
                 progress=False)


def test_knn_queries_against_a_reference_set():
    g = torch.Generator().manual_seed(3)
    ref, q = torch.randn(80, 6, generator=g), torch.randn(13, 6, generator=g)
    got = knn_indices(ref, k=4, chunk_size=5, queries=q)
    sims = F.normalize(q, dim=1) @ F.normalize(ref, dim=1).T
    assert got.shape == (13, 4)
    assert torch.allclose(sims.gather(1, got), sims.topk(4, dim=1).values)


# ---------------------------------------------------------------- convergence
def test_plateau_ratio_known_curves():
    t = torch.arange(1000.0)
    assert plateau_ratio(-(1 - torch.exp(-t / 100))) < 1e-3  # saturated exponential: converged
    # linear: slope -1, 100 of the 994.5 between the first 1 % (mean -4.5) and the end (-999)
    assert plateau_ratio(-t) == pytest.approx(100 / 994.5)
    noisy = -(1 - torch.exp(-t / 100)) + 0.05 * torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert plateau_ratio(noisy) < PLATEAU_TOL  # noise around a plateau is not a trend
    # still falling at the end (exp with a long time constant): not converged
    assert plateau_ratio(-(1 - torch.exp(-t / 600))) > PLATEAU_TOL
    assert plateau_ratio(torch.zeros(50)) == float("inf")  # never fell
    assert plateau_ratio(-t[:9]) == float("inf")  # too short to judge
    assert plateau_ratio(torch.cat([-(1 - torch.exp(-t / 50)), torch.full((200,), -0.9)])) < 0  # ends rising


def test_temi_records_curve_and_converges_on_planted_blobs(blobs_fit):
    _, _, res = blobs_fit
    assert res.loss_curve.shape == (30 * 4,) and torch.isfinite(res.loss_curve).all()
    assert res.converged and res.plateau < PLATEAU_TOL
    assert res.loss_curve[-10:].mean() < res.loss_curve[:5].mean()


def test_temi_warns_when_stopped_early():
    x, _ = planted_blobs()
    with pytest.warns(RuntimeWarning, match=r"stopped before its loss plateaued.*criterion: < 2%.*Raise epochs \(now 4\)"):
        res = fit_temi(x, small_config(epochs=4, lr=1e-3, min_lr=1e-3), progress=False)
    assert not res.converged and res.plateau > PLATEAU_TOL


def test_no_spurious_divergence_warning_for_few_clusters():
    """Two well-separated blobs, C = 2: TEMI is confident; the near-uniform check must not fire (3 / C >= 1)."""
    import warnings

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 8, generator=g) + 6, torch.randn(200, 8, generator=g) - 6])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fit_temi(x, TEMIConfig.demo(2, epochs=20, k=5, seed=0), progress=False)
    assert not [w for w in caught if "did not converge" in str(w.message)]
    assert r.confidence.mean() > 0.75
