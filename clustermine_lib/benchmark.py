"""The one container every experiment reads: features of one CLIP model on one ID benchmark.

The simulated benchmark (``simulate.make_benchmark``) and real cached features (``features``)
both return a ``Benchmark``, so notebooks switch between ``PROFILE=demo`` and ``PROFILE=paper`` by a
parameter only. All feature matrices are L2-normalised float32 tensors of CLIP's shared
(post-projection) space.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .corpus import Corpus

# The paper's evaluation sets (names are keys of ``Benchmark.ood`` / ``Benchmark.shifted``).
OOD_SETS = ("NINCO", "IN-O", "OpenImage-O", "iNat", "IN-OOD", "Textures43")
SHIFTED_SETS = ("ImageNet-Sketch", "ImageNet-R", "ImageNet-A", "ImageNetV2", "ImageNet-C")
EXTRA_OOD_SETS = ("Places", "Texture", "SUN", "SSB", "NINCOv2")
# OpenOOD v1.5's near / far grouping as the paper's Table 5 (appendix C) uses it: near = SSB-hard, NINCO;
# far = iNaturalist, Textures, OpenImage-O (``tables.near_far_means``).
OPENOOD_NEAR = ("SSB", "NINCO")
OPENOOD_FAR = ("iNat", "Texture", "OpenImage-O")


@dataclass
class FeatureSet:
    """Image features of one split. ``labels[i]`` indexes ``Benchmark.class_names`` (-1: unknown/OOD)."""

    name: str
    features: torch.Tensor  # (N, D)
    labels: torch.Tensor | None = None  # (N,) long

    def __len__(self) -> int:
        return self.features.shape[0]


@dataclass
class Benchmark:
    """Everything a table needs. ``simulated`` is True for the embedded CPU benchmark."""

    name: str
    simulated: bool
    train: FeatureSet  # ID training images: mining and clustering
    test: FeatureSet  # ID test images
    ood: dict[str, FeatureSet]  # semantic OOD sets
    shifted: dict[str, FeatureSet]  # covariate-shifted ID test sets (same classes)
    class_names: list[str]  # Y_GT
    class_text: torch.Tensor  # (n_classes, D) text features of Y_GT
    class_synsets: list[str]  # WordNet id per class ('' when unknown)
    corpus: Corpus
    corpus_text: torch.Tensor  # (K, D) text features of the corpus, same order as corpus.names
    logit_scale: float  # CLIP's learned exp(logit_scale) (1 / pretraining temperature)
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.corpus_text.shape[1]

    def with_corpus(self, corpus: Corpus, corpus_text: torch.Tensor) -> "Benchmark":
        """Same images with another corpus (Tables 3, 6)."""
        from dataclasses import replace

        return replace(self, corpus=corpus, corpus_text=corpus_text)

    def describe(self) -> str:
        kind = "SIMULATED benchmark (not CLIP, not ImageNet)" if self.simulated else "real CLIP features"
        sets = ", ".join(f"{k} ({len(v)})" for k, v in self.ood.items())
        return (f"{self.name}: {kind}; {len(self.class_names)} ID classes, train {len(self.train)}, "
                f"test {len(self.test)}, corpus {self.corpus.name} ({len(self.corpus)} concepts), "
                f"D={self.dim}, logit_scale={self.logit_scale:g}; OOD: {sets}")
