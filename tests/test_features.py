"""Feature extraction, cache, resume, torchrun sharding, model/dataset registries, load_benchmark and the
check_cached preflight, with a tiny randomly initialised open_clip model (~3.4M parameters, 32x32 images)
saved as a local checkpoint, on small generated PNG folders (one corrupt file). No network, no real weights."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from clustermine_lib import datasets as D  # noqa: E402
from clustermine_lib import encoder as ENC  # noqa: E402
from clustermine_lib import extract as E  # noqa: E402
from clustermine_lib import feature_store as S  # noqa: E402
from clustermine_lib import feature_check, features as F  # noqa: E402
from clustermine_lib import models as M  # noqa: E402
from clustermine_lib import text_features as T  # noqa: E402
from clustermine_lib.benchmark import Benchmark  # noqa: E402
from clustermine_lib.corpus import Corpus  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = "clustermine-tiny-test"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def _png(path: Path, rng: random.Random) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (40, 40), tuple(rng.randrange(256) for _ in range(3)))
    img.putpixel((rng.randrange(40), rng.randrange(40)), (255, 255, 255))
    img.save(path)


def tiny_model_files(root: Path, name: str, checkpoint: Path) -> tuple[Path, dict]:
    """The tiny random open_clip model as a user has it: ``root/<name>.json`` (registered with open_clip) and
    its seed-0 weights saved to ``checkpoint`` (.safetensors); (config path, state dict)."""
    from safetensors.torch import save_file

    config = root / f"{name}.json"
    config.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    state = {k: v.detach().contiguous().clone() for k, v in open_clip.create_model(name).state_dict().items()}
    save_file(state, str(checkpoint))
    return config, state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny model config + checkpoints (.safetensors and .pt) + a DATA_ROOT with 4 datasets."""
    root = tmp_path_factory.mktemp("cm_features")
    config, state = tiny_model_files(root, TINY, root / "tiny.safetensors")
    torch.save(state, root / "tiny.pt")

    rng = random.Random(0)
    data = root / "data"
    wnids = D.imagenet_wnids()[:3]
    for w in wnids:
        for i in range(4):
            _png(data / "imagenet/train" / w / f"{i}.png", rng)
        for i in range(2):
            _png(data / "imagenet/val" / w / f"{i}.png", rng)
    for i in range(5):
        _png(data / "NINCO/NINCO_OOD_classes/some_class" / f"{i}.png", rng)
    (data / "NINCO/NINCO_OOD_classes/some_class/broken.png").write_bytes(b"this is not a png")
    for i in range(4):
        _png(data / "imagenet-o" / f"{i}.jpg", rng)
    return {"root": root, "config": config, "ckpt": root / "tiny.safetensors", "ckpt_pt": root / "tiny.pt",
            "data": data, "wnids": wnids}


def _kw(tiny, cache):
    return dict(checkpoint=tiny["ckpt"], data_root=tiny["data"], cache_dir=cache, num_workers=0, progress=False,
                max_skipped=0.5)  # NINCO holds one corrupt file of six


# ----------------------------------------------------------------------------- registries
def test_model_registry_is_valid_open_clip():
    pairs = set(open_clip.list_pretrained())
    assert len(M.FIG3_MODELS) == 12 and M.DEFAULT_MODEL == "ViT-H-14/dfn5b" and "ViT-B-16/openai" in M.MODELS
    for spec in M.MODELS.values():
        assert (spec.arch, spec.pretrained) in pairs, spec.key
    assert M.resolve_model("ViT-H-14").pretrained == "dfn5b"
    assert M.resolve_model("ViT-B-16", "openai").family == "OpenAI"


