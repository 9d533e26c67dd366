"""OOD scores on precomputed CLIP features. Every score is "higher = more in-distribution".

Features are the image/text embeddings *after* CLIP's projection (the shared space where h·z is
CLIP's zero-shot logit before the logit scale), unit-normalised here. Work over the corpus is chunked
over images so memory holds at most ``rows x K`` similarities, never ``N x K``
(``rows = max(1, budget // K)``, ``budget`` elements; default 2**26 = 256 MiB of float32, one buffer
reused for every chunk: smaller chunks leave the matrix multiply well below its rate, see benchmarks/).
Corpus-wide reductions that merge across columns (top-1, logsumexp: ``zero_shot_top1``, ``lse_rows``,
``eq1_logit``) use ``similarity_tiles`` instead: on the CPU, 512 x 4096 tiles that stay in cache.

Temperature. The paper sets "τ 10 times smaller than the pretraining temperature". We read this
literally: CLIP's pretraining temperature is ``T = 1 / logit_scale`` (0.01 for logit_scale = 100), so
``τ = T / 10 = 1 / (10 · logit_scale)`` (``default_tau``). Pass ``tau=`` to use another reading, e.g.
NegLabel's τ = 0.01 (= T).

Which logits each method uses (all scores: one value per image, higher = more ID, ID = positive class
for AUROC / FPR95 as in ``metrics``):

- Eq. 1 family (``eq1_logit``/``eq1_score``, ``grouped_eq1_score``, PosMine / ClusterMine / NegLabel):
  ``cosine / τ``;
- ``mcm_score``: ``cosine / T`` with T = 1 (MCM's default, plain cosine);
- ``maxlogit_score``, ``energy_score``, ``clipscope_score``: CLIP's zero-shot logits,
  ``logit_scale · cosine`` (logit_scale = 1 / pretraining temperature, ≈ 100);
- ``MahalanobisDetector``: image features only (no text), float64;
- ``LinearProbe`` (PLP): the probe's own logits, softmax at T = 1.

Negative label mining (``select_negatives``, ``neglabel_mine``, ``prune_negatives``) ranks candidate
concepts by the 0.95-quantile of their cosine similarity to the positives and keeps the K lowest.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .corpus import Corpus, clean
from .mining import Mined, complement

DEFAULT_BUDGET = 2**26


def default_tau(logit_scale: float, factor: float = 10.0) -> float:
    """τ = pretraining temperature / factor = 1 / (factor · logit_scale)."""
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0 (CLIP's exp(logit_scale) ≈ 100), got {logit_scale}.")
    return 1.0 / (factor * logit_scale)


def check_tau(tau: float) -> float:
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}; the default is default_tau(logit_scale).")
    return float(tau)


def check_features(x: torch.Tensor, name: str, dim: int | None = None) -> torch.Tensor:
    """Validate a (N, D) feature matrix and return it L2-normalised (float32)."""
    return F.normalize(check_matrix(x, name, dim).float(), dim=-1)


def check_matrix(x: torch.Tensor, name: str, dim: int | None = None) -> torch.Tensor:
    """Validate a (N, D) feature matrix (tensor, 2-D, dimension, non-empty, finite); return it as is."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the other features have {dim}: "
                         "image and text features must come from the same CLIP model.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows).")
    # one sum first (a NaN/Inf element always makes it non-finite; ~20x cheaper than isfinite on a
    # corpus matrix); only a non-finite sum, or a finite one that overflowed, needs the element check
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN/Inf (rows {bad}...); recompute or drop those features.")
    return x


