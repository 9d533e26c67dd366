"""Issue 14: caches that cannot lie. One test per case of the issue, with fault injection (truncate,
overwrite bytes, kill during extraction then resume, change an input and reload) on the tiny random
open_clip model and generated images of ``test_features`` (no network, no real weights)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clustermine_lib import corpus as C  # noqa: E402
from clustermine_lib import datasets as D  # noqa: E402
from clustermine_lib import encoder as ENC  # noqa: E402
from clustermine_lib import extract as E  # noqa: E402
from clustermine_lib import feature_store as S  # noqa: E402
from clustermine_lib import feature_check, features as F  # noqa: E402
from clustermine_lib import features_cli as FC  # noqa: E402
from clustermine_lib import models as M  # noqa: E402
from clustermine_lib import text_features as T  # noqa: E402
from clustermine_lib import prompts as P  # noqa: E402
from clustermine_lib.runner import Runner  # noqa: E402
from test_features import REPO, TINY, TINY_CFG, _kw, _png, tiny  # noqa: E402,F401 (tiny: the fixture)

NAMES = ["dog", "golden retriever", "car"]


def _meta(store: Path, dtype="float32") -> dict:
    return json.loads(S.meta_file(store, dtype).read_text())


def _shards(store: Path, dtype="float32") -> list[Path]:
    m = _meta(store, dtype)
    return [store / m["folder"] / s for s in m["shards"]]


def _text(tiny, cache, prompts="basic", **kw):
    return T.extract_text_features(TINY, None, NAMES, name="toy", prompts=prompts, checkpoint=tiny["ckpt"],
                                   cache_dir=cache, progress=False, **kw)


def _load_text(tiny, cache, prompts="basic", checkpoint=None):
    return T.load_text_features(TINY, None, NAMES, name="toy", prompts=prompts, cache_dir=cache,
                                checkpoint=checkpoint or tiny["ckpt"])


def _count_image_shards(monkeypatch) -> list:
    computed = []
    real = E._compute_image_shard
    monkeypatch.setattr(E, "_compute_image_shard",
                        lambda ref, ds, s, e, *a: computed.append((s, e)) or real(ref, ds, s, e, *a))
    return computed


def _die_after(monkeypatch, n: int):
    """save_shard raises KeyboardInterrupt (a kill) after ``n`` shards were written."""
    real, saved = S.save_shard, []

    def save(*a, **k):
        if len(saved) >= n:
            raise KeyboardInterrupt("killed")
        real(*a, **k)
        saved.append(1)

    monkeypatch.setattr(S, "save_shard", save)
    return lambda: monkeypatch.setattr(S, "save_shard", real)


# ============================================================================ 1. the load path verifies
def test_text_features_after_template_change_are_refused_then_rebuilt(tiny, tmp_path, monkeypatch):
    """Case 1: load_text_features returned old features after the prompt templates changed."""
    old = _text(tiny, tmp_path)
    monkeypatch.setitem(P.PROMPT_SETS, "basic", ("a drawing of a {}.",))
    with pytest.raises(S.CacheError) as err:
        _load_text(tiny, tmp_path)
    msg = str(err.value)
    assert "float32.meta.json" in msg and "made from other prompt templates" in msg and "a drawing of" in msg
    assert "rebuild it with: (a custom Corpus or prompt list has no make target) text_features.extract_text_features(" in msg
    new = _text(tiny, tmp_path)  # the key changed: recomputed, switched
    assert not torch.allclose(old.features, new.features)
    assert torch.equal(_load_text(tiny, tmp_path).features, new.features)
    assert len(list(new.path.parent.glob("float32-*"))) == 1  # the replaced result was removed


def test_other_format_version_is_refused(tiny, tmp_path):
    """Case 1: a meta.json with another format version was accepted."""
    t = _text(tiny, tmp_path)
    store = t.path.parent
    meta = _meta(store)
    meta["format"] = 1
    S.meta_file(store).write_text(json.dumps(meta))
    with pytest.raises(S.CacheError, match=r"another version of this code \(cache format 1, now 2\)"):
        _load_text(tiny, tmp_path)
    # a cache of the earlier layout (meta.json beside the shards) is named as such, with the command
    feats = E.extract_image_features(TINY, None, "imagenet-val", **_kw(tiny, tmp_path))
    img = feats.path.parent
    (img / "meta.json").write_text(json.dumps({"format": 1, "dtype": "float32"}))
    S.meta_file(img).unlink()
    with pytest.raises(FileNotFoundError) as err:
        E.load_image_features(TINY, None, "imagenet-val", checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    assert "older version of this code (cache format 1, now 2)" in str(err.value)
    assert "make features" in str(err.value) and "DATASET=imagenet-val" in str(err.value)
    again = E.extract_image_features(TINY, None, "imagenet-val", **_kw(tiny, tmp_path))  # rebuilt (same shards)
    assert torch.equal(again.features, feats.features) and not (img / "meta.json").exists()


def test_edited_meta_and_other_model_are_named(tiny, tmp_path):
    """Case 1: another checkpoint's text cache gave 'missing' although the file was there."""
    t = _text(tiny, tmp_path)
    other = tmp_path / "other.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny["ckpt"]))
    state["logit_scale"] = state["logit_scale"] + 1
    save_file(state, str(other))
    with pytest.raises(S.CacheError) as err:  # the cache of these names exists for the first checkpoint
        _load_text(tiny, tmp_path, checkpoint=other)
    msg = str(err.value)
    assert "missing" in msg and "same features exist for other weights" in msg and str(tiny["ckpt"]) in msg
    # the first checkpoint's store copied under the second one's folder: named as another model's
    ref = ENC.ModelRef.resolve(TINY, None, other)
    target = S.text_dir(ref.model_id, "toy", NAMES, "basic", tmp_path)
    import shutil

    shutil.copytree(t.path.parent, target)
    with pytest.raises(S.CacheError, match="made from other model or weights"):
        _load_text(tiny, tmp_path, checkpoint=other)
    # a hand-edited key no longer matches its hash
    meta = _meta(t.path.parent)
    meta["key"]["templates"] = ["x {}"]
    S.meta_file(t.path.parent).write_text(json.dumps(meta))
    with pytest.raises(S.CacheError, match="does not match its key hash"):
        _load_text(tiny, tmp_path)


