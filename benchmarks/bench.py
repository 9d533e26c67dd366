#!/usr/bin/env python
"""Speed and memory of clustermine's dense steps, as ratios to this machine's own matmul rate.

``make bench`` (= ``.venv/bin/python benchmarks/bench.py``) prints one table and writes it to
``benchmarks/results/<host>-<date>.md`` (atomic replace). Standard library + torch only.

    benchmarks/bench.py                 # CPU: A, B, D, E, H, F, kept within 5 min (--budget; sections that
                                        # would overrun on a loaded machine are skipped with a note)
    benchmarks/bench.py --budget 0      # the same, every section however long it takes
    benchmarks/bench.py --why           # adds section C (the ablation below), ~2 more minutes
    benchmarks/bench.py --quick         # CPU, ~1-2 min on an idle machine (smaller N, no demo)
    benchmarks/bench.py --device cuda   # adds the GPU rows (ImageNet-scale shapes); only on a CUDA box

Sections (see benchmarks/README.md for every column):
  A  the library's zero-shot top-1, Eq. 1 and NegLabel mining vs. a plain ``torch.mm`` of the same shapes
  B  peak extra memory of those library steps, each in a fresh subprocess (RSS high-water mark)
  C  only with --why: scratch variants in this file that switch the library's fixes off one at a time
     (chunk size, fresh vs. reused chunk buffer, exp's slow path, the sim / tau copy, quantile by sort)
  D  TEMI seconds per epoch at three N, all heads batched vs. a per-head loop, peak memory
  E  exact kNN (k = 50) at three N, peak memory
  F  end to end: ``python -m clustermine_lib.cli demo`` wall time
  G  GPU rows (ImageNet shapes), produced ONLY when ``--device cuda`` and CUDA is present
  H  the same scores computed the way the official codes do (``benchmarks/official_way.py``: per batch of
     256, full logits, softmax) beside the library's, same features, same run: time ratio, peak memory,
     float32 ties of the official Eq. 1

Every timing is the best of ``--reps`` (default 3) repetitions: other jobs may share the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clustermine_lib import clustering, dense, knn, mining, scoring, temi_loss  # noqa: E402
from benchmarks import official_way  # noqa: E402
from clustermine_lib.fileio import atomic_write  # noqa: E402
from clustermine_lib.validation import check_features, check_positive  # noqa: E402

MB = 2**20
T0 = time.perf_counter()
BUDGET_S = 300.0  # the whole default CPU run must finish within 5 minutes
WHY_S = 150.0  # --why adds section C: its ~100 s idle and some margin


# ================================================================================================
# helpers
# ================================================================================================

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device = torch.device("cpu")):
    """Wall time of one call of ``fn`` (garbage collected and device synchronised before, synchronised
    after), and its result."""
    gc.collect()
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def best_of(fn, reps: int, device: torch.device = torch.device("cpu")):
    """Best (minimum) wall time of ``reps`` calls of ``fn``, and the last call's result."""
    best, out = math.inf, None
    for _ in range(reps):
        out = None  # free the previous result before the next call
        t, out = timed(fn, device)
        best = min(best, t)
    return best, out


def unit_rows(n: int, d: int, device: torch.device, seed: int) -> torch.Tensor:
    """(n, d) random unit rows, built in place (no temporary copy: keeps the RSS baseline honest)."""
    if device.type == "cuda":
        torch.manual_seed(seed)
        x = torch.randn(n, d, device=device)
    else:
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x.div_(x.norm(dim=1, keepdim=True))


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    if abs(b) >= 2**30:
        return f"{b / 2**30:.2f} GiB"
    return f"{b / MB:.0f} MiB"


def fmt_s(s: float) -> str:
    return f"{s:.3f}" if s < 10 else f"{s:.1f}"


def elapsed() -> float:
    return time.perf_counter() - T0


class Table:
    """The one results table: section, row, shape, seconds, GFLOP/s, ratio, memory, notes."""

    cols = ("sec", "row", "shape", "time s (best of reps)", "GFLOP/s", "ratio to mm", "peak extra mem", "notes")

    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, sec, row, shape="", seconds=None, gflops=None, ratio=None, mem="", notes=""):
        r = (sec, row, shape, fmt_s(seconds) if seconds is not None else "",
             f"{gflops:.1f}" if gflops is not None else "", f"{ratio:.2f}" if ratio is not None else "",
             mem, notes)
        self.rows.append(r)
        print(" | ".join(str(c) for c in r), flush=True)

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.cols) + " |", "|" + "---|" * len(self.cols)]
        out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in self.rows]
        return "\n".join(out)


# ================================================================================================
# section C (--why) only: the library's fixes switched off one at a time. Whatever the library does
# itself is called from it (similarity_chunks, normalized_rows, lse_, quantile_rows, row_stat); the
# scratch code below is only what the library no longer does.
# ================================================================================================

def _fresh_chunks(image, text, budget, scale=None):
    """``dense.similarity_chunks`` without its reused buffer: a fresh (r, K) result per chunk, so the
    allocator maps and page-faults a new block every time (the library before 5d30061)."""
    step = dense.rows_per_chunk(text.shape[0], budget)
    for start in range(0, image.shape[0], step):
        rows = slice(start, min(start + step, image.shape[0]))
        a = image[rows] if scale is None else image[rows] * scale
        yield rows, a @ text.T


def _lse_unclamped_(x: torch.Tensor) -> torch.Tensor:
    """``dense.lse_`` without its ``clamp_min_``: exp_ then meets inputs far below -87, its slow path."""
    m = x.amax(dim=-1, keepdim=True)
    return x.sub_(m).exp_().sum(dim=-1).log_().add_(m.squeeze(-1))


def eq1_ablation(image, pos_text, neg_text, tau, budget, lse: str = "clamped", fold: bool = True,
                 reuse: bool = True):
    """``scoring.eq1_logit`` with fixes switched off (with all of them on, call the library itself).

    lse: "torch" (``torch.logsumexp``) or "clamped" (``dense.lse_``, in place); fold: 1/tau multiplies
    the (r, D) image chunk (else a fresh ``sim / tau`` (r, K) copy); reuse: ``dense.similarity_chunks``
    (one buffer) vs. a fresh chunk each time. The text is always ``torch.cat`` of two normalised copies,
    and a chunk spans all K columns: the library's ``eq1_logit`` instead passes over Y_pos and Y_neg
    separately in cache-sized column tiles (``dense.similarity_tiles``), the last step of the ladder.
    """
    tau = check_positive(tau, "tau")
    d, n_pos = pos_text.shape[1], pos_text.shape[0]
    text = torch.cat([check_features(pos_text, "pos"), check_features(neg_text, "neg", d)])
    image = check_features(image, "image features", d)
    chunks = dense.similarity_chunks if reuse else _fresh_chunks
    lse_ = dense.lse_ if lse == "clamped" else (lambda x: torch.logsumexp(x, dim=-1))
    out = torch.empty(image.shape[0])
    for rows, sim in chunks(image, text, budget, scale=(1.0 / tau) if fold else None):
        logits = sim if fold else sim / tau
        out[rows] = lse_(logits[:, :n_pos]) - lse_(logits[:, n_pos:])
    return out


def select_negatives_by_sort(pos_text, corpus_text, candidates, k, quantile=0.95):
    """``mining.select_negatives`` with ``torch.quantile`` (a full sort of every row) in place of the
    library's ``quantile_rows`` (partial topk): the same ``row_stat`` chunking, only the reduction differs."""
    pos = check_features(pos_text, "positive text features")
    stat = dense.row_stat(corpus_text, pos, lambda s: torch.quantile(s, quantile, dim=1),
                          dense.DEFAULT_BUDGET, None, candidates)
    return candidates[torch.sort(stat, stable=True).indices[:k]]


# ================================================================================================
# TEMI: one training step, batched (as fit_temi) or a per-head loop, from the module's building blocks
# ================================================================================================

