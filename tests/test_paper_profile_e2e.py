"""Issue 15, end to end through the Makefile, as a new user runs the paper profile: a tiny random open_clip
model given as a config .json + a local checkpoint, generated ImageNet-style folders (4 wnid classes, not the
first ones) and the six OOD sets of Table 1 under a tmp DATA_ROOT, a small corpus FILE ->
`make features` -> `make table1 PROFILE=paper` and `make fig6`, outputs in the run's own folder; a second
run with another K leaves the first run's files in place; a notebook asked for features that do not exist
stops in its first cells with the `make features` line for the same parameters, and that line runs.

Runtime (2 shared CPU cores): ~2.5 min, most of it one TEMI run with the paper's settings (50 heads,
100 epochs: ~0.3 s per step whatever N, as the 50 heads' MLPs dominate; with N = 64 < batch 1024 an
epoch is one step), shared by every later notebook through the Runner's disk cache (CLUSTERMINE_CACHE).
Marked ``e2e`` (part of `pytest tests`; `-m "not e2e"` leaves it out)."""
from __future__ import annotations

import os
import random
import shlex
import subprocess
import time
from pathlib import Path

import pytest

open_clip = pytest.importorskip("open_clip")

from clustermine_lib import datasets as D  # noqa: E402
from test_features import REPO, _png, tiny_model_files  # noqa: E402

pytestmark = pytest.mark.e2e
CLASSES = (1, 100, 400, 900)  # 1K indices of the ID classes
C, M, K = 8, 2, 20  # TEMI needs N > k = 50 train images: 4 x 16
FIG6_ARGS = '-p k_values "[10, None]" -p m_values "[1, 2]" -p c_values "[8]"'
if not (REPO / ".venv" / "bin" / "papermill").exists():
    pytest.skip("needs `make install` (.venv with papermill)", allow_module_level=True)


ENV = dict(os.environ, HF_HUB_OFFLINE="1")  # flow() adds CLUSTERMINE_CACHE, the module's own cache


