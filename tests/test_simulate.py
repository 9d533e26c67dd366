import pytest
import torch

from clustermine_lib import scoring
from clustermine_lib.benchmark import OOD_SETS, SHIFTED_SETS
from clustermine_lib.simulate import SimConfig, Simulator, make_benchmark


def test_tiny_benchmark_shapes(tiny_bench):
    b = tiny_bench
    cfg = SimConfig.profile("tiny")
    assert b.simulated and "SIMULATED" in b.describe()
    assert b.train.features.shape == (cfg.n_classes * cfg.train_per_class, cfg.dim)
    assert len(b.class_names) == cfg.n_classes == b.class_text.shape[0]
    assert b.corpus_text.shape == (len(b.corpus), cfg.dim) and len(b.corpus) == 79_403
    assert set(OOD_SETS) <= set(b.ood) and set(SHIFTED_SETS) == set(b.shifted)
    for t in [b.train.features, b.corpus_text, b.ood["iNat"].features]:
        assert torch.allclose(t.norm(dim=1), torch.ones(len(t)), atol=1e-5)
    # real ImageNet synsets and class names
    assert all(s.endswith(".n.01") or ".n." in s for s in b.class_synsets)


def test_deterministic_for_a_seed(tiny_bench):
    again = make_benchmark("tiny", seed=0, cache=False)
    assert torch.equal(again.train.features, tiny_bench.train.features)
    assert torch.equal(again.ood["NINCO"].features, tiny_bench.ood["NINCO"].features)
    assert again.class_names == tiny_bench.class_names
    other = make_benchmark("tiny", seed=1, cache=False)
    assert other.class_names != tiny_bench.class_names


def test_near_ood_is_closer_to_id_than_far(tiny_bench):
    b = tiny_bench
    text = b.class_text

    def closeness(name):  # mean over images of the max cosine to any ID class name
        return scoring.zero_shot_top1(b.ood[name].features, text)[1].mean().item()

    near = min(closeness("IN-OOD"), closeness("NINCO"))
    far = max(closeness("iNat"), closeness("Textures43"))
    assert near > far
    assert scoring.zero_shot_top1(b.test.features, text)[1].mean().item() > near


def test_wordnet_neighbours_are_close_in_text_space():
    sim = Simulator(SimConfig.profile("tiny"), seed=0)
    names = ["dog", "puppy", "cat", "oak"]
    t = sim.text_features(names, ["dog.n.01", "puppy.n.01", "cat.n.01", "oak.n.02"])
    cos = t @ t.T
    assert cos[0, 1] > cos[0, 2] > cos[0, 3]  # parent/child > same order > plant


def test_prompt_sets_change_text_features():
    sim = Simulator(SimConfig.profile("tiny"), seed=0)
    a = sim.text_features(["dog"], ["dog.n.01"], "simple-7")
    b = sim.text_features(["dog"], ["dog.n.01"], "basic")
    assert not torch.allclose(a, b) and (a @ b.T).item() > 0.8


def test_cli_data_builds_the_cache_that_make_benchmark_then_loads(tmp_path, monkeypatch, capsys):
    """`make data` (cli data): the simulated benchmark lands in the project cache; later loads read it."""
    import shutil

    from clustermine_lib import cli, simcache, simulate, wordnet

    home = wordnet.cache_dir()
    monkeypatch.setenv("CLUSTERMINE_CACHE", str(tmp_path))
    for part in ("nltk_data", "corpora"):  # reuse WordNet and its corpora; the benchmark itself is rebuilt
        if (home / part).exists():
            shutil.copytree(home / part, tmp_path / part)
    graph = home / "simulated" / "wordnet-graph-v2.json"
    if graph.exists():
        (tmp_path / "simulated").mkdir()
        shutil.copy(graph, tmp_path / "simulated")
    assert cli.main(["data", "--size", "tiny", "--seed", "0"]) == 0
    assert "SIMULATED" in capsys.readouterr().out
    built = list((tmp_path / "simulated").glob("tiny-*.safetensors"))
    assert len(built) == 1
    monkeypatch.setattr(simulate, "_build", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = make_benchmark("tiny", seed=0)  # from the cache: _build is not called
    assert again.train.features.shape[0] == SimConfig.profile("tiny").n_classes * SimConfig.profile("tiny").train_per_class
    # a truncated cache file (a killed writer, a full disk) is reported with the rebuild command and rebuilt
    data = built[0].read_bytes()
    built[0].write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=r"unusable.*cli data --size tiny --seed 0"):
        with pytest.raises(AssertionError, match="rebuilt"):
            make_benchmark("tiny", seed=0)
    # a file of another configuration under this name (a stale or copied cache) is not trusted either
    built[0].write_bytes(data)
    with pytest.warns(RuntimeWarning, match="built from other inputs"):
        assert simcache.load(built[0], {"size": "tiny", "seed": 1}) is None


