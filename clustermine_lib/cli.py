"""Command line: ``python -m clustermine_lib.cli demo`` (what ``make demo`` runs) and ``... data``
(what ``make data`` runs: build and cache the simulated benchmark, the demo's stand-in for ``make features``).

The demo runs on the SIMULATED benchmark (``simulate``): it mines positive labels from real WordNet
with PosMine and ClusterMine, scores the simulated ID test set against six simulated OOD sets, and
prints a Table-1-shaped result beside MCM (which is given the true class names).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEMO_METHODS = ("MCM", "PosMine", "ClusterMine")


def demo(size: str = "demo", seed: int = 0, methods=DEMO_METHODS, out: str = "results/demo") -> int:
    import pandas as pd

    from . import analysis, paper, tables
    from .benchmark import OOD_SETS
    from .experiments import Pipeline
    from .fileio import atomic_write
    from .simulate import make_benchmark

    t0 = time.time()
    print("Building the SIMULATED benchmark (CLIP-like features from real WordNet; not CLIP, not ImageNet)...",
          flush=True)
    bench = make_benchmark(size, seed=seed)
    print(bench.describe(), flush=True)
    pipe = Pipeline(bench)
    s = pipe.settings
    print(f"Settings: tau={pipe.tau:g} (pretraining temperature 1/{bench.logit_scale:g} / 10), "
          f"PosMine M={s.m}, ClusterMine C={s.n_clusters} (TEMI {s.temi.n_heads} heads, {s.temi.epochs} epochs)",
          flush=True)
    print(s.conventions(), flush=True)
    table = pipe.table(list(methods))
    path = atomic_write(Path(out) / "table1.csv", lambda p: table.to_csv(p, index=False))

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    print(f"\nSIMULATED benchmark: AUROC / FPR95 (%) per OOD set, ID positive, FPR95 rule {s.fpr95!r}")
    print(tables.summary(table, OOD_SETS).to_string())

    rows = []
    for m in methods:
        if m in ("PosMine", "ClusterMine"):
            mined = pipe.mined(m)
            q = analysis.label_set_quality(mined.names, bench.class_names)
            rows.append({"method": m, "|Y_pos|": len(mined), "|Y_GT|": len(bench.class_names),
                         "overlap %": round(q["overlap"], 1), "F1 vs Y_GT %": round(q["f1"], 1)})
    if rows:
        print("\nMined positive labels (F1 by name against the true class names)")
        print(pd.DataFrame(rows).to_string(index=False))

    ours = tables.mean_over_sets(table, OOD_SETS)
    cmp = paper.compare(ours, paper.table1(), on=("method", "ood_set"))
    print("\nMean AUROC beside the paper's (real CLIP ViT-H-14 on ImageNet: not expected to match a simulation)")
    print(cmp.to_string(index=False))
    print(f"\nWrote {path} in {time.time() - t0:.0f} s")
    return 0


def data(size: str = "demo", seed: int = 0, variants: bool = True) -> int:
    """Build the SIMULATED benchmark once into the project cache (``.cache/simulated``): the WordNet graph,
    the default corpus and every feature set, and (``variants``, demo size) every variant the notebooks
    load (``artifacts.demo_variants``: other corpora, pre-processings, prompt sets, simulated models).
    Notebooks and ``make demo`` then load them in seconds, as the paper profile loads `make features`."""
    from .simulate import make_benchmark

    t0 = time.time()
    print("Building the SIMULATED benchmark (the demo's features; real CLIP features come from "
          "`make features`)...", flush=True)
    print(make_benchmark(size, seed=seed).describe())
    if variants and size == "demo":
        from tqdm.auto import tqdm

        from .artifacts import demo_variants
        from .notebook import Config, open_benchmark

        cfg = Config(profile="demo", seed=seed)
        for kw in tqdm(demo_variants(cfg)[1:], desc="notebook variants"):
            open_benchmark(cfg, **kw)
    print(f"cached in {time.time() - t0:.0f} s")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="clustermine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="ClusterMine vs MCM and PosMine on the simulated benchmark")
    d.add_argument("--size", default="demo", choices=["tiny", "demo"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--methods", default=",".join(DEMO_METHODS),
                   help="comma-separated, or 'all' for every Table 1 method")
    d.add_argument("--out", default="results/demo")
    b = sub.add_parser("data", help="build and cache the simulated benchmark (what the notebooks load)")
    b.add_argument("--size", default="demo", choices=["tiny", "demo"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-variants", action="store_true",
                   help="only the default benchmark, not the corpora / prompt sets / models the notebooks vary")
    args = p.parse_args(argv)
    if args.cmd == "data":
        return data(args.size, args.seed, not args.no_variants)
    if args.cmd == "demo":
        from .methods import METHODS

        methods = METHODS if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            p.error(f"unknown method(s) {unknown}; known: {list(METHODS)}")
        return demo(args.size, args.seed, methods, args.out)
    return 1


if __name__ == "__main__":
    sys.exit(main())