def test_unknown_names_list_known_ones(tiny):
    with pytest.raises(ValueError, match="Known models: ViT-H-14/dfn5b"):
        M.load_model("ViT-Nope-99")
    with pytest.raises(ValueError, match="Known tags"):
        M.resolve_model("ViT-B-16", "no-such-tag")
    with pytest.raises(ValueError, match=r"Known datasets: \[.*'NINCO'.*'ImageNet-C'"):
        D.resolve_dataset("CIFAR-10")
    assert D.resolve_dataset("ImageNet-O").name == "IN-O" and D.resolve_dataset("ssb-hard").name == "SSB"
    with pytest.raises(FileNotFoundError, match=r"imagenet-r.*https://people\.eecs\.berkeley\.edu"):
        D.list_images("ImageNet-R", tiny["data"])
    assert D.expand_datasets("ood")[:2] == ["NINCO", "IN-O"]


def test_missing_weights_fail_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip either
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        M.load_model("ViT-B-16", "openai", hf_cache_dir=tmp_path / "empty-hf-cache", device="cpu")
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    assert "ViT-B-16/openai" in msg and "Hugging Face cache" in msg and "checkpoint=" in msg
    # the same lookup finds weights a user downloaded earlier (HF cache layout), without the network
    snap = tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("a" * 40)
    found = M.cached_weights(M.MODELS["ViT-B-16/openai"], hf_cache_dir=tmp_path / "hf")
    assert found == str(snap / "open_clip_model.safetensors")


def test_checkpoint_formats_and_logit_scale(tiny):
    a = M.load_model(TINY, checkpoint=tiny["ckpt"], device="cpu")
    b = M.load_model(TINY, checkpoint=tiny["ckpt_pt"], device="cpu")
    assert a.logit_scale == pytest.approx(1 / 0.07, rel=1e-5) and a.dim == 32
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    with pytest.raises(ValueError, match="state-dict file"):
        M.load_model(TINY, checkpoint=tiny["root"] / "weights.pkl")


# ----------------------------------------------------------------------------- datasets
def test_dataset_skips_corrupt_images(tiny):
    ds = D.build_dataset("NINCO", tiny["data"], transform=lambda im: torch.zeros(3, 4, 4))
    assert len(ds) == 6 and all(y == -1 for _, y in ds.items)
    batch = D.collate_skip([ds[i] for i in range(len(ds))])
    assert batch[0].shape == (5, 3, 4, 4) and [ds.items[i][0] for i in batch[3]] == ["some_class/broken.png"]
    items = D.list_images("imagenet-val", tiny["data"])
    assert [y for _, y in items] == [0, 0, 1, 1, 2, 2]


def test_seeded_subset(tiny, monkeypatch):
    monkeypatch.setitem(D.DATASETS, "imagenet-train", replace(D.DATASETS["imagenet-train"], subset=5))
    a, b = D.list_images("imagenet-train", tiny["data"], seed=0), D.list_images("imagenet-train", tiny["data"], seed=0)
    assert a == b and len(a) == 5 and a == sorted(a)
    assert D.list_images("imagenet-train", tiny["data"], seed=1) != a


