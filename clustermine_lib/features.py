"""Real-data ``Benchmark``s from cached CLIP features, the preflight that names what is missing, and
the ``make features`` command line (``python -m clustermine_lib.features``).

- ``load_benchmark(model, pretrained, corpus, prompts, ...)``: assemble cached image features of the
  ID train / test sets and the OOD / shifted sets, plus the text features of the corpus and of the
  1000 ImageNet class names, into the same ``Benchmark`` container the simulated profile returns;
  everything it reads is verified (``feature_store``);
- ``check_cached(model, ..., datasets=, text=)``: one ``FileNotFoundError`` listing every image and
  text feature cache that is missing, stale (made from other inputs, an older format) or damaged, with
  the exact ``make features`` command that makes each (a notebook calls it in its first cells instead
  of failing after minutes of work);
- ``make_command`` / ``text_command``: those command lines; ``main``: the command line itself. Before
  anything is extracted, ``preflight`` resolves and checks every dataset of ``--dataset``, the corpus,
  the prompt sets, the checkpoint, the weights (when something is to be computed) and the numeric
  options, and stops with one list of every problem. Then it extracts (``extract``) every dataset and
  the corpus and class-name text features under each prompt set, unchanged under ``torchrun
  --nproc_per_node=N`` (``distributed``, ``feature_store``). A dataset with too many unreadable
  images is not recorded; the others still are, and the run then fails naming it. Errors are one
  message (``--debug``: the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import torch

from .benchmark import OOD_SETS, Benchmark
from .corpus import CORPORA, DEFAULT_CORPUS, DEFAULT_PREPROCESS, PREPROCESS, Corpus, load_corpus
from .datasets import (FILE_LIST, GROUPS, dataset_dir, expand_datasets, imagenet_classnames, list_images,
                       missing_files, resolve_data_root, resolve_dataset)
from .distributed import barrier, init_distributed, rank_world
from .extract import (DEFAULT_MAX_SKIPPED, ModelRef, cached_knn, extract_image_features, extract_text_features,
                      image_expect, image_key, load_image_features, load_text_features, prompt_templates, text_expect,
                      text_key)
from .feature_store import (DEFAULT_SHARD_SIZE, DTYPES, CacheError, TooManySkipped, check_result, features_root,
                            find_result, image_dir, key_hash, model_dir, text_dir)
from .fileio import read_json
from .models import DEFAULT_MODEL
from .prompts import DEFAULT_PROMPTS, PROMPT_SETS

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
                 preprocess: str = DEFAULT_PREPROCESS, dtype: str | None = None) -> str:
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
    args = []
    if corpus and preprocess != DEFAULT_PREPROCESS:
        args.append(f"--corpus-preprocess {preprocess}")
    if datasets and dtype and dtype != "float32":
        args.append(f"--dtype {dtype}")
    if args:
        parts.append(f'FEATURE_ARGS="{" ".join(args)}"')
    if datasets:
        root = data_root or os.environ.get("DATA_ROOT") or "/path/to/data"
        parts.append(f"DATA_ROOT={root}")
    if cache_dir:
        parts.append(f"CACHE_DIR={cache_dir}")
    return " ".join(parts)


def text_command(ref: ModelRef, tag: str, prompts, cache_dir=None, data_root=None) -> str:
    """What makes the text cache called ``tag`` (a registered corpus + pre-processing, or the class
    names) under ``prompts``: a ``make features`` line, or the Python call for a custom one."""
    if isinstance(prompts, str):
        if tag == CLASS_TEXT:
            return make_command(ref, [], None, prompts, data_root, cache_dir)
        for corpus in CORPORA:
            for pre in PREPROCESS:
                if tag == f"{corpus}-{pre}":
                    return make_command(ref, [], corpus, prompts, data_root, cache_dir, pre)
    return (f"(a custom Corpus or prompt list has no make target) extract.extract_text_features("
            f"model, pretrained, names, name={tag!r}, prompts=...)")


def _elsewhere(ref: ModelRef, store, cache_dir) -> str:
    """Where the same features exist for other weights of this architecture, if anywhere (a hint for a
    cache that is missing for ``ref``: e.g. the checkpoint file changed, or another tag was given)."""
    here = model_dir(ref.model_id, cache_dir)
    rel = store.relative_to(here)
    found = []
    for other in sorted(features_root(cache_dir).glob(f"*/{rel.as_posix()}")):
        if other == store or not other.is_dir():
            continue
        meta = next((read_json(m) for m in sorted(other.glob("*.meta.json"))), None)
        model = (meta or {}).get("key", {}).get("model") if isinstance(meta, dict) else None
        if isinstance(model, dict) and model.get("arch") == ref.spec.arch:
            found.append(f"{other.parents[1].name} "
                         f"(pretrained={model.get('pretrained')}, checkpoint {meta.get('checkpoint')}, sha256 "
                         f"{str(model.get('checkpoint_sha256'))[:12]})")
    if not found:
        return ""
    return (f" [the same features exist for other weights of {ref.spec.arch}: {'; '.join(found[:2])}; "
            "the checkpoint file changed since, or they were made with another PRETRAINED/CHECKPOINT]")


def _entry(what: str, err: CacheError, hint: str) -> str:
    return f"{what} ({err.path})" + (hint if err.missing else f": {err.reason}")


def _missing(ref: ModelRef, datasets, variants, cache_dir, data_root, dtype=None) -> dict[str, list[str]]:
    """What is missing, stale (made from other inputs) or damaged in the cache, grouped by the command
    (or call) that makes it. ``variants``: ``(corpus, registered, preprocess, prompts)`` (``_variant``);
    a cache is fine when ``load_image_features`` / ``load_text_features`` would accept it (headers only)."""
    out: dict[str, list[str]] = {}
    absent, lines = [], []
    for d in dict.fromkeys(resolve_dataset(x).name for x in datasets):
        store = image_dir(ref.model_id, d, cache_dir)
        try:
            find_result(store, dtype, image_expect(ref, d))
        except CacheError as e:
            absent.append(d)
            lines.append(_entry(f"image features of {d}", e, _elsewhere(ref, store, cache_dir) if e.missing else ""))
    if absent:
        out[make_command(ref, absent, data_root=data_root, cache_dir=cache_dir, dtype=dtype)] = lines
    seen = set()
    for corp, registered, preprocess, prompts in variants:
        prompt_name, templates = prompt_templates(prompts)
        for tag, names in _text_caches(corp, preprocess, registered):
            store = text_dir(ref.model_id, tag, names, prompt_name, cache_dir)
            what = f"text features of {tag} x {prompt_name}"
            if what in seen:
                continue
            seen.add(what)
            try:
                check_result(store, "float32", text_expect(ref, names, templates))
                continue
            except CacheError as e:
                line = _entry(what, e, _elsewhere(ref, store, cache_dir) if e.missing else "")
            if isinstance(prompts, str) and (registered or tag == CLASS_TEXT):
                # one make line makes a registered corpus and the class names under a prompt set
                fix = text_command(ref, _corpus_tag(corp, preprocess, True) if registered else tag, prompts,
                                   cache_dir, data_root)
            else:
                fix = text_command(ref, tag, None, cache_dir, data_root)
            out.setdefault(fix, []).append(line)
    return out


def _message(ref: ModelRef, missing: dict[str, list[str]]) -> str:
    lines = []
    for fix, items in missing.items():
        lines += [f"  - {m}" for m in items] + [f"      to make them: {fix}"]
    return (f"Cached features of {ref.model_id} are missing, stale or damaged:\n" + "\n".join(lines) +
            "\nMake them on a GPU machine (docs/gpu_workflow.md); the command rebuilds only what is wrong.")


def _variant(corpus=DEFAULT_CORPUS, preprocess: str = DEFAULT_PREPROCESS, prompts=DEFAULT_PROMPTS) -> tuple:
    """``(Corpus, registered, preprocess, prompts)`` of one benchmark variant's text."""
    return _corpus(corpus, preprocess), not isinstance(corpus, Corpus), preprocess, prompts


