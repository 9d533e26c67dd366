"""OOD scores on precomputed CLIP features. Every score is "higher = more in-distribution".

Features are the image/text embeddings *after* CLIP's projection, unit-normalised here; the work is
chunked / tiled over the images by ``dense`` (``similarity_chunks``, ``similarity_tiles``,
``lse_tiles``), so memory never holds an N x K similarity matrix. Inputs are validated by
``validation`` (tensors or NumPy arrays). The mining that produces the label sets scored here
(PosMine, ClusterMine, NegLabel, CLIPScope, Y_aug) is in ``mining``; the image-only detectors are
``mahalanobis.MahalanobisDetector`` and ``plp`` (pseudo-label probing).

Temperature. The paper sets "τ 10 times smaller than the pretraining temperature". We read this
literally: CLIP's pretraining temperature is ``T = 1 / logit_scale`` (0.01 for logit_scale = 100), so
``τ = T / 10 = 1 / (10 · logit_scale)`` (``default_tau``). Pass ``tau=`` to use another reading, e.g.
NegLabel's τ = 0.01 (= T).

Which logits each method uses (all scores: one value per image, higher = more ID, ID = positive class
for AUROC / FPR95 as in ``metrics``):

- Eq. 1 family (``eq1_logit``/``eq1_score``, ``grouped_eq1_score``, PosMine / ClusterMine / NegLabel):
  ``cosine / τ``;
- ``mcm_score``: ``cosine / T`` with T = 1 (MCM's default, plain cosine);
- ``energy_score``: plain cosine with T = 1 by default (as MCM's, PLP's and OpenOOD's codes), or CLIP's
  logit-scaled cosine when given ``logit_scale``;
- ``maxlogit_score``, ``clipscope_score`` / ``clipscope_online_scores``: CLIP's zero-shot logits,
  ``logit_scale · cosine`` (logit_scale = 1 / pretraining temperature, ≈ 100);
- ``mahalanobis.MahalanobisDetector``: image features only (no text), float64;
- ``plp.LinearProbe`` (PLP): the probe's own logits, softmax at T = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .dense import (DEFAULT_BUDGET, TAU_HINT, lse_, lse_tiles, normalized_rows, similarity_chunks,
                    zero_shot_top1)
from .validation import as_tensor, check_features, check_matrix, check_positive

SCALE_HINT = "CLIP's exp(logit_scale) ≈ 100"


def default_tau(logit_scale: float, factor: float = 10.0) -> float:
    """τ = pretraining temperature / factor = 1 / (factor · logit_scale)."""
    return 1.0 / (factor * check_positive(logit_scale, "logit_scale", SCALE_HINT))


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
    tau = check_positive(tau, "tau", TAU_HINT)
    pos = check_features(pos_text, "positive text features")
    neg = check_features(neg_text, "negative text features", pos.shape[1]) if len(neg_text) else None
    image = check_features(image, "image features", pos.shape[1])
    neg_lse = None if neg_lse is None else as_tensor(neg_lse, "neg_lse")
    if neg_lse is not None and tuple(neg_lse.shape) != (image.shape[0],):
        raise ValueError(f"neg_lse has shape {tuple(neg_lse.shape)}; it must be (N,) = ({image.shape[0]},), "
                         "one value per image (lse_rows of the same images).")
    lse_pos = lse_tiles(image, pos, tau, budget, device)
    parts = ([lse_tiles(image, neg, tau, budget, device)] if neg is not None else []) + \
            ([neg_lse.float().cpu()] if neg_lse is not None else [])
    if not parts:
        return lse_pos
    return lse_pos - (parts[0] if len(parts) == 1 else torch.logaddexp(*parts))


def eq1_score(image, pos_text, neg_text, tau: float, budget: int = DEFAULT_BUDGET, device=None):
    """Eq. 1, S(x) = Σ_pos exp(h·z/τ) / Σ_all exp(h·z/τ), shape (N,) float64.

    Only the sigmoid is taken in float64: its argument is ``eq1_logit``, float32 log-sums of float32
    logits ``cos / τ``. Those are of size ~1/τ, so S carries float32's rounding of them: ~1e-5
    absolute at τ = 1e-3 (less at larger τ), and it saturates at 1 for most ID images. Rank by
    ``eq1_logit`` (same AUROC / FPR95); this S is for reading Eq. 1's value.
    """
    return torch.sigmoid(eq1_logit(image, pos_text, neg_text, tau, budget, device).double())


def grouped_eq1_score(image: torch.Tensor, pos_text: torch.Tensor, neg_text: torch.Tensor, tau: float,
                      n_groups: int, seed: int = 0, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """NegLabel's negative grouping (Fig. 10): mean over G groups of Eq. 1 with that group's negatives.

    The negatives are shuffled (``torch.Generator`` seeded with ``seed``), the last ``Q mod G`` of the
    shuffled order are dropped so that all groups have ``Q // G`` labels (NegLabel drops them before
    shuffling; either way at most G - 1 labels), and S_g = Eq. 1 over (Y_pos, group g) with logits
    cos / τ. Returns ``mean_g S_g``, (N,) float64; G = 1 is ``eq1_score``.
    image: (N, D); pos_text: (P, D); neg_text: (Q, D), Q >= G.
    """
    tau = check_positive(tau, "tau", TAU_HINT)
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or n_groups < 1:
        raise ValueError(f"n_groups must be an int >= 1, got {n_groups!r}.")
    neg_text = check_matrix(neg_text, "negative text features")
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
        lse_pos = lse_(logits[:, :n_pos]).unsqueeze(1)
        lse_neg = lse_(logits[:, n_pos:].view(len(logits), n_groups, size))
        out[rows] = torch.sigmoid((lse_pos - lse_neg).double()).mean(dim=1).cpu()
    return out


def mcm_score(image: torch.Tensor, class_text: torch.Tensor, temperature: float = 1.0,
              budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """MCM (Ming et al. 2022): max softmax of cosine similarities / T over Y_GT, shape (N,).

    MCM's logits are plain cosine similarities with T = 1 (its paper's default), not CLIP's
    logit-scaled ones; pass ``temperature=1/logit_scale`` for the latter.
    """
    temperature = check_positive(temperature, "temperature")
    class_text = check_features(class_text, "class text features")
    image = check_features(image, "image features", class_text.shape[1])
    out = torch.empty(image.shape[0])
    for rows, logits in similarity_chunks(image, class_text, budget, device, scale=1.0 / temperature):
        out[rows] = (logits.amax(dim=1) - torch.logsumexp(logits, dim=1)).exp().cpu()
    return out


# --------------------------------------------------------------------------------------------------
# Logit-based baselines over Y_GT (CLIP's zero-shot logits = logit_scale · cosine)
# --------------------------------------------------------------------------------------------------

def maxlogit_score(image: torch.Tensor, class_text: torch.Tensor, logit_scale: float,
                   budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """MaxLogit (Hendrycks et al. 2022): ``max_c logit_scale · cos(h, z_c)`` over Y_GT, shape (N,).

    image: (N, D); class_text: (C, D). Uses CLIP's logit scale (a monotone rescaling of the max cosine,
    so AUROC / FPR95 do not depend on it).
    """
    logit_scale = check_positive(logit_scale, "logit_scale", SCALE_HINT)
    class_text = check_features(class_text, "class text features")
    image = check_features(image, "image features", class_text.shape[1])
    out = torch.empty(image.shape[0])
    for rows, sim in similarity_chunks(image, class_text, budget, device):
        out[rows] = (logit_scale * sim.max(dim=1).values).cpu()
    return out


def energy_score(image: torch.Tensor, class_text: torch.Tensor, logit_scale: float = 1.0,
                 temperature: float = 1.0, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """Negative free energy (Liu et al. 2020): ``T · logsumexp(logits / T)`` over Y_GT, shape (N,).

    logits = ``logit_scale · cos(h, z_c)``. The default ``logit_scale = 1`` is plain cosine at T = 1, as
    every official code runs Energy on CLIP: MCM's ``utils/detection_util.py`` (``get_ood_scores_clip``,
    score ``energy``), PLP's ``logit_evaluation.py`` with ``eval/ood_scores.py`` (``free_energy``; the
    ClusterMine authors' own code) and OpenOOD's ``ebo_postprocessor.py`` on ``openood/networks/clip.py``'s
    cosine logits. Over many classes this ranks like the mean cosine (≈ log C + mean + variance / 2).
    Pass CLIP's ``logit_scale`` (≈ 100) for the logit-scaled variant, which ranks almost like MaxLogit
    (``experiments.Settings.energy_logits = "scaled"``; this project's choice before issue 17).
    """
    logit_scale = check_positive(logit_scale, "logit_scale", SCALE_HINT)
    temperature = check_positive(temperature, "temperature")
    class_text = check_features(class_text, "class text features")
    image = check_features(image, "image features", class_text.shape[1])
    out = torch.empty(image.shape[0])
    for rows, logits in similarity_chunks(image, class_text, budget, device, scale=logit_scale / temperature):
        out[rows] = (temperature * torch.logsumexp(logits, dim=1)).cpu()
    return out


# --------------------------------------------------------------------------------------------------
# CLIPScope (Fu et al., arXiv 2405.14737, WACV 2025)
# --------------------------------------------------------------------------------------------------

def clipscope_class_counts(features: torch.Tensor, class_text: torch.Tensor,
                           budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """Training-set class histogram for CLIPScope: ``1 + #images predicted as class c`` (zero-shot
    argmax over Y_GT), (C,) float64. The +1 is the official code's initial count of one per class.

    The option ``experiments.Settings.clipscope_histogram = "train"``: estimated once from the unlabeled
    ID *training* images (which every method of this paper may read), so each image gets one fixed,
    non-transductive score. The official method (the default) updates the histogram online over the test
    stream instead: ``clipscope_online_scores``.
    """
    idx = zero_shot_top1(features, class_text, budget, device)[0]
    return 1.0 + torch.bincount(idx, minlength=class_text.shape[0]).double()


def _clipscope_parts(image, class_text, ood_text, logit_scale, budget, device):
    """(log[MSP_GT(x) · P_ID(x)] (N,) float64, ŷ (N,) long): CLIPScope's score without its prior."""
    logit_scale = check_positive(logit_scale, "logit_scale", SCALE_HINT)
    class_text = check_features(class_text, "class text features")
    ood_text = check_features(ood_text, "OOD label text features", class_text.shape[1])
    image = check_features(image, "image features", class_text.shape[1])
    n_pos = class_text.shape[0]
    base = torch.empty(image.shape[0], dtype=torch.float64)
    pred = torch.empty(image.shape[0], dtype=torch.long)
    for rows, sim in similarity_chunks(image, torch.cat([class_text, ood_text]), budget, device):
        logits = (logit_scale * sim).double()
        lse_pos = torch.logsumexp(logits[:, :n_pos], dim=1)
        top, p = logits[:, :n_pos].max(dim=1)
        log_pid = F.logsigmoid(lse_pos - torch.logsumexp(logits[:, n_pos:], dim=1))
        base[rows], pred[rows] = (top - lse_pos + log_pid).cpu(), p.cpu()
    return base, pred