def rows_per_chunk(n_cols: int, budget: int = DEFAULT_BUDGET) -> int:
    return max(1, budget // max(1, n_cols))


def normalized_rows(*named: tuple[torch.Tensor, str]) -> torch.Tensor:
    """Validate (``check_matrix``) several ``(features (n_i, D), name)`` and L2-normalise them into ONE
    new (sum n_i, D) float32 matrix: no intermediate copies, unlike ``torch.cat`` of normalised parts."""
    dim = None
    for p, name in named:
        dim = check_matrix(p, name, dim).shape[1]
    parts = [p for p, _ in named]
    out = torch.empty(sum(p.shape[0] for p in parts), dim, device=parts[0].device)
    start = 0
    for p in parts:
        F.normalize(p.float(), dim=-1, out=out[start:start + p.shape[0]])
        start += p.shape[0]
    return out


def similarity_chunks(image: torch.Tensor, text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                      device=None, scale: float | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, scale · image[rows] @ text.T)`` chunks of cosine similarities, shape (r, K).

    Both inputs must already be normalised (``check_features``). ``device`` defaults to the text's.
    ``scale`` multiplies the (r, D) image chunk, not the (r, K) result (K/D times less work).
    Every chunk is written into the same buffer: it is valid until the next iteration and may be
    overwritten in place by the caller.
    """
    for rows, _, sim in _blocks(image, text, budget, device, scale, tiled=False):
        yield rows, sim


def similarity_tiles(image: torch.Tensor, text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                     device=None, scale: float | None = None) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield ``(rows, cols, scale · image[rows] @ text[cols].T)`` tiles, shape (r, c), covering all pairs.

    For reductions over a whole corpus row (top-1, logsumexp) that can be merged across column blocks.
    On the CPU a tile is at most ``TILE_ROWS x TILE_COLS`` (8 MiB), so the reduction's passes over it
    run in cache instead of re-reading a (rows x K) chunk from memory: corpus-wide logsumexp and top-1
    ~1.5-2x faster on the 2-core machine (benchmarks/results/findings-2026-11-23.md). On other devices
    a tile is a whole ``similarity_chunks`` chunk (all columns). Same inputs and buffer rule as there.
    """
    return _blocks(image, text, budget, device, scale, tiled=True)


def _blocks(image, text, budget, device, scale, tiled: bool):
    device = torch.device(device or text.device)
    text_t = text.to(device).T
    n, k = image.shape[0], text.shape[0]
    tiled = tiled and device.type == "cpu"
    width = min(k, TILE_COLS) if tiled else k
    step = min(rows_per_chunk(width, budget), TILE_ROWS if tiled else n)
    buf = torch.empty(min(step, n), width, device=device)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        chunk = image[rows].to(device, non_blocking=True)
        if scale is not None:
            chunk = chunk * scale
        for col in range(0, k, width):
            cols = slice(col, min(col + width, k))
            yield rows, cols, torch.mm(chunk, text_t[:, cols], out=buf[: chunk.shape[0], : cols.stop - col])


TILE_ROWS, TILE_COLS = 512, 4096  # CPU tile of ``similarity_tiles`` (measured best of 256-2000 x 2048-16384)


def zero_shot_top1(image: torch.Tensor, text: torch.Tensor, budget: int = DEFAULT_BUDGET,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-shot top-1 concept of each image: ``(index (N,) long, cosine (N,) float)``.

    image: (N, D), text: (K, D). Argmax of the cosine = argmax of any softmax over the same texts.
    Over column tiles only the row maxima are kept (``amax``: ~8x cheaper than ``max`` with indices
    on the CPU); the argmax is then taken inside each row's best tile, a product of 1 / (number of
    tiles) of the work.
    """
    text = check_features(text, "text features")
    image = check_features(image, "image features", text.shape[1])
    n, k = image.shape[0], text.shape[0]
    idx = torch.empty(n, dtype=torch.long)
    val = torch.full((n,), -math.inf)
    best_tile = torch.zeros(n, dtype=torch.long)
    width = k
    for rows, cols, sim in similarity_tiles(image, text, budget, device):
        if cols.stop - cols.start == k:  # the tile is the whole row
            v, i = sim.max(dim=1)
            idx[rows], val[rows] = i.cpu(), v.cpu()
            continue
        width = cols.stop - cols.start if cols.start == 0 else width
        v = sim.amax(dim=1).cpu()
        better = v > val[rows]
        val[rows] = torch.where(better, v, val[rows])
        best_tile[rows] = torch.where(better, cols.start, best_tile[rows])
    if width < k:
        for start in best_tile.unique().tolist():
            sel = (best_tile == start).nonzero().squeeze(1)
            for rows, sim in similarity_chunks(image[sel], text[start:start + width], budget, device):
                v, i = sim.max(dim=1)
                idx[sel[rows]], val[sel[rows]] = i.cpu() + start, v.cpu()
    return idx, val


def eq1_logit(image: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor, tau: float,
              budget: int = DEFAULT_BUDGET, device=None, neg_lse: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 as a log-odds: ``log S - log(1 - S) = LSE_pos(h·z/τ) - LSE_neg(h·z/τ)``, shape (N,).

    Monotone in S, so AUROC/FPR95 are identical, but it does not saturate at S = 1 in floating
    point (with τ = 0.001 most ID images have 1 - S far below float64's epsilon).
    image: (N, D); pos_text: (P, D); neg_text: (Q, D), Q may be 0 (then +inf is avoided by
    returning LSE_pos, i.e. S = 1 for all, as a plain ranking by positive mass).
    neg_lse: optional (N,) ``lse_rows`` of more negatives (a part of Y_neg shared by several label
    sets, computed once): Y_neg is then ``neg_text`` plus those; the masses are added, never subtracted.
    """
    tau = check_tau(tau)
    pos = check_features(pos_text, "positive text features")
    neg = check_features(neg_text, "negative text features", pos.shape[1]) if len(neg_text) else None
    image = check_features(image, "image features", pos.shape[1])
    if neg_lse is not None and tuple(neg_lse.shape) != (image.shape[0],):
        raise ValueError(f"neg_lse has shape {tuple(neg_lse.shape)}; it must be (N,) = ({image.shape[0]},), "
                         "one value per image (lse_rows of the same images).")
    lse_pos = _lse_tiles(image, pos, tau, budget, device)
    parts = ([_lse_tiles(image, neg, tau, budget, device)] if neg is not None else []) + \
            ([neg_lse.float().cpu()] if neg_lse is not None else [])
    if not parts:
        return lse_pos
    return lse_pos - (parts[0] if len(parts) == 1 else torch.logaddexp(*parts))


def lse_rows(image: torch.Tensor, text: torch.Tensor, tau: float, budget: int = DEFAULT_BUDGET,
             device=None) -> torch.Tensor:
    """(N,) ``log Σ_k exp(h·z_k/τ)`` over all rows of ``text`` (K, D): the ``neg_lse`` of ``eq1_logit``.

    Label sets that share most of their negatives (PosMine and ClusterMine at every M and C share
    the corpus minus the candidate concepts) compute this big part once per image set.
    """
    tau = check_tau(tau)
    text = check_features(text, "text features")
    return _lse_tiles(check_features(image, "image features", text.shape[1]), text, tau, budget, device)


def _lse_tiles(image: torch.Tensor, text: torch.Tensor, tau: float, budget: int, device) -> torch.Tensor:
    """(N,) logsumexp of ``image @ text.T / tau`` (both normalised), merged across column tiles (CPU)."""
    out = torch.full((image.shape[0],), -math.inf)
    for rows, _, logits in similarity_tiles(image, text, budget, device, scale=1.0 / tau):
        out[rows] = torch.logaddexp(out[rows], _lse_(logits).cpu())
    return out


LSE_FLOOR = -80.0  # exp(-80) ≈ 1.8e-35: still a normal float32, and negligible beside exp(0) = 1


def _lse_(x: torch.Tensor) -> torch.Tensor:
    """Logsumexp over the last dim that overwrites ``x`` (a view is fine): (..., K) -> (...).

    Terms more than 80 below the row's max are floored at exp(-80): they change the sum by less than
    1e-30 relative, and it keeps exp out of float32's denormal range, where it is ~6x slower on CPU
    (with τ = 0.001 most of a corpus row lies hundreds below its max; see benchmarks/).
    """
    m = x.amax(dim=-1, keepdim=True)
    return x.sub_(m).clamp_min_(LSE_FLOOR).exp_().sum(dim=-1).log_().add_(m.squeeze(-1))


def eq1_score(image, pos_text, neg_text, tau: float, budget: int = DEFAULT_BUDGET, device=None):
    """Eq. 1, S(x) = Σ_pos exp(h·z/τ) / Σ_all exp(h·z/τ), in float64, shape (N,)."""
    return torch.sigmoid(eq1_logit(image, pos_text, neg_text, tau, budget, device).double())


def mcm_score(image: torch.Tensor, class_text: torch.Tensor, temperature: float = 1.0,
              budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """MCM (Ming et al. 2022): max softmax of cosine similarities / T over Y_GT, shape (N,).

    MCM's logits are plain cosine similarities with T = 1 (its paper's default), not CLIP's
    logit-scaled ones; pass ``temperature=1/logit_scale`` for the latter.
    """
    temperature = check_tau(temperature)
    class_text = check_features(class_text, "class text features")
    image = check_features(image, "image features", class_text.shape[1])
    out = torch.empty(image.shape[0])
    for rows, logits in similarity_chunks(image, class_text, budget, device, scale=1.0 / temperature):
        out[rows] = (logits.amax(dim=1) - torch.logsumexp(logits, dim=1)).exp().cpu()
    return out


# --------------------------------------------------------------------------------------------------
# Logit-based baselines over Y_GT (CLIP's zero-shot logits = logit_scale · cosine)
# --------------------------------------------------------------------------------------------------

def _check_scale(logit_scale) -> float:
    try:
        value = float(logit_scale)  # also numpy / 0-d torch scalars
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"logit_scale must be a finite number > 0 (CLIP's exp(logit_scale) ≈ 100), "
                         f"got {logit_scale!r}.")
    return value


def maxlogit_score(image: torch.Tensor, class_text: torch.Tensor, logit_scale: float,
                   budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """MaxLogit (Hendrycks et al. 2022): ``max_c logit_scale · cos(h, z_c)`` over Y_GT, shape (N,).

    image: (N, D); class_text: (C, D). Uses CLIP's logit scale (a monotone rescaling of the max cosine,
    so AUROC / FPR95 do not depend on it).
    """
    logit_scale = _check_scale(logit_scale)
    class_text = check_features(class_text, "class text features")
    image = check_features(image, "image features", class_text.shape[1])
    out = torch.empty(image.shape[0])
    for rows, sim in similarity_chunks(image, class_text, budget, device):
        out[rows] = (logit_scale * sim.max(dim=1).values).cpu()
    return out


def energy_score(image: torch.Tensor, class_text: torch.Tensor, logit_scale: float,
                 temperature: float = 1.0, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """Negative free energy (Liu et al. 2020): ``T · logsumexp(logits / T)``, shape (N,).

    logits = ``logit_scale · cos(h, z_c)`` over Y_GT (CLIP's zero-shot logits, not plain cosine:
    with cosines in [-1, 1] and T = 1 the LSE would be nearly constant). Default T = 1.
    """
    logit_scale = _check_scale(logit_scale)
    temperature = check_tau(temperature)
    class_text = check_features(class_text, "class text features")
    image = check_features(image, "image features", class_text.shape[1])
    out = torch.empty(image.shape[0])
    for rows, logits in similarity_chunks(image, class_text, budget, device, scale=logit_scale / temperature):
        out[rows] = (temperature * torch.logsumexp(logits, dim=1)).cpu()
    return out


# --------------------------------------------------------------------------------------------------
# Mahalanobis distance (MD) and relative MD, on image features only
# --------------------------------------------------------------------------------------------------

def _unit64(x: torch.Tensor, device) -> torch.Tensor:
    return F.normalize(x.to(device, torch.float64), dim=-1)


class MahalanobisDetector:
    """MD (Lee et al. 2018) and relative MD (Ren et al. 2021) with one shared precision matrix.

    ``fit(features (N, D), labels (N,))``: class means from the (pseudo-)labelled ID training
    features; shared covariance = unweighted mean over classes of the per-class covariances
    (unbiased, ``n_c - 1``), as PLP's official ``compute_maha_vals``; global mean / covariance over
    all training features. Precisions are Moore-Penrose pseudo-inverses (``pinv``, hermitian), which
    equal the inverse when the covariance is well conditioned and stay finite when it is singular
    (D > samples per class). Everything is float64.

    ``score(features, relative=False)`` returns (N,) float64, higher = more ID:
    MD = ``-min_c d_c(x)``; relative MD = ``-min_c (d_c(x) - d_0(x))`` with
    ``d_c(x) = (x - μ_c)ᵀ P (x - μ_c)`` and ``d_0`` the distance to the global mean under the global
    precision. ``d_c`` is expanded as ``xᵀPx - 2 xᵀPμ_c + μ_cᵀPμ_c`` and computed in row chunks of
    ``budget // C`` images, so no (N, C, D) tensor is ever formed.

    Classes with a single sample (no covariance): their mean is kept as a class centre (it is still
    the best estimate of where that class lives), but they are left out of the shared covariance, and a
    warning says how many. PLP's code drops such classes entirely; with ImageNet-scale pseudo-labels
    the difference is nil. At least one class needs two samples. Features are L2-normalised like every
    other score here. Float64 is not supported on Apple MPS: pass ``device="cpu"`` there.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET, device=None):
        self.budget, self.device = budget, device

    def _dev(self, x: torch.Tensor):
        return torch.device(self.device) if self.device is not None else x.device

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "MahalanobisDetector":
        x = check_matrix(features, "ID training features")
        labels = torch.as_tensor(labels).long().flatten().cpu()
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} training features but {labels.shape[0]} labels.")
        if x.shape[0] < 2:
            raise ValueError("Mahalanobis needs at least 2 training features.")
        dev = self._dev(x)
        classes, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        n_cls, d = len(classes), x.shape[1]
        multi = counts > 1
        if not multi.any():
            raise ValueError("Every class has a single training sample: no class covariance can be "
                             "estimated for the Mahalanobis distance.")
        if (~multi).any():
            warnings.warn(f"{int((~multi).sum())} of {n_cls} classes have a single training sample: "
                          "kept as class means, left out of the shared covariance.", stacklevel=2)
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
        self.classes, self.counts, self.means, self.mean0 = classes, counts, means, mu0
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        self.precision0 = torch.linalg.pinv(cov0, hermitian=True)
        self._pm = self.precision @ means.T  # (D, C)
        self._mpm = (means @ self.precision * means).sum(1)  # (C,)
        return self

    def distances(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min_c d_c(x), d_0(x))``, both (N,) float64 on the CPU."""
        if not hasattr(self, "precision"):
            raise RuntimeError("Call fit(train_features, labels) before scoring.")
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


# --------------------------------------------------------------------------------------------------
# PLP: pseudo-label probing (Adaloglou et al. 2024)
# --------------------------------------------------------------------------------------------------

PLP_EPOCHS = 100  # the PLP paper's ImageNet setting
# CPU demo: on a synthetic 20K x 512, 100-class set, 20 epochs matched 100 epochs' accuracy and AUROC
# (within 0.3 points) at a fifth of the time.
PLP_DEMO_EPOCHS = 20


def plp_pseudo_labels(train_features: torch.Tensor, class_text: torch.Tensor,
                      budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """PLP's pseudo-labels: zero-shot argmax of each training image over ``class_text``, (N,) long.

    ``class_text`` is Y_GT (PLP) or the mined Y_pos (Table 8: ``corpus_text[mined.pos]``).
    """
    return zero_shot_top1(train_features, class_text, budget, device)[0]


def _cosine_lr(base: float, total: int, warmup: float) -> np.ndarray:
    """PLP's schedule per step: linear warm-up from 0 over ``int(total · warmup)`` steps, then cosine to 0."""
    n_warm = int(total * warmup)
    steps = np.arange(total - n_warm)
    cos = 0.5 * base * (1 + np.cos(np.pi * steps / max(1, len(steps))))
    return np.concatenate([np.linspace(0.0, base, n_warm), cos])


@dataclass
class LinearProbe:
    """A linear classifier on standardised features: ``logits = W ((x - mean) / std) + b``.

    mean, std: (D,) from the training features; weight: (C, D); bias: (C,).
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    params: dict = field(default_factory=dict)

    def logits_chunks(self, features: torch.Tensor, budget: int = DEFAULT_BUDGET, device=None):
        x = check_features(features, "image features", self.weight.shape[1])
        dev = torch.device(device) if device is not None else self.weight.device
        w, b, mu, sd = (t.to(dev) for t in (self.weight, self.bias, self.mean, self.std))
        step = rows_per_chunk(w.shape[0], budget)
        for s in range(0, x.shape[0], step):
            rows = slice(s, min(s + step, x.shape[0]))
            yield rows, ((x[rows].to(dev) - mu) / sd) @ w.T + b

    def predict(self, features: torch.Tensor, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
        out = torch.empty(features.shape[0], dtype=torch.long)
        for rows, logits in self.logits_chunks(features, budget, device):
            out[rows] = logits.argmax(dim=1).cpu()
        return out

    def score(self, features: torch.Tensor, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
        """PLP's OOD score: maximum softmax probability of the probe (T = 1), shape (N,)."""
        out = torch.empty(features.shape[0])
        for rows, logits in self.logits_chunks(features, budget, device):
            out[rows] = (logits.max(dim=1).values - torch.logsumexp(logits, dim=1)).exp().cpu()
        return out


def fit_plp(features: torch.Tensor, pseudo_labels: torch.Tensor, n_classes: int | None = None,
            epochs: int = PLP_EPOCHS, batch_size: int = 8192, lr: float = 1e-3, weight_decay: float = 1e-3,
            warmup: float = 0.1, seed: int = 0, device=None) -> LinearProbe:
    """Train PLP's linear probe on pseudo-labelled ID training features.

    As PLP's ``linear_probing.py``: features standardised with the training mean / std per dimension
    (after L2 normalisation; our features are CLIP's post-projection embeddings), one ``nn.Linear``,
    cross-entropy, Adam with learning rate ``lr · batch_size / 256`` and L2 weight decay 1e-3, batch
    8192 reshuffled every epoch, ``epochs · ceil(N / batch_size)`` steps under a per-step cosine
    schedule to 0 after a linear warm-up over the first 10 % of the steps.
    Paper: ``epochs=PLP_EPOCHS`` (100); CPU demo: ``PLP_DEMO_EPOCHS`` (20).

    features: (N, D); pseudo_labels: (N,) long in [0, n_classes) (``plp_pseudo_labels``). Seeded
    (weights and batch order come from ``seed`` and a private generator, the global RNG is untouched);
    runs on ``device`` (default: the features' device).
    """
    x = check_features(features, "ID training features")
    y = torch.as_tensor(pseudo_labels).long().flatten().cpu()
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} training features but {y.shape[0]} pseudo-labels.")
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"pseudo-labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}].")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}.")
    if x.shape[0] < 2:
        raise ValueError("PLP needs at least 2 training features (their mean / std standardise the input).")
    dev = torch.device(device) if device is not None else x.device
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-8)  # a constant dimension must not divide by zero
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(x.shape[1], n_classes)
    layer = layer.to(dev)
    opt = torch.optim.Adam(layer.parameters(), lr=lr * batch_size / 256, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    schedule = _cosine_lr(lr * batch_size / 256, epochs * steps_per_epoch, warmup)
    mean_d, std_d, step = mean.to(dev), std.to(dev), 0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0], batch_size):
            idx = order[s:s + batch_size]
            for group in opt.param_groups:
                group["lr"] = float(schedule[step])
            loss = F.cross_entropy(layer((x[idx].to(dev) - mean_d) / std_d), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return LinearProbe(mean, std, layer.weight.detach().cpu(), layer.bias.detach().cpu(),
                       {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                        "warmup": warmup, "seed": seed, "n_classes": n_classes, "final_loss": loss.item()})


# --------------------------------------------------------------------------------------------------
# Negative label mining (NegLabel, Jiang et al. 2024) and its use after positive mining
# --------------------------------------------------------------------------------------------------

def _row_stat(rows_text: torch.Tensor, cols_text: torch.Tensor, reduce, budget: int, device,
              index: torch.Tensor | None = None) -> torch.Tensor:
    """``reduce(normalise(rows_text[chunk]) @ cols_text.T)`` per chunk of rows: (R,) float32 on the CPU.

    cols_text must be normalised already; ``index`` selects rows of ``rows_text`` (default: all) and
    is applied chunk by chunk, so a (R, D) copy of a 270K-concept corpus is never made.
    """
    index = torch.arange(rows_text.shape[0]) if index is None else torch.as_tensor(index).long().flatten()
    if rows_text.ndim != 2 or rows_text.shape[1] != cols_text.shape[1]:
        raise ValueError(f"text features of shape {tuple(rows_text.shape)} do not match dimension "
                         f"{cols_text.shape[1]}: both must come from the same CLIP model.")
    dev = device or cols_text.device
    cols = cols_text.to(dev)
    step = rows_per_chunk(cols.shape[0], budget)
    out = torch.empty(len(index))
    buf = torch.empty(min(step, len(index)), cols.shape[0], device=dev)
    for s in range(0, len(index), step):
        chunk = check_features(rows_text[index[s:s + step]], "corpus text features").to(dev)
        out[s:s + step] = reduce(torch.mm(chunk, cols.T, out=buf[: len(chunk)])).cpu()
    return out


def _check_k(k, available: int, what: str = "negative labels") -> int:
    """K = None / 'all' means no pruning; K > available is clamped with a warning."""
    if k is None or (isinstance(k, str) and k.lower() == "all"):
        return available
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"K must be a positive int, None or 'all', got {k!r}.")
    if k < 1:
        raise ValueError(f"K (number of {what}) must be >= 1, got {k}.")
    if k > available:
        warnings.warn(f"K={k} exceeds the {available} available {what}; using K={available}.", stacklevel=3)
        return available
    return int(k)


