"""notebook.py / runner.py / paper.py / artifacts / plots.py: what the notebooks call, on the tiny SIMULATED
benchmark."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from clustermine_lib import methods, notebook as N, paper, tables as T
from clustermine_lib.artifacts import covariate_shift_table2_table9_fig4 as A02, sensitivity_fig6 as A06
from clustermine_lib.artifacts import table1_main_results as A01
from clustermine_lib.benchmark import OOD_SETS
from clustermine_lib.experiments import Pipeline, Settings
from clustermine_lib.runner import Runner


# ------------------------------------------------------------------------------------------ parameters
PARAMS_CELL = '# Notebook parameters  (papermill -p name value)\nprofile = "demo"\nC = None\nk_values = None\n'


def test_check_parameters_reads_declared_and_injected_names():
    ns = {"In": ["", PARAMS_CELL, '# Parameters\nprofile = "paper"\nC = 400\n', "cfg = ..."],
          "profile": "paper", "C": 400, "k_values": None}
    cfg = N.check_parameters(ns)
    assert cfg.profile == "paper" and cfg.C == 400 and not cfg.demo
    assert cfg.k_values is None and cfg.sweep("c_values") == N.SWEEPS["paper"]["c_values"]
    assert cfg.results_dir.parts[-4:] == ("results", "paper", "ViT-H-14--dfn5b", "wordnet-na.simple-7.seed0.C400")


def test_check_parameters_rejects_an_unknown_injected_name():
    ns = {"In": ["", PARAMS_CELL, '# Parameters\nprofile = "demo"\nCC = 3\n', "cfg = ..."],
          "profile": "demo", "C": None, "k_values": None, "CC": 3}
    with pytest.raises(N.UnknownParameterError, match=r"\['CC'\].*declares \['C', 'k_values', 'profile'\]"):
        N.check_parameters(ns)


def test_check_parameters_without_papermill_and_bad_values():
    ns = {"In": ["", PARAMS_CELL, "cfg = ..."], "profile": "demo", "C": None, "k_values": [1, 2]}
    assert N.check_parameters(ns).sweep("k_values") == (1, 2)
    with pytest.raises(ValueError, match="profile must be one of"):
        N.check_parameters({**ns, "profile": "papr"})
    with pytest.raises(ValueError, match="C must be a positive int"):
        N.check_parameters({**ns, "C": 0})
    with pytest.raises(ValueError, match="Notebook parameters"):
        N.check_parameters({"In": ["", "x = 1"], "x": 1})


def test_papermill_unknown_parameter_fails_the_notebook(tmp_path):
    """End to end: papermill injects `bogus`, the notebook's check cell raises, papermill fails."""
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMS_CELL)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import clustermine_lib.notebook as N\ncfg = N.check_parameters(globals())\nprint(cfg.profile, cfg.C)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(papermill.PapermillExecutionError, match="UnknownParameterError"):
        papermill.execute_notebook(str(src), str(tmp_path / "bad.ipynb"), parameters={"bogus": 1},
                                   kernel_name="python3", progress_bar=False)
    out = papermill.execute_notebook(str(src), str(tmp_path / "ok.ipynb"), parameters={"C": 400},
                                     kernel_name="python3", progress_bar=False)
    assert "demo 400" in "".join(o.get("text", "") for o in out.cells[-1].outputs)