def clipscope_score(image: torch.Tensor, class_text: torch.Tensor, ood_text: torch.Tensor, logit_scale: float,
                    class_counts: torch.Tensor, budget: int = DEFAULT_BUDGET, device=None) -> torch.Tensor:
    """CLIPScope's Bayesian score with a fixed class histogram, as its logarithm (monotone: same AUROC /
    FPR95), (N,) float64.

    ``log[ MSP_GT(x) · P_ID(x) / p(ŷ) ]`` where, with logits = ``logit_scale · cosine`` (CLIP's scale; the
    official ``CLIPScope.py`` hard-codes ``100 *``, ViT-B/16's scale):
    MSP_GT = max softmax over Y_GT, ŷ its argmax; P_ID = softmax mass of Y_GT among Y_GT ∪ OOD labels
    (Eq. 1 with τ = 1 / logit_scale); p(ŷ) = ``class_counts[ŷ] / Σ class_counts``
    (``clipscope_class_counts``). The log avoids underflow of P_ID for far-OOD images.
    image: (N, D); class_text: (C, D); ood_text: (Q, D) from ``clipscope_mine``; class_counts: (C,) > 0.
    The official method's histogram is online instead: ``clipscope_online_scores``.
    """
    class_text = check_features(class_text, "class text features")
    counts = as_tensor(class_counts, "class_counts").double().flatten().cpu()
    if counts.shape[0] != class_text.shape[0] or not (counts > 0).all() or not torch.isfinite(counts).all():
        raise ValueError(f"class_counts must hold {class_text.shape[0]} finite counts > 0, one per class, got "
                         f"{counts.shape[0]} with min {float(counts.min()) if len(counts) else 'n/a'}; "
                         "use clipscope_class_counts(train_features, class_text).")
    base, pred = _clipscope_parts(image, class_text, ood_text, logit_scale, budget, device)
    return base - (counts / counts.sum()).log()[pred]


