"""MD / relative MD against a NumPy float64 reference written out directly; chunked == unchunked."""
import numpy as np
import pytest
import torch

from clustermine_lib.mahalanobis import MahalanobisDetector
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