# ------------------------------------------------------------------------------------------ paper beside ours
def test_compare_with_paper_puts_the_paper_number_beside_ours_with_the_difference():
    ours = pd.DataFrame([
        {"method": "MCM", "id_set": "ImageNet", "ood_set": "mean", "auroc": 90.0, "fpr95": 40.0},
        {"method": "ClusterMine", "id_set": "ImageNet", "ood_set": "NINCO", "auroc": 93.87, "fpr95": 20.3},
        {"method": "Mystery", "id_set": "ImageNet", "ood_set": "mean", "auroc": 50.0, "fpr95": 50.0},
    ])
    cmp = paper.compare(ours, paper.table1(), on=("method", "ood_set"))
    assert list(cmp.columns) == ["method", "ood_set", "auroc", "auroc_paper", "auroc_diff", "fpr95",
                                 "fpr95_paper", "fpr95_diff"]
    assert list(cmp["method"]) == ["MCM", "ClusterMine", "Mystery"]  # our row order kept
    mcm = cmp.iloc[0]
    assert (mcm.auroc_paper, mcm.fpr95_paper) == (92.46, 35.22)
    assert mcm.auroc_diff == pytest.approx(90.0 - 92.46) and mcm.fpr95_diff == pytest.approx(40.0 - 35.22)
    cm = cmp.iloc[1]
    assert (cm.auroc_paper, cm.fpr95_paper, cm.auroc_diff) == (92.87, 30.3, 1.0)
    assert math.isnan(cmp.iloc[2].auroc_paper) and math.isnan(cmp.iloc[2].auroc_diff)


def test_paper_tables_in_long_format():
    t3 = paper.table3()
    row = t3[(t3.corpus == "WordNet-NA") & (t3.method == "ClusterMine")].iloc[0]
    assert (row.auroc, row.overlap, row.f1) == (94.56, 76.0, 60.0)
    t5 = paper.table5()
    assert t5[(t5.method == "ClusterMine") & (t5.ood_set == "near")].auroc.item() == 80.3
    t6 = paper.table6()
    assert t6[(t6.preprocess == "dup-all-lemmas") & (t6.ood_set == "mean")].auroc.item() == 94.63
    t8 = paper.table8()
    assert t8[(t8.method == "ClusterMine+PLP") & (t8.ood_set == "mean")].fpr95.item() == 27.53
    t4 = paper.table4()
    assert t4[(t4.method == "ClusterMine") & (t4.size_group == "ypos_1500")].auroc.item() == 94.56


def test_fig4_relative_change_against_imagenet():
    rows = []
    for m, base, shifted in (("MCM", 90.0, 72.0), ("ClusterMine", 95.0, 85.5)):
        rows += [{"method": m, "id_set": "ImageNet", "ood_set": "mean", "auroc": base, "fpr95": 30.0},
                 {"method": m, "id_set": "ImageNet-A", "ood_set": "mean", "auroc": shifted, "fpr95": 60.0}]
    f4 = A02.fig4_data(pd.DataFrame(rows))
    a = f4.set_index(["method", "id_set"])
    assert a.loc[("MCM", "ImageNet-A"), "relative_change_pct"] == -20.0
    assert a.loc[("ClusterMine", "ImageNet-A"), "relative_change_pct"] == -10.0
    assert a.loc[("MCM", "ImageNet"), "relative_change_pct"] == 0.0
    # the paper's own relative change, from Table 9 (MCM: 72.20 vs 92.46)
    assert a.loc[("MCM", "ImageNet-A"), "paper_relative_change_pct"] == round(100 * (72.20 - 92.46) / 92.46, 2)


# ------------------------------------------------------------------------------------------ the cached runner
@pytest.fixture()
def run(tiny_bench, tmp_path):
    """A Runner scoring a seeded subset of 40 images per set (fast), with its own empty disk cache."""
    return Runner(tiny_bench, Settings.for_benchmark(tiny_bench, progress=False), store=tmp_path / "cache",
                    max_eval=40)


def test_runner_gives_the_pipeline_numbers_and_reuses_its_disk_cache(tiny_bench, tmp_path, monkeypatch):
    sets, methods = ("NINCO", "iNat"), ("MCM", "PosMine")
    settings = Settings.for_benchmark(tiny_bench, progress=False)
    first = Runner(tiny_bench, settings, store=tmp_path / "cache")
    ours = first.table(methods, ood_sets=sets)
    ref = Pipeline(tiny_bench, Settings.for_benchmark(tiny_bench, progress=False)).table(methods, ood_sets=sets)
    pd.testing.assert_frame_equal(ours, ref)
    assert len(list((tmp_path / "cache" / "scores").glob("*.npy"))) == 2 * (1 + 2)
    again = Runner(tiny_bench, Settings.for_benchmark(tiny_bench, progress=False), store=tmp_path / "cache")

    def boom(*a, **k):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(Pipeline, "score_fn", boom)
    monkeypatch.setattr(Pipeline, "mined", boom)
    pd.testing.assert_frame_equal(again.table(methods, ood_sets=sets), ours)
    assert again.mined("PosMine").names == first.mined("PosMine").names  # Y_pos read back from disk
    assert not list((tmp_path / "cache").rglob(".*tmp*"))  # atomic writes leave no temp files