# ----------------------------------------------------------------------------- cache
def test_extract_cache_reload_and_hit(tiny, tmp_path, monkeypatch):
    kw = _kw(tiny, tmp_path)
    first = E.extract_image_features(TINY, None, "NINCO", **kw)
    assert first.features.shape == (5, 32) and first.skipped == ["some_class/broken.png"]
    assert torch.allclose(first.features.norm(dim=1), torch.ones(5), atol=1e-5)
    assert (first.labels == -1).all() and first.meta["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)
    assert first.meta["checkpoint_sha256"] and first.meta["n_items"] == 6
    # after the visual projection: the cached rows are exactly normalised model.encode_image outputs
    m = M.load_model(TINY, checkpoint=tiny["ckpt"], device="cpu")
    ds = D.build_dataset("NINCO", tiny["data"], m.preprocess)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(m.model.encode_image(torch.stack([ds[i][0] for i in first.index])), dim=-1)
    assert torch.allclose(first.features, ref, atol=1e-6)

    reloaded = E.load_image_features(TINY, None, "NINCO", checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    assert torch.equal(first.features, reloaded.features) and torch.equal(first.index, reloaded.index)

    def boom(*a, **k):
        raise AssertionError("cache hit must not load the model")

    monkeypatch.setattr(ENC, "load_model", boom)
    again = E.extract_image_features(TINY, None, "NINCO", **kw)
    assert torch.equal(first.features, again.features)


def test_text_features_and_prompt_invalidation(tiny, tmp_path, monkeypatch):
    calls = []
    real = T._compute_text_shard
    monkeypatch.setattr(T, "_compute_text_shard", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(checkpoint=tiny["ckpt"], cache_dir=tmp_path, progress=False)
    names = ["dog", "golden retriever", "car"]
    a = T.extract_text_features(TINY, None, names, name="toy", prompts="ming-5", **kw)
    b = T.extract_text_features(TINY, None, names, name="toy", prompts="ming-5", **kw)
    assert len(calls) == 1 and torch.equal(a.features, b.features)
    c = T.extract_text_features(TINY, None, names, name="toy", prompts="basic", **kw)
    assert len(calls) == 2 and not torch.allclose(a.features, c.features)
    assert a.meta["prompts"] == "ming-5" and len(a.meta["templates"]) == 5
    # a concept's feature = normalised mean of its normalised template features
    from clustermine_lib.prompts import get_prompts

    m = M.load_model(TINY, checkpoint=tiny["ckpt"], device="cpu")
    with torch.inference_mode():
        z = m.model.encode_text(m.tokenizer([t.format("car") for t in get_prompts("ming-5")]))
    want = torch.nn.functional.normalize(torch.nn.functional.normalize(z, dim=-1).mean(0), dim=0)
    assert torch.allclose(a.features[2], want, atol=1e-5)


def test_resume_after_kill_recomputes_only_the_rest(tiny, tmp_path, monkeypatch):
    kw = dict(_kw(tiny, tmp_path / "killed"), shard_size=4)
    real_save = S.save_shard
    saved = []

    def save_then_die(*a, **k):
        if saved:
            raise KeyboardInterrupt("killed after the first shard")
        real_save(*a, **k)
        saved.append(1)

    monkeypatch.setattr(S, "save_shard", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        E.extract_image_features(TINY, None, "imagenet-train", **kw)
    monkeypatch.setattr(S, "save_shard", real_save)

    computed = []
    real_compute = E._compute_image_shard
    monkeypatch.setattr(E, "_compute_image_shard", lambda ref, ds, s, e, *a: computed.append((s, e)) or
                        real_compute(ref, ds, s, e, *a))
    resumed = E.extract_image_features(TINY, None, "imagenet-train", **kw)
    assert computed == [(4, 8), (8, 12)]
    fresh = E.extract_image_features(TINY, None, "imagenet-train", **dict(kw, cache_dir=tmp_path / "fresh"))
    assert torch.equal(resumed.features, fresh.features) and torch.equal(resumed.labels, fresh.labels)
    assert resumed.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_torchrun_two_processes_equal_one(tiny, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torchrun children run with OMP_NUM_THREADS=1: same kernels, same bits
    try:
        single = E.extract_image_features(TINY, None, "imagenet-train", **dict(_kw(tiny, tmp_path / "one"),
                                                                               shard_size=3))
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "clustermine_lib.features", "--model", str(tiny["config"]), "--checkpoint", str(tiny["ckpt"]),
           "--dataset", "imagenet-train", "--data-root", str(tiny["data"]), "--cache-dir", str(tmp_path / "two"),
           "--shard-size", "3", "--num-workers", "0", "--device", "cpu", "--no-text", "--no-progress"]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    two = E.load_image_features(TINY, None, "imagenet-train", checkpoint=tiny["ckpt"], cache_dir=tmp_path / "two")
    assert two.meta["world_size"] == 2 and len(two.meta["shards"]) == 4
    assert torch.equal(single.features, two.features)
    assert torch.equal(single.labels, two.labels) and torch.equal(single.index, two.index)


# ----------------------------------------------------------------------------- Benchmark and kNN
def _cache_toy(tiny, cache, corpus, datasets) -> None:
    """The caches load_benchmark reads: image features of ``datasets``, text of ``corpus`` and Y_GT ("basic")."""
    for d in datasets:
        E.extract_image_features(TINY, None, d, **_kw(tiny, cache))
    T.extract_text_features(TINY, None, corpus.names, name=corpus.name, prompts="basic", checkpoint=tiny["ckpt"],
                            cache_dir=cache, progress=False)
    T.extract_text_features(TINY, None, D.imagenet_classnames(), name="imagenet-classes", prompts="basic",
                            checkpoint=tiny["ckpt"], cache_dir=cache, progress=False, batch_size=2000)


def test_load_benchmark_from_cached_features(tiny, tmp_path, monkeypatch):
    corpus = Corpus("toy", ("dog", "cat", "car", "tench", "goldfish"), ("",) * 5, ("n",) * 5)
    with pytest.raises(FileNotFoundError) as err:
        F.load_benchmark(TINY, None, corpus, "basic", tmp_path, ood=["NINCO", "IN-O"], checkpoint=tiny["ckpt"])
    msg = str(err.value)
    # the model config is quoted by its path, so the line runs as printed
    assert f"make features MODEL={tiny['config']}" in msg and "DATASET=imagenet-train,imagenet-val,NINCO,IN-O" in msg
    assert "CHECKPOINT=" in msg and "extract_text_features" in msg

    _cache_toy(tiny, tmp_path, corpus, ("imagenet-train", "imagenet-val", "NINCO", "IN-O"))
    monkeypatch.setattr(F, "_class_synsets", lambda: ["tench.n.01"] + [""] * 999)  # no WordNet needed here
    with pytest.warns(UserWarning, match="hold 3 of the 1000 ImageNet-1K classes: Y_GT"):
        bench = F.load_benchmark(TINY, None, corpus, "basic", tmp_path, ood=["NINCO", "ImageNet-O"],
                                 checkpoint=tiny["ckpt"])
    assert isinstance(bench, Benchmark) and not bench.simulated
    assert len(bench.train) == 12 and len(bench.test) == 6 and list(bench.ood) == ["NINCO", "IN-O"]
    assert len(bench.ood["NINCO"]) == 5 and bench.meta["datasets"]["NINCO"]["skipped"] == 1
    assert bench.class_names == D.imagenet_classnames()[:3] and bench.class_text.shape == (3, 32) and bench.dim == 32
    assert bench.class_synsets == ["tench.n.01", "", ""] and bench.meta["imagenet_classes"] == [0, 1, 2]
    assert bench.corpus_text.shape == (5, 32) and bench.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert bench.test.labels.tolist() == [0, 0, 1, 1, 2, 2] and bench.shifted == {}
    with pytest.raises(FileNotFoundError, match=r"(?s)ImageNet-R.*make features .*DATASET=ImageNet-R"):
        F.load_benchmark(TINY, None, corpus, "basic", tmp_path, ood=["NINCO"], shifted=["ImageNet-R"],
                         checkpoint=tiny["ckpt"])

    knn = E.cached_knn(TINY, None, "imagenet-train", k=3, checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    assert knn.shape == (12, 3) and not (knn == torch.arange(12)[:, None]).any()
    import clustermine_lib.clustering as C

    monkeypatch.setattr(C, "knn_indices", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert torch.equal(knn, E.cached_knn(TINY, None, "imagenet-train", k=3, checkpoint=tiny["ckpt"],
                                         cache_dir=tmp_path))


@pytest.mark.filterwarnings("ignore:TEMI stopped before")
def test_temi_reads_the_stored_knn_of_make_features(tiny, tmp_path, monkeypatch):
    """make features FEATURE_ARGS="--knn K" is what the notebooks' TEMI then uses: load_benchmark lists the
    kNN files made from these train features, Pipeline.temi reads one with >= k columns (verified) instead of
    computing its own, with the same clusters; a damaged file is a warning and TEMI computes the kNN."""
    import clustermine_lib.clustering as C
    from clustermine_lib.experiments import Pipeline, Settings

    corpus = Corpus("toy", ("dog", "cat", "car", "tench", "goldfish"), ("",) * 5, ("n",) * 5)
    _cache_toy(tiny, tmp_path, corpus, ("imagenet-train", "imagenet-val", "IN-O"))
    monkeypatch.setattr(F, "_class_synsets", lambda: [""] * 1000)

    def bench():
        with pytest.warns(UserWarning, match="hold 3 of the 1000"):
            return F.load_benchmark(TINY, None, corpus, "basic", tmp_path, ood=["IN-O"], checkpoint=tiny["ckpt"])

    assert bench().meta["train_knn"] == []
    settings = dict(n_clusters=3, temi=C.TEMIConfig(n_clusters=3, n_heads=1, k=3, epochs=2, batch_size=6,
                                                    warmup_epochs=0, hidden=16, bottleneck=8))
    computed = Pipeline(bench(), Settings(**settings)).temi().labels
    for k in (2, 4, 5):  # 2 < TEMI's k = 3: never used; 4 is the first with enough columns
        E.cached_knn(TINY, None, "imagenet-train", k=k, checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    b = bench()
    assert [e["k"] for e in b.meta["train_knn"]] == [2, 4, 5]
    real_knn = C.knn_indices
    monkeypatch.setattr(C, "knn_indices", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    pipe = Pipeline(b, Settings(**settings))
    assert pipe.train_knn(3).shape == (12, 4) and torch.equal(pipe.temi().labels, computed)

    monkeypatch.setattr(C, "knn_indices", real_knn)
    Path(b.meta["train_knn"][1]["path"]).write_bytes(b"\xff" * 400)  # k = 4 damaged: k = 5 is next
    pipe = Pipeline(b, Settings(**settings))
    with pytest.warns(UserWarning, match=r"imagenet-train\.float32\.k4\.safetensors.*computes the kNN itself"):
        assert pipe.train_knn(3).shape == (12, 5)


def test_check_cached_lists_every_missing_cache_with_its_command(tiny, tmp_path):
    """One FileNotFoundError naming the missing image and text caches (not the present ones), each
    group with the `make features` line that makes it; nothing missing: None."""
    corpus = Corpus("toy", ("dog", "cat", "car"), ("",) * 3, ("n",) * 3)
    E.extract_image_features(TINY, None, "NINCO", **_kw(tiny, tmp_path))
    T.extract_text_features(TINY, None, corpus.names, name="toy", prompts="basic", checkpoint=tiny["ckpt"],
                            cache_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError) as err:
        feature_check.check_cached(TINY, checkpoint=tiny["ckpt"], datasets=["NINCO", "ImageNet-O"], cache_dir=tmp_path,
                       data_root=tiny["data"], text=[dict(corpus=corpus, prompts="basic"),
                                                     dict(corpus="wordnet-n", prompts="ming-5")])
    msg = str(err.value)
    lines = msg.splitlines()
    cmd = f"make features MODEL={tiny['config']} CHECKPOINT={tiny['ckpt']}"
    # the image line also makes the first variant's missing text (the class names under basic)
    assert f"{cmd} DATASET=IN-O PROMPTS=basic DATA_ROOT={tiny['data']} CACHE_DIR={tmp_path}" in msg
    assert f"{cmd} DATASET=text CORPUS=wordnet-n PROMPTS=ming-5 CACHE_DIR={tmp_path}" in msg
    missing = [ln.split(" (")[0] for ln in lines if ln.startswith("  - ")]
    assert missing == ["  - image features of IN-O", "  - text features of imagenet-classes x basic",
                       "  - text features of wordnet-n-dedup-1-lemma x ming-5",
                       "  - text features of imagenet-classes x ming-5"]
    assert sum("to make them: make features" in ln for ln in lines) == 2
    assert feature_check.check_cached(TINY, checkpoint=tiny["ckpt"], datasets=["NINCO"], cache_dir=tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"(?s)image features of IN-O.*make features .*DATASET=IN-O"):
        E.load_image_features(TINY, None, "IN-O", checkpoint=tiny["ckpt"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="text variants take the keys"):
        feature_check.check_cached(TINY, checkpoint=tiny["ckpt"], text=[dict(prompt="basic")], cache_dir=tmp_path)


# ----------------------------------------------------------------------------- `make features`
def test_make_features_with_local_checkpoint(tiny, tmp_path):
    """The README's command, through the Makefile: an image folder + a local checkpoint."""
    cache = tmp_path / "cache"
    cmd = ["make", "-s", "-C", str(REPO), "features", f"MODEL={tiny['config']}", f"CHECKPOINT={tiny['ckpt']}",
           "DATASET=imagenet-val", f"DATA_ROOT={tiny['data']}", f"CACHE_DIR={cache}",
           f"PY={sys.executable}", "FEATURE_ARGS=--no-text --num-workers 0 --device cpu --no-progress"]
    run = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = E.load_image_features(TINY, None, "imagenet-val", checkpoint=tiny["ckpt"], cache_dir=cache)
    direct = E.extract_image_features(TINY, None, "imagenet-val", **_kw(tiny, tmp_path / "direct"))
    assert len(got.features) == 6 and got.meta["logit_scale"] == pytest.approx(direct.meta["logit_scale"])
    assert torch.allclose(got.features, direct.features, atol=1e-5)


def test_y_gt_is_the_classes_of_the_id_set(tiny, tmp_path):
    """An ImageNet-style folder of a few wnid classes (not the first ones; one only in val): Y_GT is the
    union of the classes in train and val, in 1K order, with their names, text rows and synsets; labels
    are the subset's indices, a shifted set keeps only those classes, a warning says so, and methods
    given Y_GT use only those classes."""
    from clustermine_lib.experiments import Pipeline
    from clustermine_lib.scoring import mcm_score

    rng, data, wn = random.Random(1), tmp_path / "data", D.imagenet_wnids()
    for c, (n_train, n_val) in {7: (3, 0), 250: (3, 2), 500: (0, 2), 999: (3, 2)}.items():
        for i in range(n_train):
            _png(data / "imagenet/train" / wn[c] / f"{i}.png", rng)
        for i in range(n_val):
            _png(data / "imagenet/val" / wn[c] / f"{i}.png", rng)
    for c in (7, 42):
        _png(data / "imagenet-r" / wn[c] / "0.png", rng)
    _png(data / "imagenet-o" / "0.png", rng)
    kw = dict(_kw(tiny, tmp_path / "cache"), data_root=data)
    for d in ("imagenet-train", "imagenet-val", "IN-O", "ImageNet-R"):
        E.extract_image_features(TINY, None, d, **kw)
    corpus = Corpus("toy", ("dog", "cat", "car"), ("",) * 3, ("n",) * 3)
    T.extract_text_features(TINY, None, corpus.names, name="toy", prompts="basic", checkpoint=tiny["ckpt"],
                            cache_dir=tmp_path / "cache", progress=False)
    full = T.extract_text_features(TINY, None, D.imagenet_classnames(), name="imagenet-classes", prompts="basic",
                                   checkpoint=tiny["ckpt"], cache_dir=tmp_path / "cache", progress=False,
                                   batch_size=2000).features
    with pytest.warns(UserWarning) as caught:
        bench = F.load_benchmark(TINY, None, corpus, "basic", tmp_path / "cache", ood=["IN-O"],
                                 shifted=["ImageNet-R"], checkpoint=tiny["ckpt"])
    msg = [str(w.message) for w in caught if "ImageNet-1K classes" in str(w.message)]
    assert len(msg) == 1 and "\n" not in msg[0], msg
    assert msg[0].startswith("imagenet-train / imagenet-val hold 4 of the 1000 ImageNet-1K classes: Y_GT ")
    assert "ImageNet-R keeps 1 images of them (1 of other classes dropped)" in msg[0]
    classes = [7, 250, 500, 999]
    assert bench.meta["imagenet_classes"] == classes
    assert bench.class_names == [D.imagenet_classnames()[c] for c in classes]
    assert torch.equal(bench.class_text, full[classes]) and len(bench.class_synsets) == 4
    assert bench.train.labels.tolist() == [0] * 3 + [1] * 3 + [3] * 3
    assert bench.test.labels.tolist() == [1, 1, 2, 2, 3, 3]
    assert bench.shifted["ImageNet-R"].labels.tolist() == [0] and bench.meta["class_subsets"]["ImageNet-R"] == [0]
    assert (bench.ood["IN-O"].labels == -1).all()
    x = bench.test.features
    got = Pipeline(bench).score_fn("MCM")(x)
    assert torch.allclose(got, mcm_score(x, full[classes]), atol=1e-6)
    assert not torch.allclose(got, mcm_score(x, full), atol=1e-4)


def test_corpus_file_through_make_features_check_cached_and_load_benchmark(tiny, tmp_path, monkeypatch, capsys):
    """CORPUS may be a corpus file: `python -m clustermine_lib.features --corpus FILE` caches its text under
    resolve_corpus's name (the one own_images reads), check_cached's hint quotes the file, load_benchmark
    reads it; a bad file is one line naming it, before anything is extracted."""
    from clustermine_lib.corpus import load_corpus_file, resolve_corpus

    cache, words = tmp_path / "cache", tmp_path / "my words.txt"
    words.write_text("\n".join(D.imagenet_classnames()[:3] + ["dog", "cat", "car", "tree"]) + "\n")
    tag = resolve_corpus(str(words))[1]["cache_name"]
    assert tag.startswith("file-")
    with pytest.raises(FileNotFoundError) as err:
        feature_check.check_cached(str(tiny["config"]), checkpoint=tiny["ckpt"], cache_dir=cache,
                                   text=[{"corpus": str(words), "prompts": "basic"}])
    msg = str(err.value)
    assert f"text features of {tag} x basic" in msg and "text features of imagenet-classes x basic" in msg
    assert (f"to make them: make features MODEL={tiny['config']} CHECKPOINT={tiny['ckpt']} DATASET=text "
            f"CORPUS='{words}' PROMPTS=basic CACHE_DIR={cache}") in msg  # quoted: the path holds a space

    base = ["--model", str(tiny["config"]), "--checkpoint", str(tiny["ckpt"]), "--cache-dir", str(cache),
            "--device", "cpu", "--no-progress", "--prompts", "basic"]
    (tmp_path / "empty.txt").write_text("\n\n")
    for bad, needle in ((tmp_path / "empty.txt", f"Corpus file {tmp_path / 'empty.txt'} holds no concepts"),
                        (tmp_path, f"--corpus {tmp_path}: is a folder, not a corpus file")):
        capsys.readouterr()
        assert F.main([*base, "--dataset", "text", "--corpus", str(bad)]) == 1
        err_text = capsys.readouterr().err
        assert needle in err_text and len(err_text.strip().splitlines()) == 1, err_text
    assert not cache.exists()
    assert F.main([*base, "--dataset", "imagenet-train,imagenet-val,NINCO", "--data-root", str(tiny["data"]),
                   "--corpus", str(words), "--num-workers", "0", "--max-skipped", "0.5"]) == 0
    feature_check.check_cached(str(tiny["config"]), checkpoint=tiny["ckpt"], cache_dir=cache,
                               datasets=["imagenet-train", "NINCO"], text=[{"corpus": str(words), "prompts": "basic"}])
    monkeypatch.setattr(T, "_compute_text_shard", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    corp, text, info = T.corpus_text_features(TINY, None, str(words), prompts="basic", checkpoint=tiny["ckpt"],
                                              cache_dir=cache, progress=False)  # what own_images reads
    assert info["cache_name"] == tag and text.features.shape == (7, 32)
    monkeypatch.setattr(F, "_class_synsets", lambda: [""] * 1000)
    with pytest.warns(UserWarning, match="hold 3 of the 1000"):
        bench = F.load_benchmark(str(tiny["config"]), None, str(words), "basic", cache, ood=["NINCO"],
                                 checkpoint=tiny["ckpt"])
    assert bench.corpus.names == load_corpus_file(words).names and torch.equal(bench.corpus_text, text.features)
    assert bench.meta["corpus"] == {"tag": tag, "source": str(words.resolve())}
