"""Small random inputs and dense reference formulas shared by the tests of dense / scoring / mining /
mahalanobis / plp (imported as a plain module: pytest puts tests/ on sys.path)."""
import numpy as np
import torch
import torch.nn.functional as F

from clustermine_lib.corpus import Corpus

TINY = 7  # budget in elements: forces one or a few rows per chunk


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def toy_corpus(n):
    names = tuple(f"c{i}" for i in range(n))
    return Corpus("toy", names, ("",) * n, ("n",) * n)


def cos(a, b):
    """Cosine similarities in float64 NumPy, the dense reference of every chunked product."""
    a, b = a.double().numpy(), b.double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def clustered(n_per, d, seed):
    """Gaussian blobs: (sum n_per, d) features and their (sum n_per,) class labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(n_per), d, generator=g) * 2
    x = torch.cat([c + 0.5 * torch.randn(n, d, generator=g) for c, n in zip(centres, n_per)])
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(n_per)])
    return x, y


def known_quantile_case():
    """19 positives at e1, one at e2. Candidates: e2 (close to ONE positive), 0.3 e1 + e3, e3, e1.

    0.95-quantile of the 20 similarities (linear interpolation at 18.05 of 0..19): e2 -> 0.05,
    0.3e1+e3 -> 0.3/sqrt(1.09), e3 -> 0, e1 -> 1. The two most dissimilar are e3 and e2; a
    max-similarity criterion would instead reject e2 (max = 1).
    """
    e = torch.eye(3)
    pos = torch.cat([e[:1].repeat(19, 1), e[1:2]])
    corpus_text = torch.stack([e[1], 0.3 * e[0] + e[2], e[2], e[0]])
    return pos, corpus_text