# ============================================================================ 2. damaged shards
@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_shard_is_named_on_load_and_recomputed_on_rerun(tiny, tmp_path, monkeypatch, capsys, damage):
    """Case 2: a shard cut to 2,000 bytes was kept as success and then crashed without a file name;
    400 bytes overwritten with 0xff loaded as NaN rows."""
    kw = dict(_kw(tiny, tmp_path), shard_size=4)
    first = E.extract_image_features(TINY, None, "imagenet-train", **kw)
    shard = _shards(first.path.parent)[1]
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[:len(data) // 2]))
    else:
        data[-400:] = b"\xff" * 400  # inside the tensors (576 bytes of them), not the header
        shard.write_bytes(bytes(data))
    with pytest.raises(FileNotFoundError) as err:  # a CacheError, or check_cached's list of them
        E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    msg = str(err.value)
    assert shard.name in msg and ("truncated" in msg or "checksum" in msg)
    assert "make features" in msg and "DATASET=imagenet-train" in msg
    if damage == "truncate":  # found from the header alone: check_cached lists it too
        with pytest.raises(FileNotFoundError, match=shard.name):
            feature_check.check_cached(TINY, checkpoint=tiny["ckpt"], datasets=["imagenet-train"], cache_dir=tmp_path)
    computed = _count_image_shards(monkeypatch)
    capsys.readouterr()
    again = E.extract_image_features(TINY, None, "imagenet-train", **kw)  # what `make features` runs
    assert computed == [(4, 8)] and f"{shard.name}" in capsys.readouterr().err
    assert torch.equal(again.features, first.features) and torch.equal(again.index, first.index)


def test_nan_features_are_never_written_nor_read(tiny, tmp_path, monkeypatch):
    real = E._compute_image_shard

    def nan_rows(*a):
        tensors, info = real(*a)
        tensors["features"][1] = float("nan")
        return tensors, info

    monkeypatch.setattr(E, "_compute_image_shard", nan_rows)
    with pytest.raises(ValueError, match=r"the model produced NaN or Inf 'features' for 1 of the items \[0, 6\)"):
        E.extract_image_features(TINY, None, "imagenet-val", **_kw(tiny, tmp_path))
    path = tmp_path / "nan.safetensors"
    S.save_shard(path, {"features": torch.tensor([[0.0, float("inf")]])}, {"key_hash": "k"})
    with pytest.raises(S.CacheError, match="'features' holds NaN or Inf"):
        S.read_shard(path, "k")
    assert S.read_shard(path, "k", load=False)[0]["rows"] == 1  # the header alone is fine


def test_header_damage_and_wrong_rows_are_refused(tiny, tmp_path):
    t = _text(tiny, tmp_path)
    shard = _shards(t.path.parent)[0]
    data = bytearray(shard.read_bytes())
    data[10:30] = b"\xff" * 20
    shard.write_bytes(bytes(data))
    with pytest.raises(S.CacheError, match="unreadable shard"):
        _load_text(tiny, tmp_path)
    t = _text(tiny, tmp_path)  # recomputed
    meta = _meta(t.path.parent)
    meta["shard_rows"], meta["n_rows"] = [2], 2
    S.meta_file(t.path.parent).write_text(json.dumps(meta))
    with pytest.raises(S.CacheError, match="rows where its metadata says 2"):
        _load_text(tiny, tmp_path)


# ============================================================================ 3. too many skipped images
def _data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "textures43").mkdir(parents=True)
    return root