def clipscope_online_prior(pred: torch.Tensor, n_classes: int, stream: torch.Tensor) -> torch.Tensor:
    """CLIPScope's online class prior p̂(ŷ_i) seen by each image when ``stream`` is processed in order,
    (n,) float64 in the images' own order.

    The official ``CLIPScope.py`` starts a histogram at one per class and, after scoring each image, adds
    one to its predicted class, so the i-th image of the stream (0-based) sees
    ``p̂ = (1 + #{j < i in the stream : ŷ_j = ŷ_i}) / (C + i)``. Computed at once: the earlier equal
    predictions are a rank within a stable sort by ŷ. pred: (n,) class indices; stream: a permutation of
    range(n).
    """
    pred = torch.as_tensor(pred).long().flatten()
    stream = torch.as_tensor(stream).long().flatten()
    n = pred.shape[0]
    if stream.shape[0] != n or not torch.equal(torch.sort(stream).values, torch.arange(n)):
        raise ValueError(f"stream must be a permutation of range({n}), one position per image.")
    if n and (int(pred.min()) < 0 or int(pred.max()) >= n_classes):
        raise ValueError(f"pred must hold class indices in [0, {n_classes}).")
    p = pred[stream]  # predictions in stream order
    order = torch.sort(p, stable=True).indices  # stream positions grouped by class, in stream order
    sorted_p = p[order]
    start = torch.ones(n, dtype=torch.bool)
    start[1:] = sorted_p[1:] != sorted_p[:-1]
    group_start = torch.cummax(torch.where(start, torch.arange(n), torch.zeros(n, dtype=torch.long)), 0).values
    earlier = torch.empty(n, dtype=torch.long)
    earlier[order] = torch.arange(n) - group_start
    prior = torch.empty(n, dtype=torch.float64)
    prior[stream] = (1.0 + earlier.double()) / (n_classes + torch.arange(n, dtype=torch.float64))
    return prior


