"""Real-data ``Benchmark``s from cached CLIP features, and the ``make features`` command line
(``python -m clustermine_lib.features``, defined in ``features_cli``).

``load_benchmark(model, pretrained, corpus, prompts, ...)`` assembles the cached image features of the
ID train / test sets and the OOD / shifted sets, plus the text features of the corpus and of the
ImageNet class names present in the ID set (Y_GT), into the same ``Benchmark`` container the simulated
profile returns; everything it reads is verified (``feature_store``). What is missing, stale or
damaged is one error listing all of it with the command that makes it (``feature_check``).
"""
from __future__ import annotations

import sys
import warnings

import torch

from .benchmark import OOD_SETS, Benchmark, FeatureSet
from .corpus import DEFAULT_CORPUS, DEFAULT_PREPROCESS
from .datasets import resolve_dataset
from .encoder import ModelRef
from .extract import load_image_features, stored_knn
from .feature_check import CLASS_TEXT, missing_caches, missing_message, text_caches, variant
from .models import DEFAULT_MODEL
from .prompts import DEFAULT_PROMPTS
from .text_features import load_text_features, prompt_templates


def _class_synsets() -> list[str]:
    try:
        from .semantic import imagenet_synsets

        return imagenet_synsets()
    except Exception as e:  # WordNet missing: names still work, WordNet distances (Fig. 5) do not
        warnings.warn(f"ImageNet class synsets unavailable ({e}); class_synsets set to ''.")
        return [""] * 1000


def present_classes(*sets: FeatureSet) -> list[int]:
    """The sorted ImageNet-1K indices that occur as labels in ``sets`` (-1, unknown, ignored)."""
    labels = torch.cat([fs.labels for fs in sets if fs.labels is not None])
    return sorted(int(c) for c in labels[labels >= 0].unique())


def _remap(fs: FeatureSet, lookup: torch.Tensor, drop: bool = False) -> tuple[FeatureSet, int]:
    """``fs`` with its 1K labels turned into indices of the subset (``lookup``: 1K index -> subset index
    or -1); ``drop``: remove the images of classes outside it. Returns the set and how many were dropped."""
    if fs.labels is None:
        return fs, 0
    new = torch.where(fs.labels >= 0, lookup[fs.labels.clamp(min=0)], fs.labels)
    if not drop:
        return FeatureSet(fs.name, fs.features, new), 0
    keep = (new >= 0) | (fs.labels < 0)
    return FeatureSet(fs.name, fs.features[keep], new[keep]), int((~keep).sum())


