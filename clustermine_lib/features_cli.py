"""``python -m clustermine_lib.features`` (what ``make features`` runs): the parser, the preflight
and the extraction loop.

Before anything is extracted, ``preflight`` resolves and checks every dataset of ``--dataset``, the
corpus (a registered name or a corpus file), the prompt sets, the checkpoint, the weights (when something is to be computed) and the
numeric options, and stops with one ``PreflightError`` listing every problem. Then ``main`` extracts
(``extract``, ``text_features``) every dataset and the corpus and class-name text features under each
prompt set, unchanged under ``torchrun --nproc_per_node=N`` (``distributed``, ``feature_store``). A
dataset with too many unreadable images is not recorded; the others still are, and the run then fails
naming it. Errors are one message (``--debug``: the traceback).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from pathlib import Path

from .corpus import CORPORA, DEFAULT_CORPUS, DEFAULT_PREPROCESS, PREPROCESS
from .datasets import FILE_LIST, GROUPS, dataset_dir, expand_datasets, list_images, missing_files, resolve_data_root
from .distributed import barrier, init_distributed, rank_world
from .encoder import ModelRef
from .extract import DEFAULT_MAX_SKIPPED, cached_knn, extract_image_features, image_expect, image_key
from .feature_check import CLASS_TEXT, TextVariant, text_caches, variant
from .feature_store import (DEFAULT_SHARD_SIZE, DTYPES, CacheError, TooManySkipped, check_result, find_result,
                            image_dir, key_hash, text_dir)
from .models import DEFAULT_MODEL, device_problem
from .prompts import DEFAULT_PROMPTS, PROMPT_SETS
from .text_features import extract_text_features, prompt_templates, text_key


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
    p.add_argument("--corpus", default=DEFAULT_CORPUS,
                   help=f"registered corpus {sorted(CORPORA)} or a corpus file (UTF-8, one concept per line or "
                        "word,pos rows; its text features are cached under its content hash)")
    p.add_argument("--corpus-preprocess", default=DEFAULT_PREPROCESS, help="pre-processing of a registered corpus")
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
    """What ``preflight`` resolved: the model, each dataset's image list, the corpus (``text``: its
    ``feature_check.TextVariant``, None with --no-text), the prompt sets."""

    ref: ModelRef
    datasets: list[str]
    items: dict
    text: TextVariant | None
    prompts: list[str]
    todo: list[str] = field(default_factory=list)  # caches that are not complete yet


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
    text, prompts = None, [p.strip() for p in args.prompts.split(",") if p.strip()]
    if not args.no_text:
        if args.corpus not in CORPORA and not Path(args.corpus).expanduser().exists():
            problems.append(f"--corpus: unknown corpus {args.corpus!r}; known corpora: {sorted(CORPORA)}, or give "
                            "the path of a corpus file (UTF-8, one concept per line)")
        elif args.corpus_preprocess not in PREPROCESS:
            problems.append(f"--corpus-preprocess: unknown pre-processing {args.corpus_preprocess!r}; choose one "
                            f"of {list(PREPROCESS)}")
        else:
            try:
                text = variant(args.corpus, args.corpus_preprocess)
            except Exception as e:
                problems.append(str(e) if str(e).startswith("--corpus") else f"--corpus {args.corpus}: {e}")
        unknown = [p for p in prompts if p not in PROMPT_SETS]
        if unknown:
            problems.append(f"--prompts: unknown prompt set(s) {unknown}; known prompt sets: {sorted(PROMPT_SETS)}")
        if not prompts:
            problems.append("--prompts is empty: name one or more prompt sets")
    plan = Plan(ref, datasets, items, text, prompts)
    if ref is not None:
        plan.todo = _todo(plan, args)
        if args.knn and "imagenet-train" not in datasets:
            try:
                find_result(image_dir(ref.model_id, "imagenet-train", args.cache_dir), None, image_expect(ref, "imagenet-train"))
            except CacheError as e:
                problems.append(f"--knn needs the imagenet-train image features ({e.reason}): add imagenet-train "
                                "to --dataset")
        if plan.todo and not args.checkpoint:
            from huggingface_hub import constants

            from .models import cached_weights

            if cached_weights(ref.spec) is None:
                if not args.download:
                    problems.append(f"the weights of {ref.spec.key} are not on this machine (not in the Hugging "
                                    f"Face cache) and {len(plan.todo)} cache(s) need them: pass --download (with "
                                    "internet) or --checkpoint PATH (make: CHECKPOINT=PATH); see docs/gpu_workflow.md")
                elif constants.HF_HUB_OFFLINE:
                    problems.append(f"--download cannot fetch the weights of {ref.spec.key}: HF_HUB_OFFLINE=1 is "
                                    "set (the Makefile sets it so that a machine without internet fails at once); "
                                    "run with HF_HUB_OFFLINE=0, e.g. make features ... HF_HUB_OFFLINE=0 "
                                    "FEATURE_ARGS=--download")
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
    if plan.text is not None:
        for prompts in plan.prompts:
            _, templates = prompt_templates(prompts)
            for tag, names in text_caches(plan.text):
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
    problem = device_problem(args.device)
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
    if plan.text is not None:
        source = plan.text.source if plan.text.source in CORPORA else None  # what corpus_text_features records
        for prompts in plan.prompts:
            for tag, nm in text_caches(plan.text):
                t = extract_text_features(ref, None, nm, name=tag, prompts=prompts,
                                          batch_size=args.text_batch_size, **common,
                                          extra_meta={"corpus": source if tag != CLASS_TEXT else None})
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
