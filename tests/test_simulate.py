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

    from clustermine_lib import cli, simulate, wordnet

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
