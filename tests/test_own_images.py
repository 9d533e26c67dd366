"""Issue 16: a label-free detector on your own images. ``fit`` / ``score`` / ``explain`` through the real
CLI on the tiny random open_clip model of ``test_features`` (local checkpoint, generated PNG folders, a
small corpus file: no network, no real weights); the README's commands run as written; every bad input
is one line naming the file or option, and nothing is written half. On the simulated benchmark the same
library calls (``own_images.fit_detector``) fit -> save -> load to bit-identical scores, without a model."""
from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clustermine_lib import cli  # noqa: E402
from clustermine_lib import extract as E  # noqa: E402
from clustermine_lib import own_images as O  # noqa: E402
from clustermine_lib import text_features as T  # noqa: E402
from clustermine_lib.detector import ClusterMine  # noqa: E402
from clustermine_lib.detector_files import DetectorFileError  # noqa: E402
from test_features import REPO, TINY, _png, tiny  # noqa: E402,F401 (tiny: the fixture)

CONCEPTS = ["red", "blue", "green", "dog", "cat", "car", "tree", "sky", "water", "house", "sand", "grass"]


def _folder(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    for i in range(n):
        _png(path / ("a" if i % 2 else "b/deep") / f"{i}.png", rng)
    return path


@pytest.fixture(scope="module")
def own(tiny, tmp_path_factory):
    """photos/ (24 images, nested), new_photos/ (6), concepts.txt, and one detector fitted through the CLI."""
    root = tmp_path_factory.mktemp("own")
    _folder(root / "photos", 24, 0)
    _folder(root / "new_photos", 6, 1)
    (root / "concepts.txt").write_text("\n".join(CONCEPTS) + "\n")
    model = ["--model", str(tiny["config"]), "--checkpoint", str(tiny["ckpt"])]
    common = ["--device", "cpu", "--num-workers", "0", "--cache-dir", str(root / "cache"), "--no-progress"]
    rc = cli.main(["fit", str(root / "photos"), *model, "--corpus", str(root / "concepts.txt"), "--clusters", "3",
                   "--out", str(root / "det"), *common])
    assert rc == 0
    return {**tiny, "root": root, "model": model, "common": common, "det": root / "det"}


def _fit(own, out, *extra, images=None, corpus=None):
    return cli.main(["fit", str(images or own["root"] / "photos"), *own["model"], "--corpus",
                     str(corpus or own["root"] / "concepts.txt"), "--out", str(out), *own["common"], *extra])


def _score(own, det, csv, *extra, images=None):
    return cli.main(["score", str(det), str(images or own["root"] / "new_photos"), "--out", str(csv),
                     *own["common"], *extra])


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.startswith("clustermine: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and err.rstrip().endswith("(--debug shows the traceback)"), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ----------------------------------------------------------------------------- the simulated benchmark
def test_simulated_fit_save_load_is_bit_identical_without_a_model(tiny_bench, tmp_path):
    b = tiny_bench
    fitted = O.fit_detector(b.train.features, b.corpus, b.corpus_text, b.logit_scale, clusters=40, seed=0,
                            progress=False)
    det = fitted.detector
    assert len(fitted.holdout_index) == 48 and len(fitted.train_index) == 432 and det.n_clusters == 40
    assert not set(fitted.holdout_index.tolist()) & set(fitted.train_index.tolist())
    held = b.train.features[fitted.holdout_index]
    assert (~det.predict(held)).double().mean() >= 0.95  # the threshold keeps 95% of the held-out ID images
    det.save(tmp_path / "d")
    loaded = ClusterMine.load(tmp_path / "d")
    for x in (b.test.features, *[v.features for v in b.ood.values()]):
        assert torch.equal(loaded.score_samples(x), det.score_samples(x))
    assert loaded.threshold_ == det.threshold_ and loaded.positive_names == det.positive_names
    # the loaded TEMI head assigns images to the same clusters as the fitted one
    assert torch.equal(loaded.predict_clusters(b.train.features[fitted.train_index]), det.clusters_)
    again = O.fit_detector(b.train.features, b.corpus, b.corpus_text, b.logit_scale, clusters=40, seed=0,
                           progress=False)  # every random step is seeded
    assert torch.equal(again.detector.score_samples(b.test.features), det.score_samples(b.test.features))
    with pytest.raises(ValueError, match=r"--clusters 500 is larger than the number of training images: 480 images, "
                                         r"48 held out for the threshold, 432 left"):
        O.fit_detector(b.train.features, b.corpus, b.corpus_text, b.logit_scale, clusters=500)


def test_auto_c_sweeps_and_applies_the_elbow(tiny_bench):
    b = tiny_bench
    x = b.train.features[:120]
    fitted = O.fit_detector(x, b.corpus, b.corpus_text, b.logit_scale, clusters="auto", progress=False)
    assert list(fitted.curve["C"]) == O.auto_grid(108) and fitted.proposal["C"] == fitted.detector.n_clusters
    assert fitted.detector.n_clusters == max(fitted.proposal["by_metric"].values())
    assert {"n_pos", "pos_per_cluster", "redundancy"} <= set(fitted.curve.columns)
    assert O.auto_grid(1_281_167) == [250, 500, 1000, 2000, 4000]
    with pytest.raises(ValueError, match="needs at least 4 training images"):
        O.auto_grid(3)


def test_temi_is_sized_for_the_folder():
    from clustermine_lib.clustering import TEMIConfig

    small, demo = O.temi_for_size(200, 10), TEMIConfig.demo(10)
    assert small.n_heads == demo.n_heads and small.lr == demo.lr  # the CPU preset, scaled to the folder
    assert small.batch_size == 16 and small.k == 5
    assert small.epochs * (200 // small.batch_size) >= O.DEMO_STEPS_PER_EPOCH * demo.epochs
    assert O.temi_for_size(200, 100).k == 3
    paper = O.temi_for_size(1_281_167, 4000)
    assert (paper.n_heads, paper.epochs, paper.batch_size, paper.k) == (50, 100, 1024, 50)


# ----------------------------------------------------------------------------- the CLI flow
def test_fit_score_explain_through_the_cli(own, tmp_path, capsys, monkeypatch):
    det_dir = own["det"]
    info = json.loads((det_dir / "detector.json").read_text())
    meta = info["meta"]
    assert info["C"] == 3 and meta["images"]["n_images"] == 24 and meta["images"]["n_holdout"] == 2
    assert meta["model"]["checkpoint_sha256"] and meta["corpus"]["kind"] == "file"
    assert meta["corpus"]["cache_name"].startswith("file-") and meta["prompts"]["name"] == "simple-7"
    assert all(p["images"] >= 1 for p in info["positives"]) and set(meta["examples"]) == set(
        p["name"] for p in info["positives"])
    capsys.readouterr()
    assert _score(own, det_dir, tmp_path / "s.csv") == 0
    out = capsys.readouterr().out
    assert "[score] 6 images of" in out and "flagged OOD below the threshold" in out
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == ["path", "score", "ood", "id_percentile", "concept"] and len(table) == 6
    assert (tmp_path / "s.png").stat().st_size > 1000
    # reloading gives bit-identical scores: the CSV equals the in-memory detector on the same features
    det = ClusterMine.load(det_dir)
    feats = E.extract_folder_features(TINY, None, own["root"] / "new_photos", checkpoint=own["ckpt"],
                                      cache_dir=own["root"] / "cache", num_workers=0, progress=False)
    assert feats.row_files() == list(table["path"])
    assert torch.equal(torch.tensor(table["score"].to_numpy()), det.score_samples(feats.features).double())
    assert list(table["ood"]) == (det.score_samples(feats.features) < det.threshold_).tolist()
    # --threshold overrides the stored one
    assert _score(own, det_dir, tmp_path / "t.csv", "--threshold=-1e9") == 0
    assert not pd.read_csv(tmp_path / "t.csv")["ood"].any()
    # a second fit and score read the cached image and corpus text features: nothing is encoded again
    boom = lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed"))  # noqa: E731
    monkeypatch.setattr(E, "_compute_image_shard", boom)
    monkeypatch.setattr(T, "_compute_text_shard", boom)
    assert _fit(own, tmp_path / "again", "--clusters", "3") == 0
    again = ClusterMine.load(tmp_path / "again")
    assert torch.equal(again.score_samples(feats.features), det.score_samples(feats.features))
    capsys.readouterr()
    assert cli.main(["explain", str(det_dir), "--images", str(own["root"] / "photos"), "--out",
                     str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "Mined concepts, by the images that voted for them" in out and "C = 3 clusters (given with --clusters)" in out
    report = (tmp_path / "report" / "report.md").read_text()
    thumbs = re.findall(r"\]\((thumbs/[0-9a-f]+\.png)\)", report)
    assert thumbs and all((tmp_path / "report" / t).is_file() for t in thumbs)


def test_corpus_text_cache_is_the_one_make_features_writes(own, tmp_path, monkeypatch):
    """A registered corpus is cached under make features' name: fit reuses it, load_benchmark reads it."""
    from clustermine_lib import corpus as C
    from clustermine_lib.feature_check import corpus_tag

    small = C.Corpus("wordnet-n", tuple(CONCEPTS), ("",) * len(CONCEPTS), ("n",) * len(CONCEPTS))
    monkeypatch.setattr(C, "load_corpus", lambda name, pre="dedup-1-lemma", cache=True: small)
    assert _fit(own, tmp_path / "d", "--clusters", "2", corpus="wordnet-n") == 0
    tag = corpus_tag(small, "dedup-1-lemma", True)
    assert tag == "wordnet-n-dedup-1-lemma"
    got = T.load_text_features(TINY, None, small.names, name=tag, prompts="simple-7",
                               checkpoint=own["ckpt"], cache_dir=own["root"] / "cache")
    assert got.features.shape == (len(CONCEPTS), 32) and got.meta["corpus"] == "wordnet-n"


def test_folder_features_are_keyed_by_the_files(own, tmp_path):
    folder = _folder(tmp_path / "f", 4, 2)
    kw = dict(checkpoint=own["ckpt"], cache_dir=tmp_path / "cache", num_workers=0, progress=False)
    a = E.extract_folder_features(TINY, None, folder, **kw)
    a_files = a.row_files()  # read now: b replaces a's result folder
    _png(folder / "extra.png", random.Random(5))
    b = E.extract_folder_features(TINY, None, folder, **kw)
    assert len(a.features) == 4 and len(b.features) == 5 and a.meta["key_hash"] != b.meta["key_hash"]
    # the same four images, in the same rows; a batch of 5 instead of 4 may take other GEMM kernels (AVX-512
    # MKL: last-bit differences), so the rows are equal to float32 rounding, not bit for bit
    torch.testing.assert_close(b.features[:4], a.features, rtol=0, atol=1e-6)
    assert b.row_files()[:4] == a_files and b.row_files()[-1] == "extra.png"


# ----------------------------------------------------------------------------- bad input
def test_empty_and_unreadable_folders(own, tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert _fit(own, tmp_path / "d1", images=tmp_path / "empty") == 1
    _one_line_error(capsys, f"the image folder {tmp_path / 'empty'} holds no images")
    assert _fit(own, tmp_path / "d1", images=tmp_path / "nowhere") == 1
    _one_line_error(capsys, f"the image folder {tmp_path / 'nowhere'} does not exist")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(4):
        (bad / f"{i}.jpg").write_bytes(b"not a jpeg")
    assert _fit(own, tmp_path / "d1", images=bad) == 1
    _one_line_error(capsys, f"{bad}: none of its 4 images could be read: 4 unreadable, not a decodable image")
    assert not (tmp_path / "d1").exists()
    assert _score(own, own["det"], tmp_path / "s.csv", images=bad) == 1
    _one_line_error(capsys, "none of its 4 images could be read")
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.png").exists()


def test_other_model_corpus_or_prompts_at_score_time(own, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = load_file(str(own["ckpt"]))
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    other = tmp_path / "other.safetensors"
    save_file(state, str(other))
    assert _score(own, own["det"], tmp_path / "s.csv", "--model", str(own["config"]), "--checkpoint", str(other)) == 1
    _one_line_error(capsys, f"{own['det'] / 'detector.json'}: the detector was fitted with the features of "
                            "clustermine-tiny-test (pretrained=None, checkpoint sha256", "Leave out --model")
    (tmp_path / "other.txt").write_text("dog\ncat\nfish\n")
    assert _score(own, own["det"], tmp_path / "s.csv", "--corpus", str(tmp_path / "other.txt")) == 1
    _one_line_error(capsys, "the detector was fitted with the corpus concepts", "but other (hash")
    assert _score(own, own["det"], tmp_path / "s.csv", "--prompts", "basic") == 1
    _one_line_error(capsys, "the detector was fitted with the prompts simple-7")
    assert not (tmp_path / "s.csv").exists()
    # the same detector again, with the detector's own model (named explicitly): accepted
    assert _score(own, own["det"], tmp_path / "s.csv", *own["model"], "--corpus", str(own["root"] / "concepts.txt"),
                  "--prompts", "simple-7") == 0


def test_tampered_or_truncated_detector(own, tmp_path, capsys):
    import shutil

    d = tmp_path / "det"
    shutil.copytree(own["det"], d)
    data = (d / "detector.safetensors").read_bytes()
    (d / "detector.safetensors").write_bytes(data[:-64] + b"\x01" * 64)
    for argv in (["score", str(d), str(own["root"] / "new_photos"), "--out", str(tmp_path / "s.csv"),
                  *own["common"]], ["explain", str(d)]):
        assert cli.main(argv) == 1
        _one_line_error(capsys, f"{d / 'detector.safetensors'} does not match", "tampered")
    (d / "detector.safetensors").write_bytes(data[:100])
    assert cli.main(["explain", str(d)]) == 1
    _one_line_error(capsys, f"{d / 'detector.safetensors'} is damaged or truncated")
    (d / "detector.json").write_text((own["det"] / "detector.json").read_text()[:200])
    assert cli.main(["explain", str(d)]) == 1
    _one_line_error(capsys, f"{d / 'detector.json'} is not a readable detector description")
    with pytest.raises(DetectorFileError):  # --debug: the exception itself
        cli.main(["explain", str(d), "--debug"])
    assert not (tmp_path / "s.csv").exists()


def test_c_larger_than_the_images_and_unknown_corpus_file(own, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(E, "_compute_image_shard", lambda *a: (_ for _ in ()).throw(AssertionError("encoded")))
    assert _fit(own, tmp_path / "d", "--clusters", "50") == 1
    _one_line_error(capsys, "--clusters 50 is larger than the number of training images: 24 images, 2 held out "
                            "for the threshold, 22 left to cluster; give --clusters <= 22")
    assert _fit(own, tmp_path / "d", corpus=tmp_path / "nope.txt") == 1
    _one_line_error(capsys, f"--corpus {tmp_path / 'nope.txt'}: is neither a registered corpus nor a file",
                    "wordnet-na")
    assert _fit(own, tmp_path / "d", "--clusters", "many") == 1
    _one_line_error(capsys, "--clusters must be 'auto' or a whole number")
    assert _fit(own, tmp_path / "d", "--holdout", "1.5") == 1
    _one_line_error(capsys, "--holdout is the share of the images held out")
    assert _fit(own, own["det"]) == 1
    _one_line_error(capsys, "holds a detector already: pass --overwrite")
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- the README runs as written
def _readme_block(lang: str, after: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(after):]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_readme_commands_run_as_written(own, tmp_path):
    """The three commands of "Your own images", in a folder holding photos/ and new_photos/; only the
    model (the tiny config + its checkpoint for ViT-B-16/openai) and a small corpus file are given."""
    import shutil

    for name in ("photos", "new_photos"):
        shutil.copytree(own["root"] / name, tmp_path / name)
    env = dict(os.environ, HF_HUB_OFFLINE="1", CLUSTERMINE_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    lines = [ln for ln in _readme_block("bash", "## Your own images").splitlines() if ln.startswith("clustermine ")]
    assert [ln.split()[1] for ln in lines] == ["fit", "score", "explain"]
    for line in lines:
        argv = shlex.split(line.replace("--model ViT-B-16 --pretrained openai", f"--model {own['config']} --checkpoint "
                                        f"{own['ckpt']} --corpus {own['root'] / 'concepts.txt'}"))
        if argv[1] in ("fit", "score"):
            argv += ["--device", "cpu", "--num-workers", "0"]
        run = subprocess.run([sys.executable, "-m", "clustermine_lib.cli", *argv[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, line + "\n" + run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "photos.detector" / "detector.json").is_file()
    assert len(pd.read_csv(tmp_path / "new_photos.csv")) == 6 and (tmp_path / "new_photos.png").is_file()
    assert (tmp_path / "photos.detector" / "report" / "report.md").is_file()


def test_readme_python_flow(tmp_path, monkeypatch):
    """The README's Python block, on the tiny simulated benchmark instead of the demo one (C scaled)."""
    code = _readme_block("python", "The same flow in Python")
    assert 'make_benchmark("demo")' in code and "clusters=800" in code
    monkeypatch.chdir(tmp_path)
    exec(code.replace('make_benchmark("demo")', 'make_benchmark("tiny")').replace("clusters=800", "clusters=40"), {})
    assert (tmp_path / "demo.detector" / "detector.safetensors").is_file()
