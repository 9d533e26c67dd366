"""Command line: ``python -m clustermine_lib.cli demo`` (what ``make demo`` runs) and ``... data``
(what ``make data`` runs: build and cache the simulated benchmark, the demo's stand-in for ``make features``).

The demo runs on the SIMULATED benchmark (``simulate``): it mines positive labels from real WordNet
with PosMine and ClusterMine, scores the simulated ID test set against six simulated OOD sets, and
prints a Table-1-shaped result beside MCM (which is given the true class names).

Errors are one line on stderr, ``clustermine: error: <what and what to do>`` (``run_cli``; ``--debug``
or ``CLUSTERMINE_DEBUG=1`` shows the traceback); ``python -m clustermine_lib.features`` does the same.
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


# ----------------------------------------------------------------------------- errors
def error_text(e: BaseException) -> str:
    """The message of ``e`` as the user should read it (the type only when the message alone says
    nothing: ``KeyError: 'x'``)."""
    msg = str(e).strip()
    if isinstance(e, (ValueError, OSError, RuntimeError)) and msg:
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def run_cli(fn, argv=None, prog: str = "clustermine") -> int:
    """Run ``fn(argv) -> exit code`` as a command: an error is printed as ``<prog>: error: <message>``
    on stderr (one line unless the message is a list) and gives exit code 1; Ctrl-C gives 130. With
    ``--debug`` in ``argv`` (or ``CLUSTERMINE_DEBUG=1``) the exception propagates with its traceback.
    Under torchrun only rank 0 prints."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CLUSTERMINE_DEBUG", "") not in ("", "0")
    try:
        return fn(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted; rerun the same command to continue (finished work is kept).", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        if os.environ.get("RANK", "0") != "0":
            return 1  # rank 0 says it
        text = error_text(e)
        hint = "(--debug shows the traceback)"
        print(f"{prog}: error: {text}" + (f" {hint}" if "\n" not in text else f"\n{hint}"), file=sys.stderr)
        return 1


# ----------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    """The ``clustermine`` parser. Add a subcommand with ``sub.add_parser(name, parents=[common], ...)``
    (``common`` holds ``--debug``) and a branch in ``_main``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p = argparse.ArgumentParser(prog="clustermine", description=__doc__, parents=[common],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", parents=[common], help="ClusterMine vs MCM and PosMine on the simulated benchmark")
    d.add_argument("--size", default="demo", choices=["tiny", "demo"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--methods", default=",".join(DEMO_METHODS),
                   help="comma-separated, or 'all' for every Table 1 method")
    d.add_argument("--out", default="results/demo")
    b = sub.add_parser("data", parents=[common],
                       help="build and cache the simulated benchmark (what the notebooks load)")
    b.add_argument("--size", default="demo", choices=["tiny", "demo"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-variants", action="store_true",
                   help="only the default benchmark, not the corpora / prompt sets / models the notebooks vary")
    return p


def _main(argv) -> int:
    p = _parser()
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


def main(argv=None) -> int:
    """``clustermine <subcommand>``: errors are one message on stderr (``--debug``: the traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