def _make(*args, timeout=600) -> tuple[int, str, float]:
    """``make ARGS`` in the repository with its .venv, under ENV; (exit code, stdout + stderr, seconds)."""
    t0 = time.perf_counter()
    run = subprocess.run(["make", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=timeout, env=ENV)
    return run.returncode, run.stdout, time.perf_counter() - t0


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """The user's files, and `make features` over them."""
    from clustermine_lib.encoder import ModelRef

    root = tmp_path_factory.mktemp("paper_e2e")
    ckpt = root / "weights.safetensors"
    config, _ = tiny_model_files(root, "cm-e2e-tiny", ckpt)
    rng, data, wnids, names = random.Random(0), root / "data", D.imagenet_wnids(), D.imagenet_classnames()
    for c in CLASSES:
        for i in range(16):
            _png(data / "imagenet/train" / wnids[c] / f"{i}.png", rng)
        for i in range(4):
            _png(data / "imagenet/val" / wnids[c] / f"{i}.png", rng)
    for name in D.GROUPS["paper"][2:]:
        for i in range(6):
            _png(data / D.DATASETS[name].folder / "x" / f"{i}.png", rng)
    corpus = root / "concepts.txt"
    corpus.write_text("\n".join([names[c] for c in CLASSES] + names[500:600]) + "\n")
    ENV["CLUSTERMINE_CACHE"] = str(root / "project-cache")
    common = [f"MODEL={config}", f"CHECKPOINT={ckpt}", f"CORPUS={corpus}"]
    rc, log, secs = _make("features", *common, "DATASET=paper", f"DATA_ROOT={data}", f"CACHE_DIR={root / 'cache'}",
                          "FEATURE_ARGS=--no-progress")
    assert rc == 0, log[-4000:]
    model_id = ModelRef.resolve(str(config), None, ckpt, "cpu").model_id
    return {"root": root, "config": config, "ckpt": ckpt, "data": data, "corpus": corpus, "common": common,
            "cache": root / "cache", "out": root / "out", "model_id": model_id}


def _run_dir(flow, kind: str, tail: str) -> Path:
    from clustermine_lib.notebook import corpus_label

    return flow["out"] / kind / "paper" / flow["model_id"] / f"{corpus_label(str(flow['corpus']))}.simple-7.seed0.{tail}"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_table1_and_fig6_through_make_in_their_own_run_folders(flow):
    import pandas as pd

    paper = ["PROFILE=paper", *flow["common"], f"CACHE_DIR={flow['cache']}", f"OUTPUT_DIR={flow['out']}"]
    rc, log, secs = _make("table1", *paper, f"C={C}", f"M={M}", f"K={K}")
    assert rc == 0, log[-6000:]
    assert "hold 4 of the 1000 ImageNet-1K classes: Y_GT" in log and "4 ID classes" in log
    assert "TEMI: 100%" in log  # progress shows in the papermill log
    run1 = f"C{C}.M{M}.K{K}"
    results, figures = _run_dir(flow, "results", run1), _run_dir(flow, "figures", run1)
    assert sorted(_files(results)) == ["table1_diagnostics.csv", "table1_main_results.csv"]
    assert sorted(_files(figures)) == ["table1_main_results.pdf", "table1_main_results.png"]
    nb_run = f"MODEL-{flow['config'].name}.CHECKPOINT-{flow['ckpt'].name}.CORPUS-{flow['corpus'].name}.C-{C}.M-{M}.K-{K}"
    assert (flow["out"] / "results/paper/notebooks" / nb_run / "01_table1_main_results.ipynb").is_file()

    rc, log6, secs6 = _make("fig6", *paper, f"C={C}", f"M={M}", f"K={K}", f"NB_ARGS={FIG6_ARGS}")
    assert rc == 0, log6[-6000:]
    fig6 = [p for p in (flow["out"] / "figures/paper" / flow["model_id"]).iterdir() if p.name.startswith(
        results.name + ".x")]  # the notebook's own sweep parameters (NB_ARGS) add x<hash>
    assert len(fig6) == 1 and sorted(_files(fig6[0])) == ["fig6_sensitivity.pdf", "fig6_sensitivity.png"]
    assert (flow["out"] / "results/paper" / flow["model_id"] / fig6[0].name / "fig6_sensitivity.csv").is_file()
    assert _files(figures)["table1_main_results.png"][:8] == b"\x89PNG\r\n\x1a\n"

    for csv in [*results.glob("*.csv"), flow["out"] / "results/paper" / flow["model_id"] / fig6[0].name /
                "fig6_sensitivity.csv"]:
        df = pd.read_csv(csv, keep_default_na=False)
        assert len(df) and set(df.model) == {flow["model_id"]} and set(df.pretrained) == {""}, csv
        assert set(df.checkpoint) == {str(flow["ckpt"])} and set(df.corpus) == {str(flow["corpus"])}, csv
        assert set(df.prompts) == {"simple-7"} and set(df.seed) == {0} and set(df.simulated) == {False}, csv

    before = {p: _files(p) for p in (results, figures)}
    rc, log2, secs2 = _make("table1", *paper, f"C={C}", f"M={M}", "K=30")
    assert rc == 0, log2[-6000:]
    assert sorted(_files(_run_dir(flow, "results", f"C{C}.M{M}.K30"))) == sorted(before[results])
    assert {p: _files(p) for p in (results, figures)} == before  # the first run's files are untouched
    print(f"table1 {secs:.0f} s, fig6 {secs6:.0f} s, table1 K=30 {secs2:.0f} s")


def test_missing_features_stop_the_notebook_at_once_with_the_make_features_line(flow):
    from clustermine_lib.feature_check import check_cached

    empty = flow["root"] / "other-cache"
    rc, log, secs = _make("table1", "PROFILE=paper", *flow["common"], f"CACHE_DIR={empty}",
                          f"DATA_ROOT={flow['data']}", f"OUTPUT_DIR={flow['root'] / 'out-bad'}", f"C={C}")
    assert rc != 0 and "FileNotFoundError: Cached features of " in log and "TEMI" not in log
    line = (f"make features MODEL={flow['config']} CHECKPOINT={flow['ckpt']} DATASET=paper CORPUS={flow['corpus']} "
            f"PROMPTS=simple-7 DATA_ROOT={flow['data']} CACHE_DIR={empty}")
    assert f"to make them: {line}\n" in log, log[-4000:]
    assert secs < 120 and not (flow["root"] / "out-bad" / "results" / "paper" / flow["model_id"]).exists()
    # the line runs as printed and makes exactly what the notebook needs
    rc, out, _ = _make(*shlex.split(line)[1:])
    assert rc == 0, out[-4000:]
    check_cached(str(flow["config"]), checkpoint=flow["ckpt"], cache_dir=empty, datasets=["paper"],
                 text=[{"corpus": str(flow["corpus"])}])
