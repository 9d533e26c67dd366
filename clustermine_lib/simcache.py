"""The simulated benchmark's disk cache: one safetensors file per input key, written atomically and
verified on load (a truncated file, or one built from other inputs, is reported and rebuilt)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from .benchmark import Benchmark, FeatureSet
from .corpus import Corpus


def cache_file(key: dict) -> Path:
    from .fileio import content_hash
    from .wordnet import cache_dir

    return cache_dir() / "simulated" / f"{key['size']}-{content_hash(key, size=8)}.safetensors"


def save(b: Benchmark, path: Path, key: dict) -> None:
    from safetensors.torch import save_file

    from .fileio import atomic_write

    tensors = {"train.x": b.train.features, "train.y": b.train.labels, "test.x": b.test.features,
               "test.y": b.test.labels, "class_text": b.class_text, "corpus_text": b.corpus_text}
    for group, sets in (("ood", b.ood), ("shifted", b.shifted)):
        for name, fs in sets.items():
            tensors[f"{group}.{name}.x"] = fs.features
            tensors[f"{group}.{name}.y"] = fs.labels
    header = dict(name=b.name, class_names=b.class_names, class_synsets=b.class_synsets,
                  corpus=dict(name=b.corpus.name, names=b.corpus.names, synsets=b.corpus.synsets,
                              pos=b.corpus.pos),
                  logit_scale=b.logit_scale, meta=b.meta, ood=list(b.ood), shifted=list(b.shifted), key=key)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"benchmark": json.dumps(header)}))


def rebuild_command(key: dict) -> str:
    return (f"python -m clustermine_lib.cli data --size {key['size']} --seed {key['seed']}  "
            f"(or delete the file; make_benchmark rebuilds it)")


def load(path: Path, key: dict) -> Benchmark | None:
    """The cached benchmark, or None (with a warning) when the file is unreadable or not this key's."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            h = json.loads(f.metadata()["benchmark"])
            if h.get("key") != json.loads(json.dumps(key)):
                raise ValueError("it was built from other inputs")
            t = {k: f.get_tensor(k) for k in f.keys()}
        c = h["corpus"]
        corpus = Corpus(c["name"], tuple(c["names"]), tuple(c["synsets"]), tuple(c["pos"]))
        bench = Benchmark(
            name=h["name"], simulated=True, train=FeatureSet("train", t["train.x"], t["train.y"]),
            test=FeatureSet("ImageNet", t["test.x"], t["test.y"]),
            ood={n: FeatureSet(n, t[f"ood.{n}.x"], t[f"ood.{n}.y"]) for n in h["ood"]},
            shifted={n: FeatureSet(n, t[f"shifted.{n}.x"], t[f"shifted.{n}.y"]) for n in h["shifted"]},
            class_names=h["class_names"], class_text=t["class_text"], class_synsets=h["class_synsets"],
            corpus=corpus, corpus_text=t["corpus_text"], logit_scale=h["logit_scale"], meta=h["meta"])
        n_train = len(h["class_names"]) * key["train_per_class"]
        if bench.train.features.shape != (n_train, key["dim"]) or len(bench.corpus_text) != len(corpus):
            raise ValueError("its tensors have the wrong shapes")
    except Exception as e:  # safetensors raises its own error type for a truncated header or buffer
        warnings.warn(f"Cached simulated benchmark {path} is unusable ({type(e).__name__}: {e}); rebuilding "
                      f"it. To rebuild by hand: {rebuild_command(key)}.", RuntimeWarning, stacklevel=3)
        return None
    return bench
