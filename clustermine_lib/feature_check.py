"""What is missing from the feature cache, and the command that makes it.

- ``check_cached(model, ..., datasets=, text=)``: one ``FileNotFoundError`` listing every image and
  text feature cache that is missing, stale (made from other inputs, an older format) or damaged, with
  the exact ``make features`` command that makes each (a notebook calls it in its first cells instead
  of failing after minutes of work; ``features.load_benchmark`` calls it before reading anything);
- ``make_command`` / ``text_command``: those command lines (a custom corpus or prompt list, which has
  no make target, gets the Python call instead);
- ``elsewhere``: where the same features exist for other weights of the architecture (the hint for a
  cache that is missing because the checkpoint file changed, or another tag was given).

Only metadata and shard headers are read: no features, no weights.
"""
from __future__ import annotations

import os

from .corpus import CORPORA, DEFAULT_CORPUS, DEFAULT_PREPROCESS, PREPROCESS, Corpus, load_corpus
from .datasets import GROUPS, expand_datasets, imagenet_classnames, resolve_dataset
from .encoder import ModelRef
from .feature_store import CacheError, check_result, features_root, find_result, image_dir, model_dir, text_dir
from .fileio import read_json
from .prompts import DEFAULT_PROMPTS
from .text_features import corpus_cache_name, prompt_templates, text_expect

CLASS_TEXT = "imagenet-classes"  # name of the ImageNet class-name text cache (Y_GT)
_TEXT_KEYS = ("corpus", "preprocess", "prompts")


def _corpus(corpus, preprocess: str) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else load_corpus(corpus, preprocess)


def corpus_tag(corpus: Corpus, preprocess: str, registered: bool) -> str:
    """The text-cache name of a benchmark's corpus: ``<corpus>-<pre-processing>`` when registered."""
    return corpus_cache_name(corpus.name, preprocess) if registered else corpus.name


def text_caches(corp: Corpus, preprocess: str, registered: bool) -> tuple:
    """``(name, names)`` of the two text caches a benchmark reads: the corpus and the class names."""
    return (corpus_tag(corp, preprocess, registered), corp.names), (CLASS_TEXT, imagenet_classnames())


def variant(corpus=DEFAULT_CORPUS, preprocess: str = DEFAULT_PREPROCESS, prompts=DEFAULT_PROMPTS) -> tuple:
    """``(Corpus, registered, preprocess, prompts)`` of one benchmark variant's text."""
    return _corpus(corpus, preprocess), not isinstance(corpus, Corpus), preprocess, prompts


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
                if tag == corpus_cache_name(corpus, pre):
                    return make_command(ref, [], corpus, prompts, data_root, cache_dir, pre)
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
    (or call) that makes it. ``variants``: ``(corpus, registered, preprocess, prompts)`` (``variant``);
    a cache is fine when ``load_image_features`` / ``load_text_features`` would accept it (headers only)."""
    from .extract import image_expect

    out: dict[str, list[str]] = {}
    absent, lines = [], []
    for d in dict.fromkeys(resolve_dataset(x).name for x in datasets):
        store = image_dir(ref.model_id, d, cache_dir)
        try:
            find_result(store, dtype, image_expect(ref, d))
        except CacheError as e:
            absent.append(d)
            lines.append(_entry(f"image features of {d}", e, elsewhere(ref, store, cache_dir) if e.missing else ""))
    if absent:
        out[make_command(ref, absent, data_root=data_root, cache_dir=cache_dir, dtype=dtype)] = lines
    seen = set()
    for corp, registered, preprocess, prompts in variants:
        prompt_name, templates = prompt_templates(prompts)
        for tag, names in text_caches(corp, preprocess, registered):
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
            if isinstance(prompts, str) and (registered or tag == CLASS_TEXT):
                # one make line makes a registered corpus and the class names under a prompt set
                fix = text_command(ref, corpus_tag(corp, preprocess, True) if registered else tag, prompts,
                                   cache_dir, data_root)
            else:
                fix = text_command(ref, tag, None, cache_dir, data_root)
            out.setdefault(fix, []).append(line)
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
    missing = missing_caches(ref, expand_datasets(datasets), [variant(**v) for v in text], cache_dir, data_root,
                             dtype)
    if missing:
        raise FileNotFoundError(missing_message(ref, missing))
