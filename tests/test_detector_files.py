"""A fitted detector saved as a folder and loaded back: identical scores; damaged folders are refused."""
import json

import pytest
import torch

from clustermine_lib.detector import ClusterMine, PosMine
from clustermine_lib.detector_files import DetectorFileError


@pytest.fixture()
def fitted(tiny_bench):
    b = tiny_bench
    det = ClusterMine(clusters=b.train.labels).fit(b.train.features, b.corpus, b.corpus_text, b.logit_scale)
    return det.calibrate(b.test.features[: len(b.test) // 2])


def test_save_load_gives_bit_identical_scores_and_the_same_labels(fitted, tiny_bench, tmp_path):
    x = tiny_bench.test.features
    fitted.save(tmp_path / "det", meta={"model": "simulated-tiny"})
    det = ClusterMine.load(tmp_path / "det")
    assert torch.equal(det.score_samples(x), fitted.score_samples(x))
    assert det.positive_names == fitted.positive_names and det.threshold_ == fitted.threshold_
    assert torch.equal(det.predict(x), fitted.predict(x))
    info = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert info["meta"] == {"model": "simulated-tiny"} and info["corpus"]["size"] == len(tiny_bench.corpus)
    assert sum(p["clusters"] for p in info["positives"]) == len(torch.unique(tiny_bench.train.labels))
    assert all(p["images"] >= 1 for p in info["positives"])


def test_threshold_keeps_the_requested_id_recall(fitted, tiny_bench):
    held = tiny_bench.test.features[: len(tiny_bench.test) // 2]
    assert (~fitted.predict(held)).double().mean() >= 0.95
    with pytest.raises(RuntimeError, match="no threshold"):
        PosMine(m=3).fit(tiny_bench.train.features, tiny_bench.corpus, tiny_bench.corpus_text).predict(held)


def test_negatives_by_index_need_the_same_corpus_text(fitted, tiny_bench, tmp_path):
    fitted.save(tmp_path / "d", embed_negatives=False)
    with pytest.raises(DetectorFileError, match="without its negative text features"):
        ClusterMine.load(tmp_path / "d")
    with pytest.raises(DetectorFileError, match="differ from those"):
        ClusterMine.load(tmp_path / "d", corpus_text=tiny_bench.corpus_text * 2)
    det = ClusterMine.load(tmp_path / "d", corpus_text=tiny_bench.corpus_text)
    assert torch.equal(det.score_samples(tiny_bench.test.features), fitted.score_samples(tiny_bench.test.features))


def test_damaged_or_foreign_folders_are_refused_with_their_file_named(fitted, tmp_path):
    d = fitted.save(tmp_path / "det")
    with pytest.raises(DetectorFileError, match="not a PosMine"):
        PosMine.load(d)
    data = (d / "detector.safetensors").read_bytes()
    (d / "detector.safetensors").write_bytes(data[:-100] + b"\xff" * 100)  # tampered values
    with pytest.raises(DetectorFileError, match="tampered"):
        ClusterMine.load(d)
    (d / "detector.safetensors").write_bytes(data[:50])  # truncated
    with pytest.raises(DetectorFileError, match=r"detector.safetensors is damaged or truncated"):
        ClusterMine.load(d)
    info = json.loads((d / "detector.json").read_text())
    (d / "detector.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(DetectorFileError, match="format 99"):
        ClusterMine.load(d)
    (d / "detector.json").write_text("{not json")
    with pytest.raises(DetectorFileError, match="not a readable detector"):
        ClusterMine.load(d)
    with pytest.raises(DetectorFileError, match="not a detector folder"):
        ClusterMine.load(tmp_path / "nothing")


def test_no_negatives_left_is_an_error(tiny_bench):
    from clustermine_lib.corpus import Corpus

    b = tiny_bench
    one = Corpus("one", ("dog",), ("",), ("n",))
    with pytest.raises(ValueError, match="no negative labels are left"):
        PosMine(m=1).fit(b.train.features, one, b.corpus_text[:1])
