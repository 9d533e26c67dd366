"""What is missing from the feature cache, and the command that makes it.

- ``check_cached(model, ..., datasets=, text=)``: one ``FileNotFoundError`` listing every image and
  text feature cache that is missing, stale (made from other inputs, an older format) or damaged, with
  the exact ``make features`` command that makes each (a notebook calls it in its first cells instead
  of failing after minutes of work; ``features.load_benchmark`` calls it before reading anything);
- ``make_command`` / ``text_command``: those command lines (a custom ``Corpus`` object or prompt list,
  which has no make target, gets the Python call instead); a model given as a config ``.json`` and a
  corpus given as a file are quoted by their absolute paths, so the line runs as printed;
- ``variant``: one benchmark variant's text (a registered corpus, a corpus file or a ``Corpus``) and
  the name of its text cache, the one ``make features`` and ``own_images`` write (``corpus.resolve_corpus``);
- ``elsewhere``: where the same features exist for other weights of the architecture (the hint for a
  cache that is missing because the checkpoint file changed, or another tag was given).

Only metadata and shard headers are read: no features, no weights.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .corpus import CORPORA, DEFAULT_CORPUS, DEFAULT_PREPROCESS, PREPROCESS, Corpus, resolve_corpus
from .datasets import GROUPS, expand_datasets, imagenet_classnames, resolve_dataset
from .encoder import ModelRef
from .feature_store import CacheError, check_result, features_root, find_result, image_dir, model_dir, text_dir
from .fileio import read_json
from .prompts import DEFAULT_PROMPTS
from .text_features import corpus_cache_name, prompt_templates, text_expect

CLASS_TEXT = "imagenet-classes"  # name of the ImageNet class-name text cache (Y_GT)
_TEXT_KEYS = ("corpus", "preprocess", "prompts")


def corpus_tag(corpus: Corpus, preprocess: str, registered: bool) -> str:
    """The text-cache name of a benchmark's corpus: ``<corpus>-<pre-processing>`` when registered."""
    return corpus_cache_name(corpus.name, preprocess) if registered else corpus.name


@dataclass(frozen=True)
class TextVariant:
    """One benchmark variant's text: the corpus, the name of its text cache (``tag``), what ``make
    features`` takes as ``CORPUS`` (``source``: a registered name or a corpus file's absolute path; None
    for a ``Corpus`` object, which has no make target), the pre-processing and the prompt set."""

    corpus: Corpus
    tag: str
    source: str | None
    preprocess: str
    prompts: object


def variant(corpus=DEFAULT_CORPUS, preprocess: str = DEFAULT_PREPROCESS, prompts=DEFAULT_PROMPTS) -> TextVariant:
    """The ``TextVariant`` of ``corpus`` (a registered name, a corpus file or a ``Corpus``;
    ``corpus.resolve_corpus``: a file's text cache is ``file-<content hash>``, the name ``own_images``
    uses) under ``preprocess`` (registered corpora only) and ``prompts``."""
    corp, info = resolve_corpus(corpus, preprocess)
    source = {"registered": info["name"], "file": info["path"]}.get(info["kind"])
    return TextVariant(corp, info["cache_name"], source, preprocess, prompts)


def text_caches(text: TextVariant) -> tuple:
    """``(name, names)`` of the two text caches a benchmark reads: the corpus and the 1000 class names
    (a benchmark whose ID set holds fewer classes reads their rows, ``features.load_benchmark``)."""
    return (text.tag, text.corpus.names), (CLASS_TEXT, imagenet_classnames())


def model_argument(ref: ModelRef) -> str:
    """What ``make features`` takes as ``MODEL`` for ``ref``: the absolute path of the model config
    ``.json`` it was resolved from (``models.resolve_model`` registers the file with open_clip), else the
    architecture name."""
    try:
        from open_clip.factory import _MODEL_CONFIG_PATHS  # the files added by open_clip.add_model_config
    except ImportError:
        return ref.spec.arch
    files = [p for p in _MODEL_CONFIG_PATHS if Path(p).suffix == ".json" and Path(p).stem == ref.spec.arch
             and Path(p).is_file()]
    return os.path.abspath(files[-1]) if files else ref.spec.arch


def _q(value) -> str:
    return shlex.quote(str(value))


def make_command(ref: ModelRef, datasets, corpus=None, prompts=None, data_root=None, cache_dir=None,
                 preprocess: str = DEFAULT_PREPROCESS, dtype: str | None = None) -> str:
    """The ``make features`` line that creates the given features (DATASET=text: text features only).
    ``corpus``: a registered name or a corpus file (quoted by its path); the model is quoted as
    ``model_argument`` gives it (a config ``.json`` by its path), the checkpoint by its absolute path."""
    parts = ["make features", f"MODEL={_q(model_argument(ref))}"]
    if ref.spec.pretrained:
        parts.append(f"PRETRAINED={ref.spec.pretrained}")
    if ref.checkpoint:
        parts.append(f"CHECKPOINT={_q(os.path.abspath(ref.checkpoint))}")
    group = [g for g, members in GROUPS.items() if datasets and set(members) == set(datasets)]
    parts.append(f"DATASET={group[0] if group else ','.join(datasets) if datasets else 'text'}")
    if corpus:
        parts.append(f"CORPUS={_q(corpus)}")
    if prompts:
        parts.append(f"PROMPTS={prompts}")
    args = []
    if corpus and corpus in CORPORA and preprocess != DEFAULT_PREPROCESS:
        args.append(f"--corpus-preprocess {preprocess}")
    if datasets and dtype and dtype != "float32":
        args.append(f"--dtype {dtype}")
    if args:
        parts.append(f'FEATURE_ARGS="{" ".join(args)}"')
    if datasets:
        root = data_root or os.environ.get("DATA_ROOT") or "/path/to/data"
        parts.append(f"DATA_ROOT={_q(root)}")
    if cache_dir:
        parts.append(f"CACHE_DIR={_q(cache_dir)}")
    return " ".join(parts)


