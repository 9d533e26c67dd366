"""Real-data ``Benchmark``s from cached CLIP features, the preflight that names what is missing, and
the ``make features`` command line (``python -m clustermine_lib.features``).

- ``load_benchmark(model, pretrained, corpus, prompts, ...)``: assemble cached image features of the
  ID train / test sets and the OOD / shifted sets, plus the text features of the corpus and of the
  1000 ImageNet class names, into the same ``Benchmark`` container the simulated profile returns;
- ``check_cached(model, ..., datasets=, text=)``: one ``FileNotFoundError`` listing every missing image
  and text feature cache with the exact ``make features`` command that makes each (a notebook calls it
  in its first cells instead of failing after minutes of work);
- ``make_command``: that command line; ``main``: the command line itself. It extracts (``extract``)
  every dataset or group of ``--dataset`` and the corpus and class-name text features under each
  prompt set, unchanged under ``torchrun --nproc_per_node=N`` (``distributed``, ``feature_store``).
"""
from __future__ import annotations

import argparse
import os
import sys

from .benchmark import OOD_SETS, Benchmark
from .corpus import DEFAULT_CORPUS, DEFAULT_PREPROCESS, Corpus, load_corpus
from .datasets import GROUPS, expand_datasets, imagenet_classnames, resolve_dataset
from .distributed import barrier, init_distributed, rank_world
from .extract import (ModelRef, cached_knn, extract_image_features, extract_text_features, load_image_features,
                      load_text_features, prompt_templates)
from .feature_store import DEFAULT_SHARD_SIZE, DTYPES, image_dir, read_meta, text_dir
from .models import DEFAULT_MODEL
from .prompts import DEFAULT_PROMPTS

CLASS_TEXT = "imagenet-classes"  # name of the ImageNet class-name text cache (Y_GT)
_TEXT_KEYS = ("corpus", "preprocess", "prompts")


def _corpus(corpus, preprocess: str) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else load_corpus(corpus, preprocess)


def _corpus_tag(corpus: Corpus, preprocess: str, registered: bool) -> str:
    return f"{corpus.name}-{preprocess}" if registered else corpus.name


def _text_caches(corp: Corpus, preprocess: str, registered: bool) -> tuple:
    """``(name, names)`` of the two text caches a benchmark reads: the corpus and the class names."""
    return (_corpus_tag(corp, preprocess, registered), corp.names), (CLASS_TEXT, imagenet_classnames())


# ----------------------------------------------------------------------------- what is missing
def make_command(ref: ModelRef, datasets, corpus=None, prompts=None, data_root=None, cache_dir=None,
                 preprocess: str = DEFAULT_PREPROCESS) -> str:
    """The ``make features`` line that creates the given features (DATASET=text: text features only)."""
    parts = ["make features", f"MODEL={ref.spec.arch}"]
    if ref.spec.pretrained:
        parts.append(f"PRETRAINED={ref.spec.pretrained}")
    if ref.checkpoint:
        parts.append(f"CHECKPOINT={ref.checkpoint}")
    group = [g for g, members in GROUPS.items() if datasets and set(members) == set(datasets)]
    parts.append(f"DATASET={group[0] if group else ','.join(datasets) if datasets else 'text'}")
    if corpus:
        parts.append(f"CORPUS={corpus}")
    if prompts:
        parts.append(f"PROMPTS={prompts}")
    if corpus and preprocess != DEFAULT_PREPROCESS:
        parts.append(f'FEATURE_ARGS="--corpus-preprocess {preprocess}"')
    if datasets:
        root = data_root or os.environ.get("DATA_ROOT") or "/path/to/data"
        parts.append(f"DATA_ROOT={root}")
    if cache_dir:
        parts.append(f"CACHE_DIR={cache_dir}")
    return " ".join(parts)