def test_clipscope_online_is_scored_per_pair_in_the_runner_as_in_the_pipeline(tiny_bench, tmp_path):
    settings = Settings.for_benchmark(tiny_bench, progress=False)
    assert settings.clipscope_histogram == "online" and methods.is_pairwise("CLIPScope", settings)
    sets = ("NINCO", "iNat")
    run = Runner(tiny_bench, settings, store=tmp_path / "cache")
    ours = run.evaluate("CLIPScope", ood_sets=sets)
    pd.testing.assert_frame_equal(ours, Pipeline(tiny_bench, settings).evaluate("CLIPScope", ood_sets=sets))
    a, _ = run.pair_scores("CLIPScope", "test", "NINCO")
    b, _ = run.pair_scores("CLIPScope", "test", "iNat")
    assert len(a) == len(tiny_bench.test) and not np.array_equal(a, b)  # a fresh histogram per OOD set
    assert len(list((tmp_path / "cache" / "scores").glob("*.npy"))) == 2  # one file per (ID, OOD) pair
    with pytest.raises(ValueError, match="pair_scores"):
        run.scores("CLIPScope", "test")
    train = Runner(tiny_bench, Settings.for_benchmark(tiny_bench, progress=False, clipscope_histogram="train"))
    assert not methods.is_pairwise("CLIPScope", train.settings)
    assert train.scores("CLIPScope", "test").shape == (len(tiny_bench.test),)


def test_settings_conventions_validated_printed_and_reaching_the_metrics(run, tiny_bench):
    s = run.settings
    assert (s.fpr95, s.neglabel_split, s.neglabel_exclude_gt, s.energy_logits, s.clipscope_histogram,
            s.md_rtol, s.md_drop_singletons) == ("interp", False, True, "cosine", "online", 1e-10, False)
    text = N.describe(tiny_bench, run)
    for part in ("FPR95 interp (PLP's code)", "NegLabel negatives one pool (paper Eq. 2), Y_GT excluded",
                 "Energy on plain cosine", "CLIPScope histogram online", "cutoff 1e-10"):
        assert part in text
    with pytest.raises(ValueError, match=r"fpr95 must be one of \['interp'"):
        Settings(fpr95="closest")
    with pytest.raises(ValueError, match="energy_logits"):
        Settings(energy_logits="logits")
    # the FPR95 rule reaches metrics.evaluate; the scores (and their cache files) do not depend on it
    other = Runner(tiny_bench, Settings.for_benchmark(tiny_bench, progress=False, fpr95="min"), store=run.store,
                   max_eval=40)
    assert other.settings_key() == run.settings_key()
    t_interp, t_min = run.evaluate("MCM", ood_sets=("NINCO",)), other.evaluate("MCM", ood_sets=("NINCO",))
    s_id, s_ood = run.scores("MCM", "test"), run.scores("MCM", "NINCO")
    from clustermine_lib import metrics
    assert t_min.fpr95.iloc[0] == pytest.approx(100 * metrics.fpr95(s_id, s_ood, rule="min"))
    assert t_interp.fpr95.iloc[0] == pytest.approx(100 * metrics.fpr95(s_id, s_ood, rule="interp"))
    assert t_min.auroc.iloc[0] == t_interp.auroc.iloc[0]