def test_zero_readable_images_is_an_error(tiny, tmp_path, monkeypatch):
    """Case 3: a filelist.txt with 5 wrong paths, or a folder of only corrupt images: exit 0, cached."""
    data = _data_root(tmp_path)
    (data / "textures43" / "filelist.txt").write_text("".join(f"img{i}.png\n" for i in range(5)))
    kw = dict(_kw(tiny, tmp_path / "cache"), data_root=data, max_skipped=1.0)
    with pytest.raises(S.TooManySkipped) as err:
        E.extract_image_features(TINY, None, "Textures43", **kw)
    msg = str(err.value)
    assert "none of its 5 images could be read: 5 missing (img0.png, img1.png" in msg
    store = S.image_dir(ENC.ModelRef.resolve(TINY, None, tiny["ckpt"]).model_id, "Textures43", tmp_path / "cache")
    assert not S.meta_file(store).exists()  # not recorded as complete
    # only corrupt images: listed as unreadable; once they are fixed, the same command completes
    (data / "textures43" / "filelist.txt").unlink()
    for i in range(3):
        (data / "textures43" / f"c{i}.png").write_bytes(b"not an image")
    with pytest.raises(S.TooManySkipped, match=r"3 unreadable, not a decodable image \(c0.png, c1.png, c2.png\)") as err:
        E.extract_image_features(TINY, None, "Textures43", **kw)
    listing = Path(str(err.value).split("full list: ")[1].split(")")[0])
    assert listing.read_text().splitlines() == [f"unreadable\tc{i}.png" for i in range(3)]
    rng = random.Random(1)
    for i in range(3):
        _png(data / "textures43" / f"c{i}.png", rng)
    ok = E.extract_image_features(TINY, None, "Textures43", **kw)
    assert ok.features.shape == (3, 32) and ok.skipped == []


def test_skipped_share_above_max_is_an_error(tiny, tmp_path):
    kw = dict(_kw(tiny, tmp_path), max_skipped=0.01)
    with pytest.raises(S.TooManySkipped) as err:
        E.extract_image_features(TINY, None, "NINCO", **kw)
    msg = str(err.value)
    assert "1 of 6 images (16.7%) could not be read, more than --max-skipped 0.01" in msg
    assert "1 unreadable, not a decodable image (some_class/broken.png)" in msg and "--max-skipped 0.17" in msg
    got = E.extract_image_features(TINY, None, "NINCO", **dict(kw, max_skipped=0.2))  # the shards are reused
    assert got.meta["skipped"] == ["some_class/broken.png"] and got.meta["missing"] == []