def check_cached(model, pretrained=None, *, checkpoint=None, datasets=(), text=(), cache_dir=None,
                 data_root=None, dtype: str | None = None) -> None:
    """Raise one ``FileNotFoundError`` listing every cache that ``load_benchmark`` would miss or refuse:
    the image features of ``datasets`` (names, aliases or groups; ``dtype`` None: either dtype) and,
    for each dict of ``text`` (optional keys ``corpus`` -- a registered name or a ``Corpus`` --,
    ``preprocess``, ``prompts``; the defaults of ``load_benchmark``), the corpus and the ImageNet
    class-name text features. Each is listed as missing, or with what is wrong (made from other
    inputs, an older format, damaged), with the exact ``make features`` command that makes it. Reads
    only metadata and shard headers: no features, no weights."""
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    text = list(text)
    for v in text:
        if set(v) - set(_TEXT_KEYS):
            raise ValueError(f"text variants take the keys {list(_TEXT_KEYS)}, got {sorted(v)}.")
    missing = _missing(ref, expand_datasets(datasets), [_variant(**v) for v in text], cache_dir, data_root, dtype)
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
    variant = _variant(corpus, preprocess, prompts)
    corp, registered = variant[:2]
    train_name, test_name = resolve_dataset(f"{id_dataset}-train").name, resolve_dataset(f"{id_dataset}-val").name
    wanted = list(dict.fromkeys(resolve_dataset(d).name for d in [train_name, test_name, *ood, *shifted]))
    missing = _missing(ref, wanted, [variant], cache_dir, data_root, dtype)
    if missing:
        raise FileNotFoundError(_message(ref, missing))
    images = {d: load_image_features(ref, None, d, cache_dir=cache_dir, dtype=dtype) for d in wanted}
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
        description="Extract and cache CLIP image/text features (run under torchrun for several GPUs). "
                    "Every dataset, the corpus, the prompt sets, the checkpoint and the numeric options are "
                    "checked before anything is extracted.")
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
    p.add_argument("--device", default=None, help="auto (CUDA when present; the default), cpu, cuda or cuda:<i>")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of subsampled sets (ImageNet-C)")
    p.add_argument("--max-skipped", type=float, default=DEFAULT_MAX_SKIPPED,
                   help="share of a dataset's images that may be missing or unreadable (default 0.01); "
                        "more, or all of them, is an error and nothing is recorded")
    p.add_argument("--download", action="store_true", help="let open_clip download missing weights")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute everything (the previous result stays in use until the new one is complete)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