def test_deterministic_across_hash_seeds():
    """nltk keeps synset pointers in sets: every use is sorted, so the features do not depend on
    PYTHONHASHSEED (bit-identical in two fresh processes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from clustermine_lib.simulate import SimConfig, Simulator, id_sets\n"
        "from clustermine_lib.semantic import ood_pools\n"
        "from clustermine_lib.corpus import in21k_synsets\n"
        "from clustermine_lib.fileio import content_hash\n"
        "sim = Simulator(SimConfig.profile('tiny'), 0)\n"
        "ids = id_sets(sim, 0)\n"
        "text = sim.text_features(ids['class_names'], ids['class_synsets'])\n"
        "pools = ood_pools(sim.space.wn, ids['class_synsets'], {s.name() for s in in21k_synsets()})\n"
        "print(content_hash(ids['train'].features, ids['test'].features, text, ids['geometry'].centres,\n"
        "      sim.nuisance_dirs, *[f.features for f in ids['shifted'].values()], pools))\n")
    root = str(Path(__file__).resolve().parent.parent)
    out = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                  check=True).stdout.strip().splitlines()[-1])
    assert out[0] == out[1] and len(out[0]) == 32


@pytest.fixture(scope="module")
def zero_shot_stats():
    """The frozen demo constants' zero-shot and cosine statistics (all 1000 classes; no train set)."""
    from clustermine_lib.calibration import simulated_statistics

    return simulated_statistics(SimConfig.profile("demo"), knn=False, kmeans=False, train=False)


def test_frozen_calibration_table_reproduces(zero_shot_stats):
    """calibration_table.csv was computed from the frozen SimConfig: its zero-shot, shift and cosine
    rows come out again to the printed 4 decimals (the k-NN / k-means / probe rows are slower and
    are recomputed by `python scripts/calibrate_simulation.py table`)."""
    from clustermine_lib.calibration import read_table

    rows = {r["statistic"]: r for r in read_table()}
    checked = [k for k in zero_shot_stats if k in rows]
    assert {"zero_shot@1000", "zero_shot", "retention.ImageNet-Sketch@1000", "cos.gap"} <= set(checked)
    for k in checked:
        assert zero_shot_stats[k] == pytest.approx(rows[k]["simulated"], abs=6e-5), k


def test_shifted_sets_are_harder_than_the_clean_test_set(zero_shot_stats):
    drops = {k: v for k, v in zero_shot_stats.items() if k.startswith("shift_drop.")}
    assert len(drops) == len(SHIFTED_SETS)
    assert all(v > 0 for v in drops.values()), drops  # same classes, same scoring, lower top-1
    assert zero_shot_stats["retention.ImageNet-Sketch@1000"] < 1 and zero_shot_stats["retention.ImageNetV2@1000"] < 1


def test_verified_cache_key_roundtrip(tmp_path):
    """The cache key written into the file is what _load compares against (JSON round trip)."""
    from dataclasses import asdict

    from clustermine_lib import simcache, simulate

    key = dict(size="tiny", seed=0, version=simulate.SIM_VERSION, **asdict(SimConfig.profile("tiny")))
    assert simcache.cache_file(key) == simcache.cache_file(dict(key))
    assert SimConfig.from_dict(asdict(SimConfig.profile("tiny"))) == SimConfig.profile("tiny")
    with pytest.raises(ValueError, match="Not SimConfig fields"):
        SimConfig.from_dict({"noise_level": 1})


def test_profiles_resolve_and_unknown_lists_them():
    from clustermine_lib.simulate import MODEL_CLUTTER

    demo = SimConfig.profile("demo")
    assert SimConfig.profile("clip-h14-dfn5b") == demo
    weak = SimConfig.profile("clip-b16-openai")
    assert weak.noise == pytest.approx(demo.noise * MODEL_CLUTTER["clip-b16-openai"]) and weak.lam == demo.lam
    # weaker model = more clutter, in the order of the real models' zero-shot
    order = ["clip-b16-openai", "clip-l14-openai", "clip-h14-laion2b", "clip-l14-datacomp"]
    assert [MODEL_CLUTTER[m] for m in order] == sorted(MODEL_CLUTTER.values(), reverse=True)
    with pytest.raises(ValueError, match=r"Unknown simulated profile 'x'.*clip-b16-openai"):
        SimConfig.profile("x")