class _LogSumExp(torch.autograd.Function):
    """TEMI's differentiable logsumexp, (..., C) -> (...), as ``clustering`` had it (this file was its
    only user): terms floored at ``dense.LSE_FLOOR`` below the row's max; its gradient is the softmax
    kept from the forward pass. Section C times it beside torch's and the library's."""

    @staticmethod
    def forward(ctx, x):
        m = x.amax(dim=-1, keepdim=True)
        e = (x - m).clamp_min_(dense.LSE_FLOOR).exp_()
        total = e.sum(dim=-1, keepdim=True)
        ctx.save_for_backward(e, total)
        return total.log().add_(m).squeeze(-1)

    @staticmethod
    def backward(ctx, grad):
        e, total = ctx.saved_tensors
        return e * (grad.unsqueeze(-1) / total)


def _logsumexp(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim, differentiable; see ``_LogSumExp``."""
    return _LogSumExp.apply(x)


def temi_setup(x: torch.Tensor, cfg, per_head: bool, device: torch.device):
    """Student/teacher parameter sets and AdamW, exactly as ``fit_temi`` builds them.

    per_head=False: one dict of stacked (H, ...) tensors (what fit_temi trains).
    per_head=True: H dicts of (1, ...) tensors, separate leaves per head, like an ``nn.ModuleList``
    of heads (the official TEMI code's layout), same initial values.
    """
    init = clustering._init_heads(cfg, x.shape[1], torch.Generator().manual_seed(cfg.seed))
    if per_head:
        student = [{n: p[h:h + 1].clone().to(device).requires_grad_() for n, p in init.items()}
                   for h in range(cfg.n_heads)]
    else:
        student = [{n: p.to(device).requires_grad_() for n, p in init.items()}]
    teacher = [{n: p.detach().clone() for n, p in s.items()} for s in student]
    decay = [s[n] for s in student for n in ("w1", "w2", "v", "g")]
    no_decay = [s[n] for s in student for n in ("b1", "b2")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.adam_eps)
    pk = torch.full((cfg.n_heads, cfg.n_clusters), 1.0 / cfg.n_clusters, device=device)
    return student, teacher, pk, opt


def temi_step(student, teacher, pk, opt, xb, cfg, lr, m):
    """One TEMI optimiser step on a (2B, D) batch [x; x'] — fit_temi's inner loop body."""
    b = xb.shape[0] // 2
    with torch.no_grad():
        pt = torch.cat([F.softmax(clustering._forward(t, xb, cfg.teacher_temp), dim=-1) for t in teacher])
        pk.mul_(cfg.prior_momentum).add_(pt.mean(dim=1), alpha=1 - cfg.prior_momentum)
    if len(student) == 1:  # batched: all heads in one bmm per layer (the library path)
        losses = temi_loss.temi_losses(clustering._forward(student[0], xb, cfg.student_temp), pt, pk, cfg.beta)
    else:  # per-head loop: same maths as temi_loss.temi_losses, head by head (weight = mean over ALL heads)
        with torch.no_grad():
            weight = (pt[:, :b] * pt[:, b:]).sum(-1).mean(0).repeat(2)
        per = []
        for h, p in enumerate(student):
            s = clustering._forward(p, xb, cfg.student_temp)  # (1, 2B, C)
            with torch.no_grad():
                a = cfg.beta * pt[h:h + 1].log() - pk[h:h + 1].log().unsqueeze(1)
                a = torch.cat([a[:, b:], a[:, :b]], dim=1)
            lp = _logsumexp(cfg.beta * s + a) - cfg.beta * _logsumexp(s)
            per.append(-(weight * lp).mean(dim=1))
        losses = torch.cat(per)
    opt.zero_grad(set_to_none=True)
    losses.mean().backward()
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    with torch.no_grad():
        for s_, t_ in zip(student, teacher):
            for n in s_:
                t_[n].lerp_(s_[n], 1 - m)
    return losses.detach()


def temi_steps(x, knn, cfg, per_head: bool, n_steps: int, device, warmup: int = 1) -> float:
    """Seconds per step of ``n_steps`` steps (after ``warmup`` untimed ones), fit_temi's batching."""
    student, teacher, pk, opt = temi_setup(x, cfg, per_head, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x.shape[0]
    bs = min(cfg.batch_size, n)
    total_steps = max(1, n // bs)
    scale = bs / 256.0
    t = None
    for it in range(warmup + n_steps):
        if it == warmup:
            _sync(device)
            t = time.perf_counter()
        step = it % total_steps
        if step == 0:
            perm = torch.randperm(n, generator=gen).to(device)
            pick = torch.randint(cfg.k, (n,), generator=gen).to(device)
            partner = knn.gather(1, pick[:, None]).squeeze(1)
        idx = perm[step * bs:(step + 1) * bs]
        xb = torch.cat([x[idx], x[partner[idx]]])
        lr = clustering._cosine(it, 10**9, 0, cfg.lr * scale, cfg.min_lr * scale)
        temi_step(student, teacher, pk, opt, xb, cfg, lr, cfg.momentum)
    _sync(device)
    return (time.perf_counter() - t) / n_steps


def temi_equivalence(x, knn, cfg, device) -> float:
    """Max |difference| of teacher weights after 2 steps: batched vs per-head loop (same init, batch)."""
    out = []
    for per_head in (False, True):
        student, teacher, pk, opt = temi_setup(x, cfg, per_head, device)
        bs = min(cfg.batch_size, x.shape[0])
        for it in range(2):
            idx = torch.arange(it * bs, (it + 1) * bs, device=device) % x.shape[0]
            xb = torch.cat([x[idx], x[knn[idx, 0]]])
            temi_step(student, teacher, pk, opt, xb, cfg, cfg.lr * bs / 256, cfg.momentum)
        out.append({n: torch.cat([t[n] for t in teacher]) for n in teacher[0]})
    return max(float((out[0][n] - out[1][n]).abs().max()) for n in out[0])


def temi_config(c, heads, bs, quick_epochs=1, **kw):
    return clustering.TEMIConfig.demo(c, n_heads=heads, batch_size=bs, epochs=quick_epochs, **kw)


# ================================================================================================
# memory: one fresh subprocess per measurement
# ================================================================================================

def _rss_now_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _hwm_kb() -> int:
    """RSS high-water mark (VmHWM) in kB; falls back to getrusage's ru_maxrss (kB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_hwm() -> bool:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0: echo 5 > clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mem_op(op: str, n: int, k: int, d: int, p: int, extra: dict):
    """Build the inputs of one measured operation; return a callable running it (on the CPU)."""
    cpu = torch.device("cpu")
    if op == "top1":
        img, txt = unit_rows(n, d, cpu, 1), unit_rows(k, d, cpu, 2)
        return lambda: dense.zero_shot_top1(img, txt)
    if op == "eq1":
        img = unit_rows(n, d, cpu, 1)
        pos, neg = unit_rows(p, d, cpu, 2), unit_rows(k - p, d, cpu, 3)
        return lambda: scoring.eq1_logit(img, pos, neg, 1e-3)
    if op == "neglabel":  # n = number of positives P, k = corpus size
        pos, corpus = unit_rows(n, d, cpu, 2), unit_rows(k, d, cpu, 3)
        cand = torch.arange(n, k)
        keep = min(10_000, (k - n) // 2)
        return lambda: mining.select_negatives(pos, corpus, cand, keep)
    if op in ("eq1_official", "top1_official"):
        img, text = unit_rows(n, d, cpu, 1), unit_rows(k, d, cpu, 2)
        if op == "top1_official":
            return lambda: official_way.top1_official(img, text)
        return lambda: official_way.eq1_official(img, text[:p], text[p:], 1e-3)
    if op in ("grouped", "grouped_official"):  # k = P + Q with Q negatives in extra["groups"] groups
        img, pos, neg = unit_rows(n, d, cpu, 1), unit_rows(p, d, cpu, 2), unit_rows(k - p, d, cpu, 3)
        fn = official_way.grouped_official if op == "grouped_official" else scoring.grouped_eq1_score
        return lambda: fn(img, pos, neg, 0.01, extra.get("groups", 100))
    if op == "knn":
        x = unit_rows(n, d, cpu, 1)
        return lambda: knn.knn_indices(x, k=extra.get("kk", 50))
    if op == "temi":
        x = unit_rows(n, d, cpu, 1)
        knn = torch.randint(0, n, (n, 50), generator=torch.Generator().manual_seed(0))
        cfg = temi_config(extra["c"], extra["heads"], extra["bs"])

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clustering.fit_temi(x, cfg, knn=knn, progress=False)
        return run
    raise ValueError(op)


def child_mem(args) -> None:
    """Child process: warm up on tiny shapes, take the RSS baseline, run once, print the peak delta."""
    extra = json.loads(args.extra)
    warm = _mem_op(args.op, *( (min(args.n, 64), min(args.k, 256), args.d, min(args.p, 16)) if args.op != "temi"
                               else (256, 0, args.d, 0)),
                   {**extra, "c": min(extra.get("c", 8), 16), "kk": 5, "groups": min(extra.get("groups", 4), 4)})
    warm()  # initialises OpenMP/BLAS pools and lazy state, so they are not counted below
    del warm
    fn = _mem_op(args.op, args.n, args.k, args.d, args.p, extra)
    gc.collect()
    reset = _reset_hwm()
    base_rss, base_hwm = _rss_now_kb(), _hwm_kb()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    print(json.dumps({"base_rss_kb": base_rss, "base_hwm_kb": base_hwm, "peak_kb": _hwm_kb(),
                      "reset": reset, "seconds": dt}))


def measure_mem(op: str, n: int, k: int = 0, d: int = 512, p: int = 0, timeout: float = 120, **extra):
    """Peak RSS growth (bytes) of one run of ``op`` in a fresh subprocess, or None on failure."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-mem", op, "--n", str(n), "--k", str(k),
           "--d", str(d), "--p", str(p), "--extra", json.dumps(extra)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        print(f"  memory child {op} n={n} failed: {e!r}", flush=True)
        return None
    # baseline = the high-water mark just before the run (equals the current RSS after the reset)
    res["delta"] = (res["peak_kb"] - max(res["base_hwm_kb"], res["base_rss_kb"])) * 1024
    return res


# ================================================================================================
# sections
# ================================================================================================

class RefMM:
    """A plain ``torch.mm(a, b.T)`` of the full shapes into a preallocated (already touched) output.

    Only when that output would exceed ``cap_bytes`` (the GPU's ImageNet shapes) is the same product run
    in row blocks of ``cap_bytes`` into one reused buffer. The reference is re-timed next to every row
    (``paired``), so each ratio compares two timings from the same few seconds: on a shared machine the
    load changes between rows, and a reference timed once at the start would not match later rows.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, device, cap_bytes: float = 4 * 2**30):
        self.a, self.bt, self.device = a, b.T, device
        n, k = a.shape[0], b.shape[0]
        self.rows = n if n * k * 4 <= cap_bytes else max(1, int(cap_bytes // (k * 4)))
        self.blocked = self.rows < n
        self.out = torch.empty(self.rows, k, device=a.device)
        self.out.zero_()
        self.run()  # warm-up (BLAS init)

    def run(self):
        for s in range(0, self.a.shape[0], self.rows):
            blk = self.a[s:s + self.rows]
            torch.mm(blk, self.bt, out=self.out[: blk.shape[0]])

    def once(self) -> float:
        _sync(self.device)
        t = time.perf_counter()
        self.run()
        _sync(self.device)
        return time.perf_counter() - t


def paired(fn, ref: RefMM, reps: int, device):
    """Interleave ``ref, fn, ref, fn, ...`` ``reps`` times: (best fn time, best ref time of the same
    window, fn's last result)."""
    best_t = best_r = math.inf
    out = None
    for _ in range(reps):
        best_r = min(best_r, ref.once())
        out = None  # free the previous result before the next call
        t, out = timed(fn, device)
        best_t = min(best_t, t)
    return best_t, best_r, out


def _lg(budget: int) -> str:
    return f"2^{int(math.log2(budget))}"


MM_RATE: dict = {}  # section -> GFLOP/s of its reference torch.mm
CHECK_ROWS = 128  # A: rows checked against a plain torch computation of the same quantity


def section_scoring(tab: Table, args, device, n, k, d, p, gpu=False):
    """A (or G on a GPU): the library's zero_shot_top1, eq1_logit and select_negatives vs torch.mm."""
    sec, tag = ("G", " [GPU]") if gpu else ("A", "")
    dev = device if gpu else None
    img = unit_rows(n, d, device, 1)
    pos, neg = unit_rows(p, d, device, 2), unit_rows(k - p, d, device, 3)
    text = torch.cat([pos, neg])
    flop = 2.0 * n * k * d
    rows = dense.rows_per_chunk(k)
    chunk_mem = f"chunk {fmt_bytes(min(rows, n) * k * 4)}"
    n_ch = math.ceil(n / rows)
    chunks = (f"budget {_lg(dense.DEFAULT_BUDGET)} = {rows} rows/chunk, one reused buffer "
              f"({n_ch} chunk{'s' * (n_ch > 1)})")
    if torch.device(device).type == "cpu":  # top-1 and Eq. 1 run over cache-sized column tiles there
        chunk_mem = f"tile {fmt_bytes(min(dense.TILE_ROWS, n) * min(dense.TILE_COLS, k) * 4)}"
        chunks = f"{dense.TILE_ROWS} x {dense.TILE_COLS} column tiles (dense.similarity_tiles), one reused buffer"
    ref_mm = RefMM(img, text, device)
    t_mm, _ = best_of(ref_mm.run, args.reps, device)
    shape = f"N={n} K={k} D={d}"
    MM_RATE.setdefault(sec, flop / t_mm / 1e9)
    tab.add(sec, f"torch.mm reference (N x D) @ (D x K){tag}", shape, t_mm, flop / t_mm / 1e9, 1.0, "-",
            "the machine's own matmul rate (output preallocated); re-timed next to each row below"
            + ("; in row blocks (N x K does not fit)" if ref_mm.blocked else ""))
    sim = img[:CHECK_ROWS] @ text.T  # plain torch on the first rows, to check the library's results
    t, tr, got = paired(lambda: dense.zero_shot_top1(img, text, device=dev), ref_mm, args.reps, device)
    same = bool(torch.equal(got[0][:CHECK_ROWS], sim.argmax(dim=1).cpu()))
    tab.add(sec, f"zero_shot_top1 (library){tag}", shape, t, flop / t / 1e9, tr / t, chunk_mem,
            f"{chunks}; argmax = torch's on the first {CHECK_ROWS} rows: {same}")
    t, tr, got = paired(lambda: scoring.eq1_logit(img, pos, neg, 1e-3, device=dev), ref_mm, args.reps, device)
    want = (torch.logsumexp(sim[:, :p] / 1e-3, dim=1) - torch.logsumexp(sim[:, p:] / 1e-3, dim=1)).cpu()
    tab.add(sec, f"eq1_logit (library){tag}", f"N={n} P={p} Q={k - p} D={d}", t, flop / t / 1e9, tr / t,
            chunk_mem, f"tau = 1e-3 (the paper's); 1/tau folded into the image chunk, clamped in-place logsumexp; "
            f"max abs diff vs torch.logsumexp(sim / tau) on the first {CHECK_ROWS} rows "
            f"{float((got[:CHECK_ROWS] - want).abs().max()):.1e} (logit units, values ~1e2)")
    del sim, got, want, ref_mm
    # NegLabel mining: 0.95-quantile of each candidate's cosines to the P positives, keep the 10K lowest
    q = k - p
    nflop = 2.0 * q * p * d
    ref_mm2 = RefMM(neg, pos, device)
    t_mm2, _ = best_of(ref_mm2.run, args.reps, device)
    cand = torch.arange(p, k, device=text.device)
    nshape = f"Q={q} P={p} D={d}"
    tab.add(sec, f"torch.mm reference (Q x D) @ (D x P){tag}", nshape, t_mm2, nflop / t_mm2 / 1e9, 1.0, "-", "")
    t, tr, _ = paired(lambda: mining.select_negatives(pos, text, cand, 10_000, device=dev), ref_mm2, args.reps,
                      device)
    nrows = min(dense.rows_per_chunk(p), q)
    tab.add(sec, f"select_negatives / NegLabel K=10000 (library){tag}", nshape, t, nflop / t / 1e9, tr / t,
            f"chunk {fmt_bytes(nrows * p * 4)}", f"{nrows} candidates/chunk; quantile by topk (dense.quantile_rows)")
    del img, pos, neg, text, ref_mm2
    gc.collect()


def section_variants(tab: Table, args, n, k, d, p, quick=False):
    """C (--why): the library's fixes switched off one at a time (per-row costs do not depend on N once
    chunked). Rows that call the library say so; the others use the scratch helpers above."""
    dev = torch.device("cpu")
    img = unit_rows(n, d, dev, 1)
    pos, neg = unit_rows(p, d, dev, 2), unit_rows(k - p, d, dev, 3)
    text = torch.cat([pos, neg])
    flop = 2.0 * n * k * d
    ref_mm = RefMM(img, text, dev)
    t_mm, _ = best_of(ref_mm.run, args.reps)
    lib = _lg(dense.DEFAULT_BUDGET)
    tab.add("C", "torch.mm reference", f"N={n} K={k} D={d}", t_mm, flop / t_mm / 1e9, 1.0, "-",
            f"reference for the C rows, re-timed next to each; N = one chunk at {lib}")
    # 1. chunked matmul alone (nothing done with the chunk): chunk size, fresh vs reused buffer
    plan = [(2**24, False), (2**24, True), (2**26, True)] if quick else \
        [(2**22, True), (2**24, False), (2**24, True), (2**25, True), (2**26, True)]
    for budget, reuse in plan:
        rows = dense.rows_per_chunk(k, budget)

        def run(budget=budget, reuse=reuse):
            for _ in (dense.similarity_chunks if reuse else _fresh_chunks)(img, text, budget):
                pass
        t, tr, _ = paired(run, ref_mm, args.reps, dev)
        name = "reused buffer (dense.similarity_chunks)" if reuse else "fresh chunk each time (scratch)"
        tab.add("C", f"chunked mm only, {name}", f"budget {_lg(budget)} = {rows} rows", t, flop / t / 1e9, tr / t,
                fmt_bytes(min(rows, n) * k * 4),
                "= the reference product: its distance from 1.00 is this run's noise" if rows >= n else "")
    # 2. Eq. 1, the fixes added one at a time (the last ones are the library itself)
    steps = [("Eq.1, no fix: torch.logsumexp, sim / tau copy, fresh chunks (scratch)", 2**24,
              dict(lse="torch", fold=False, reuse=False)),
             ("+ clamped in-place logsumexp (dense.lse_)", 2**24, dict(lse="clamped", fold=False, reuse=False)),
             ("+ 1/tau folded into the (r x D) image chunk", 2**24, dict(lse="clamped", fold=True, reuse=False)),
             ("+ one reused chunk buffer (dense.similarity_chunks)", 2**24, dict(lse="clamped", fold=True, reuse=True)),
             ("  same, library default budget (the library before column tiles)", 2**26,
              dict(lse="clamped", fold=True, reuse=True)),
             ("+ column tiles (dense.similarity_tiles) = scoring.eq1_logit", 2**26, None)]
    if quick:
        steps = [steps[0], steps[1], steps[4], steps[5]]
    ref = None
    for name, budget, kw in steps:
        if kw is None:
            fn = lambda budget=budget: scoring.eq1_logit(img, pos, neg, 1e-3, budget)  # noqa: E731
        else:
            fn = lambda budget=budget, kw=kw: eq1_ablation(img, pos, neg, 1e-3, budget, **kw)  # noqa: E731
        t, tr, got = paired(fn, ref_mm, args.reps, dev)
        ref = got if ref is None else ref
        mem = min(dense.TILE_ROWS, n) * min(dense.TILE_COLS, k) if kw is None and dev.type == "cpu" \
            else min(dense.rows_per_chunk(k, budget), n) * k
        tab.add("C", name, f"budget {_lg(budget)}", t, flop / t / 1e9, tr / t, fmt_bytes(mem * 4),
                f"max abs diff vs the first row {float((got - ref).abs().max()):.1e}")
    # 3. what each elementwise pass costs per element of one 2^24-element block (the cost per element
    # does not depend on the block's size)
    rows = dense.rows_per_chunk(k, 2**24)
    blk = img[:rows] @ text.T / 1e-3
    spare = torch.empty_like(blk)
    del ref_mm
    per_mm = t_mm / (n * k) * 1e9
    for name, fn in [("torch.logsumexp", lambda: torch.logsumexp(blk, dim=1)),
                     ("TEMI's autograd logsumexp (_logsumexp here)", lambda: _logsumexp(blk)),
                     ("in-place logsumexp, no clamp (scratch)", lambda: _lse_unclamped_(spare.copy_(blk))),
                     ("dense.lse_ (in place, clamp_min_(-80))", lambda: dense.lse_(spare.copy_(blk))),
                     ("  (copy_ into a spare buffer, included in the two above)", lambda: spare.copy_(blk)),
                     ("sim / tau (fresh copy)", lambda: blk / 1e-3),
                     ("exp_ on logits - max (range ~ -300..0)", lambda: spare.copy_(blk).sub_(blk.amax(1, True)).exp_()),
                     ("max(dim=1) values+indices (top1)", lambda: blk.max(dim=1))]:
        t, _ = best_of(fn, max(3, args.reps))
        tab.add("C", f"per element: {name}", f"one block {rows} x {k}", t, None, None, "",
                f"{t / blk.numel() * 1e9:.2f} ns/elem (the matmul itself: {per_mm:.2f} ns/elem)")
    if args.compile:  # a fused kernel: 2 passes over the chunk instead of 6 (costs a one-off compile)
        for clamp in (True, False):
            def lse2(x, n_pos: int, clamp: bool = clamp):
                out = []
                for part in (x[:, :n_pos], x[:, n_pos:]):
                    m = part.amax(1, keepdim=True)
                    z = (part - m).clamp_min(dense.LSE_FLOOR) if clamp else part - m
                    out.append(z.exp().sum(1).log() + m.squeeze(1))
                return out[0] - out[1]
            t0 = time.perf_counter()
            fc = torch.compile(lse2, dynamic=False)
            err = float((fc(blk, p) - (torch.logsumexp(blk[:, :p], 1) - torch.logsumexp(blk[:, p:], 1))).abs().max())
            tc = time.perf_counter() - t0
            t, _ = best_of(lambda: fc(blk, p), max(3, args.reps))
            tab.add("C", f"per element: torch.compile'd Eq.1 LSE pair{' + clamp' if clamp else ', no clamp'}",
                    f"one block {rows} x {k}", t, None, None, "",
                    f"{t / blk.numel() * 1e9:.2f} ns/elem; compile {tc:.0f} s; max abs diff {err:.1e}")
    del blk, spare
    # 4. NegLabel: the 0.95-quantile by a full sort (torch.quantile) vs. by topk (dense.quantile_rows)
    rows_q = dense.rows_per_chunk(p, 2**24)
    cand_blk = text[p:p + rows_q]
    sblk = cand_blk @ pos.T
    tm, _ = best_of(lambda: torch.mm(cand_blk, pos.T, out=sblk), args.reps)
    tq, vq = best_of(lambda: torch.quantile(sblk, 0.95, dim=1), args.reps)
    tk, vk = best_of(lambda: dense.quantile_rows(sblk, 0.95), args.reps)
    ulp = float(((vk - vq).abs() / (torch.finfo(torch.float32).eps * vq.abs().clamp_min(1e-30))).max())
    tab.add("C", "NegLabel, one block: mm / torch.quantile / dense.quantile_rows", f"{rows_q} x {p}", tq, None, None,
            "", f"mm {tm * 1e3:.0f} ms, torch.quantile {tq * 1e3:.0f} ms, quantile_rows (topk) {tk * 1e3:.0f} ms; "
            f"values differ by <= {ulp:.1f} ulp")
    del sblk
    q = k - p
    nflop = 2.0 * q * p * d
    ref_mm2 = RefMM(neg, pos, dev)
    cand = torch.arange(p, k)
    nshape = f"Q={q} P={p} D={d}"
    t, tr, lib_sel = paired(lambda: mining.select_negatives(pos, text, cand, 10_000), ref_mm2, args.reps, dev)
    tab.add("C", "select_negatives (library: quantile_rows, by topk)", nshape, t, nflop / t / 1e9, tr / t, "",
            "reference: a plain (Q x D) @ (D x P) torch.mm, re-timed next to each of these two rows")
    t, tr, got = paired(lambda: select_negatives_by_sort(pos, text, cand, 10_000), ref_mm2, args.reps, dev)
    common = len(set(lib_sel.tolist()) & set(got.tolist()))
    tab.add("C", "  same with torch.quantile (full sort; scratch)", nshape, t, nflop / t / 1e9, tr / t,
            "", f"{common} of 10000 selected in common with the library")
    del ref_mm2
    # 5. bf16 on this CPU (one block): an option?
    kk, r = min(k, 16384), 512
    a32, b32 = img[:r].contiguous(), text[:kk].contiguous()
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    t32, c32 = best_of(lambda: a32 @ b32.T, 3)
    t16, c16 = best_of(lambda: a16 @ b16.T, 3)
    f2 = 2.0 * r * kk * d
    err = float((c16.float() - c32).abs().max())
    tab.add("C", "bf16 matmul (one block)", f"{r} x {kk} x {d}", t16, f2 / t16 / 1e9, t32 / t16, "",
            f"ratio = fp32 / bf16 time; fp32 {f2 / t32 / 1e9:.0f} GFLOP/s; max cos error {err:.1e} = "
            f"{err / 1e-3:.1f} logit units at tau=1e-3")


def mem_model(op: str, n: int, k: int, d: int, p: int) -> tuple[int, int, str]:
    """Analytic peak of a library step: (bytes, of which per image, what)."""
    rows = min(dense.rows_per_chunk(k), n)
    if op == "top1":
        return (k * d * 4 + rows * k * 4 + n * (d * 4 + 12), d * 4 + 12,
                f"normalised text copy + one reused buffer of min(N, {dense.rows_per_chunk(k)}) x K "
                "+ normalised images")
    if op == "eq1":
        return (k * d * 4 + rows * k * 4 + rows * d * 4 + n * (d * 4 + 4), d * 4 + 4,
                "one normalised text copy (P + Q) + one reused chunk buffer + the scaled image chunk + normalised images")
    if op == "neglabel":  # n = P positives, k = corpus; candidates = the Q = k - P others
        q = k - n
        r = min(dense.rows_per_chunk(n), q)
        top = n - math.floor(0.95 * (n - 1))  # topk width of quantile_rows at q = 0.95
        peak = r * d * 4 + max(r * d * 5, r * n * 4 + r * top * 12) + q * 24 + n * d * 4
        return (peak, 0,
                f"r normalised candidate rows (r x D) + the larger of (their gathered copy + isfinite mask) and "
                f"(the reused r x P buffer, first written after that copy is freed, + topk's r x {top}), "
                f"r = min(2^26 / P, Q) = {r}: grows with the corpus up to {dense.rows_per_chunk(n)} "
                f"candidates, then stays; no corpus-sized copy")
    raise ValueError(op)


def section_memory(tab: Table, k, d, p, ns, ops, neg_ks):
    """B: peak RSS growth of the library steps in a fresh subprocess each; compared with the analytic model."""
    for op in ops:
        res = {}
        for n in ns:
            r = res[n] = measure_mem(op, n, k, d, p)
            if r is None:
                tab.add("B", f"peak RSS growth: {op}", f"N={n} K={k}", None, None, None, "failed")
                continue
            model, _, what = mem_model(op, n, k, d, p)
            tab.add("B", f"peak RSS growth: {op}", f"N={n} K={k} D={d}", r["seconds"], None, None, fmt_bytes(r["delta"]),
                    f"model {fmt_bytes(model)}: {what}; an N x K matrix = {fmt_bytes(n * k * 4)}")
        if all(res[n] is not None for n in ns):
            a, b = ns[0], ns[-1]
            growth = res[b]["delta"] - res[a]["delta"]
            per = mem_model(op, b, k, d, p)[1]
            tab.add("B", f"  growth of {op}, N {a} -> {b}", "", None, None, None, fmt_bytes(growth),
                    f"model {fmt_bytes(per * (b - a))} (normalised image copy); an N x K matrix would add "
                    f"{fmt_bytes((b - a) * k * 4)}")
    for kk in neg_ks:
        r = measure_mem("neglabel", p, kk, d, p)
        if r is not None:
            model, _, what = mem_model("neglabel", p, kk, d, p)
            tab.add("B", "peak RSS growth: select_negatives (library)", f"P={p} corpus={kk} D={d}", r["seconds"], None,
                    None, fmt_bytes(r["delta"]), f"model {fmt_bytes(model)}: {what}")


def section_official(tab: Table, args, n, k, d, p, q_group=10_000, groups=100, mem=True):
    """H: the same scores computed the way the official codes do (``benchmarks/official_way.py``) beside the
    library's, on the same features in the same run: time (best of reps, interleaved), the ratio
    official / ours, peak memory of each (fresh subprocess), and the float32 ties of the official Eq. 1."""
    cpu = torch.device("cpu")
    img = unit_rows(n, d, cpu, 1)
    text = unit_rows(k, d, cpu, 2)  # = the memory children's inputs (same seeds and shapes)
    pos, neg = text[:p], text[p:]
    g_neg = unit_rows(q_group, d, cpu, 3)
    g_pos = unit_rows(p, d, cpu, 2)
    b = official_way.BATCH
    jobs = [
        ("Eq. 1, tau = 1e-3 (PosMine / ClusterMine; NegLabel's score)", f"N={n} P={p} Q={k - p} D={d}",
         2.0 * n * k * d, lambda: official_way.eq1_official(img, pos, neg, 1e-3),
         lambda: scoring.eq1_logit(img, pos, neg, 1e-3), ("eq1_official", "eq1", n, k, p, {}),
         f"per batch of {b}: two matmuls, cat, / t, softmax, positive sum (float32)",
         "eq1_logit: log-odds over column tiles"),
        (f"NegLabel grouped, G = {groups}, tau = 0.01 (NegLabel's)", f"N={n} P={p} Q={q_group} D={d}",
         2.0 * n * (p + q_group) * d, lambda: official_way.grouped_official(img, g_pos, g_neg, 0.01, groups),
         lambda: scoring.grouped_eq1_score(img, g_pos, g_neg, 0.01, groups),
         ("grouped_official", "grouped", n, p + q_group, p, {"groups": groups}),
         f"per batch of {b}: a permuted copy of the negatives, a Python loop over the {groups} groups",
         "grouped_eq1_score: one reshaped logsumexp per chunk"),
        ("zero-shot top-1 over the corpus", f"N={n} K={k} D={d}", 2.0 * n * k * d,
         lambda: official_way.top1_official(img, text), lambda: dense.zero_shot_top1(img, text)[0],
         ("top1_official", "top1", n, k, p, {}), f"per batch of {b}: full B x K logits, argmax",
         "zero_shot_top1: running max over column tiles"),
    ]
    for name, shape, flop, off_fn, our_fn, (op_off, op_ours, mn, mk, mp, extra), off_how, our_how in jobs:
        best_off = best_ours = math.inf
        off = ours = None
        for _ in range(args.reps):  # interleaved, so both see the same load
            off = None
            t, off = timed(off_fn)
            best_off = min(best_off, t)
            ours = None
            t, ours = timed(our_fn)
            best_ours = min(best_ours, t)
        m_off = measure_mem(op_off, mn, mk, d, mp, **extra) if mem else None
        m_ours = measure_mem(op_ours, mn, mk, d, mp, **extra) if mem else None
        mem_note = ""
        if m_off is not None and m_ours is not None and m_ours["delta"] > 0:
            mem_note = f"; memory official / ours {m_off['delta'] / m_ours['delta']:.1f}x"
        if name.startswith("zero-shot"):
            check = f"same top-1 as ours: {bool(torch.equal(off, ours))}"
        elif name.startswith("Eq. 1"):
            sat = official_way.saturated(off)
            n_ours = n - len(torch.unique(ours))
            check = (f"float32 S ties: {sat['tied']} of {n} images share their score ({sat['at_1']} at S = 1, "
                     f"{sat['at_0']} at S = 0); ours (log-odds): {n_ours} ties; "
                     f"max |S - sigmoid(ours)| {float((off.double() - torch.sigmoid(ours.double())).abs().max()):.1e}")
        else:
            check = (f"max |official - ours| {float((off.double() - ours).abs().max()):.1e} (Q mod G = 0: the "
                     "same seed-0 permutation, the same groups)")
        tab.add("H", f"{name}: official way", shape, best_off, flop / best_off / 1e9, None,
                fmt_bytes(m_off["delta"]) if m_off else "-", off_how)
        tab.add("H", f"{name}: ours (library)", shape, best_ours, flop / best_ours / 1e9, None,
                fmt_bytes(m_ours["delta"]) if m_ours else "-",
                f"{our_how}; official / ours = {best_off / best_ours:.2f}x time{mem_note}; {check}")
    del img, text, pos, neg, g_neg, g_pos
    gc.collect()


def section_temi(tab: Table, args, device, ns, d, c, heads, bs, loop_n):
    """D: fit_temi seconds per epoch at several N; batched heads vs a per-head loop; threads; memory."""
    cfg = temi_config(c, heads, bs)
    shape = f"D={d} C={c} H={heads} B={bs}"
    # FLOPs per step: teacher forward + student forward + backward (~2x forward) = ~4 forwards
    fwd = 2.0 * heads * 2 * bs * (d * cfg.hidden + cfg.hidden * cfg.bottleneck + cfg.bottleneck * c)
    per_epoch = {}
    for n in ns:
        x = unit_rows(n, d, device, 1)
        knn = torch.randint(0, n, (n, 50), generator=torch.Generator().manual_seed(0))

        def run(x=x, knn=knn):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clustering.fit_temi(x, cfg, knn=knn, progress=False)
        t, _ = best_of(run, args.reps)
        per_epoch[n] = t
        steps = n // bs
        tab.add("D", "fit_temi, 1 epoch (library, heads batched)", f"N={n} {shape}", t, 4 * fwd * steps / t / 1e9,
                None, "", f"{steps} steps, {t / steps * 1e3:.0f} ms/step incl. final labelling; GFLOP/s ~ 4 forwards/step")
    a, b = ns[0], ns[-1]
    tab.add("D", f"  growth N {a} -> {b} (x{b / a:g})", "", None, None, None, "",
            f"time x{per_epoch[b] / per_epoch[a]:.2f} (linear = x{b / a:g})")
    x = unit_rows(loop_n, d, device, 1)
    knn = torch.randint(0, loop_n, (loop_n, 50), generator=torch.Generator().manual_seed(0))
    n_steps = max(2, min(8, loop_n // bs))
    tb = min(temi_steps(x, knn, cfg, False, n_steps, device) for _ in range(args.reps))
    tl = min(temi_steps(x, knn, cfg, True, n_steps, device) for _ in range(args.reps))
    err = temi_equivalence(x, knn, cfg, device)
    tab.add("D", "TEMI step, all heads batched (bmm, as fit_temi)", f"N={loop_n} {shape}", tb, fwd * 4 / tb / 1e9, None,
            "", f"{n_steps} steps timed after 1 warm-up")
    tab.add("D", "TEMI step, per-head loop (reference, this file)", f"N={loop_n} {shape}", tl, fwd * 4 / tl / 1e9,
            tl / tb, "", f"ratio column = loop / batched; teacher weights max abs diff after 2 steps {err:.1e}")
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
        try:
            t1 = min(temi_steps(x, knn, cfg, False, n_steps, device) for _ in range(args.reps))
        finally:
            torch.set_num_threads(threads)
        tab.add("D", "TEMI step, batched, 1 thread", f"N={loop_n} {shape}", t1, fwd * 4 / t1 / 1e9, t1 / tb, "",
                f"ratio column = 1-thread / {threads}-thread time (<1: the other core is busy with other jobs)")


def section_temi_memory(tab: Table, ns, d, c, heads, bs):
    for n in ns:
        r = measure_mem("temi", n, 0, d, 0, c=c, heads=heads, bs=bs)
        if r is not None:
            hid, bott = 512, 256  # TEMIConfig defaults
            step_b = 10 * heads * 2 * bs * c * 4  # logits, softmax, log p_t, a, beta*s + a, exp temps, grads
            params = heads * (d * hid + hid * bott + bott * c + c + hid + bott)
            state_b = 5 * params * 4  # student, grad, 2 AdamW moments, teacher
            label_b = min(n, 8192) * (hid + bott + 2 * c) * 4  # final labelling pass, batches of 8192 rows
            tab.add("D", "peak RSS growth: fit_temi 1 epoch", f"N={n} D={d} C={c} H={heads} B={bs}", r["seconds"],
                    None, None, fmt_bytes(r["delta"]),
                    f"model {fmt_bytes(step_b + state_b + label_b + n * (d * 4 + 400))}: ~10 step tensors of H x 2B x C "
                    f"{fmt_bytes(step_b)} + params/grads/AdamW/teacher {fmt_bytes(state_b)} + labelling batch of "
                    f"min(N, 8192) rows {fmt_bytes(label_b)} + N x (D + knn) {fmt_bytes(n * (d * 4 + 400))}")


def section_knn(tab: Table, args, device, ns, d, mem_ns):
    """E: exact kNN (k = 50): one reused block of 4096 rows x N columns."""
    per = {}
    for n in ns:
        x = unit_rows(n, d, device, 1)
        flop = 2.0 * n * n * d
        t, _ = best_of(lambda x=x: knn.knn_indices(x, k=50), args.reps, device)
        per[n] = t
        rate = flop / t / 1e9
        tab.add("E", "knn_indices k=50 (library)", f"N={n} D={d} chunk_size=4096", t, rate,
                rate / MM_RATE["A"] if MM_RATE.get("A") else None, f"block {fmt_bytes(min(4096, n) * n * 4)}",
                "GFLOP/s: 2 N^2 D; ratio vs section A's mm rate (other shapes)" if MM_RATE.get("A") else "GFLOP/s: 2 N^2 D")
    a, b = ns[0], ns[-1]
    tab.add("E", f"  growth N {a} -> {b} (x{b / a:g})", "", None, None, None, "",
            f"time x{per[b] / per[a]:.2f} (quadratic = x{(b / a) ** 2:g})")
    for n in mem_ns:
        r = measure_mem("knn", n, 0, d, 0)
        if r is not None:
            b = min(4096, n)
            tab.add("E", "peak RSS growth: knn_indices", f"N={n} D={d}", r["seconds"], None, None, fmt_bytes(r["delta"]),
                    f"model {fmt_bytes(b * n * 4 + n * d * 4 + n * 50 * 8 + b * 50 * 12)}: one block of "
                    f"min(4096, N) x N reused for every chunk (grows with N) + normalised copy + out + topk")


def section_demo(tab: Table, args, timeout: float, budget: float = BUDGET_S):
    """F: ``python -m clustermine_lib.cli demo`` as a subprocess (what ``make demo`` runs)."""
    def run(env_extra, label):
        out = tempfile.mkdtemp(prefix="bench_demo_")
        env = {**os.environ, **env_extra, "PYTHONWARNINGS": "ignore"}
        t = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-m", "clustermine_lib.cli", "demo", "--seed", "0", "--out", out],
                               cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=timeout if math.isfinite(timeout) else None)
            dt = time.perf_counter() - t
            note = "ok" if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}"
        except subprocess.TimeoutExpired:
            dt, note = time.perf_counter() - t, (f"NOT FINISHED: stopped at {timeout:.0f} s to keep the bench within "
                                                 f"its {budget:.0f} s budget; time it alone with --only F")
        shutil.rmtree(out, ignore_errors=True)
        tab.add("F", f"make demo ({label})", "cli demo --seed 0", dt, None, None, "", note)
        return dt

    if args.demo_cold:
        timeout = timeout / 2 if math.isfinite(timeout) else timeout
        cache = Path(tempfile.mkdtemp(prefix="bench_cache_"))
        real = Path(os.environ.get("CLUSTERMINE_CACHE", ROOT / ".cache"))
        for sub in ("corpora", "nltk_data"):  # keep WordNet; only the simulated benchmark is rebuilt
            if (real / sub).exists():
                (cache / sub).symlink_to((real / sub).resolve())
        run({"CLUSTERMINE_CACHE": str(cache)}, "cold: empty .cache/simulated")
        shutil.rmtree(cache, ignore_errors=True)
    return run({}, "warm: .cache/simulated present")


def section_gpu(tab: Table, args, device, scale=1.0):
    """G: ImageNet-scale rows, only on CUDA. top-1 of the 1.28M train images, Eq. 1 on the 50K val
    images, NegLabel, TEMI 1.28M x 1024 (C = 4000, 50 heads, batch 1024) extrapolated to 100 epochs, and
    kNN over 1.28M extrapolated from its first chunks. ``scale`` < 1 shrinks every shape (a CPU dry run
    of this code path; never written to the results file)."""
    s = lambda v: max(2, int(v * scale))  # noqa: E731
    k, d, p = s(79_403), 1024 if scale == 1.0 else 64, s(1000)
    cuda = device.type == "cuda"

    def peak_since(base):
        return torch.cuda.max_memory_allocated(device) - base if cuda else None

    def mark():
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            return torch.cuda.memory_allocated(device)
        return 0

    # Eq. 1 / NegLabel on the 50K val images (section_scoring with GPU shapes)
    section_scoring(tab, args, device, s(50_000), k, d, p, gpu=True)
    # top-1 of the 1.28M train images: N x K does not fit, the reference mm runs in row blocks
    n = s(1_281_167)
    img = unit_rows(n, d, device, 1)
    text = unit_rows(k, d, device, 2)
    flop = 2.0 * n * k * d
    ref_mm = RefMM(img, text, device)
    t_mm, _ = best_of(ref_mm.run, 1, device)
    tab.add("G", "torch.mm reference [GPU]", f"N={n} K={k} D={d}", t_mm, flop / t_mm / 1e9, 1.0, "",
            "row blocks of 4 GiB into one buffer (N x K does not fit)")
    for budget in (dense.DEFAULT_BUDGET, 2**28):
        default = " = default" if budget == dense.DEFAULT_BUDGET else ""
        name = f"zero_shot_top1 (library, budget {_lg(budget)}{default}) [GPU]"
        base = mark()
        t, _ = best_of(lambda: dense.zero_shot_top1(img, text, budget, device=device), 1, device)
        tab.add("G", name, f"N={n} K={k} D={d}", t, flop / t / 1e9, t_mm / t, fmt_bytes(peak_since(base)), "best of 1")
    del img, text, ref_mm
    gc.collect()
    # TEMI at paper scale: time some steps, extrapolate to the epoch and to 100 epochs
    n, c, h, bs = s(1_281_167), s(4000), 50 if scale == 1.0 else 4, s(1024)
    x = unit_rows(n, d, device, 1)
    knn = torch.randint(0, n, (n, 50), device=device)
    cfg = clustering.TEMIConfig(n_clusters=c, n_heads=h, batch_size=bs)
    steps = args.temi_steps if scale == 1.0 else 3
    base = mark()
    tb = temi_steps(x, knn, cfg, False, steps, device, warmup=3)
    peak = peak_since(base)
    tl = temi_steps(x, knn, cfg, True, max(2, steps // 10), device, warmup=1)
    spe = n // bs
    shape = f"N={n} D={d} C={c} H={h} B={bs}"
    tab.add("G", "TEMI step, heads batched [GPU]", shape, tb, None, None, fmt_bytes(peak),
            f"{steps} steps timed; 1 epoch = {spe} steps = {tb * spe:.0f} s; 100 epochs = "
            f"{tb * spe * 100 / 3600:.2f} h (extrapolated)")
    tab.add("G", "TEMI step, per-head loop [GPU]", shape, tl, None, tl / tb, "", "ratio column = loop / batched")
    # kNN over the 1.28M train features: the first chunks of knn_indices' loop, extrapolated
    chunk, n_chunks = 4096, (8 if scale == 1.0 else 2)
    xn = F.normalize(x, dim=1)

    def knn_part():  # knn_indices' loop (one reused block), its first n_chunks chunks only
        block = torch.empty(min(chunk, n), n, device=device)
        for st in range(0, min(chunk * n_chunks, n), chunk):
            rows = xn[st:st + chunk]
            sims = torch.mm(rows, xn.T, out=block[: rows.shape[0]])
            r = torch.arange(rows.shape[0], device=device)
            sims[r, r + st] = -math.inf
            sims.topk(50, dim=1)
    base = mark()
    t, _ = best_of(knn_part, 1, device)
    timed = min(chunk * n_chunks, n)
    full = t * n / timed
    tab.add("G", "knn k=50, knn_indices' loop [GPU]", f"N={n} D={d} chunk {chunk}", full, 2.0 * n * n * d / full / 1e9,
            None, fmt_bytes(peak_since(base)),
            f"{math.ceil(timed / chunk)} chunks timed, extrapolated; one reused block of "
            f"{fmt_bytes(min(chunk, n) * n * 4)}")


# ================================================================================================
# main
# ================================================================================================

def host_info() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


METHOD = """\
How to read this (details: benchmarks/README.md)
- time: best of {reps} wall-clock runs (other jobs may share this machine: see the load averages above).
- ratio to mm: t(plain torch.mm of the same shapes, output preallocated) / t(row), both best of {reps} and
  interleaved (ref, row, ref, row, ...) so they share the same load. 1.00 = the step runs at the machine's
  own matmul rate. GFLOP/s counts only the matmul, 2*N*K*D per pass (2*Q*P*D for
  NegLabel, 2*N^2*D for kNN), so everything else shows up as a lower rate. Sections D, F: seconds only.
- peak extra mem (B, D, E): each number comes from a FRESH subprocess: inputs built in place, the op warmed
  up on tiny shapes, the kernel's RSS high-water mark reset (/proc/self/clear_refs) and read (VmHWM) before
  and after one run. tracemalloc does not see torch's allocations, hence RSS. "model" = the analytic count.
  "chunk" in A = min(N, rows_per_chunk(K, budget)) * K * 4 bytes, the one buffer every chunk is written into;
  "tile" = TILE_ROWS x TILE_COLS * 4 bytes, the CPU's column tile for top-1 and Eq. 1 (dense.similarity_tiles).
- rows in A, B, D, E, F and G run the library itself (clustermine_lib). Section C, only with --why, switches
  the library's fixes off one at a time with scratch helpers written in benchmarks/bench.py; its rows that
  call the library name the function. Section H pairs each library row ("ours") with the same score computed
  the way the official codes do (benchmarks/official_way.py); "official / ours" in its notes is the ratio of
  their times (best of reps, interleaved) and of their peak memory (fresh subprocesses, as B).
- data are random unit vectors: the cost does not depend on the values, except exp() (see C), and random
  cosines / tau = 1e-3 span ~300 logit units like real CLIP cosines do.
- GPU rows (section G) are produced only with --device cuda on a machine with CUDA{gpu}.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1-2 min on an idle machine: smaller shapes, no demo")
    ap.add_argument("--why", action="store_true",
                    help="also run section C: scratch variants that switch the library's fixes off one at a time")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: add the GPU rows (ImageNet shapes); needs CUDA")
    ap.add_argument("--n", type=int, default=0, help="images in section A (default 2000; quick 845)")
    ap.add_argument("--reps", type=int, default=3, help="timing repetitions (best of)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default 300, with --why 450); a section that would start too "
                         "late is skipped with a note, and the demo gets what is left. 0 = no limit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", default="", help="comma-separated sections to run, e.g. A,E or F (default A,B,D,E,H,F "
                                               "and G with --device cuda; C with --why, or when named here)")
    ap.add_argument("--no-demo", action="store_true", help="skip the end-to-end demo row (F)")
    ap.add_argument("--compile", action="store_true", help="C: also time a torch.compile'd logsumexp (compiles ~40 s)")
    ap.add_argument("--demo-cold", action="store_true", help="also time a cold demo (simulated cache rebuilt)")
    ap.add_argument("--temi-steps", type=int, default=200, help="GPU: TEMI steps timed for the extrapolation")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/<host>-<date>.md; "
                                                "--quick / --why / --only / --device cuda runs add a suffix)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no results file")
    ap.add_argument("--gpu-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # CPU dry run of section G
    ap.add_argument("--child-mem", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--d", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--p", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_mem:
        args.op = args.child_mem
        child_mem(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device on this machine, so no GPU rows; running the CPU rows.", flush=True)
        args.device = "cpu"
    gpu = args.device == "cuda"
    only = {x.strip().upper() for x in args.only.split(",") if x.strip()} or set("ABDEFGH")
    if args.why:
        only.add("C")

    info = host_info()
    load0 = os.getloadavg()
    print(f"clustermine bench: {info}; load average {load0[0]:.2f}", flush=True)
    tab = Table()
    cpu = torch.device("cpu")
    K, D, P = 79_403, 512, 1000  # WordNet nouns+adjectives corpus, CLIP ViT-B/16 width, 1000 positives
    q = args.quick
    n_c = dense.rows_per_chunk(K)  # 845 = one chunk at the library's 2^26, four at 2^24
    n_a = args.n or (n_c if q else 2000)  # quick: one chunk; full: as in the findings of 2026-11-23
    mem_ns = (1000, 2000) if q else (1000, 2500)
    mem_ops = ("top1", "eq1")
    neg_ks = (20_000,) if q else (20_000, K)
    temi_ns, loop_n, temi_mem = ((1024, 2048), 1024, ()) if q else ((1024, 2048, 4096), 1024, (1024, 4096))
    knn_ns, knn_mem = ((2000, 4000), (6000,)) if q else ((4000, 8000, 16000), (4000, 16000))
    d_t, c_t, h_t, bs_t = 256, 800, 10, 256  # the demo's TEMI shapes (simulated benchmark, TEMIConfig.demo)

    if args.budget is None:
        args.budget = BUDGET_S + (WHY_S if args.why else 0.0)
    budget = args.budget if args.budget > 0 else math.inf
    took: dict[str, float] = {}  # section -> seconds it ran (printed in the header)

    def section(sec: str, title: str, need_s: float, run) -> None:
        """Run section ``sec`` if asked for and if ~``need_s`` seconds (its time on an idle machine) are left."""
        if sec not in only:
            return
        left = budget - elapsed()
        # other jobs on the machine slow every row down: scale the idle estimate by the load per core
        need_s *= max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        if left < need_s:
            tab.add(sec, title, "", None, None, None, "",
                    f"SKIPPED: only {left:.0f} s left of the {budget:.0f} s budget (1-min load average "
                    f"{os.getloadavg()[0]:.1f}); run it alone with --only {sec}")
            return
        print(f"\n[{sec}] {title}", flush=True)
        t = time.perf_counter()
        run()
        took[sec] = time.perf_counter() - t
        print(f"[{sec}] {took[sec]:.0f} s", flush=True)

    def temi():
        section_temi(tab, args, cpu, temi_ns, d_t, c_t, h_t, bs_t, loop_n)
        section_temi_memory(tab, temi_mem, d_t, c_t, h_t, bs_t)

    # need_s: the section's duration on an idle 2-core machine (quick / full), to stay within the budget.
    # Estimated 2026-11-23 from --quick runs under load (1-min load 2 to 4: quick A 31 s, B 31 s, D 154 s,
    # E 6 s; --why C 100 s) scaled to the full shapes and to an idle machine (TEMI's step was 0.165 s
    # idle against ~0.85 s in those runs); the header of every table gives the seconds each section took.
    section("A", "the library's scoring vs torch.mm", 20 if q else 40,
            lambda: section_scoring(tab, args, cpu, n_a, K, D, P))
    section("C", "why: the library's fixes switched off one at a time", 60 if q else 100,
            lambda: section_variants(tab, args, n_c, K, D, P, quick=q))
    section("B", "peak memory (fresh subprocess per row)", 20 if q else 30,
            lambda: section_memory(tab, K, D, P, mem_ns, mem_ops, neg_ks))
    section("D", "TEMI", 20 if q else 40, temi)
    section("E", "kNN", 5 if q else 25, lambda: section_knn(tab, args, cpu, knn_ns, D, knn_mem))
    section("H", "the official way beside ours (same features, same run)", 35 if q else 90,
            lambda: section_official(tab, args, n_a, K, D, P))
    if "G" in only and (gpu or args.gpu_scale < 1.0):
        print("\n[G] GPU rows", flush=True)
        section_gpu(tab, args, torch.device("cuda") if gpu else cpu, args.gpu_scale)
    elif "G" in only:
        tab.add("G", "GPU rows", "", None, None, None, "", "not produced: no CUDA device here (needs --device cuda on a GPU)")
    if "F" in only:
        if q or args.no_demo:
            tab.add("F", "make demo", "", None, None, None, "", "skipped (--quick / --no-demo)")
        else:
            left = budget - elapsed() - 5
            if left < 30:
                tab.add("F", "make demo", "", None, None, None, "",
                        f"SKIPPED: {max(0.0, left + 5):.0f} s left of the {budget:.0f} s budget; run it alone with --only F")
            else:
                print(f"\n[F] demo (timeout {left:.0f} s, what is left of the budget)", flush=True)
                took["F"] = section_demo(tab, args, timeout=left, budget=budget)

    load1 = os.getloadavg()
    head = (f"# clustermine bench: {info['host']}, {_dt.date.today().isoformat()}\n\n"
            f"CPU: {info['cpu']} ({info['cores']} cores), torch {info['torch']} with {info['threads']} threads, "
            f"Python {info['python']}; CUDA: {info['cuda'] or 'none'}. Mode: {'quick' if q else 'full'}"
            f"{', GPU rows' if gpu else ''}; sections {','.join(sorted(only))}; budget "
            f"{'none' if not math.isfinite(budget) else f'{budget:.0f} s'}. Load average (1 min) "
            f"{load0[0]:.2f} before, {load1[0]:.2f} after (2.0 = both cores busy with other jobs). "
            f"Total {elapsed():.0f} s ({', '.join(f'{s} {t:.0f} s' for s, t in took.items()) or 'no section ran'}).\n")
    gpu_note = "; GPU rows included in this run" if gpu else "; this machine has none, so there are no GPU rows"
    text = head + "\n" + tab.markdown() + "\n\n" + METHOD.format(reps=args.reps, gpu=gpu_note)
    print("\n" + text)
    if not args.no_write and args.gpu_scale == 1.0:
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", info["host"])
        tag = (("-quick" if q else "") + ("-why" if args.why else "")
               + (f"-only-{''.join(sorted(only))}" if args.only else "") + ("-gpu" if gpu else ""))
        name = f"{host}-{_dt.date.today().isoformat()}{tag}.md"  # other runs do not overwrite the default table
        path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
        atomic_write(path, text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