class PreflightError(ValueError):
    """Everything that is wrong with a ``make features`` command, found before any extraction."""


@dataclass
class Plan:
    """What ``preflight`` resolved: the model, each dataset's image list, the corpus, the prompt sets."""

    ref: ModelRef
    datasets: list[str]
    items: dict
    corpus: Corpus | None
    prompts: list[str]
    todo: list[str] = field(default_factory=list)  # caches that are not complete yet


def _device_problem(device) -> str | None:
    if device is None or str(device).lower() == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"--device {device!r} is not a device: use cpu, cuda or cuda:<index>"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: CUDA is not available on this machine (use --device cpu)"
    return None


def preflight(args, device=None, problems=None) -> Plan:
    """Resolve and check everything a ``make features`` command needs before extracting anything: the
    numeric options, the model and checkpoint (its file header), every dataset of the requested groups
    (folder, image list, files listed in a ``filelist.txt``), the corpus, the prompt sets and, when
    something is to be computed, the weights. Raises one ``PreflightError`` listing every problem."""
    problems = list(problems or [])
    for opt, value, low in (("--batch-size", args.batch_size, 1), ("--text-batch-size", args.text_batch_size, 1),
                            ("--shard-size", args.shard_size, 1), ("--knn", args.knn, 0),
                            ("--num-workers", 0 if args.num_workers is None else args.num_workers, 0)):
        if value < low:
            problems.append(f"{opt} must be >= {low}, got {value}")
    if not 0 <= args.max_skipped <= 1:
        problems.append(f"--max-skipped is a share in [0, 1] (0.01 = 1%), got {args.max_skipped}")
    ref = None
    pretrained = None if args.pretrained in (None, "", "none", "None") else args.pretrained
    try:
        ref = ModelRef.resolve(args.model, pretrained, args.checkpoint, device or "cpu", args.download)
    except Exception as e:
        problems.append(str(e))
    if args.checkpoint:
        try:
            from .models import check_checkpoint

            check_checkpoint(args.checkpoint, read=True)
        except (ValueError, OSError) as e:
            if str(e) not in problems:
                problems.append(str(e))
    names = [n.strip() for n in args.dataset.split(",") if n.strip()]
    datasets = []
    for n in names:
        if n.lower() == "text":
            continue
        try:
            datasets += [d for d in expand_datasets([n]) if d not in datasets]
        except ValueError as e:
            problems.append(f"--dataset: {e}")
    if not names:
        problems.append("--dataset is empty: name datasets or groups, or 'text' for text features only")
    items = {}
    if datasets:
        try:
            root = resolve_data_root(args.data_root)
        except ValueError as e:
            problems.append(str(e))
            datasets_ok = []
        else:
            datasets_ok = datasets if root.is_dir() else []
            if not root.is_dir():
                problems.append(f"the data root {root} (--data-root / DATA_ROOT) is not a folder; the layout "
                                "under it is in docs/gpu_workflow.md")
        for d in datasets_ok:
            try:
                items[d] = list_images(d, args.data_root, args.seed)
            except (OSError, ValueError) as e:
                problems.append(str(e))
                continue
            root = dataset_dir(d, args.data_root)
            if (root / FILE_LIST).is_file():
                gone = missing_files(root, items[d])
                if gone and (len(gone) == len(items[d]) or len(gone) > args.max_skipped * len(items[d])):
                    problems.append(f"{d}: {len(gone)} of the {len(items[d])} images listed in {root / FILE_LIST} "
                                    f"do not exist under {root} (first: {', '.join(gone[:3])}); fix the list "
                                    "or the files" + (f", or accept them with --max-skipped "
                                                      f"{min(1.0, round(len(gone) / len(items[d]) + .005, 2)):g}"
                                                      if len(gone) < len(items[d]) else ""))
    corpus, prompts = None, [p.strip() for p in args.prompts.split(",") if p.strip()]
    if not args.no_text:
        if args.corpus not in CORPORA:
            problems.append(f"--corpus: unknown corpus {args.corpus!r}; known corpora: {sorted(CORPORA)}")
        elif args.corpus_preprocess not in PREPROCESS:
            problems.append(f"--corpus-preprocess: unknown pre-processing {args.corpus_preprocess!r}; choose one "
                            f"of {list(PREPROCESS)}")
        else:
            try:
                corpus = load_corpus(args.corpus, args.corpus_preprocess)
            except Exception as e:
                problems.append(f"--corpus {args.corpus}: {e}")
        unknown = [p for p in prompts if p not in PROMPT_SETS]
        if unknown:
            problems.append(f"--prompts: unknown prompt set(s) {unknown}; known prompt sets: {sorted(PROMPT_SETS)}")
        if not prompts:
            problems.append("--prompts is empty: name one or more prompt sets")
    plan = Plan(ref, datasets, items, corpus, prompts)
    if ref is not None:
        plan.todo = _todo(plan, args)
        if args.knn and "imagenet-train" not in datasets:
            try:
                find_result(image_dir(ref.model_id, "imagenet-train", args.cache_dir), None, image_expect(ref, "imagenet-train"))
            except CacheError as e:
                problems.append(f"--knn needs the imagenet-train image features ({e.reason}): add imagenet-train "
                                "to --dataset")
        if plan.todo and not args.checkpoint and not args.download:
            from .models import cached_weights

            if cached_weights(ref.spec) is None:
                problems.append(f"the weights of {ref.spec.key} are not on this machine (not in the Hugging Face "
                                f"cache) and {len(plan.todo)} cache(s) need them: pass --download (with internet) "
                                "or --checkpoint PATH (make: CHECKPOINT=PATH); see docs/gpu_workflow.md")
    if len(problems) == 1:
        raise PreflightError(f"nothing was extracted: {problems[0]}")
    if problems:
        raise PreflightError(f"nothing was extracted; {len(problems)} problems to fix first:\n" +
                             "\n".join(f"  - {p}" for p in problems))
    return plan


