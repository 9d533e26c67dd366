"""Exact kNN and TEMI clustering heads on precomputed image features.

ClusterMine clusters the CLIP image features of the ID set into C clusters with TEMI
(Adaloglou et al., "Exploring the limits of deep image clustering using pretrained models", BMVC 2023)
using its default parameters (beta=0.6, 50 heads). TEMI trains H small heads by self-distillation on
pairs (x, x') where x' is one of the k nearest neighbours of x in feature space, so the only
supervision is "neighbours probably share a cluster". Semantics follow the official code
(github.com/HHU-MMBS/TEMI-official-BMVC2023), re-written here; see ``TEMIConfig`` for the settings
and for where the official code's argparse defaults and its published training command differ.

All H heads are one batched computation: their weights are stacked along a leading head axis and
every layer is a ``bmm``, so 50 heads cost one kernel per layer instead of 50.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .knn import knn_indices
from .temi_loss import temi_losses
from .validation import check_matrix

__all__ = ["TEMIConfig", "TEMIResult", "fit_temi", "plateau_ratio",
           "PLATEAU_TAIL", "PLATEAU_TOL"]

# Convergence criterion, checked on every run: the last PLATEAU_TAIL of the steps lower the loss by
# less than PLATEAU_TOL of its total decrease (issue 13).
PLATEAU_TAIL = 0.10
PLATEAU_TOL = 0.02


def plateau_ratio(curve, tail: float = PLATEAU_TAIL) -> float:
    """How much the last ``tail`` of a loss curve still lowers the loss, as a share of the total
    decrease: -slope * tail * T / (L(start) - L(end)), T the number of steps.

    The slope is a least-squares line through the last 2 * tail of the steps and L(end) that line's
    value at the last step: single mini-batch losses are noisy (end-point differences of the demo's
    old 150-step preset read as "converged" while its trend still fell), and on a convex,
    decreasing curve the slope over the last 2 * tail is at least the slope over the last tail, so
    the check errs towards "not converged". L(start) is the mean of the first 1 % of the steps.
    Converged (TEMI's criterion): ratio < ``PLATEAU_TOL``; a curve whose trend ends rising has a
    negative ratio (converged). A curve that never went down, or has fewer than 10 steps, returns
    +inf (not converged).
    """
    c = torch.as_tensor(curve, dtype=torch.float64).flatten()
    n = len(c)
    if n < 10:
        return math.inf
    w = max(5, round(2 * tail * n))
    seg = c[n - w:]
    t = torch.arange(w, dtype=torch.float64)
    slope = float(((t - t.mean()) * (seg - seg.mean())).sum() / ((t - t.mean()) ** 2).sum())
    end = float(seg.mean()) + slope * (w - 1 - float(t.mean()))
    total = float(c[:max(1, round(0.01 * n))].mean()) - end
    return -slope * tail * n / total if total > 0 else math.inf


def _features(features) -> torch.Tensor:
    """Validated (N >= 2, D) features as float32 (float64 kept)."""
    x = check_matrix(features, "features", min_rows=2)
    return x if x.dtype == torch.float64 else x.float()


@dataclass
class TEMIConfig:
    """TEMI hyper-parameters. Defaults are the setting for real data (ClusterMine: C=4000, 50 heads).

    Sources: beta=0.6, 50 heads, k=50 and C=4000 from the ClusterMine/TEMI papers; the optimisation
    values from the official README training command (``--batch_size=1024 --lr=1e-4
    --min_lr=1e-4 --warmup_epochs=20 --epochs=100 --max_momentum_teacher=0.996``), which override
    the argparse defaults (lr 5e-4 -> 1e-6 cosine, momentum 0.996 -> 1 cosine, batch 64).

    lr is per 256 samples: the peak AdamW lr is ``lr * batch_size / 256`` (official linear scaling
    rule), reached after a linear warm-up of ``warmup_epochs`` and then cosine-annealed to
    ``min_lr * batch_size / 256`` (equal to the peak by default, i.e. constant).
    The teacher EMA momentum is cosine-scheduled from ``momentum`` to ``momentum_end`` (constant by
    default). The last layer is frozen for ``freeze_last_layer_epochs`` (official default 1) so the
    random prototypes are not pulled around while the MLP is still noise.
    ``standardize`` z-scores each feature dimension with the training set's mean/std first
    (official ``--embed_norm``). On by default: the README passes it for ImageNet over-clustering,
    which is ClusterMine's setting (its CIFAR command does not), and CLIP-like features share a
    large common direction (random pairs at cosine ~0.5-0.7) that otherwise makes all heads start
    with near-identical outputs; on such synthetic features the demo preset collapsed to 2 clusters
    without it and reached NMI 0.94 / purity 1.00 with it.
    Memory: a step keeps ~6 tensors of H x 2*batch_size x C floats (paper preset: 1.6 GB each);
    lower batch_size if that does not fit.
    """
    n_clusters: int = 4000
    n_heads: int = 50
    k: int = 50
    beta: float = 0.6
    epochs: int = 100
    batch_size: int = 1024
    lr: float = 1e-4
    min_lr: float = 1e-4
    warmup_epochs: int = 20
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8
    momentum: float = 0.996
    momentum_end: float = 0.996
    student_temp: float = 0.1
    teacher_temp: float = 0.1
    prior_momentum: float = 0.9
    hidden: int = 512
    bottleneck: int = 256
    freeze_last_layer_epochs: int = 1
    standardize: bool = True
    seed: int = 0

    @classmethod
    def demo(cls, n_clusters: int, **overrides) -> "TEMIConfig":
        """Preset for the 2-core CPU demo (N = 12,800, D = 256, 64 images per class, C = 200-1600),
        trained to its loss plateau (``PLATEAU_TOL``): 1 head, constant lr, 50 steps per epoch and
        20 epochs up to C = 400, 30 above (the loss of a heavier over-clustering settles later:
        clusters keep emptying). Cost on the shared 2-core machine, 1 thread: ~12 s at C = 200 / 400,
        ~25 s at C = 800, ~47 s at C = 1600. The last 10 % of the steps then lower the loss by
        0.4-2.5 % of its total decrease (seeds 0 / 1; the curve has small jumps when clusters empty):
        seed 0, the demo's, 1.8 / 1.3 / 1.0 / 0.7 % at C = 200 / 400 / 800 / 1600 (with 25 epochs at
        C = 800: 2.5 %, with 35: 2.0 %); 10 / 15 / 20 epochs (half the cost) gave 1.6-4.1 %.

        Measured on the simulated demo (docs/simulation.md, benchmarks/results/findings-sim-v2.md):
        - k = 3 neighbours, not 50: the paper's k = 50 is for ~1281 images per class and C = 4000
          (320 images per cluster); scaled by images per class (50 * 64 / 1281 = 2.5) k is ~3. With
          k = 50 a partner is often of another class and TEMI lost to k-means (NMI 0.71 vs 0.80 at
          C = 800 on the first v2 features); with k = 5 or 3 it wins (0.84-0.87);
        - lr 3e-3 per 256 samples, constant (min_lr = lr), so the plateau is not an artefact of lr
          annealing to zero (a cosine schedule to 1e-5 "converges" in 500 steps, but doubling its
          steps lowers the loss by a quarter); 1e-2 (the old preset's) and 2e-2 end lower in NMI;
        - 1 head (a step's cost is linear in the heads; 2 heads gave the same NMI) with a smaller MLP
          (hidden 256, bottleneck 128: ~1.7x faster per step than 512 / 256 and no worse; bottleneck 64
          is not faster at C = 1600 and plateaus later); batch 256 (128 was cheaper per step but
          worse: NMI 0.78 vs 0.82 at C = 800);
        - teacher momentum 0.9 (constant): 0.996 has a ~250-step memory, a third of the run;
        - AdamW eps 1e-12: at the start the instance weight w ~ 1/C and the mean over heads make
          gradients ~1e-8..1e-9, at or below the default eps 1e-8, which would damp exactly the first
          (symmetry-breaking) steps; no warm-up, last layer never frozen.
        """
        epochs = 20 if n_clusters <= 400 else 30
        base = dict(n_clusters=n_clusters, n_heads=1, k=3, epochs=epochs, batch_size=256, lr=3e-3,
                    min_lr=3e-3, warmup_epochs=0, momentum=0.9, momentum_end=0.9, adam_eps=1e-12,
                    freeze_last_layer_epochs=0, hidden=256, bottleneck=128)
        base.update(overrides)
        return cls(**base)


@dataclass
class TEMIResult:
    """Output of ``fit_temi``.

    labels: (N,) long, argmax of the trained teacher's best head. best_head: index of the head with
    the lowest mean loss over the last epoch. head_losses: (H,) those mean losses.
    epoch_losses: (epochs,) mean over heads per epoch. confidence: (N,) max probability.
    probs: (N, C) best-head teacher probabilities, only if ``return_probs`` (N*C floats!).
    head: best teacher head's parameters (CPU), used by ``predict``.
    loss_curve: (steps,) the training loss of every step, mean over heads. plateau: its
    ``plateau_ratio``; converged: plateau < ``PLATEAU_TOL`` (otherwise ``fit_temi`` warned).
    """
    labels: torch.Tensor
    best_head: int
    head_losses: torch.Tensor
    epoch_losses: torch.Tensor
    confidence: torch.Tensor
    probs: torch.Tensor | None
    head: dict
    config: TEMIConfig
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    loss_curve: torch.Tensor | None = None
    plateau: float = math.nan
    converged: bool = False

    @torch.no_grad()
    def _iter_probs(self, features, batch_size: int, device):
        """Yield (b, C) best-head teacher probabilities chunk by chunk, on ``device``."""
        x = _features(features)
        if x.shape[1] != self.head["w1"].shape[1]:
            raise ValueError(f"features have D={x.shape[1]} columns but the model was trained "
                             f"on D={self.head['w1'].shape[1]}.")
        device = torch.device(device) if device is not None else x.device
        head = {n: p.to(device) for n, p in self.head.items()}
        for start in range(0, len(x), batch_size):
            xb = self._prep(x[start:start + batch_size].to(device).float())
            yield F.softmax(_forward(head, xb, self.config.teacher_temp)[0], dim=-1)

    def predict(self, features, batch_size: int = 8192, device=None) -> torch.Tensor:
        """(M, D) new features -> (M,) long cluster ids from the trained teacher's best head."""
        return torch.cat([p.argmax(1).cpu() for p in self._iter_probs(features, batch_size, device)])

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def _init_heads(cfg: TEMIConfig, dim: int, gen: torch.Generator) -> dict:
    """Stacked parameters of H heads: Linear(D,hidden)-GELU-Linear(hidden,bottleneck)-L2-WN-Linear.

    Weights are drawn on the CPU generator so a seed gives the same heads on every device.
    As in DINO/TEMI: MLP weights ~ N(0, 0.02) (their trunc_normal cuts at +-2, never reached),
    zero biases; the last layer is weight-normed, direction v with nn.Linear's default
    U(+-1/sqrt(fan_in)) init, gain g initialised to 1 and *trained* (official norm_last_layer=False).
    """
    h, c = cfg.n_heads, cfg.n_clusters
    bound = 1.0 / math.sqrt(cfg.bottleneck)
    return {
        "w1": torch.randn(h, dim, cfg.hidden, generator=gen) * 0.02,
        "b1": torch.zeros(h, 1, cfg.hidden),
        "w2": torch.randn(h, cfg.hidden, cfg.bottleneck, generator=gen) * 0.02,
        "b2": torch.zeros(h, 1, cfg.bottleneck),
        "v": (torch.rand(h, cfg.bottleneck, c, generator=gen) * 2 - 1) * bound,
        "g": torch.ones(h, 1, c),
    }


def _forward(p: dict, x: torch.Tensor, temp: float = 1.0) -> torch.Tensor:
    """x: (B, D) -> logits / temp, (H, B, C), of all heads at once.

    The temperature is folded into the small (H, bottleneck, C) last-layer weight rather than
    dividing the large logits tensor: one fewer full pass forward and backward.
    """
    hid = F.gelu(torch.baddbmm(p["b1"], x.expand(len(p["w1"]), -1, -1), p["w1"]))  # (H, B, hidden)
    z = F.normalize(torch.baddbmm(p["b2"], hid, p["w2"]), dim=-1)  # (H, B, bottleneck)
    w = p["v"] * (p["g"] / (temp * p["v"].norm(dim=1, keepdim=True)))  # weight norm: unit cols * g
    return torch.bmm(z, w)                                     # (H, B, C), cosine * g / temp


def _cosine(it: int, total: int, warmup: int, start: float, end: float) -> float:
    """Linear warm-up from 0 to ``start`` over ``warmup`` iters, then cosine ``start`` -> ``end``."""
    if it < warmup:
        return start * (it + 1) / warmup
    t = (it - warmup) / max(1, total - warmup)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def _validate(x: torch.Tensor, cfg: TEMIConfig, knn) -> torch.Tensor | None:
    n = x.shape[0]
    c = cfg.n_clusters
    if not isinstance(c, int) or c < 2:
        raise ValueError(f"n_clusters={c} must be an integer >= 2.")
    if c > n:
        raise ValueError(f"C={c} is larger than the number of images N={n}; lower n_clusters.")
    if not isinstance(cfg.k, int) or not 1 <= cfg.k <= n - 1:
        raise ValueError(f"k={cfg.k} is out of range: need 1 <= k <= N-1 = {n - 1} neighbours "
                         f"(self excluded); lower k.")
    for name in ("n_heads", "epochs", "batch_size", "hidden", "bottleneck"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1.")
    if cfg.beta <= 0 or cfg.student_temp <= 0 or cfg.teacher_temp <= 0:
        raise ValueError("beta, student_temp and teacher_temp must be > 0.")
    if knn is None:
        return None
    knn = torch.as_tensor(knn)
    if knn.ndim != 2 or knn.shape[0] != n or knn.shape[1] < cfg.k:
        raise ValueError(f"knn must have shape (N={n}, >=k={cfg.k}), got {tuple(knn.shape)}; "
                         f"recompute it with knn_indices(features, k={cfg.k}).")
    if knn.is_floating_point() or knn.dtype == torch.bool:
        raise ValueError(f"knn must hold integer indices, got dtype {knn.dtype}.")
    knn = knn[:, :cfg.k].long()
    if knn.min() < 0 or knn.max() >= n:
        raise ValueError(f"knn holds indices outside [0, N-1={n - 1}]; it belongs to other features.")
    return knn


def fit_temi(features, config: TEMIConfig | None = None, knn=None, device=None,
             progress: bool = True, return_probs: bool = False) -> TEMIResult:
    """Train TEMI heads on (N, D) features and assign each image to one of C clusters.

    knn: optional precomputed (N, >=k) neighbour indices (self excluded); only the first k columns
    are used. device: where to train (default: the features' device). Deterministic on CPU for a
    given ``config.seed``: initialisation, shuffling and neighbour draws use one seeded generator.
    """
    cfg = config if config is not None else TEMIConfig()
    x = _features(features).float()
    knn = _validate(x, cfg, knn)
    n, dim = x.shape
    h, c = cfg.n_heads, cfg.n_clusters
    device = torch.device(device) if device is not None else x.device
    gen = torch.Generator().manual_seed(cfg.seed)

    if knn is None:
        knn = knn_indices(x, cfg.k, device=device, progress=progress)
    knn = knn.to(device)
    mean = std = None
    if cfg.standardize:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
        x = (x - mean) / std
        mean, std = mean.cpu(), std.cpu()
    x = x.to(device)

    student = {name: p.to(device).requires_grad_() for name, p in _init_heads(cfg, dim, gen).items()}
    teacher = {name: p.detach().clone() for name, p in student.items()}
    pk = torch.full((h, c), 1.0 / c, device=device)
    # official get_params_groups: no weight decay on biases (1-D params); g is (C, 1) there, decayed
    groups = [
        {"params": [student[n_] for n_ in ("w1", "w2", "v", "g")], "weight_decay": cfg.weight_decay},
        {"params": [student["b1"], student["b2"]], "weight_decay": 0.0},
    ]
    try:  # the fused kernel is several times faster on CPU; older torch lacks it
        opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps)

    bs = min(cfg.batch_size, n)
    steps = n // bs  # drop_last, as the official loader
    total = cfg.epochs * steps
    scale = bs / 256.0
    epoch_losses, head_losses = [], None
    curve = torch.empty(total, device=device)
    for epoch in tqdm(range(cfg.epochs), disable=not progress, desc="TEMI"):
        perm = torch.randperm(n, generator=gen).to(device)
        pick = torch.randint(cfg.k, (n,), generator=gen).to(device)
        partner = knn.gather(1, pick[:, None]).squeeze(1)  # one uniform neighbour per image
        loss_sum = torch.zeros(h, device=device)
        for step in range(steps):
            it = epoch * steps + step
            idx = perm[step * bs:(step + 1) * bs]
            xb = torch.cat([x[idx], x[partner[idx]]])  # (2B, D): x then x'
            with torch.no_grad():
                t = _forward(teacher, xb, cfg.teacher_temp)  # (H, 2B, C)
                pt, log_pt = F.softmax(t, dim=-1), F.log_softmax(t, dim=-1)
                pk.mul_(cfg.prior_momentum).add_(pt.mean(dim=1), alpha=1 - cfg.prior_momentum)
            losses = temi_losses(_forward(student, xb, cfg.student_temp), pt, pk, cfg.beta, log_pt)
            opt.zero_grad(set_to_none=True)
            losses.mean().backward()
            if epoch < cfg.freeze_last_layer_epochs:
                student["v"].grad = student["g"].grad = None
            lr = _cosine(it, total, cfg.warmup_epochs * steps, cfg.lr * scale, cfg.min_lr * scale)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            m = _cosine(it, total, 0, cfg.momentum, cfg.momentum_end)
            with torch.no_grad():
                for name, p in student.items():
                    teacher[name].lerp_(p, 1 - m)
            loss_sum += losses.detach()
            curve[it] = losses.detach().mean()
        head_losses = (loss_sum / steps).cpu()
        epoch_losses.append(head_losses.mean())
        if not torch.isfinite(head_losses).all():
            raise FloatingPointError(f"TEMI loss became non-finite in epoch {epoch}; "
                                     f"lower lr (now {cfg.lr}) or check the features.")

    best = int(head_losses.argmin())
    head = {name: p[best:best + 1].detach().cpu().clone() for name, p in teacher.items()}
    result = TEMIResult(labels=torch.empty(0, dtype=torch.long), best_head=best,
                        head_losses=head_losses, epoch_losses=torch.stack(epoch_losses),
                        confidence=torch.empty(0), probs=None, head=head, config=replace(cfg),
                        mean=mean, std=std, loss_curve=curve.cpu(), plateau=plateau_ratio(curve.cpu()))
    result.converged = bool(result.plateau < PLATEAU_TOL)
    conf, labels, keep = [], [], []
    for p in result._iter_probs(features, 8192, device):  # re-applies standardize
        top = p.max(dim=1)
        conf.append(top.values.cpu())
        labels.append(top.indices.cpu())
        if return_probs:
            keep.append(p.cpu())
    result.confidence, result.labels = torch.cat(conf), torch.cat(labels)
    result.probs = torch.cat(keep) if return_probs else None
    used = int(result.labels.unique().numel())
    # near-uniform teachers: below 3x uniform, or (C <= 5, where 3/C is >= 0.6) halfway from uniform to 1
    if used < 2 or result.confidence.mean() < min(3.0 / c, (1 + 1 / c) / 2):
        warnings.warn(f"TEMI did not converge: {used} of C={c} clusters used, mean confidence "
                      f"{float(result.confidence.mean()):.4f} (uniform = {1 / c:.4f}). Train longer "
                      f"(epochs), raise lr, or keep standardize=True for features with a common "
                      f"offset.", RuntimeWarning, stacklevel=2)
    elif not result.converged:
        how = (f"lowered the loss by {100 * result.plateau:.1f}% of its total decrease" if math.isfinite(result.plateau)
               else "cannot be judged (under 10 steps, or the loss never fell)")
        warnings.warn(f"TEMI stopped before its loss plateaued: the trend of the last {PLATEAU_TAIL:.0%} of the "
                      f"{total} steps {how} (criterion: < {PLATEAU_TOL:.0%}). Raise epochs (now {cfg.epochs}) "
                      f"or lr (now {cfg.lr:g}; min_lr {cfg.min_lr:g}).", RuntimeWarning, stacklevel=2)
    return result
