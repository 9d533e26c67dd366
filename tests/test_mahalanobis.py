"""MD / relative MD against a NumPy float64 reference written out directly; chunked == unchunked."""
import numpy as np
import pytest
import torch

from clustermine_lib.mahalanobis import MahalanobisDetector, precision_matrix
from feature_helpers import TINY, clustered


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


def test_mahalanobis_matches_numpy_reference():
    x, y = clustered([30, 40, 25], 5, 0)
    test = torch.randn(17, 5, generator=torch.Generator().manual_seed(1))
    md_ref, rel_ref = maha_reference(x, y, test)
    det = MahalanobisDetector().fit(x, y)
    np.testing.assert_allclose(det.score(test).numpy(), md_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(det.score(test, relative=True).numpy(), rel_ref, rtol=1e-8, atol=1e-8)
    chunked = MahalanobisDetector(budget=TINY).fit(x, y)
    np.testing.assert_allclose(chunked.score(test).numpy(), md_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(chunked.score(test, relative=True).numpy(), rel_ref, rtol=1e-8, atol=1e-8)
    assert det.score(test).dtype == torch.float64


def test_mahalanobis_single_sample_class_kept_as_mean_only():
    x, y = clustered([30, 40, 1], 5, 2)
    with pytest.warns(UserWarning, match="single training sample"):
        det = MahalanobisDetector().fit(x, y)
    md_ref, _ = maha_reference(x, y, x)  # the reference leaves the singleton out of the covariance too
    np.testing.assert_allclose(det.score(x).numpy(), md_ref, rtol=1e-8, atol=1e-8)
    # its mean is kept: the singleton image sits exactly on a class centre (distance 0)
    assert abs(float(det.score(x[-1:]))) < 1e-8
    with pytest.raises(ValueError, match="single training sample"):
        MahalanobisDetector().fit(x[:3], torch.tensor([0, 1, 2]))


def test_mahalanobis_bad_input():
    x, y = clustered([10, 10], 4, 3)
    with pytest.raises(RuntimeError, match="fit"):
        MahalanobisDetector().score(x)
    det = MahalanobisDetector().fit(x, y)
    with pytest.raises(ValueError, match="dimension"):
        det.score(torch.randn(3, 5))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        det.score(bad)
    with pytest.raises(ValueError, match="labels"):
        MahalanobisDetector().fit(x, y[:-1])


def test_mahalanobis_numpy_input_equals_tensor_input():
    x, y = clustered([15, 20], 4, 5)
    test = torch.randn(6, 4, generator=torch.Generator().manual_seed(6))
    det = MahalanobisDetector().fit(x, y)
    from_numpy = MahalanobisDetector().fit(x.numpy(), y.numpy())
    for relative in (False, True):
        assert torch.equal(from_numpy.score(test.numpy(), relative), det.score(test, relative))


def _planted(d=8, seed=0):
    """Issue 17's covariance: V diag(1e-3, 5e-4, 2e-4, 1.6e-16, 0, 0, 0, 0) Vᵀ, V random orthogonal."""
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    w = torch.tensor([1e-3, 5e-4, 2e-4, 1.6e-16] + [0.0] * (d - 4), dtype=torch.float64)
    return (v * w) @ v.T, v


def test_precision_drops_a_planted_rounding_eigenvalue_that_pinv_keeps():
    cov, v = _planted()
    x = 1e-6 * v[:, 3]  # a point 1e-6 from the mean along the planted direction
    pinv = torch.linalg.pinv(cov, hermitian=True)  # default cutoff ≈ 8 eps 1e-3 ≈ 1.8e-18 keeps 1.6e-16
    assert float(torch.linalg.eigvalsh(pinv).max()) == pytest.approx(6.25e15, rel=1e-3)
    assert float(x @ pinv @ x) == pytest.approx(6.25e3, rel=1e-3)
    prec = precision_matrix(cov)  # rtol 1e-10: cutoff 1e-13
    assert float(torch.linalg.eigvalsh(prec).max()) == pytest.approx(1 / 2e-4, rel=1e-9)
    assert abs(float(x @ prec @ x)) < 1e-12
    # on a well-conditioned covariance it is the inverse (PLP's .inverse())
    full = cov + 1e-4 * torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(precision_matrix(full), torch.linalg.inv(full), rtol=1e-9, atol=1e-6)
    with pytest.raises(ValueError, match="rtol"):
        precision_matrix(cov, rtol=1.0)


def test_mahalanobis_on_rank_deficient_features_ignores_the_planted_direction():
    """Unit features of two classes spread over e1..e3 (σ = 0.03) with a planted 1.26e-8 spread along e4
    (variance 1.6e-16, rounding size) and nothing along e5..e7: a training image moved 1e-6 along e4 keeps
    its score under the relative cutoff, and moves ~6e3 away without it."""
    g = torch.Generator().manual_seed(4)
    d, n = 8, 200
    rows = []
    for c in range(2):
        x = torch.zeros(n, d, dtype=torch.float64)
        x[:, c] = 1.0
        x[:, 2:5] = 0.03 * torch.randn(n, 3, generator=g, dtype=torch.float64)
        x[:, 5] = 1.26e-8 * torch.randn(n, generator=g, dtype=torch.float64)
        rows.append(x / x.norm(dim=1, keepdim=True))
    x, y = torch.cat(rows), torch.arange(2).repeat_interleave(n)
    det = MahalanobisDetector().fit(x, y)
    probe = x[:1].clone()
    probe[0, 5] += 1e-6  # still unit to 1e-12
    assert abs(float(det.score(probe) - det.score(x[:1]))) < 1e-3
    # no cutoff beyond positivity keeps the planted eigenvalue (so does pinv's default: -6.7e3, measured)
    loose = MahalanobisDetector(rtol=0.0).fit(x, y)
    assert abs(float(loose.score(probe) - loose.score(x[:1]))) > 1e3


def test_drop_singletons_removes_their_means_as_plp():
    x, y = clustered([30, 40, 1], 5, 2)
    with pytest.warns(UserWarning, match="dropped"):
        det = MahalanobisDetector(drop_singletons=True).fit(x, y)
    assert det.means.shape[0] == 2 and det.classes.tolist() == [0, 1]
    # the singleton image no longer sits on a class centre; the other classes score as before
    assert -float(det.score(x[-1:])) > 1e-3
    with pytest.warns(UserWarning):
        kept = MahalanobisDetector().fit(x, y)
    torch.testing.assert_close(det.score(x[:70]), kept.score(x[:70]))
