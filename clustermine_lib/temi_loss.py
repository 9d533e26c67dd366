"""TEMI's loss (Adaloglou et al., BMVC 2023), all heads at once, with its analytic gradient.

``temi_head_losses`` is the official loss on raw student logits; ``temi_losses`` takes them already
divided by the student temperature (what ``clustering.fit_temi`` calls every step). Both match the
official code to ~1e-15 in float64 (tests/test_clustering.py).
"""
from __future__ import annotations

import torch

from .dense import LSE_FLOOR


def temi_head_losses(student_logits: torch.Tensor, teacher_probs: torch.Tensor, pk: torch.Tensor,
                     beta: float = 0.6, student_temp: float = 0.1) -> torch.Tensor:
    """Per-head TEMI loss for a batch of neighbour pairs, all heads at once.

    student_logits: (H, 2B, C) raw logits; rows [:B] are the images x, rows [B:] their neighbours x'.
    teacher_probs: (H, 2B, C) teacher probabilities (already softmaxed), same row layout.
    pk: (H, C) per-head cluster prior (already updated with this batch, as officially).
    Returns (H,) losses.

    loss_h = -1/2 sum over the two cross views (s on x', t on x) and (s on x, t on x') of
        mean_b  w_b * log sum_k (p_s,k p_t,k)^beta / pk_k
    with w_b = mean over heads of sum_k p_t(x)_k p_t(x')_k (teacher agreement, no gradient):
    pairs the heads agree on count more, likely false-positive neighbours count less.

    Evaluated in log space, with log p_s = s/T - lse(s/T):
        log sum_k (p_s,k p_t,k)^beta / pk_k = lse_k(beta s_k/T + a_k) - beta lse(s/T),
        a = beta log p_t - log pk  (constant w.r.t. the student).
    Mathematically the official form, but only two logsumexps touch the (H, 2B, C) student tensor
    (the CPU demo is bound by these passes), and underflowing probabilities cannot produce the
    inf * 0 = NaN gradient that (p_s p_t)^beta has at 0.
    """
    return temi_losses(student_logits / student_temp, teacher_probs, pk, beta)


def temi_losses(s: torch.Tensor, teacher_probs: torch.Tensor, pk: torch.Tensor, beta: float,
                 teacher_log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """``temi_head_losses`` with the student logits already divided by the temperature.

    teacher_log_probs: log of ``teacher_probs`` when the caller has it exactly (log_softmax of the
    teacher logits); otherwise ``teacher_probs.log()``, -inf where a probability underflowed.
    """
    b = s.shape[1] // 2
    with torch.no_grad():
        pt = teacher_probs
        log_pt = pt.log() if teacher_log_probs is None else teacher_log_probs
        weight = (pt[:, :b] * pt[:, b:]).sum(-1).mean(0).repeat(2)      # (2B,)
        a = torch.empty_like(log_pt)  # student row of x meets teacher of x', and back:
        torch.mul(log_pt[:, b:], beta, out=a[:, :b])                    # a = beta log p_t - log pk
        torch.mul(log_pt[:, :b], beta, out=a[:, b:])                    # (H, 2B, C)
        a.sub_(pk.log().unsqueeze(1))
    return -(weight * _LogPMI.apply(s, a, beta)).mean(dim=1)


class _LogPMI(torch.autograd.Function):
    """(s, a, beta) -> lse(beta s + a) - beta lse(s) over the last dim, (H, 2B, C) -> (H, 2B).

    The gradient w.r.t. s is beta (softmax(beta s + a) - softmax(s)); both softmaxes are kept from
    the forward pass, so backward is two passes over the (H, 2B, C) tensors instead of autograd's
    chain through add / sub / exp / sum twice (the CPU demo is bound by these passes).
    ``a`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, s, a, beta):
        e_u, sum_u, lse_u = _exp_rows_(torch.add(a, s, alpha=beta))
        e_s, sum_s, lse_s = _exp_rows_(s.clone())
        ctx.save_for_backward(e_u, sum_u, e_s, sum_s)
        ctx.beta = beta
        return lse_u - beta * lse_s

    @staticmethod
    def backward(ctx, grad):
        e_u, sum_u, e_s, sum_s = ctx.saved_tensors
        g = grad.unsqueeze(-1) * ctx.beta
        return (e_u * (g / sum_u)).addcmul_(e_s, g / -sum_s), None, None


def _exp_rows_(x: torch.Tensor):
    """Overwrite x (..., C) with exp(x - rowmax), floored; return it, its row sums and logsumexp.

    Terms more than 80 below the row's max are floored at exp(-80) (``dense.LSE_FLOOR``): they
    change a sum by < 1e-30 relative, and it keeps ``exp`` off its slow path: on CPU, exp of an
    argument below about -87 (a denormal or zero result, or -inf) is 20-40x slower than of a
    normal one, and TEMI's sharp teachers put most of a row there.
    """
    m = x.amax(dim=-1, keepdim=True)
    e = x.sub_(m).clamp_min_(LSE_FLOOR).exp_()
    total = e.sum(dim=-1, keepdim=True)
    return e, total, total.log().add_(m).squeeze(-1)