def test_registry_threads_the_baseline_options(tiny_bench):
    from clustermine_lib import scoring

    x, b = tiny_bench.test.features[:50], tiny_bench
    pipe = Pipeline(b, Settings.for_benchmark(b, progress=False))
    torch.testing.assert_close(pipe.score_fn("Energy")(x), scoring.energy_score(x, b.class_text))
    scaled = Pipeline(b, Settings.for_benchmark(b, progress=False, energy_logits="scaled"))
    torch.testing.assert_close(scaled.score_fn("Energy")(x), scoring.energy_score(x, b.class_text, b.logit_scale))
    official = Pipeline(b, Settings.for_benchmark(b, progress=False, neglabel_split=True, neglabel_exclude_gt=False))
    mined = official.mined("NegLabel", k=20)
    assert mined.params["pos_split"] and not mined.params["exclude_gt"]
    assert not pipe.mined("NegLabel", k=20).params["pos_split"]
    md = Pipeline(b, Settings.for_benchmark(b, progress=False, md_rtol=1e-6, md_drop_singletons=True))
    md.score_fn("MD")
    det = md._cache["md"]
    assert det.rtol == 1e-6 and det.drop_singletons


def test_max_eval_subsamples_every_set_the_same_way(run):
    fs = run.feature_set("NINCO")
    assert len(fs) == 40 and torch.equal(fs.features, run.feature_set("NINCO").features)
    assert run.feature_set("test").name == "ImageNet"
    with pytest.raises(KeyError, match="Unknown set"):
        run.feature_set("Nope")


def test_canonical_cache_keys(run):
    s = run.settings
    key = lambda m, p: methods.canonical(m, s, p)  # noqa: E731
    assert key("NegLabel*", {}) == key("NegLabel", {"k": s.neglabel_star_k})
    assert key("NegLabel", {}) == ("NegLabel", {"k": s.neglabel_k, "n_groups": 1})
    assert key("PosMine", {"m": s.m}) == key("PosMine", {})
    assert key("ClusterMine", {"n_clusters": s.n_clusters, "neg_k": None}) == key("ClusterMine", {})
    assert key("ClusterMine", {"n_clusters": 7}) == ("ClusterMine", {"n_clusters": 7, "neg_k": s.neg_k})
    assert key("MCM", {}) == ("MCM", {})
    with pytest.raises(TypeError, match=r"MCM has no parameter\(s\) \['k'\]"):
        key("MCM", {"k": 3})


def test_table1_and_its_comparison_on_the_tiny_benchmark(run):
    t1 = A01.table1(run, methods=("MCM", "ClusterMine"))
    assert set(t1.ood_set) == set(OOD_SETS) | {"mean"}
    means = t1[t1.ood_set == "mean"].set_index("method")
    per_set = t1[t1.ood_set != "mean"].groupby("method")["auroc"].mean()
    assert means.loc["MCM", "auroc"] == pytest.approx(per_set["MCM"])
    assert dict(means["needs_gt_labels"]) == {"MCM": "yes", "ClusterMine": "no"}
    cmp = A01.table1_compare(t1)
    assert list(cmp.method) == ["MCM", "ClusterMine"] and list(cmp.auroc_paper) == [92.46, 94.56]
    assert cmp.auroc_diff.tolist() == pytest.approx((cmp.auroc - cmp.auroc_paper).tolist(), abs=0.011)
    mined = run.mined("ClusterMine")  # disk-cached Mined rebuilt from the corpus
    assert len(mined) == len(mined.names) and len(mined) + len(mined.neg) == len(run.bench.corpus)


def test_sweeps_record_the_swept_value(run):
    m6 = A06.fig6_m(run, (1, 2))
    means = m6[m6.ood_set == "mean"]
    assert list(means.M) == [1, 2] and means.n_pos.iloc[0] >= means.n_pos.iloc[1]
    table = T.sweep_table(m6)
    assert list(table.columns) == ["method", "sweep", "value", "|Y_pos|", "auroc", "fpr95"]
    assert list(table.value) == ["1", "2"]