# ============================================================================ 4. never destroy a complete result
def test_killed_replacement_keeps_the_complete_result(tiny, tmp_path, monkeypatch):
    """Case 4: --overwrite, one more image or --dtype float16 unlinked meta.json first; killed 1 s
    later, the complete float32 cache was gone. dtype is in the folder name now."""
    data = tmp_path / "data"
    import shutil

    shutil.copytree(tiny["data"] / "imagenet", data / "imagenet")
    kw = dict(_kw(tiny, tmp_path / "cache"), data_root=data, shard_size=4)
    done = E.extract_image_features(TINY, None, "imagenet-train", **kw)

    def still_there():
        got = E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"],
                                    cache_dir=tmp_path / "cache", dtype="float32")
        assert torch.equal(got.features, done.features)

    for change in ("overwrite", "one more image"):
        restore = _die_after(monkeypatch, 1)
        extra = {}
        if change == "overwrite":
            extra["overwrite"] = True
        else:
            _png(data / "imagenet/train" / tiny["wnids"][0] / "new.png", random.Random(2))
        with pytest.raises(KeyboardInterrupt):
            E.extract_image_features(TINY, None, "imagenet-train", **kw, **extra)
        restore()
        if change == "overwrite":
            still_there()
            redone = E.extract_image_features(TINY, None, "imagenet-train", **kw, **extra)
            assert torch.equal(redone.features, done.features) and redone.path != done.path
            assert not done.path.exists()  # replaced only once the new result was complete
        else:
            # readers do not list the images: they read the complete result, still the old one
            got = E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"],
                                        cache_dir=tmp_path / "cache")
            assert len(got.features) == 12
            grown = E.extract_image_features(TINY, None, "imagenet-train", **kw)
            assert len(grown.features) == 13

    # float32 and float16 are two results side by side
    half = E.extract_image_features(TINY, None, "imagenet-train", **dict(kw, dtype="float16"))
    full = E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"], cache_dir=tmp_path / "cache")
    assert half.path.name.startswith("float16-") and full.path.name.startswith("float32-")
    assert full.meta["dtype"] == "float32" and half.meta["dtype"] == "float16"
    assert torch.allclose(half.features, full.features, atol=2e-3)