def clipscope_online_scores(id_image: torch.Tensor, ood_image: torch.Tensor, class_text: torch.Tensor,
                            ood_text: torch.Tensor, logit_scale: float, seed: int = 0, stream=None,
                            budget: int = DEFAULT_BUDGET, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIPScope as its official code runs it (``fu1001hao/CLIPScope``, ``CLIPScope.py``): the class
    histogram is updated online over a random stream of the ID test images and one OOD set, so the ID
    scores depend on the OOD set they are evaluated against. Returns (ID scores (N_id,), OOD scores
    (N_ood,)), float64, as logarithms like ``clipscope_score``.

    Per image in stream order: ``log[MSP_GT · P_ID / p̂(ŷ)]`` with p̂ the histogram *before* that image
    is counted (``clipscope_online_prior``: starts at one per class; ID and OOD images alike are counted,
    the method is transductive). One fresh histogram per call, i.e. per OOD set, as the official code's
    one run per (ID, OOD) pair. Departures from that code, on purpose: the stream holds every image of
    both sets (the official one the first 10,000 of each in folder order) and is a permutation seeded by
    ``seed`` (official: unseeded ``np.random.permutation``), so the numbers are reproducible; logits are
    ``logit_scale · cosine`` (official: 100 ·). ``stream``: an explicit order, indices into
    ``cat(id_image, ood_image)`` (overrides ``seed``).
    """
    base_id, pred_id = _clipscope_parts(id_image, class_text, ood_text, logit_scale, budget, device)
    base_ood, pred_ood = _clipscope_parts(ood_image, class_text, ood_text, logit_scale, budget, device)
    n_id, n = len(base_id), len(base_id) + len(base_ood)
    if stream is None:
        stream = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    prior = clipscope_online_prior(torch.cat([pred_id, pred_ood]), class_text.shape[0], stream)
    out = torch.cat([base_id, base_ood]) - prior.log()
    return out[:n_id], out[n_id:]


@dataclass(frozen=True)
class PairScore:
    """A transductive score function: the ID set's scores depend on the OOD set they are evaluated
    against (CLIPScope's online histogram). ``pair(id_features, ood_features) -> (id_scores, ood_scores)``.

    ``tables.evaluate_score`` and ``runner.Runner`` score each (ID set, OOD set) pair with it; calling it on
    one set alone is an error that says so.
    """

    pair: Callable
    name: str = "this score"

    def __call__(self, features):
        raise TypeError(f"{self.name} scores an ID set and an OOD set together (its ID scores depend on the "
                        "OOD set): call .pair(id_features, ood_features).")