def load_benchmark(model=DEFAULT_MODEL, pretrained=None, corpus=DEFAULT_CORPUS, prompts=DEFAULT_PROMPTS,
                   cache_dir=None, id_dataset: str = "imagenet", ood=OOD_SETS, shifted=(), *, checkpoint=None,
                   preprocess: str = DEFAULT_PREPROCESS, data_root=None, dtype: str | None = None) -> Benchmark:
    """Assemble cached real CLIP features into a ``Benchmark`` (same container as the simulated one).

    train / test = ``<id_dataset>-train`` / ``-val``; ``ood`` and ``shifted`` name registered
    datasets (keys of the result are canonical names); ``corpus`` is a registered corpus name (built
    with ``preprocess``), the path of a corpus file (its text cache is ``file-<content hash>``, what
    ``make features CORPUS=FILE`` writes) or a ``Corpus``; ``dtype``: the image features' (None:
    float32 if cached, else float16). Missing, stale or damaged features raise one
    ``FileNotFoundError`` listing all of them and the ``make features`` command that makes them
    (``check_cached``); everything read is verified (``feature_store``).

    Y_GT is the ImageNet classes present in the ID train and val features: ``class_names`` (open_clip's
    ``IMAGENET_CLASSNAMES``), ``class_text`` (their text features under ``prompts``) and
    ``class_synsets``, in 1K-index order. When that is a subset of ImageNet-1K (an ID folder with a few
    wnid folders), a warning says so, every label is remapped to the subset's indices, the shifted sets
    keep only images of those classes, and ``meta["imagenet_classes"]`` holds the 1K index of each class;
    methods given Y_GT then use only the classes present.

    ``meta["train_knn"]`` lists the verified-on-use kNN files of the train features (``make features
    FEATURE_ARGS="--knn 50"``); TEMI (``experiments.Pipeline.temi``) reads one with k >= its k instead of
    computing the kNN itself.
    """
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    prompt_name, _ = prompt_templates(prompts)
    text = variant(corpus, preprocess, prompts)
    train_name, test_name = resolve_dataset(f"{id_dataset}-train").name, resolve_dataset(f"{id_dataset}-val").name
    wanted = list(dict.fromkeys(resolve_dataset(d).name for d in [train_name, test_name, *ood, *shifted]))
    missing = missing_caches(ref, wanted, [text], cache_dir, data_root, dtype)
    if missing:
        raise FileNotFoundError(missing_message(ref, missing))
    images = {d: load_image_features(ref, None, d, cache_dir=cache_dir, dtype=dtype) for d in wanted}
    (tag, names), (_, class_names) = text_caches(text)
    corpus_text = load_text_features(ref, None, names, name=tag, prompts=prompts, cache_dir=cache_dir).features
    class_text = load_text_features(ref, None, class_names, name=CLASS_TEXT, prompts=prompts,
                                    cache_dir=cache_dir).features
    dims = {v.features.shape[1] for v in images.values()} | {corpus_text.shape[1], class_text.shape[1]}
    if len(dims) != 1:
        raise ValueError(f"Cached features of {ref.model_id} have different dimensions {sorted(dims)}; "
                         "re-extract them with one model (overwrite=True).")
    train, test = images[train_name], images[test_name]
    sets = {"train": train.as_feature_set("train"), "test": test.as_feature_set("ImageNet")}
    ood_sets = {resolve_dataset(d).name: images[resolve_dataset(d).name].as_feature_set() for d in ood}
    shifted_sets = {resolve_dataset(d).name: images[resolve_dataset(d).name].as_feature_set() for d in shifted}
    classes = present_classes(sets["train"], sets["test"])
    synsets = _class_synsets()
    subsets = {k: v.meta["classes"] for k, v in images.items() if v.meta.get("classes")}
    if len(classes) < len(class_names):
        lookup = torch.full((len(class_names),), -1, dtype=torch.long)
        lookup[classes] = torch.arange(len(classes))
        sets = {k: _remap(v, lookup)[0] for k, v in sets.items()}
        dropped = {}
        for k, v in shifted_sets.items():
            shifted_sets[k], dropped[k] = _remap(v, lookup, drop=True)
        subsets = {k: [int(lookup[c]) for c in v if lookup[c] >= 0] for k, v in subsets.items()}
        class_names, class_text = [class_names[i] for i in classes], class_text[classes]
        synsets = [synsets[i] for i in classes]
        gone = "; ".join(f"{k} keeps {len(shifted_sets[k])} images of them ({n} of other classes dropped)"
                         for k, n in dropped.items() if n)
        warnings.warn(f"{train_name} / {test_name} hold {len(classes)} of the 1000 ImageNet-1K classes: Y_GT "
                      f"(class names, their text features, synsets) is that subset and the labels are its indices"
                      + (f"; {gone}" if gone else "") + ".", stacklevel=2)
    meta = {"simulated": False, "model_id": ref.model_id, "prompts": prompt_name, "preprocess": preprocess,
            "feature_args": {"model": ref.spec.arch, "pretrained": ref.spec.pretrained, "checkpoint": checkpoint,
                             "cache_dir": None if cache_dir is None else str(cache_dir)},
            "corpus": {"tag": tag, "source": text.source},
            "datasets": {k: {"n": len(v.features), "skipped": len(v.skipped), "path": str(v.path)}
                         for k, v in images.items()},
            "imagenet_classes": classes, "class_subsets": subsets, "logit_bias": train.meta.get("logit_bias"),
            "train_knn": stored_knn(train, cache_dir)}
    return Benchmark(
        name=f"{ref.model_id}:{id_dataset}", simulated=False, train=sets["train"], test=sets["test"],
        ood=ood_sets, shifted=shifted_sets, class_names=class_names, class_text=class_text,
        class_synsets=synsets, corpus=text.corpus, corpus_text=corpus_text,
        logit_scale=float(train.meta["logit_scale"]), meta=meta)


def main(argv=None) -> int:
    """``python -m clustermine_lib.features`` (``features_cli``): errors are one message (``--debug``: the
    traceback)."""
    from .features_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
