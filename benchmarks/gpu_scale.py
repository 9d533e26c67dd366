"""Scale check of the paper profile: each ImageNet-sized step on random features, timed, with peak memory.

    .venv/bin/python benchmarks/gpu_scale.py                      # the paper's sizes on the default device (a GPU)
    .venv/bin/python benchmarks/gpu_scale.py --scale 0.002 --device cpu --clusters 40   # a small CPU run

Steps (random unit features of ImageNet's shape, so the numbers are the cost of the computation, not of any
result): exact top-50 kNN of the 1.28M training features (TEMI's pairs), TEMI with the paper's settings for
``--epochs`` epoch(s) (50 heads, C = 4000, batch 1024; extrapolated to the paper's 100 epochs), the zero-shot
top-1 concept of every training image over the 79,403-concept corpus (mining) and Eq. 1 for ImageNet val plus
the six OOD sets (scoring). Each row prints time and peak memory beside what the paper states (section 4.2:
TEMI on ImageNet "less than 1.5 hours ... less than 10 GB of VRAM"; "inference for all six OOD detection
benchmarks ... a maximum of twelve minutes with less than 16GB of VRAM"). With ``--scale`` < 1 every image
count is scaled, and the last column extrapolates to the paper's size (linear in N; kNN quadratic).
``--out FILE.md`` writes the table (atomically). Runs in the tests at a tiny size on the CPU.
"""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clustermine_lib import dense, scoring  # noqa: E402
from clustermine_lib.clustering import TEMIConfig, fit_temi  # noqa: E402
from clustermine_lib.knn import knn_indices  # noqa: E402
from clustermine_lib.datasets import DATASETS  # noqa: E402
from clustermine_lib.fileio import atomic_write  # noqa: E402
from clustermine_lib.models import default_device  # noqa: E402

N_TRAIN = DATASETS["imagenet-train"].n_images
N_VAL = DATASETS["imagenet-val"].n_images
# The six OOD sets of Table 1 as published; ImageNet-OOD and Textures43 list no count in the registry:
# 31,807 (ImageNet-OOD's paper) and 43 DTD classes x 120 images are assumed.
OOD_SIZES = {name: DATASETS[name].n_images or {"IN-OOD": 31_807, "Textures43": 43 * 120}[name]
             for name in ("NINCO", "IN-O", "OpenImage-O", "iNat", "IN-OOD", "Textures43")}
CORPUS = 79_403  # WordNet-NA
N_POS = 1_500  # |Y_pos| of ClusterMine at C = 4000 (Table 4)
PAPER = {"temi": "< 1.5 h, < 10 GB (ViT-G, all epochs)", "scoring": "<= 12 min, < 16 GB (six OOD sets, ViT-G)"}


class Meter:
    """Wall time and peak memory of one step: CUDA's peak allocation, or the growth of the process's max RSS."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = max(self.base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        self.seconds = time.perf_counter() - self.t0
        return False


def unit(n: int, d: int, gen: torch.Generator, device) -> torch.Tensor:
    """(n, d) random unit vectors on ``device``, drawn in CPU chunks (the seed gives the same rows anywhere)."""
    out = torch.empty(n, d, device=device)
    for s in range(0, n, 65_536):
        e = min(n, s + 65_536)
        out[s:e] = F.normalize(torch.randn(e - s, d, generator=gen), dim=1).to(device)
    return out


def run(scale: float = 1.0, dim: int = 1024, device=None, clusters: int = 4000, heads: int = 50, epochs: int = 1,
        seed: int = 0) -> list[dict]:
    """Time every step; returns one dict per row (step, measured size, seconds, peak GiB, paper-size estimate)."""
    device = torch.device(default_device(device))
    gen = torch.Generator().manual_seed(seed)
    n = max(clusters + 1, round(N_TRAIN * scale))
    n_eval = round((N_VAL + sum(OOD_SIZES.values())) * scale)
    rows = []

    def row(step, size, m, factor, paper=""):
        rows.append({"step": step, "size": size, "seconds": m.seconds, "peak_gib": m.peak / 2**30,
                     "paper_size_seconds": m.seconds * factor, "paper": paper})

    train = unit(n, dim, gen, device)
    text = unit(CORPUS, dim, gen, device)
    with Meter(device) as m:
        knn = knn_indices(train, 50, chunk_size=4096 if device.type == "cuda" else 1024, device=device)
    row("kNN, k = 50 (exact)", f"{n:,} x {dim}", m, (N_TRAIN / n) ** 2)
    cfg = replace(TEMIConfig(n_clusters=clusters, n_heads=heads, seed=seed), epochs=epochs)
    with Meter(device) as m:
        fit_temi(train, cfg, knn=knn, device=device, progress=False)
    row(f"TEMI, {heads} heads, C = {clusters}, {epochs} epoch(s)", f"{n:,} x {dim}", m,
        (N_TRAIN / n) * TEMIConfig.epochs / epochs, PAPER["temi"])
    del knn
    with Meter(device) as m:
        dense.zero_shot_top1(train, text, device=device)
    row("zero-shot top-1 of the training images (mining)", f"{n:,} x {CORPUS:,}", m, N_TRAIN / n)
    del train
    images = unit(n_eval, dim, gen, device)
    with Meter(device) as m:
        scoring.eq1_logit(images, text[:N_POS], text[N_POS:], scoring.default_tau(100.0), device=device)
    row("Eq. 1, ImageNet val + the six OOD sets (scoring)", f"{n_eval:,} x {CORPUS:,}", m,
        (N_VAL + sum(OOD_SIZES.values())) / max(1, n_eval), PAPER["scoring"])
    return rows


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "Peak memory: CUDA's peak allocation on a GPU; on the CPU the process's peak RSS so far. The "
             "paper-size column scales the measured time by the number of images only (heads, C and epochs as "
             "given, TEMI's epochs to the paper's 100).", "",
             "| step | measured size | time | peak memory | at the paper's size | the paper says |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        est = r["paper_size_seconds"]
        lines.append(f"| {r['step']} | {r['size']} | {r['seconds']:.1f} s | {r['peak_gib']:.2f} GiB | "
                     f"{est / 60:.1f} min | {r['paper'] or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's image counts (default 1)")
    p.add_argument("--dim", type=int, default=1024, help="feature dimension (ViT-H: 1024, ViT-G: 1280)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) / cpu / cuda")
    p.add_argument("--clusters", type=int, default=TEMIConfig.n_clusters)
    p.add_argument("--heads", type=int, default=TEMIConfig.n_heads)
    p.add_argument("--epochs", type=int, default=1, help="TEMI epochs to time (extrapolated to 100)")
    p.add_argument("--out", help="also write the table to this Markdown file")
    a = p.parse_args(argv)
    if not 0 < a.scale <= 1:
        p.error(f"--scale must be in (0, 1], got {a.scale}")
    rows = run(a.scale, a.dim, a.device, a.clusters, a.heads, a.epochs)
    dev = torch.device(default_device(a.device))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    text = table(rows, f"Scale check ({name}, torch {torch.__version__}, scale {a.scale:g}, D = {a.dim}); "
                       "random features of ImageNet's shape")
    print(text)
    if a.out:
        atomic_write(a.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