def _missing(ref: ModelRef, datasets, variants, cache_dir, data_root) -> dict[str, list[str]]:
    """What is not in the cache, grouped by the command (or call) that makes it. ``variants``:
    ``(corpus, registered, preprocess, prompts)`` (``_variant``); a cache is present when
    ``load_image_features`` / ``load_text_features`` would read it."""
    out: dict[str, list[str]] = {}
    absent = [d for d in dict.fromkeys(resolve_dataset(x).name for x in datasets)
              if read_meta(image_dir(ref.model_id, d, cache_dir), ref.identity) is None]
    if absent:
        out[make_command(ref, absent, data_root=data_root, cache_dir=cache_dir)] = [
            f"image features of {d} ({image_dir(ref.model_id, d, cache_dir) / 'meta.json'})" for d in absent]
    seen = set()
    for corp, registered, preprocess, prompts in variants:
        prompt_name, _ = prompt_templates(prompts)
        for tag, names in _text_caches(corp, preprocess, registered):
            folder = text_dir(ref.model_id, tag, names, prompt_name, cache_dir)
            what = f"text features of {tag} x {prompt_name} ({folder / 'meta.json'})"
            if what in seen or read_meta(folder, ref.identity) is not None:
                continue
            seen.add(what)
            if isinstance(prompts, str) and (registered or tag == CLASS_TEXT):
                fix = make_command(ref, [], corp.name if registered else None, prompt_name, data_root, cache_dir,
                                   preprocess)
            else:
                fix = (f"(a custom Corpus or prompt list has no make target) extract.extract_text_features("
                       f"model, pretrained, names, name={tag!r}, prompts=...)")
            out.setdefault(fix, []).append(what)
    return out


def _message(ref: ModelRef, missing: dict[str, list[str]]) -> str:
    lines = []
    for fix, items in missing.items():
        lines += [f"  - {m}" for m in items] + [f"      to make them: {fix}"]
    return (f"Cached features of {ref.model_id} are missing:\n" + "\n".join(lines) +
            "\nMake them on a GPU machine (docs/gpu_workflow.md).")


def _variant(corpus=DEFAULT_CORPUS, preprocess: str = DEFAULT_PREPROCESS, prompts=DEFAULT_PROMPTS) -> tuple:
    """``(Corpus, registered, preprocess, prompts)`` of one benchmark variant's text."""
    return _corpus(corpus, preprocess), not isinstance(corpus, Corpus), preprocess, prompts


def check_cached(model, pretrained=None, *, checkpoint=None, datasets=(), text=(), cache_dir=None,
                 data_root=None) -> None:
    """Raise one ``FileNotFoundError`` listing every cache that ``load_benchmark`` would miss: the image
    features of ``datasets`` (names, aliases or groups) and, for each dict of ``text`` (optional keys
    ``corpus`` -- a registered name or a ``Corpus`` --, ``preprocess``, ``prompts``; the defaults of
    ``load_benchmark``), the corpus and the ImageNet class-name text features, each with the exact
    ``make features`` command that makes it. Reads only ``meta.json`` files: no features, no weights."""
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    text = list(text)
    for v in text:
        if set(v) - set(_TEXT_KEYS):
            raise ValueError(f"text variants take the keys {list(_TEXT_KEYS)}, got {sorted(v)}.")
    missing = _missing(ref, expand_datasets(datasets), [_variant(**v) for v in text], cache_dir, data_root)
    if missing:
        raise FileNotFoundError(_message(ref, missing))


# ----------------------------------------------------------------------------- the Benchmark
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
                   preprocess: str = DEFAULT_PREPROCESS, data_root=None) -> Benchmark:
    """Assemble cached real CLIP features into a ``Benchmark`` (same container as the simulated one).

    train / test = ``<id_dataset>-train`` / ``-val``; ``ood`` and ``shifted`` name registered
    datasets (keys of the result are canonical names); class names = open_clip's
    ``IMAGENET_CLASSNAMES`` with text features under the same ``prompts``; ``corpus`` is a registered
    corpus name (built with ``preprocess``) or a ``Corpus``. Missing features raise one
    ``FileNotFoundError`` listing all of them and the ``make features`` command that makes them
    (``check_cached``).
    """
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    prompt_name, _ = prompt_templates(prompts)
    variant = _variant(corpus, preprocess, prompts)
    corp, registered = variant[:2]
    train_name, test_name = resolve_dataset(f"{id_dataset}-train").name, resolve_dataset(f"{id_dataset}-val").name
    wanted = list(dict.fromkeys(resolve_dataset(d).name for d in [train_name, test_name, *ood, *shifted]))
    missing = _missing(ref, wanted, [variant], cache_dir, data_root)
    if missing:
        raise FileNotFoundError(_message(ref, missing))
    images = {d: load_image_features(ref, None, d, cache_dir=cache_dir) for d in wanted}
    (tag, names), (_, class_names) = _text_caches(corp, preprocess, registered)
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


