"""Chunk / tile primitives against dense formulas; chunked == unchunked (tiny budget); NumPy input."""
import numpy as np
import pytest
import torch

from clustermine_lib import dense, scoring
from feature_helpers import TINY, cos, unit


@pytest.fixture
def data():
    return {"img": unit(23, 8, 0), "pos": unit(5, 8, 1), "neg": unit(11, 8, 2)}


def test_zero_shot_top1_dense_and_chunked(data):
    sim = cos(data["img"], data["neg"])
    idx, val = dense.zero_shot_top1(data["img"], data["neg"])
    assert idx.tolist() == sim.argmax(1).tolist()
    np.testing.assert_allclose(val.numpy(), sim.max(1), atol=1e-6)
    idx2, val2 = dense.zero_shot_top1(data["img"], data["neg"], budget=TINY)
    assert torch.equal(idx, idx2) and torch.allclose(val, val2)


def test_corpus_passes_merged_across_column_tiles_equal_the_dense_formulas(data, monkeypatch):
    # tiles of 3 images x 4 texts: the last tile of each row block is partial in both directions
    monkeypatch.setattr(dense, "TILE_ROWS", 3)
    monkeypatch.setattr(dense, "TILE_COLS", 4)
    tau = 0.05
    sim = cos(data["img"], data["neg"])
    idx, val = dense.zero_shot_top1(data["img"], data["neg"])
    assert idx.tolist() == sim.argmax(1).tolist()
    np.testing.assert_allclose(val.numpy(), sim.max(1), atol=1e-6)
    np.testing.assert_allclose(dense.lse_rows(data["img"], data["neg"], tau).numpy(),
                               np.log(np.exp(sim / tau).sum(1)), rtol=1e-5)
    sp = cos(data["img"], data["pos"]) / tau
    dense_eq1 = np.log(np.exp(sp).sum(1)) - np.log(np.exp(sim / tau).sum(1))
    np.testing.assert_allclose(scoring.eq1_logit(data["img"], data["pos"], data["neg"], tau).numpy(), dense_eq1,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize("p", [1, 2, 7, 1000])
def test_quantile_rows_matches_torch_quantile(q, p):
    s = torch.randn(13, p, generator=torch.Generator().manual_seed(p))
    torch.testing.assert_close(dense.quantile_rows(s, q), torch.quantile(s, q, dim=1))


def test_row_stat_index_and_chunks():
    rows, cols = unit(30, 6, 3) * 3.0, unit(4, 6, 4)  # rows are normalised chunk by chunk
    index = torch.tensor([29, 0, 7, 7])
    ref = cos(rows, cols).max(1)
    for budget in (dense.DEFAULT_BUDGET, TINY):
        got = dense.row_stat(rows, cols, lambda s: s.max(dim=1).values, budget)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
        got = dense.row_stat(rows, cols, lambda s: s.max(dim=1).values, budget, index=index)
        np.testing.assert_allclose(got.numpy(), ref[index.numpy()], atol=1e-6)
    with pytest.raises(ValueError, match="dimension"):
        dense.row_stat(unit(3, 5, 0), cols, lambda s: s.max(dim=1).values)
    with pytest.raises(ValueError, match="index"):
        dense.row_stat(rows, cols, lambda s: s.max(dim=1).values, index=[30])


def test_normalized_rows_is_one_normalised_matrix(data):
    out = dense.normalized_rows((data["pos"] * 2, "a"), (data["neg"].numpy() * 3, "b"))
    torch.testing.assert_close(out, torch.cat([data["pos"], data["neg"]]))
    with pytest.raises(ValueError, match="b has dimension 9"):
        dense.normalized_rows((data["pos"], "a"), (unit(2, 9, 0), "b"))


def test_numpy_input_equals_tensor_input(data):
    img, neg = data["img"], data["neg"]
    for a, b in zip(dense.zero_shot_top1(img.numpy(), neg.numpy()), dense.zero_shot_top1(img, neg)):
        assert torch.equal(a, b)
    assert torch.equal(dense.zero_shot_top1(img.double().numpy(), neg)[0], dense.zero_shot_top1(img, neg)[0])
    assert torch.equal(dense.lse_rows(img.numpy(), neg.numpy(), 0.05), dense.lse_rows(img, neg, 0.05))
    stat = lambda s: s.max(dim=1).values  # noqa: E731
    assert torch.equal(dense.row_stat(neg.numpy(), data["pos"], stat, index=np.array([3, 1])),
                       dense.row_stat(neg, data["pos"], stat, index=torch.tensor([3, 1])))
    (_, a), (_, b) = next(dense.similarity_chunks(img.numpy(), neg.numpy())), next(dense.similarity_chunks(img, neg))
    assert torch.equal(a, b)
