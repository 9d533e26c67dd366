"""PLP: the learning-rate schedule, a seeded fit against the dense probe formula, pseudo-labels."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clustermine_lib import plp
from feature_helpers import TINY, clustered, cos, unit


def test_plp_schedule():
    lr = plp._cosine_lr(1.0, 100, 0.1)
    assert len(lr) == 100 and lr[0] == 0 and lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert np.all(np.diff(lr[10:]) <= 1e-12) and lr[-1] < 1e-3


def test_plp_fit_score_dense_seeded_chunked():
    x, y = clustered([60, 60, 60], 6, 4)
    probe = plp.fit_plp(x, y, epochs=30, batch_size=64, lr=0.05, seed=0)
    assert (probe.predict(x) == y).float().mean() > 0.95
    again = plp.fit_plp(x, y, epochs=30, batch_size=64, lr=0.05, seed=0)
    assert torch.equal(probe.weight, again.weight)
    test = torch.randn(9, 6, generator=torch.Generator().manual_seed(5))
    z = (F.normalize(test, dim=1) - probe.mean) / probe.std
    dense = torch.softmax(z @ probe.weight.T + probe.bias, dim=1).max(1).values
    torch.testing.assert_close(probe.score(test), dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.score(test, budget=TINY), dense, rtol=1e-5, atol=1e-6)
    assert probe.params["lr"] == 0.05 and probe.params["batch_size"] == 64


def test_plp_pseudo_labels_and_bad_labels():
    img, txt = unit(20, 8, 6), unit(4, 8, 7)
    assert torch.equal(plp.plp_pseudo_labels(img, txt), torch.as_tensor(cos(img, txt).argmax(1)))
    with pytest.raises(ValueError, match="pseudo-labels"):
        plp.fit_plp(img, torch.full((20,), 5), n_classes=4, epochs=1)
    with pytest.raises(ValueError, match="pseudo-labels has 19 entries"):
        plp.fit_plp(img, torch.zeros(19, dtype=torch.long), epochs=1)


def test_plp_numpy_input_equals_tensor_input():
    x, y = clustered([20, 20], 5, 8)
    img, txt = unit(12, 5, 9), unit(3, 5, 10)
    assert torch.equal(plp.plp_pseudo_labels(img.numpy(), txt.numpy()), plp.plp_pseudo_labels(img, txt))
    probe = plp.fit_plp(x, y, epochs=2, batch_size=16)
    again = plp.fit_plp(x.numpy(), y.numpy(), epochs=2, batch_size=16)
    assert torch.equal(probe.weight, again.weight) and torch.equal(probe.bias, again.bias)
    assert torch.equal(probe.score(img.numpy()), probe.score(img))
    assert torch.equal(probe.predict(img.numpy()), probe.predict(img))