# ------------------------------------------------------------------------------------------ files
def test_save_table_and_figure_write_atomically(tmp_path):
    from clustermine_lib import plots as P

    cfg = N.Config(output_dir=str(tmp_path))
    df = pd.DataFrame([{"method": "MCM", "id_set": "ImageNet", "ood_set": "NINCO", "auroc": 90.0, "fpr95": 40.0}])
    run = "simulated/wordnet-na.simple-7.seed0"
    assert N.save_table(df, cfg, "table_x") == f"results/demo/{run}/table_x.csv"
    saved = pd.read_csv(tmp_path / f"results/demo/{run}/table_x.csv")
    pd.testing.assert_frame_equal(saved[df.columns], df)
    assert saved[["profile", "model", "corpus", "prompts", "seed", "simulated"]].iloc[0].tolist() == [
        "demo", "simulated", "wordnet-na", "simple-7", 0, True]
    scores = pd.DataFrame({"method": ["MCM"] * 6, "set": ["ImageNet"] * 3 + ["NINCO"] * 3,
                           "score": np.arange(6, dtype=float)})
    paths = N.save_figure(P.score_histograms(scores, simulated=True), cfg, "fig_x")
    assert paths == [f"figures/demo/{run}/fig_x.png", f"figures/demo/{run}/fig_x.pdf"]
    for p in paths:
        assert (tmp_path / p).stat().st_size > 1000
    assert (tmp_path / paths[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.name for f in (tmp_path / f"figures/demo/{run}").iterdir()) == ["fig_x.pdf", "fig_x.png"]


def test_paper_profile_without_features_names_them_and_the_make_command(tmp_path):
    cfg = N.Config(profile="paper", cache_dir=str(tmp_path / "features"))
    with pytest.raises(FileNotFoundError, match=r"(?s)missing.*make features MODEL=ViT-H-14 PRETRAINED=dfn5b"):
        N.open_benchmark(cfg)
    # one line makes the images and the variant's text (make features extracts both in one run)
    with pytest.raises(FileNotFoundError, match=r"(?s)imagenet-train.*wordnet-n.*make features MODEL=ViT-H-14 "
                                                r"PRETRAINED=dfn5b DATASET=paper CORPUS=wordnet-n PROMPTS=simple-7"):
        N.check_feature_files(cfg, [dict(corpus="wordnet-n")])


# ------------------------------------------------------------------------------------------ the method registry
def test_registry_derives_the_lists_the_errors_and_the_styles():
    from clustermine_lib import plots as P

    assert methods.METHODS == ("MaxLogit", "MD", "RelativeMD", "MCM", "PLP", "NegLabel", "NegLabel*", "CLIPScope",
                               "PosMine", "ClusterMine")
    assert [m for m in methods.METHODS if not methods.NEEDS_GT[m]] == ["PosMine", "ClusterMine"]
    assert set(P.METHOD_STYLE) == set(methods.REGISTRY)
    with pytest.raises(ValueError, match=r"Unknown method 'Nope'.*'ClusterMine'"):
        methods.get("Nope")
    with pytest.raises(ValueError, match=r"'MCM' mines no labels.*PosMine"):
        methods.miner("MCM")


# ------------------------------------------------------------------------------------------ runs never overwrite
def test_every_parameter_that_changes_a_number_names_the_output_folder(tmp_path):
    base = N.Config(output_dir=str(tmp_path))
    names = {N.Config(output_dir=str(tmp_path), **kw).results_dir for kw in (
        {}, {"seed": 1}, {"corpus": "wordnet-n"}, {"prompts": "basic"}, {"C": 2000}, {"K": 40_000},
        {"extra": {"k_values": [1000, None], "_injected": ("k_values",)}}, {"profile": "paper"}, {"profile": "paper", "model": "ViT-B-16",
                                                                        "pretrained": "openai"})}
    assert len(names) == 9 and base.results_dir == N.Config(output_dir=str(tmp_path), extra={"_t0": 1.0}).results_dir
    # a notebook's own parameter at its declared value (not injected) does not rename the run
    assert base.results_dir == N.Config(output_dir=str(tmp_path), extra={"pos_corpus_name": "POS-NA"}).results_dir
    assert N.Config(profile="paper").run_columns()["simulated"] is False and base.run_columns()["simulated"] is True


def test_device_auto_picks_cuda_when_present(monkeypatch, tiny_bench):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Runner.from_config(tiny_bench, N.Config(), cache=False).settings.device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = Runner.from_config(tiny_bench, N.Config(), cache=False)
    assert run.settings.device == "cpu" and run.settings.progress is False  # demo: no bars (nbval)
    assert Runner.from_config(tiny_bench, N.Config(device="cpu", progress=True), cache=False).settings.progress
    assert N.Config(profile="paper").show_progress  # the paper profile's long cells show bars


def test_clustering_diagnostics_vote_over_kmeans_and_true_classes(run):
    from clustermine_lib import methods as M

    d = A01.diagnostics(run)
    assert list(dict.fromkeys(d.method)) == ["ClusterMine", "ClusterMine (k-means clusters)", "ClusterMine (true classes)"]
    assert set(d[d.kind == "diagnostic"].method) == set(M.DIAGNOSTICS)
    oracle = run.mined("ClusterMine (true classes)")
    assert 0 < len(oracle) <= len(run.bench.class_names)
    km = run.kmeans_clusters()
    assert len(km) == len(run.bench.train) and int(km.max()) < run.settings.n_clusters


def test_make_data_prepares_every_clustering_the_demo_notebooks_use():
    from clustermine_lib.artifacts import demo_clusterings

    pairs = demo_clusterings(N.Config())
    cs = sorted({c for kw, c in pairs if not kw})
    assert cs[0] == 200 and cs[-1] == 8 * 200 and 800 in cs and 240 in cs  # 1x-8x, default, Table 4's 1.2x
    assert set(N.SWEEPS["demo"]["c_values"]) <= set(cs)
    assert sum(1 for kw, _ in pairs if kw) == 2  # the two other simulated models of Fig. 3


# ------------------------------------------------------------------------------------------ a corpus file, another model
def test_a_corpus_file_names_the_run_and_the_demo_simulates_its_text(tmp_path, monkeypatch, tiny_bench):
    from clustermine_lib import simulate
    from clustermine_lib.corpus import load_corpus_file

    words = tmp_path / "my_words.txt"
    words.write_text("dog\ncat\ngolden retriever\nnot a wordnet name\n")
    cfg = N.Config(corpus=str(words), output_dir=str(tmp_path))
    label = N.corpus_label(str(words))
    assert label.startswith("my_words-") and "/" not in label and N.corpus_label("wordnet-na") == "wordnet-na"
    assert cfg.results_dir == tmp_path / "results" / "demo" / "simulated" / f"{label}.simple-7.seed0"
    assert cfg.run_columns()["corpus"] == str(words)
    monkeypatch.setattr(simulate, "make_benchmark", lambda *a, **k: tiny_bench)
    bench = N.open_benchmark(cfg)
    want = N.simulated_with_corpus(tiny_bench, load_corpus_file(words))
    assert bench.corpus.names == want.corpus.names and torch.equal(bench.corpus_text, want.corpus_text)
    assert torch.equal(bench.train.features, tiny_bench.train.features)
    with pytest.raises(ValueError, match="is neither a registered corpus nor a file"):
        N.open_benchmark(N.Config(corpus=str(tmp_path / "nope.txt")))


def test_another_model_or_a_checkpoint_resolves_as_make_features_does():
    """The declared tag (dfn5b) belongs to the declared model: `-p model` / `-p checkpoint` without
    `-p pretrained` resolve as `make features` without PRETRAINED."""
    cell = '# Notebook parameters\nprofile = "demo"\nmodel = "ViT-H-14"\npretrained = "dfn5b"\ncheckpoint = None\n'
    ns = {"profile": "paper", "model": "ViT-B-16", "pretrained": "dfn5b", "checkpoint": None}
    assert N.check_parameters({**ns, "In": ["", cell, '# Parameters\nmodel = "ViT-B-16"\n']}).pretrained is None
    assert N.check_parameters({**ns, "In": ["", cell, '# Parameters\nmodel = "x"\npretrained = "dfn5b"\n']}
                              ).pretrained == "dfn5b"
    assert N.check_parameters({**ns, "In": ["", cell, "# Parameters\nprofile = 'paper'\n"]}).pretrained == "dfn5b"
