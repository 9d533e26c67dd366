"""Mahalanobis distance (MD, Lee et al. 2018) and relative MD (Ren et al. 2021) as OOD scores.

Image features only (no text), L2-normalised like every other score, everything in float64; fitted
on (pseudo-)labelled ID training features: with PLP's zero-shot pseudo-labels, or with the mined
Y_pos (Table 8). One class, ``MahalanobisDetector``; scores are "higher = more ID" as in ``scoring``.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .dense import DEFAULT_BUDGET, rows_per_chunk
from .validation import check_ids, check_is_fitted, check_matrix


DEFAULT_RTOL = 1e-10  # experiments.Settings.md_rtol: relative eigenvalue cutoff of the precision matrices


def _unit64(x: torch.Tensor, device) -> torch.Tensor:
    return F.normalize(x.to(device, torch.float64), dim=-1)


def precision_matrix(cov: torch.Tensor, rtol: float = DEFAULT_RTOL) -> torch.Tensor:
    """Inverse of a symmetric covariance on the span of its eigenvalues >= ``rtol · λ_max`` (float64).

    ``eigh`` of ``cov``; eigenvalues below the cutoff (rounding noise of a rank-deficient covariance, and
    any negative ones) are dropped, the others inverted. On a well-conditioned covariance this is the
    inverse that PLP's ``eval/ood_scores.py`` (``compute_maha_vals``, ``.inverse()``) takes, to rounding.
    On a rank-deficient one (D > samples per class, or L2-normalised features) the inverse does not exist,
    and ``torch.linalg.pinv``'s default cutoff (≈ D · eps · λ_max) can keep an eigenvalue of ~1e-16: its
    precision ~1e16 then dominates every distance (measured on the simulated benchmark, issue 17).
    rtol = 1e-10 lies far above that rounding noise (~1e-13 relative) and far below the genuine smallest
    variances of CLIP features.
    """
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol must be in [0, 1), got {rtol}.")
    w, v = torch.linalg.eigh(cov.double())
    keep = w > rtol * w.max().clamp_min(0)
    if rtol == 0:
        keep &= w > 0
    vk = v[:, keep]
    return (vk / w[keep]) @ vk.T


class MahalanobisDetector:
    """MD (Lee et al. 2018) and relative MD (Ren et al. 2021) with one shared precision matrix.

    ``fit(features (N, D), labels (N,))``: class means from the (pseudo-)labelled ID training
    features; shared covariance = unweighted mean over classes of the per-class covariances
    (unbiased, ``n_c - 1``), as PLP's official ``compute_maha_vals``; global mean / covariance over
    all training features. Precisions are inverses on the eigenvalues >= ``rtol · λ_max``
    (``precision_matrix``): the inverse when the covariance is well conditioned (PLP's ``.inverse()``),
    finite and free of rounding-noise directions when it is singular (D > samples per class). Everything
    is float64.

    ``score(features, relative=False)`` returns (N,) float64, higher = more ID:
    MD = ``-min_c d_c(x)``; relative MD = ``-min_c (d_c(x) - d_0(x))`` with
    ``d_c(x) = (x - μ_c)ᵀ P (x - μ_c)`` and ``d_0`` the distance to the global mean under the global
    precision. ``d_c`` is expanded as ``xᵀPx - 2 xᵀPμ_c + μ_cᵀPμ_c`` and computed in row chunks of
    ``budget // C`` images, so no (N, C, D) tensor is ever formed.

    Classes with a single sample (no covariance): by default their mean is kept as a class centre (it is
    still the best estimate of where that class lives), but they are left out of the shared covariance,
    and a warning says how many. ``drop_singletons=True`` drops them entirely, as PLP's code does; with the
    paper's ImageNet training labels (~1,281 images per class) no class is a singleton, so the choice
    cannot move its numbers. At least one class needs two samples. Features are L2-normalised like every
    other score here. Float64 is not supported on Apple MPS: pass ``device="cpu"`` there.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET, device=None, rtol: float = DEFAULT_RTOL,
                 drop_singletons: bool = False):
        self.budget, self.device, self.rtol, self.drop_singletons = budget, device, rtol, drop_singletons
        self.precision = None  # set by fit

    def _dev(self, x: torch.Tensor):
        return torch.device(self.device) if self.device is not None else x.device

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "MahalanobisDetector":
        x = check_matrix(features, "ID training features", min_rows=2)  # a covariance needs 2
        labels = check_ids(labels, "labels", n=x.shape[0]).cpu()
        dev = self._dev(x)
        classes, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        n_cls, d = len(classes), x.shape[1]
        multi = counts > 1
        if not multi.any():
            raise ValueError("Every class has a single training sample: no class covariance can be "
                             "estimated for the Mahalanobis distance.")
        if (~multi).any():
            what = "dropped (drop_singletons)" if self.drop_singletons else \
                "kept as class means, left out of the shared covariance"
            warnings.warn(f"{int((~multi).sum())} of {n_cls} classes have a single training sample: {what}.",
                          stacklevel=2)
        rows = rows_per_chunk(d, self.budget)
        inv_d, counts_d = inv.to(dev), counts.to(dev, torch.float64)
        sums = torch.zeros(n_cls, d, dtype=torch.float64, device=dev)
        for s in range(0, x.shape[0], rows):
            sums.index_add_(0, inv_d[s:s + rows], _unit64(x[s:s + rows], dev))
        means = sums / counts_d[:, None]
        mu0 = sums.sum(0) / x.shape[0]
        # Σ_c S_c / (n_c - 1) as one weighted scatter: each sample weighs 1 / (n_{y_i} - 1).
        w_cls = torch.where(counts_d > 1, 1.0 / (counts_d - 1).clamp_min(1), torch.zeros_like(counts_d))
        cov = torch.zeros(d, d, dtype=torch.float64, device=dev)
        cov0 = torch.zeros(d, d, dtype=torch.float64, device=dev)
        for s in range(0, x.shape[0], rows):
            xs, ys = _unit64(x[s:s + rows], dev), inv_d[s:s + rows]
            xc = xs - means[ys]
            cov += (xc * w_cls[ys, None]).T @ xc
            xg = xs - mu0
            cov0 += xg.T @ xg
        cov /= int(multi.sum())
        cov0 /= x.shape[0] - 1
        if self.drop_singletons:
            keep = multi.to(dev)
            classes, counts, means = classes[multi], counts[multi], means[keep]
        self.classes, self.counts, self.means, self.mean0 = classes, counts, means, mu0
        self.precision = precision_matrix(cov, self.rtol)
        self.precision0 = precision_matrix(cov0, self.rtol)
        self._pm = self.precision @ means.T  # (D, C)
        self._mpm = (means @ self.precision * means).sum(1)  # (C,)
        return self

    def distances(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min_c d_c(x), d_0(x))``, both (N,) float64 on the CPU."""
        check_is_fitted(self, "precision")
        x = check_matrix(features, "image features", self.means.shape[1])
        dev = self.means.device
        step = rows_per_chunk(self.means.shape[0], self.budget)
        dmin = torch.empty(x.shape[0], dtype=torch.float64)
        d0 = torch.empty(x.shape[0], dtype=torch.float64)
        for s in range(0, x.shape[0], step):
            xs = _unit64(x[s:s + step], dev)
            quad = ((xs @ self.precision) * xs).sum(1)
            d = quad[:, None] - 2 * (xs @ self._pm) + self._mpm[None, :]
            dmin[s:s + step] = d.min(dim=1).values.cpu()
            xg = xs - self.mean0
            d0[s:s + step] = ((xg @ self.precision0) * xg).sum(1).cpu()
        return dmin, d0

    def score(self, features: torch.Tensor, relative: bool = False) -> torch.Tensor:
        """MD (``relative=False``) or relative MD score, (N,) float64, higher = more ID."""
        dmin, d0 = self.distances(features)
        return -(dmin - d0) if relative else -dmin
