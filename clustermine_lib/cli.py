"""Command line ``clustermine`` (``python -m clustermine_lib.cli``): ``demo`` (what ``make demo`` runs),
``data`` (what ``make data`` runs: build and cache the simulated benchmark, the demo's stand-in for
``make features``), and a detector on your own images: ``fit``, ``score``, ``explain``
(``own_images``, ``own_report``; docs/own_images.md).

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
DEMO_DIAGNOSTICS = ("ClusterMine (k-means clusters)", "ClusterMine (true classes)")


def demo(size: str = "demo", seed: int = 0, methods=DEMO_METHODS, out: str = ".") -> int:
    import pandas as pd

    from . import analysis, paper, tables
    from .benchmark import OOD_SETS
    from .calibration import format_table, read_table
    from .experiments import Pipeline
    from .notebook import Config, save_table
    from .simulate import make_benchmark

    t0 = time.time()
    print("The SIMULATED benchmark (CLIP-like features from real WordNet; not CLIP, not ImageNet) is calibrated "
          "to these method-agnostic statistics of real CLIP features (docs/simulation.md; no OOD score was "
          "looked at):", flush=True)
    print(format_table(read_table()), flush=True)
    bench = make_benchmark(size, seed=seed)
    print("\n" + bench.describe(), flush=True)
    pipe = Pipeline(bench)
    s = pipe.settings
    print(f"Settings: tau={pipe.tau:g} (pretraining temperature 1/{bench.logit_scale:g} / 10), "
          f"PosMine M={s.m}, ClusterMine C={s.n_clusters} (TEMI {s.temi.n_heads} head(s), {s.temi.epochs} epochs)",
          flush=True)
    print(s.conventions(), flush=True)
    table = pipe.table(list(methods) + list(DEMO_DIAGNOSTICS))
    temi = pipe.temi()
    print(f"TEMI: {'reached' if temi.converged else 'did NOT reach'} its loss plateau (the last 10 % of the "
          f"steps lowered the loss by {100 * temi.plateau:.1f} % of its total decrease; criterion < 2 %); "
          f"{int(temi.labels.unique().numel())} of {s.n_clusters} clusters used", flush=True)
    cfg = Config(seed=seed, output_dir=out) if size == "demo" else None
    path = save_table(table, cfg, "demo_table1") if cfg else "(tiny: not saved)"

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
    print("(rows 'ClusterMine (k-means clusters)' / '(true classes)' are diagnostics, not methods: the same vote "
          "and Eq. 1 with other clusters than TEMI's, to show what the clustering costs)")
    print(f"\nWrote {path} in {time.time() - t0:.0f} s")
    return 0


def data(size: str = "demo", seed: int = 0, variants: bool = True) -> int:
    """Build the SIMULATED benchmark once into the project cache (``.cache/simulated``): the WordNet graph,
    the default corpus and every feature set, and (``variants``, demo size) every variant the notebooks
    load (``artifacts.demo_variants``: other corpora, pre-processings, prompt sets, simulated models), and
    the TEMI clusterings the notebooks use (``artifacts.demo_clusterings``: C = 1x-8x the classes, Table 4's
    1.2x, Fig. 3's models), into the notebooks' disk cache. Notebooks and ``make demo`` then load them in
    seconds, as the paper profile loads what `make features` and a clustering run made."""
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
        from .artifacts import demo_clusterings
        from .runner import Runner

        for kw, c in tqdm(demo_clusterings(cfg), desc="TEMI clusterings"):
            Runner.from_config(open_benchmark(cfg, **kw), cfg).clusters(c)
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
    d.add_argument("--out", default=".", help="output root: the table goes to <out>/results/demo/<run>/demo_table1.csv")
    b = sub.add_parser("data", parents=[common],
                       help="build and cache the simulated benchmark (what the notebooks load)")
    b.add_argument("--size", default="demo", choices=["tiny", "demo"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-variants", action="store_true",
                   help="only the default benchmark, not the corpora / prompt sets / models the notebooks vary")
    _own_parsers(sub, common)
    return p


FIT_HELP = """Fit a label-free OOD detector on a folder of in-distribution images (any layout; every image below
IMAGES_DIR). The folder is encoded once into the feature cache (resumable; a second fit reads it), the
corpus text features are computed or reused, a seeded --holdout share of the images is held out, the
rest is clustered with TEMI and ClusterMine mines Y_pos; the held-out images set the score threshold
at 95% ID recall. The detector folder (--out) holds detector.safetensors + detector.json.

TEMI is sized for the folder (own_images.temi_for_size): from 100,000 images on, the paper's settings
(50 heads, 100 epochs, batch 1024, k = 50: a GPU job); below, the CPU preset (TEMIConfig.demo) with a
batch of about N/8 (16..256), as many epochs as give it its usual 1,000-1,500 optimiser steps, and
k = N/(4C) neighbours (3..50).
--clusters auto tries 5 values of C from C_max/16 to C_max = min(4000, N/4), prints |Y_pos|/C and the
redundancy ratio for each and keeps the larger of their elbows (paper appendix B)."""


def _add_model_args(p, required: bool) -> None:
    p.add_argument("--model", required=required, default=None,
                   help="registry name / open_clip architecture / model-config .json" +
                        ("" if required else " (default: the detector's own)"))
    p.add_argument("--pretrained", default=None, help="open_clip tag (default: the model's registry tag)")
    p.add_argument("--checkpoint", default=None, help="local weights file (.safetensors/.bin/.pt/.pth)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:<i>")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: as make features)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--max-skipped", type=float, default=0.01,
                   help="share of the images that may be unreadable (default 0.01)")
    p.add_argument("--download", action="store_true", help="let open_clip download missing weights")
    p.add_argument("--no-progress", action="store_true")


def _own_parsers(sub, common) -> None:
    from .corpus import DEFAULT_CORPUS
    from .own_images import DEFAULT_HOLDOUT
    from .prompts import DEFAULT_PROMPTS

    f = sub.add_parser("fit", parents=[common], help="fit a detector on a folder of ID images",
                       description=FIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("images", metavar="IMAGES_DIR")
    _add_model_args(f, required=True)
    f.add_argument("--corpus", default=DEFAULT_CORPUS,
                   help=f"registered corpus or a text file, one concept per line (default {DEFAULT_CORPUS})")
    f.add_argument("--prompts", default=DEFAULT_PROMPTS, help=f"prompt set (default {DEFAULT_PROMPTS})")
    f.add_argument("--clusters", default="auto", help="C, or auto (default): sweep C, keep the elbow")
    f.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT,
                   help="share of the images held out to set the threshold (default 0.1)")
    f.add_argument("--seed", type=int, default=0, help="seed of the hold-out split and of TEMI")
    f.add_argument("--out", required=True, metavar="DETECTOR_DIR")
    f.add_argument("--overwrite", action="store_true", help="replace a detector already in --out")
    s = sub.add_parser("score", parents=[common], help="score a folder of images with a fitted detector",
                       description="Score every image below IMAGES_DIR: a CSV (path, score, ood, id_percentile, "
                                   "concept), a summary, and a histogram PNG beside the CSV. The images are encoded "
                                   "with the detector's own model; --model / --checkpoint / --corpus / --prompts, "
                                   "when given, must be the ones it was fitted with.")
    s.add_argument("detector", metavar="DETECTOR_DIR")
    s.add_argument("images", metavar="IMAGES_DIR")
    s.add_argument("--out", default="scores.csv", help="the CSV (default scores.csv; the PNG gets its name)")
    s.add_argument("--threshold", type=float, default=None, help="flag OOD below this score (default: the detector's)")
    s.add_argument("--corpus", default=None)
    s.add_argument("--prompts", default=None)
    _add_model_args(s, required=False)
    e = sub.add_parser("explain", parents=[common], help="what a detector mined, and how C was chosen",
                       description="The mined concepts (clusters and images that voted for each, example images), "
                                   "the label-free C curve; with --images also a Markdown report with thumbnails.")
    e.add_argument("detector", metavar="DETECTOR_DIR")
    e.add_argument("--images", default=None, metavar="IMAGES_DIR", help="the folder the detector was fitted on")
    e.add_argument("--out", default=None, help="report folder (default DETECTOR_DIR/report)")
    e.add_argument("--top", type=int, default=30, help="concepts shown (default 30)")


def _model_kwargs(args) -> dict:
    return dict(model=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, device=args.device,
                cache_dir=args.cache_dir, batch_size=args.batch_size, num_workers=args.num_workers,
                max_skipped=args.max_skipped, download=args.download, progress=not args.no_progress)


def fit(args) -> int:
    from .own_images import fit_folder
    from .own_report import c_curve

    t0 = time.time()
    fitted = fit_folder(args.images, corpus=args.corpus, prompts=args.prompts, clusters=args.clusters,
                        holdout=args.holdout, seed=args.seed, out=args.out, overwrite=args.overwrite,
                        **_model_kwargs(args))
    det = fitted.detector
    if fitted.proposal:
        print("[fit] label-free C curve (paper appendix B):")
        by = fitted.proposal["by_metric"]
        print(c_curve({"meta": {"clusters": {"curve": fitted.curve.to_dict("records"), "by_metric": by}}}).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"[fit] elbows: |Y_pos|/C at C = {by['pos_per_cluster']}, redundancy at C = {by['redundancy']}; "
              f"C = {det.n_clusters} (the larger: the paper needs only a rough overestimate of C)")
    order = sorted(range(len(det.positive_names)), key=lambda i: -int(det.mined_.counts[i]))
    print(f"[fit] C = {det.n_clusters}: |Y_pos| = {len(order)} mined concepts, e.g. "
          f"{', '.join(det.positive_names[i] for i in order[:8])} (clustermine explain {args.out}: all of them)")
    n_hold = len(fitted.holdout_index)
    print(f"[fit] threshold {det.threshold_:.4g} at 95% ID recall on {n_hold} held-out images" +
          (" (few: a rough threshold; --threshold at score time overrides it)" if n_hold < 20 else ""))
    print(f"[fit] wrote {args.out} in {time.time() - t0:.0f} s; next: clustermine score {args.out} IMAGES_DIR, "
          f"clustermine explain {args.out}")
    return 0


def score(args) -> int:
    from .fileio import atomic_write
    from .own_images import score_folder

    kw = _model_kwargs(args)
    scored = score_folder(args.detector, args.images, corpus=args.corpus, prompts=args.prompts,
                          threshold=args.threshold, **kw)
    out = Path(args.out)
    atomic_write(out, lambda tmp: scored.table.to_csv(tmp, index=False))
    t = scored.table
    n_ood = int(t["ood"].sum())
    print(f"[score] {len(t)} images of {args.images}" + (f" ({len(scored.skipped)} unreadable, skipped)"
                                                          if scored.skipped else "") +
          f": {n_ood} ({100 * n_ood / len(t):.1f}%) flagged OOD below the threshold {scored.threshold:.4g}"
          + (" (given)" if args.threshold is not None else " (the detector's, 95% ID recall)"))
    q = t["score"].quantile([0, 0.5, 1]).tolist()
    print(f"[score] scores: min {q[0]:.4g}, median {q[1]:.4g}, max {q[2]:.4g}; the least ID-like:")
    print(t.nsmallest(min(5, len(t)), "score")[["path", "score", "id_percentile", "concept"]].to_string(index=False))
    try:
        from .plots import folder_scores

        fig = folder_scores(t["score"], scored.threshold, f"{Path(args.images).name}: {len(t)} images")
        png = atomic_write(out.with_suffix(".png"), lambda tmp: fig.savefig(tmp, format="png", dpi=150,
                                                                              bbox_inches="tight"))
        print(f"[score] wrote {out} and {png}")
    except ImportError as e:
        print(f"[score] wrote {out} (no histogram: {e}; pip install matplotlib seaborn)")
    return 0


def explain(args) -> int:
    from .detector_files import load
    from .own_report import explain_text, write_report

    det = load(args.detector)  # verified: a damaged folder is an error, not a report
    print(explain_text(det.info_, args.detector, args.top))
    if args.images:
        path = write_report(det.info_, args.detector, args.images, args.out, args.top)
        print(f"\n[explain] wrote {path}")
    return 0


def _main(argv) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.cmd in ("fit", "score", "explain"):
        return {"fit": fit, "score": score, "explain": explain}[args.cmd](args)
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