def negative_similarity(pos_text: torch.Tensor, cand_text: torch.Tensor, quantile: float = 0.95,
                        budget: int = DEFAULT_BUDGET, device=None, index=None) -> torch.Tensor:
    """NegLabel's closeness of each candidate to the positives, (Q,) float32.

    The ``quantile`` (0.95) of the candidate's cosine similarities to all P positives, exact per row
    (linear interpolation, as ``torch.quantile`` in NegLabel's ``multi_modal.py``), chunked over
    candidates. pos_text: (P, D); cand_text: (Q, D), or the rows ``index`` of it. Lower = more
    dissimilar = better negative.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}.")
    pos_text = check_features(pos_text, "positive text features")
    return _row_stat(cand_text, pos_text, lambda s: quantile_rows(s, quantile), budget, device, index)


def quantile_rows(s: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(s, q, dim=1)`` (linear interpolation) from a partial ``topk``, (R, P) -> (R,).

    Same value up to float rounding; torch.quantile sorts every row completely, which costs more than
    the matrix multiply that produced ``s`` (benchmarks/).
    """
    p = s.shape[1]
    rank = q * (p - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    top = s.topk(p - lo, dim=1, sorted=True).values  # top[:, j] = j-th largest = ascending[p - 1 - j]
    return torch.lerp(top[:, p - 1 - lo], top[:, p - 1 - hi], rank - lo)


def select_negatives(pos_text: torch.Tensor, corpus_text: torch.Tensor, candidates: torch.Tensor, k,
                     quantile: float = 0.95, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """The K candidates least similar to the positives, as corpus indices, most dissimilar first.

    candidates: (Q,) long corpus indices of Y_neg (Eq. 2); k: int, or None / 'all' for no pruning
    (then ``candidates`` come back unchanged, Eq. 2); K > Q is clamped with a warning. Ties keep the
    candidates' order (stable sort).
    """
    candidates = torch.as_tensor(candidates).long().flatten()
    k = _check_k(k, len(candidates))
    if k == len(candidates):
        return candidates.clone()
    stat = negative_similarity(pos_text, corpus_text, quantile, budget, device, index=candidates)
    order = torch.sort(stat, stable=True).indices[:k]
    return candidates[order]


def _gt_in_corpus(class_names, corpus: Corpus, method: str) -> tuple[list[int], list[str]]:
    found, missing = corpus.indices_of(class_names)
    if missing:
        warnings.warn(f"{method}: {len(missing)} of {len(class_names)} Y_GT names are not in corpus "
                      f"{corpus.name!r} (e.g. {missing[:5]}); continuing with the {len(found)} found.",
                      stacklevel=3)
    return found, missing


def _non_gt_candidates(class_names, corpus: Corpus) -> torch.Tensor:
    # Eq. 2 by name: every occurrence of a Y_GT name leaves Y_neg (corpora with duplicates included).
    gt = {clean(n) for n in class_names}
    return torch.tensor([i for i, n in enumerate(corpus.names) if n not in gt], dtype=torch.long)


def _with_negatives(method, pos_idx, neg, corpus: Corpus, params) -> Mined:
    pos = torch.tensor(sorted(set(pos_idx)), dtype=torch.long)
    neg = torch.sort(torch.as_tensor(neg).long()).values
    return Mined(method, pos, neg, [corpus.names[i] for i in pos.tolist()],
                 torch.ones(len(pos), dtype=torch.long), params)


def neglabel_mine(class_names, class_text: torch.Tensor, corpus: Corpus, corpus_text: torch.Tensor,
                  k=10_000, quantile: float = 0.95, budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """NegLabel: Y_pos = Y_GT, Y_neg = the K corpus concepts (not in Y_GT) least similar to Y_GT.

    K = 10,000 is NegLabel, K = 40,000 NegLabel* (Table 1), None / 'all' no pruning. Similarity = the
    0.95-quantile of cosine similarities to all Y_GT text features (``class_text``, (C, D); names not in
    the corpus still count as positives here, and are reported in a warning and in
    ``params['missing']``). ``Mined.pos`` holds the corpus indices of the Y_GT names found; score
    with ``eq1_logit(image, class_text, corpus_text[mined.neg], tau)``.
    Unlike NegLabel's code, which keeps 15 % of the nouns and 15 % of the adjectives separately, K is
    taken over the whole corpus, as the ClusterMine paper describes it.
    """
    found, missing = _gt_in_corpus(class_names, corpus, "NegLabel")
    neg = select_negatives(class_text, corpus_text, _non_gt_candidates(class_names, corpus), k, quantile,
                           budget, device)
    return _with_negatives("NegLabel", found, neg, corpus,
                           {"K": len(neg), "quantile": quantile, "missing": missing})


def prune_negatives(mined: Mined, corpus_text: torch.Tensor, k, quantile: float = 0.95,
                    budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """Combined positive + negative mining (Fig. 6 left, 9, 11): keep the K negatives of ``mined``
    least similar to its positives (``corpus_text[mined.pos]``), by the same 0.95-quantile criterion
    as NegLabel (``select_negatives``). k = None / 'all' keeps Eq. 2's Y_neg unchanged.
    """
    neg = select_negatives(corpus_text[mined.pos], corpus_text, mined.neg, k, quantile, budget, device)
    return replace(mined, neg=torch.sort(neg).values,
                   params={**mined.params, "K": len(neg), "quantile": quantile})


def grouped_eq1_score(image: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor, tau: float,
                      n_groups: int, seed: int = 0, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """NegLabel's negative grouping (Fig. 10): mean over G groups of Eq. 1 with that group's negatives.

    The negatives are shuffled (``torch.Generator`` seeded with ``seed``), the last ``Q mod G`` of the
    shuffled order are dropped so that all groups have ``Q // G`` labels (NegLabel drops them before
    shuffling; either way at most G - 1 labels), and S_g = Eq. 1 over (Y_pos, group g) with logits
    cos / τ. Returns ``mean_g S_g``, (N,) float64; G = 1 is ``eq1_score``.
    image: (N, D); pos_text: (P, D); neg_text: (Q, D), Q >= G.
    """
    tau = check_tau(tau)
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or n_groups < 1:
        raise ValueError(f"n_groups must be an int >= 1, got {n_groups!r}.")
    check_matrix(neg_text, "negative text features")
    if neg_text.shape[0] < n_groups:
        raise ValueError(f"{neg_text.shape[0]} negative labels cannot fill n_groups={n_groups} groups.")
    perm = torch.randperm(neg_text.shape[0], generator=torch.Generator().manual_seed(seed))
    size = neg_text.shape[0] // n_groups
    text = normalized_rows((pos_text, "positive text features"),
                           (neg_text[perm[: size * n_groups]], "negative text features"))
    image = check_features(image, "image features", text.shape[1])
    n_pos = pos_text.shape[0]
    out = torch.empty(image.shape[0], dtype=torch.float64)
    for rows, logits in similarity_chunks(image, text, budget, device, scale=1.0 / tau):
        lse_pos = _lse_(logits[:, :n_pos]).unsqueeze(1)
        lse_neg = _lse_(logits[:, n_pos:].view(len(logits), n_groups, size))
        out[rows] = torch.sigmoid((lse_pos - lse_neg).double()).mean(dim=1).cpu()
    return out


# --------------------------------------------------------------------------------------------------
# CLIPScope (Fu et al., arXiv 2405.14737, WACV 2025)
# --------------------------------------------------------------------------------------------------

def clipscope_mine(class_names, class_text: torch.Tensor, corpus: Corpus, corpus_text: torch.Tensor,
                   n_far: int = 5000, n_near: int = 5000, top_fraction: float = 0.05,
                   nouns_only: bool = True, budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """CLIPScope's OOD label mining: the ``n_far`` farthest and ``n_near`` nearest corpus nouns to Y_GT.

    Closeness of a candidate = its k-th largest cosine similarity to the Y_GT text features with
    ``k = ceil(top_fraction · |Y_GT|)`` (the official ``mining.py`` uses the 50th largest of ImageNet's
    1000 classes, i.e. top_fraction = 0.05). Candidates: corpus nouns (``corpus.pos == 'n'``, as the
    official code mines WordNet nouns; all concepts when ``nouns_only=False`` or the corpus has no
    POS tags) whose name is not in Y_GT. If fewer than ``n_far + n_near`` candidates exist, all are
    used (warning). Missing Y_GT names are reported as for NegLabel.
    """
    found, missing = _gt_in_corpus(class_names, corpus, "CLIPScope")
    cand = _non_gt_candidates(class_names, corpus)
    if nouns_only and any(p == "n" for p in corpus.pos):
        cand = cand[torch.tensor([corpus.pos[i] == "n" for i in cand.tolist()], dtype=torch.bool)]
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}.")
    class_text = check_features(class_text, "class text features")
    kth = min(class_text.shape[0], max(1, math.ceil(top_fraction * class_text.shape[0])))
    if n_far < 0 or n_near < 0:
        raise ValueError(f"n_far and n_near must be >= 0, got {n_far}, {n_near}.")
    if n_far + n_near >= len(cand):
        if n_far + n_near > len(cand):
            warnings.warn(f"CLIPScope: n_far + n_near = {n_far + n_near} exceeds the {len(cand)} candidate "
                          "labels; using all of them.", stacklevel=2)
        neg = cand
    else:
        stat = _row_stat(corpus_text, class_text, lambda s: s.topk(kth, dim=1).values[:, -1], budget, device,
                         index=cand)
        order = torch.sort(stat, stable=True).indices
        neg = torch.cat([cand[order[:n_far]], cand[order[len(order) - n_near:]]])
    return _with_negatives("CLIPScope", found, neg, corpus,
                           {"n_far": n_far, "n_near": n_near, "kth": kth, "missing": missing})


def clipscope_class_counts(features: torch.Tensor, class_text: torch.Tensor,
                           budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """Class-likelihood histogram for CLIPScope: ``1 + #images predicted as class c`` (zero-shot
    argmax over Y_GT), (C,) float64. The +1 is the official code's initial count of one per class.

    Our choice: estimate it once from the unlabeled ID *training* images (the setting of this paper,
    where every method may read them), so each image gets one fixed score. The official code instead
    updates the histogram online while it scores a random stream mixing ID and OOD test images.
    """
    idx = zero_shot_top1(features, class_text, budget, device)[0]
    return 1.0 + torch.bincount(idx, minlength=class_text.shape[0]).double()


def clipscope_score(image: torch.Tensor, class_text: torch.Tensor, ood_text: torch.Tensor, logit_scale: float,
                    class_counts: torch.Tensor, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """CLIPScope's Bayesian score, returned as its logarithm (monotone: same AUROC / FPR95), (N,) float64.

    ``log[ MSP_GT(x) · P_ID(x) / p(ŷ) ]`` where, with logits = ``logit_scale · cosine`` (CLIP's scale, as
    the official code's ``100 *``):
    MSP_GT = max softmax over Y_GT, ŷ its argmax; P_ID = softmax mass of Y_GT among Y_GT ∪ OOD labels
    (Eq. 1 with τ = 1 / logit_scale); p(ŷ) = ``class_counts[ŷ] / Σ class_counts``
    (``clipscope_class_counts``). The log avoids underflow of P_ID for far-OOD images.
    image: (N, D); class_text: (C, D); ood_text: (Q, D) from ``clipscope_mine``; class_counts: (C,) > 0.
    """
    logit_scale = _check_scale(logit_scale)
    class_text = check_features(class_text, "class text features")
    ood_text = check_features(ood_text, "OOD label text features", class_text.shape[1])
    image = check_features(image, "image features", class_text.shape[1])
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten().cpu()
    if counts.shape[0] != class_text.shape[0] or not (counts > 0).all() or not torch.isfinite(counts).all():
        raise ValueError(f"class_counts must hold {class_text.shape[0]} positive counts, one per class.")
    log_prior = (counts / counts.sum()).log()
    n_pos = class_text.shape[0]
    out = torch.empty(image.shape[0], dtype=torch.float64)
    for rows, sim in similarity_chunks(image, torch.cat([class_text, ood_text]), budget, device):
        logits = (logit_scale * sim).double()
        lse_pos = torch.logsumexp(logits[:, :n_pos], dim=1)
        top, pred = logits[:, :n_pos].max(dim=1)
        log_msp = top - lse_pos
        log_pid = F.logsigmoid(lse_pos - torch.logsumexp(logits[:, n_pos:], dim=1))
        out[rows] = (log_msp + log_pid).cpu() - log_prior[pred.cpu()]
    return out


# --------------------------------------------------------------------------------------------------
# Table 4: Y_GT augmented with its nearest corpus concepts
# --------------------------------------------------------------------------------------------------

def augment_positives(class_text: torch.Tensor, corpus_text: torch.Tensor, corpus: Corpus, n_aug: int = 500,
                      class_names=None, budget: int = DEFAULT_BUDGET, device=None) -> Mined:
    """Y_GT ∪ Y_aug: the ``n_aug`` corpus concepts with the highest top-1 text cosine to Y_GT (Table 4).

    Concepts already in Y_GT are excluded: by name when ``class_names`` is given (missing names are
    reported), else those whose text feature coincides with a class's (cosine > 1 - 1e-6).
    Returns a ``Mined`` with ``pos`` = Y_GT names found in the corpus ∪ Y_aug, ``neg`` = the rest of the
    corpus (Eq. 2), and ``params['aug']`` = Y_aug's corpus indices, most similar first. Positive text
    for MCM / Eq. 1 = ``torch.cat([class_text, corpus_text[mined.params['aug']]])``.
    """
    class_text = check_features(class_text, "class text features")
    if len(corpus) != corpus_text.shape[0]:
        raise ValueError(f"corpus has {len(corpus)} names but corpus_text {corpus_text.shape[0]} rows.")
    top1 = _row_stat(corpus_text, class_text, lambda s: s.max(dim=1).values, budget, device)
    if class_names is not None:
        found, missing = _gt_in_corpus(class_names, corpus, "augment_positives")
        cand = _non_gt_candidates(class_names, corpus)
    else:
        found, missing = (top1 > 1 - 1e-6).nonzero().flatten().tolist(), []
        cand = (top1 <= 1 - 1e-6).nonzero().flatten()
    n = _check_k(n_aug, len(cand), "augmentation labels")
    aug = cand[torch.sort(top1[cand], descending=True, stable=True).indices[:n]]
    pos = torch.tensor(sorted(set(found) | set(aug.tolist())), dtype=torch.long)
    return Mined("GT+aug", pos, complement(pos, len(corpus)), [corpus.names[i] for i in pos.tolist()],
                 torch.ones(len(pos), dtype=torch.long), {"aug": aug, "n_aug": n, "missing": missing})