def test_sigkill_during_float16_run_then_resume(tiny, tmp_path, monkeypatch):
    """Case 4 with a real SIGKILL: a float16 run killed mid-way leaves the float32 result loadable;
    rerun, it computes only the missing shards and equals a fresh run."""
    cache = tmp_path / "cache"
    kw = dict(_kw(tiny, cache), shard_size=1)
    done = E.extract_image_features(TINY, None, "imagenet-train", **kw)
    script = (
        "import sys, time\n"
        "import clustermine_lib.feature_store as S\n"
        "real = S.save_shard\n"
        "def slow(*a, **k):\n"
        "    real(*a, **k); time.sleep(0.4)\n"
        "S.save_shard = slow\n"
        "from clustermine_lib.features import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    cmd = [sys.executable, "-c", script, "--model", str(tiny["config"]), "--checkpoint", str(tiny["ckpt"]),
           "--dataset", "imagenet-train", "--data-root", str(tiny["data"]), "--cache-dir", str(cache),
           "--shard-size", "1", "--num-workers", "0", "--device", "cpu", "--no-text", "--no-progress",
           "--dtype", "float16"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = done.path.parent
    t0 = time.time()
    while len(list(store.glob("float16-*/shard-*.safetensors"))) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not S.meta_file(store, "float16").exists()
    got = E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"], cache_dir=cache)
    assert torch.equal(got.features, done.features)
    kept = len(list(store.glob("float16-*/shard-*.safetensors")))
    computed = _count_image_shards(monkeypatch)
    resumed = E.extract_image_features(TINY, None, "imagenet-train", **dict(kw, dtype="float16"))
    assert len(computed) == 12 - kept
    fresh = E.extract_image_features(TINY, None, "imagenet-train", **dict(kw, dtype="float16", cache_dir=tmp_path / "f"))
    assert torch.equal(resumed.features, fresh.features) and resumed.features.dtype == torch.float32


def test_two_identical_runs_at_once_stay_consistent(tiny, tmp_path):
    """What already held: two identical concurrent extractions give one consistent result."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "clustermine_lib.features", "--model", str(tiny["config"]), "--checkpoint",
           str(tiny["ckpt"]), "--dataset", "imagenet-train", "--data-root", str(tiny["data"]), "--cache-dir",
           str(cache), "--shard-size", "2", "--num-workers", "0", "--device", "cpu", "--no-text", "--no-progress"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    got = E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"], cache_dir=cache)
    assert len(got.features) == 12 and len(list(got.path.parent.glob("float32-*"))) == 1


# ============================================================================ 5. preflight
def test_preflight_lists_every_problem_before_any_extraction(tiny, tmp_path, monkeypatch, capsys):
    """Case 5: --corpus wordnet-xx or an unknown prompt set failed only after all images were
    extracted; a missing dataset of the group failed after ImageNet train/val."""
    monkeypatch.setattr(E, "_compute_image_shard", lambda *a: (_ for _ in ()).throw(AssertionError("extracted")))
    cache = tmp_path / "cache"
    bad_ckpt = tmp_path / "cut.safetensors"
    bad_ckpt.write_bytes(tiny["ckpt"].read_bytes()[:5000])
    rc = F.main(["--model", str(tiny["config"]), "--checkpoint", str(bad_ckpt), "--dataset", "paper",
                 "--data-root", str(tiny["data"]), "--cache-dir", str(cache), "--corpus", "wordnet-xx",
                 "--prompts", "basic,nope", "--batch-size", "0", "--max-skipped", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.startswith("features: error: nothing was extracted; 9 problems to fix first:\n")
    for needle in ("--batch-size must be >= 1, got 0", "--max-skipped is a share in [0, 1]",
                   f"checkpoint {bad_ckpt} is not a complete .safetensors file", "Dataset OpenImage-O not found",
                   "Dataset iNat not found", "Dataset IN-OOD not found", "Dataset Textures43 not found",
                   "--corpus: unknown corpus 'wordnet-xx'", "--prompts: unknown prompt set(s) ['nope']"):
        assert needle in err, needle
    assert sum(ln.startswith("  - ") for ln in err.splitlines()) == 9
    assert not cache.exists()


def test_preflight_finds_missing_listed_files_and_weights(tiny, tmp_path, monkeypatch, capsys):
    data = _data_root(tmp_path)
    (data / "textures43" / "filelist.txt").write_text("".join(f"img{i}.png\n" for i in range(5)))
    rc = F.main(["--model", "ViT-B-16", "--pretrained", "openai", "--dataset", "Textures43", "--data-root",
                 str(data), "--cache-dir", str(tmp_path / "cache"), "--no-text", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "Textures43: 5 of the 5 images listed in" in err and "(first: img0.png, img1.png" in err
    assert "weights of ViT-B-16/openai are not on this machine" in err and "--download" in err
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # --download under the Makefile's HF_HUB_OFFLINE=1
    rc = F.main(["--model", "ViT-B-16", "--pretrained", "openai", "--dataset", "NINCO", "--data-root", str(data),
                 "--cache-dir", str(tmp_path / "cache"), "--no-text", "--device", "cpu", "--download"])
    err = capsys.readouterr().err
    assert rc == 1 and "--download cannot fetch the weights of ViT-B-16/openai: HF_HUB_OFFLINE=1" in err
    assert "make features ... HF_HUB_OFFLINE=0 FEATURE_ARGS=--download" in err
    monkeypatch.delenv("DATA_ROOT", raising=False)  # what already held: no data root is named
    rc = F.main(["--model", str(tiny["config"]), "--checkpoint", str(tiny["ckpt"]), "--dataset", "NINCO",
                 "--no-text", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing was extracted: No data root: pass data_root=... (CLI --data-root" in err


# ============================================================================ 6. corpus cache
@pytest.fixture
def small_wordnet_corpus(tmp_path, monkeypatch):
    """load_corpus on the first 300 WordNet noun synsets, cached under tmp_path."""
    from clustermine_lib.wordnet import wordnet

    synsets = list(wordnet().all_synsets("n"))[:300]
    monkeypatch.setattr(C, "_wordnet_synsets", lambda corpus: synsets)
    monkeypatch.setattr(C, "_cache_path", lambda corpus, pre: tmp_path / f"{corpus}.{pre}.v2.tsv")
    return lambda: C.load_corpus("wordnet-na")


@pytest.mark.parametrize("damage", ["cut lines", "cut mid-line", "overwrite", "old format", "other key"])
def test_damaged_corpus_tsv_is_rebuilt(small_wordnet_corpus, tmp_path, damage):
    """Case 6: a wordnet-na TSV cut to 40,000 lines loaded as a 40,000-concept corpus; cut mid-line it
    raised IndexError."""
    good = small_wordnet_corpus()
    path = tmp_path / "wordnet-na.dedup-1-lemma.v2.tsv"
    text = path.read_text()
    assert text.startswith("#clustermine-corpus\t") and len(text.splitlines()) == len(good) + 1
    if damage == "cut lines":
        text = "\n".join(text.splitlines()[:100]) + "\n"
    elif damage == "cut mid-line":
        text = text[: text.index("\n", 2000) - 4]
    elif damage == "overwrite":
        text = text.replace("\n" + good.names[5] + "\t", "\nxxxxx\t", 1)
    elif damage == "old format":
        text = text.partition("\n")[2]
    else:
        text = text.replace('"preprocess": "dedup-1-lemma"', '"preprocess": "dup-1-lemma"', 1)
    path.write_text(text)
    with pytest.warns(UserWarning, match=f"corpus cache {path}.*rebuilding it from WordNet"):
        again = small_wordnet_corpus()
    assert again == good and len(again) == len(good)
    assert small_wordnet_corpus() == good  # the rebuilt file verifies


def test_corpus_files_are_utf8_with_bom_handled(tmp_path):
    """Case 7: a Latin-1 corpus file gave a bare UnicodeDecodeError; a UTF-8 BOM became part of the
    first concept name."""
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffcafé\ndog\n".encode("utf-8"))
    assert C.load_corpus_file(bom).names == ("café", "dog")
    csv_bom = tmp_path / "bom.csv"
    csv_bom.write_bytes("\ufeffword,pos\nred,a\ncat,n\n".encode("utf-8"))
    assert C.load_corpus_file(csv_bom).names == ("red", "cat")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("dog\ncat\ncafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt line 3 \(column 4\) is not UTF-8: byte 0xe9; save the file as UTF-8"):
        C.load_corpus_file(latin)
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("dog\ncat\n".encode("utf-16"))
    with pytest.raises(ValueError, match="utf16.txt is UTF-16"):
        C.load_corpus_file(utf16)


# ============================================================================ 7. messages
def test_checkpoint_errors_name_the_file(tiny, tmp_path):
    """Case 7: checkpoint load errors (truncated / random .safetensors or .pt, wrong architecture)
    did not name the file and repeated torch's advice to use weights_only=False."""
    good = tiny["ckpt"].read_bytes()
    cases = {"cut.safetensors": good[:5000], "random.safetensors": os.urandom(3000),
             "random.pt": os.urandom(3000), "cut.pt": tiny["ckpt_pt"].read_bytes()[:5000]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    other_cfg = tmp_path / "clustermine-tiny-other.json"
    other_cfg.write_text(json.dumps({**TINY_CFG, "embed_dim": 16}))
    open_clip.add_model_config(other_cfg)
    torch.save(open_clip.create_model("clustermine-tiny-other").state_dict(), tmp_path / "other-arch.pt")
    want = {"cut.safetensors": "is not a complete .safetensors file", "random.safetensors": "is not a complete",
            "random.pt": "holds Python objects, not only tensors", "cut.pt": "is not a readable torch archive",
            "other-arch.pt": "holds the weights of another architecture than clustermine-tiny-test"}
    for name, text in want.items():
        with pytest.raises(ValueError) as err:
            M.load_model(TINY, checkpoint=tmp_path / name, device="cpu")
        msg = str(err.value)
        assert str(tmp_path / name) in msg and text in msg and "weights_only" not in msg, msg
        assert "\n" not in msg
    assert "size mismatch" not in msg and "tensor(s) of another shape, e.g. " in msg


def test_pickled_code_in_checkpoint_is_refused_and_never_runs(tiny, tmp_path):
    """What already held: a pickle with os.system in a .pt / .bin checkpoint is refused, no code runs."""
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for suffix in (".pt", ".bin"):
        path = tmp_path / f"evil{suffix}"
        torch.save({"visual.proj": Evil()}, path)
        with pytest.raises(ValueError, match=r"holds Python objects, not only tensors \(it refers to posix.system\)"):
            M.load_model(TINY, checkpoint=path, device="cpu")
    assert not marker.exists()


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    """Case 7: a 16-bit PNG was clipped to white."""
    from PIL import Image

    a = np.full((8, 8), 32768, dtype=np.uint16)
    a[0, 0] = 65535
    path = tmp_path / "grey16.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
        rgb = np.asarray(D.to_rgb(img))
    assert rgb.shape == (8, 8, 3) and rgb[1, 1].tolist() == [128, 128, 128] and rgb[0, 0].tolist() == [255] * 3
    ds = D.ImageListDataset(tmp_path, [("grey16.png", -1)], transform=lambda im: torch.from_numpy(np.asarray(im)))
    assert ds[0][0][1, 1].tolist() == [128, 128, 128]
    f = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))
    assert np.asarray(D.to_rgb(f))[0, 0].tolist() == [128] * 3
    eight = Image.fromarray(np.full((4, 4), 200, dtype=np.int32))  # 8-bit values in mode I: unchanged
    assert np.asarray(D.to_rgb(eight))[0, 0].tolist() == [200] * 3


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tiny, tmp_path, capsys, monkeypatch):
    """Case 7: almost every CLI error printed a full traceback."""
    rc = F.main(["--model", "ViT-Nope-99", "--dataset", "text", "--no-text", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "Unknown model 'ViT-Nope-99'" in err and "(--debug shows the traceback)" in err
    with pytest.raises(FC.PreflightError):
        F.main(["--model", "ViT-Nope-99", "--dataset", "text", "--no-text", "--device", "cpu", "--debug"])
    from clustermine_lib import cli

    monkeypatch.setattr(cli, "data", lambda *a: (_ for _ in ()).throw(FileNotFoundError("WordNet 3.0 was not found")))
    assert cli.main(["data"]) == 1
    err = capsys.readouterr().err
    assert err == "clustermine: error: WordNet 3.0 was not found (--debug shows the traceback)\n"
    with pytest.raises(FileNotFoundError):
        cli.main(["data", "--debug"])
    monkeypatch.setattr(cli, "data", lambda *a: (_ for _ in ()).throw(KeyError("x")))
    assert cli.main(["data"]) == 1 and "clustermine: error: KeyError: 'x'" in capsys.readouterr().err
    # a run over several datasets goes on past one that is not recorded, then fails naming it
    rc = F.main(["--model", str(tiny["config"]), "--checkpoint", str(tiny["ckpt"]), "--dataset", "NINCO,IN-O",
                 "--data-root", str(tiny["data"]), "--cache-dir", str(tmp_path / "c"), "--no-text", "--device",
                 "cpu", "--num-workers", "0", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 1 and "[features] IN-O: 4 images" in out.out
    assert "features: error: 1 dataset(s) not recorded" in out.err and "NINCO: 1 of 6 images" in out.err


# ============================================================================ the other caches
def test_knn_cache_is_verified_and_recomputed(tiny, tmp_path, monkeypatch, capsys):
    E.extract_image_features(TINY, None, "imagenet-train", **_kw(tiny, tmp_path))
    knn = E.cached_knn(TINY, None, "imagenet-train", k=3, checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    path = next((tmp_path).rglob("imagenet-train.float32.k3.safetensors"))
    data = bytearray(path.read_bytes())
    data[-40:] = b"\x07" * 40
    path.write_bytes(bytes(data))
    capsys.readouterr()
    again = E.cached_knn(TINY, None, "imagenet-train", k=3, checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    assert torch.equal(again, knn) and "checksum: the file was changed after writing; recomputing it" in capsys.readouterr().err
    import clustermine_lib.clustering as CL

    monkeypatch.setattr(CL, "knn_indices", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert torch.equal(E.cached_knn(TINY, None, "imagenet-train", k=3, checkpoint=tiny["ckpt"], cache_dir=tmp_path),
                       knn)
    with pytest.raises(ValueError, match="k = 12 nearest neighbours need more than 12"):
        E.cached_knn(TINY, None, "imagenet-train", k=12, checkpoint=tiny["ckpt"], cache_dir=tmp_path)


def test_image_list_keeps_odd_file_names(tiny, tmp_path):
    """ImageFeatures.files() broke on paths with tabs; filelist.txt lines with spaces were cut."""
    data = tmp_path / "data"
    rng = random.Random(3)
    names = ["tab\tname.png", "space name.png", "plain.png"]
    for n in names:
        _png(data / "textures43" / n, rng)
    got = E.extract_image_features(TINY, None, "Textures43", **dict(_kw(tiny, tmp_path / "c"), data_root=data))
    assert sorted(got.files()) == sorted(names)
    (data / "textures43" / "filelist.txt").write_text("space name.png\nplain.png\n")
    assert D.read_file_list(data / "textures43" / "filelist.txt") == [("space name.png", None), ("plain.png", None)]
    (data / "imagenet/val/n01440764").mkdir(parents=True)
    (data / "imagenet/val/filelist.txt").write_text("\ufeffa b.JPEG n01440764\nc.png 7\n")
    assert D.read_file_list(data / "imagenet/val/filelist.txt") == [("a b.JPEG", "n01440764"), ("c.png", "7")]
    files = got.path / "files.txt"
    files.write_text(files.read_text().replace("plain", "other"))
    with pytest.raises(S.CacheError, match="does not match the image list"):
        got.files()


def test_notebook_cache_entries_are_verified(tmp_path):
    """Runner._disk: a damaged, overwritten or stale entry is recomputed, never returned."""
    calls = []
    fake = SimpleNamespace(store=tmp_path, quiet=lambda f: f())

    def compute():
        calls.append(1)
        return np.arange(1000, dtype=np.float64)

    def get(key={"a": 1}):
        return Runner._disk(fake, "scores", key, compute)

    first = get()
    assert len(calls) == 1 and np.array_equal(get(), first) and len(calls) == 1
    npy = next(tmp_path.glob("scores/*.npy"))
    side = npy.with_suffix(".json")
    assert json.loads(side.read_text())["value"]["shape"] == [1000]
    npy.write_bytes(npy.read_bytes()[:500])  # truncated
    assert np.array_equal(get(), first) and len(calls) == 2
    raw = bytearray(npy.read_bytes())
    raw[-80:] = b"\x00" * 80  # overwritten: loads, but not its hash
    npy.write_bytes(bytes(raw))
    assert np.array_equal(get(), first) and len(calls) == 3
    meta = json.loads(side.read_text())
    side.write_text(json.dumps(meta["key"]))  # an entry of the earlier layout: adopted once, then verified
    assert np.array_equal(get(), first) and len(calls) == 3 and "value" in json.loads(side.read_text())
    meta = json.loads(side.read_text())
    meta["key"]["a"] = 2  # a JSON that describes another key
    side.write_text(json.dumps(meta))
    assert np.array_equal(get(), first) and len(calls) == 4
    side.unlink()  # killed between the two writes
    assert np.array_equal(get(), first) and len(calls) == 5