# ----------------------------------------------------------------------------- CLI (`make features`)
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clustermine_lib.features",
        description="Extract and cache CLIP image/text features (run under torchrun for several GPUs).")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registry name / open_clip architecture / config .json")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default: the model's first "
                                                       "registry tag); 'none' with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="local state-dict file (.safetensors/.bin/.pt/.pth)")
    p.add_argument("--dataset", default="paper",
                   help=f"comma-separated datasets or groups {list(GROUPS)}; 'text' = text features only")
    p.add_argument("--data-root", default=None, help="dataset root (default: $DATA_ROOT)")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache (default: $CLUSTERMINE_CACHE/features or <repo>/.cache/features)")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="registered corpus for text features")
    p.add_argument("--corpus-preprocess", default=DEFAULT_PREPROCESS)
    p.add_argument("--prompts", default=DEFAULT_PROMPTS, help="comma-separated prompt sets")
    p.add_argument("--no-text", action="store_true", help="skip the corpus and class-name text features")
    p.add_argument("--knn", type=int, default=0, help="also cache the k-NN of imagenet-train features (TEMI)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--text-batch-size", type=int, default=1024)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of subsampled sets (ImageNet-C)")
    p.add_argument("--download", action="store_true", help="let open_clip download missing weights")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = init_distributed(args.device)
    rank, world = rank_world()
    say = print if rank == 0 else (lambda *a, **k: None)
    names = [n for n in args.dataset.split(",") if n.strip()]
    datasets = expand_datasets([n for n in names if n.lower() != "text"])
    pretrained = None if args.pretrained in (None, "", "none", "None") else args.pretrained
    ref = ModelRef.resolve(args.model, pretrained, args.checkpoint, device, args.download)
    say(f"[features] {ref.model_id} on {world} process(es), device {device}; datasets: {datasets or '-'}")
    common = dict(checkpoint=args.checkpoint, cache_dir=args.cache_dir, device=device,
                  shard_size=args.shard_size, overwrite=args.overwrite, progress=not args.no_progress)
    for d in datasets:
        meta = extract_image_features(ref, None, d, data_root=args.data_root, batch_size=args.batch_size,
                                      num_workers=args.num_workers, dtype=args.dtype, seed=args.seed, load=False,
                                      **common)
        say(f"[features] {d}: {meta['n_rows']} images (skipped {len(meta['skipped'])}), dim {meta['dim']}, "
            f"logit_scale {meta['logit_scale']:.4g} -> {image_dir(ref.model_id, d, args.cache_dir)}")
    if not args.no_text:
        corp = load_corpus(args.corpus, args.corpus_preprocess)
        for prompts in [p for p in args.prompts.split(",") if p.strip()]:
            for tag, nm in _text_caches(corp, args.corpus_preprocess, True):
                t = extract_text_features(ref, None, nm, name=tag, prompts=prompts,
                                          batch_size=args.text_batch_size, **common,
                                          extra_meta={"corpus": args.corpus if tag != CLASS_TEXT else None})
                say(f"[features] text {tag} x {prompts}: {tuple(t.features.shape)} -> {t.path}")
    if args.knn and rank == 0:
        knn = cached_knn(args.model, pretrained, "imagenet-train", args.knn, checkpoint=args.checkpoint,
                         cache_dir=args.cache_dir, device=device, progress=not args.no_progress)
        say(f"[features] kNN of imagenet-train: {tuple(knn.shape)}")
    barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