def _todo(plan: Plan, args) -> list[str]:
    """The requested caches that are not complete for these exact inputs (headers checked)."""
    ref, todo = plan.ref, []
    for d in plan.datasets:
        if d not in plan.items:  # not listable: it is reported; it would need the model too
            todo.append(f"image features of {d}")
            continue
        key = image_key(ref, d, plan.items[d], args.dtype)
        store = image_dir(ref.model_id, d, args.cache_dir)
        try:
            if args.overwrite or check_result(store, args.dtype)["key_hash"] != key_hash(key):
                todo.append(f"image features of {d}")
        except CacheError:
            todo.append(f"image features of {d}")
    if plan.corpus is not None:
        for prompts in plan.prompts:
            _, templates = prompt_templates(prompts)
            for tag, names in _text_caches(plan.corpus, args.corpus_preprocess, True):
                store = text_dir(ref.model_id, tag, names, prompts, args.cache_dir)
                try:
                    hit = check_result(store, "float32")["key_hash"] == key_hash(text_key(ref, names, templates))
                except CacheError:
                    hit = False
                if args.overwrite or not hit:
                    todo.append(f"text features of {tag} x {prompts}")
    return todo


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    problem = _device_problem(args.device)
    device = init_distributed(args.device) if problem is None else None
    plan = preflight(args, device, [problem] if problem else [])
    rank, world = rank_world()
    say = print if rank == 0 else (lambda *a, **k: None)
    ref = plan.ref
    say(f"[features] {ref.model_id} on {world} process(es), device {device}; datasets: {plan.datasets or '-'}; "
        f"{len(plan.todo)} cache(s) to compute")
    common = dict(checkpoint=args.checkpoint, cache_dir=args.cache_dir, device=device,
                  shard_size=args.shard_size, overwrite=args.overwrite, progress=not args.no_progress)
    failed = []
    for d in plan.datasets:
        try:
            meta = extract_image_features(ref, None, d, data_root=args.data_root, batch_size=args.batch_size,
                                          num_workers=args.num_workers, dtype=args.dtype, seed=args.seed,
                                          load=False, max_skipped=args.max_skipped, items=plan.items[d], **common)
        except TooManySkipped as e:  # the other datasets are still extracted; the run fails at the end
            failed.append(str(e))
            say(f"[features] {d}: NOT recorded: {e}")
            continue
        say(f"[features] {d}: {meta['n_rows']} images (skipped {len(meta['skipped'])}), dim {meta['dim']}, "
            f"logit_scale {meta['logit_scale']:.4g} -> {image_dir(ref.model_id, d, args.cache_dir) / meta['folder']}")
    if plan.corpus is not None:
        for prompts in plan.prompts:
            for tag, nm in _text_caches(plan.corpus, args.corpus_preprocess, True):
                t = extract_text_features(ref, None, nm, name=tag, prompts=prompts,
                                          batch_size=args.text_batch_size, **common,
                                          extra_meta={"corpus": args.corpus if tag != CLASS_TEXT else None})
                say(f"[features] text {tag} x {prompts}: {tuple(t.features.shape)} -> {t.path}")
    if args.knn and rank == 0 and not failed:
        knn = cached_knn(ref, None, "imagenet-train", args.knn, cache_dir=args.cache_dir, device=device,
                         progress=not args.no_progress, dtype=args.dtype)
        say(f"[features] kNN of imagenet-train: {tuple(knn.shape)}")
    barrier()
    if failed:
        raise TooManySkipped(f"{len(failed)} dataset(s) not recorded (every other cache is complete):\n" +
                             "\n".join(f"  - {f}" for f in failed))
    return 0


def main(argv=None) -> int:
    """``python -m clustermine_lib.features``: errors are one message (``--debug``: the traceback)."""
    from .cli import run_cli

    return run_cli(_main, argv, prog="features")


if __name__ == "__main__":
    sys.exit(main())