def text_command(ref: ModelRef, tag: str, prompts, cache_dir=None, data_root=None, corpus: str | None = None,
                 preprocess: str = DEFAULT_PREPROCESS) -> str:
    """What makes the text cache called ``tag`` (a corpus, or the class names) under ``prompts``: a
    ``make features`` line (``corpus``: what ``CORPUS`` takes, a registered name or a corpus file; when
    not given, ``tag`` is looked up among the registered corpora), or the Python call for a ``Corpus``
    object or a prompt list."""
    if isinstance(prompts, str):
        if tag == CLASS_TEXT or corpus:
            return make_command(ref, [], corpus, prompts, data_root, cache_dir, preprocess)
        for name in CORPORA:
            for pre in PREPROCESS:
                if tag == corpus_cache_name(name, pre):
                    return make_command(ref, [], name, prompts, data_root, cache_dir, pre)
    return (f"(a custom Corpus or prompt list has no make target) text_features.extract_text_features("
            f"model, pretrained, names, name={tag!r}, prompts=...)")


def elsewhere(ref: ModelRef, store, cache_dir) -> str:
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


def missing_caches(ref: ModelRef, datasets, variants, cache_dir, data_root, dtype=None) -> dict[str, list[str]]:
    """What is missing, stale (made from other inputs) or damaged in the cache, grouped by the command
    (or call) that makes it. ``variants``: ``TextVariant`` s (``variant``); a cache is fine when
    ``load_image_features`` / ``load_text_features`` would accept it (headers only). When image
    features are missing, the first variant whose text is missing too is made by the same line
    (``make features`` extracts the images and the text of ``CORPUS`` x ``PROMPTS`` in one run)."""
    from .extract import image_expect

    absent, image_lines = [], []
    for d in dict.fromkeys(resolve_dataset(x).name for x in datasets):
        store = image_dir(ref.model_id, d, cache_dir)
        try:
            find_result(store, dtype, image_expect(ref, d))
        except CacheError as e:
            absent.append(d)
            image_lines.append(_entry(f"image features of {d}", e,
                                      elsewhere(ref, store, cache_dir) if e.missing else ""))
    text: dict[tuple, list[str]] = {}  # (corpus source, preprocess, prompts) or (python call,) -> entries
    seen = set()
    for v in variants:
        prompt_name, templates = prompt_templates(v.prompts)
        for tag, names in text_caches(v):
            store = text_dir(ref.model_id, tag, names, prompt_name, cache_dir)
            what = f"text features of {tag} x {prompt_name}"
            if what in seen:
                continue
            seen.add(what)
            try:
                check_result(store, "float32", text_expect(ref, names, templates))
                continue
            except CacheError as e:
                line = _entry(what, e, elsewhere(ref, store, cache_dir) if e.missing else "")
            if isinstance(v.prompts, str) and (v.source or tag == CLASS_TEXT):
                # one make line makes a corpus (registered or a file) and the class names under a prompt set
                key = (v.source, v.preprocess, v.prompts)
            else:
                key = (text_command(ref, tag, None, cache_dir, data_root),)
            text.setdefault(key, []).append(line)
    out: dict[str, list[str]] = {}
    if absent:
        first = next((k for k in text if len(k) == 3), None)
        corpus, preprocess, prompts = first if first else (None, DEFAULT_PREPROCESS, None)
        out[make_command(ref, absent, corpus, prompts, data_root, cache_dir, preprocess, dtype)] = \
            image_lines + text.pop(first, [])
    for key, lines in text.items():
        fix = key[0] if len(key) == 1 else text_command(ref, CLASS_TEXT, key[2], cache_dir, data_root,
                                                        key[0], key[1])
        out.setdefault(fix, []).extend(lines)
    return out


def missing_message(ref: ModelRef, missing: dict[str, list[str]]) -> str:
    lines = []
    for fix, items in missing.items():
        lines += [f"  - {m}" for m in items] + [f"      to make them: {fix}"]
    return (f"Cached features of {ref.model_id} are missing, stale or damaged:\n" + "\n".join(lines) +
            "\nMake them on a GPU machine (docs/gpu_workflow.md); the command rebuilds only what is wrong.")


def check_cached(model, pretrained=None, *, checkpoint=None, datasets=(), text=(), cache_dir=None,
                 data_root=None, dtype: str | None = None) -> None:
    """Raise one ``FileNotFoundError`` listing every cache that ``load_benchmark`` would miss or refuse:
    the image features of ``datasets`` (names, aliases or groups; ``dtype`` None: either dtype) and,
    for each dict of ``text`` (optional keys ``corpus`` -- a registered name, a corpus file or a
    ``Corpus`` --,
    ``preprocess``, ``prompts``; the defaults of ``load_benchmark``), the corpus and the ImageNet
    class-name text features. Each is listed as missing, or with what is wrong (made from other
    inputs, an older format, damaged), with the exact ``make features`` command that makes it. Reads
    only metadata and shard headers: no features, no weights."""
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    text = list(text)
    for v in text:
        if set(v) - set(_TEXT_KEYS):
            raise ValueError(f"text variants take the keys {list(_TEXT_KEYS)}, got {sorted(v)}.")
    missing = missing_caches(ref, expand_datasets(datasets), [variant(**v) for v in text], cache_dir, data_root,
                             dtype)
    if missing:
        raise FileNotFoundError(missing_message(ref, missing))
