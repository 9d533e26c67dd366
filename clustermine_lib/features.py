"""Real-data ``Benchmark``s from cached CLIP features, and the ``make features`` command line
(``python -m clustermine_lib.features``, defined in ``features_cli``).

``load_benchmark(model, pretrained, corpus, prompts, ...)`` assembles the cached image features of the
ID train / test sets and the OOD / shifted sets, plus the text features of the corpus and of the 1000
ImageNet class names, into the same ``Benchmark`` container the simulated profile returns; everything
it reads is verified (``feature_store``). What is missing, stale or damaged is one error listing all of
it with the command that makes it: ``feature_check`` (``check_cached``, ``make_command`` and
``text_command`` stay importable from here).
"""
from __future__ import annotations

import sys

from .benchmark import OOD_SETS, Benchmark
from .corpus import DEFAULT_CORPUS, DEFAULT_PREPROCESS
from .datasets import resolve_dataset
from .encoder import ModelRef
from .extract import load_image_features
from .feature_check import CLASS_TEXT, missing_caches, missing_message, text_caches, variant
from .models import DEFAULT_MODEL
from .prompts import DEFAULT_PROMPTS
from .text_features import load_text_features, prompt_templates


def _class_synsets() -> list[str]:
    try:
        from .simulate import imagenet_synsets

        return imagenet_synsets()
    except Exception as e:  # WordNet missing: names still work, WordNet distances (Fig. 5) do not
        import warnings

        warnings.warn(f"ImageNet class synsets unavailable ({e}); class_synsets set to ''.")
        return [""] * 1000


def load_benchmark(model=DEFAULT_MODEL, pretrained=None, corpus=DEFAULT_CORPUS, prompts=DEFAULT_PROMPTS,
                   cache_dir=None, id_dataset: str = "imagenet", ood=OOD_SETS, shifted=(), *, checkpoint=None,
                   preprocess: str = DEFAULT_PREPROCESS, data_root=None, dtype: str | None = None) -> Benchmark:
    """Assemble cached real CLIP features into a ``Benchmark`` (same container as the simulated one).

    train / test = ``<id_dataset>-train`` / ``-val``; ``ood`` and ``shifted`` name registered
    datasets (keys of the result are canonical names); class names = open_clip's
    ``IMAGENET_CLASSNAMES`` with text features under the same ``prompts``; ``corpus`` is a registered
    corpus name (built with ``preprocess``) or a ``Corpus``; ``dtype``: the image features' (None:
    float32 if cached, else float16). Missing, stale or damaged features raise one
    ``FileNotFoundError`` listing all of them and the ``make features`` command that makes them
    (``check_cached``); everything read is verified (``feature_store``).
    """
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    prompt_name, _ = prompt_templates(prompts)
    wanted_text = variant(corpus, preprocess, prompts)
    corp, registered = wanted_text[:2]
    train_name, test_name = resolve_dataset(f"{id_dataset}-train").name, resolve_dataset(f"{id_dataset}-val").name
    wanted = list(dict.fromkeys(resolve_dataset(d).name for d in [train_name, test_name, *ood, *shifted]))
    missing = missing_caches(ref, wanted, [wanted_text], cache_dir, data_root, dtype)
    if missing:
        raise FileNotFoundError(missing_message(ref, missing))
    images = {d: load_image_features(ref, None, d, cache_dir=cache_dir, dtype=dtype) for d in wanted}
    (tag, names), (_, class_names) = text_caches(corp, preprocess, registered)
    corpus_text = load_text_features(ref, None, names, name=tag, prompts=prompts, cache_dir=cache_dir).features
    class_text = load_text_features(ref, None, class_names, name=CLASS_TEXT, prompts=prompts,
                                    cache_dir=cache_dir).features
    dims = {v.features.shape[1] for v in images.values()} | {corpus_text.shape[1], class_text.shape[1]}
    if len(dims) != 1:
        raise ValueError(f"Cached features of {ref.model_id} have different dimensions {sorted(dims)}; "
                         "re-extract them with one model (overwrite=True).")
    train, test = images[train_name], images[test_name]
    meta = {"simulated": False, "model_id": ref.model_id, "prompts": prompt_name, "preprocess": preprocess,
            "feature_args": {"model": ref.spec.arch, "pretrained": ref.spec.pretrained, "checkpoint": checkpoint,
                             "cache_dir": None if cache_dir is None else str(cache_dir)},
            "datasets": {k: {"n": len(v.features), "skipped": len(v.skipped), "path": str(v.path)}
                         for k, v in images.items()},
            "class_subsets": {k: v.meta["classes"] for k, v in images.items() if v.meta.get("classes")},
            "logit_bias": train.meta.get("logit_bias")}
    return Benchmark(
        name=f"{ref.model_id}:{id_dataset}", simulated=False,
        train=train.as_feature_set("train"), test=test.as_feature_set("ImageNet"),
        ood={resolve_dataset(d).name: images[resolve_dataset(d).name].as_feature_set() for d in ood},
        shifted={resolve_dataset(d).name: images[resolve_dataset(d).name].as_feature_set() for d in shifted},
        class_names=class_names, class_text=class_text, class_synsets=_class_synsets(),
        corpus=corp, corpus_text=corpus_text, logit_scale=float(train.meta["logit_scale"]), meta=meta)


def main(argv=None) -> int:
    """``python -m clustermine_lib.features`` (``features_cli``): errors are one message (``--debug``: the
    traceback)."""
    from .features_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
