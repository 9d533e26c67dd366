"""CLIP text features of concept names under a prompt set, computed once into the feature store and
loaded from it, verified (``feature_store``).

- ``extract_text_features(model, pretrained, names, name=, prompts=)``: for each concept, every
  template is filled, encoded with ``model.encode_text`` (AFTER the text projection, the shared
  image-text space) and L2-normalised; the concept's feature is the mean of those, re-normalised.
  Shape (K, D), float32, cached under ``text/<name>.<names hash>.<prompt set>/``;
- ``load_text_features``: the same read back without the weights; a missing, stale (other model,
  names or templates) or damaged cache raises ``CacheError`` naming the file and the command that
  makes it;
- ``corpus_text_features(model, pretrained, corpus, prompts)``: a corpus's text features under the
  cache name ``make features`` gives a registered corpus (``<corpus>-<pre-processing>``, so a corpus
  extracted by ``make features`` is reused, never recomputed), or, for a corpus file, a name from
  its content hash (``corpus.resolve_corpus``);
- ``prompt_templates``: a prompt-set name or a list of templates -> ``(name, templates)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .feature_store import DEFAULT_SHARD_SIZE, FORMAT_VERSION, CacheError, check_result, load_shards, run_shards, text_dir
from .encoder import ModelRef, autocast, common_meta, model_info, progress_bar
from .fileio import content_hash
from .prompts import DEFAULT_PROMPTS


@dataclass
class TextFeatures:
    name: str
    prompts: str
    names: list[str]
    features: torch.Tensor  # (K, D) float, L2-normalised mean of normalised template features
    meta: dict
    path: Path


def prompt_templates(prompts) -> tuple[str, list[str]]:
    """``(name, templates)`` of ``prompts``: a registered prompt-set name, or a list of templates with
    one ``{}`` each (named ``custom-<hash>``)."""
    if isinstance(prompts, str):
        from .prompts import get_prompts

        return prompts, list(get_prompts(prompts))
    templates = list(prompts)
    if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
        raise ValueError("prompts must be a prompt-set name or a non-empty list of templates with exactly one '{}'.")
    return f"custom-{content_hash(templates)[:8]}", templates


def text_key(ref: ModelRef, names, templates) -> dict:
    """Everything the text features of ``names`` under ``templates`` depend on: the cache key."""
    return {"kind": "text", "format": FORMAT_VERSION, "model": ref.identity, "names_hash": content_hash(list(names)),
            "n_items": len(names), "templates": list(templates), "dtype": "float32", "precision": ref.precision}


def text_expect(ref: ModelRef, names, templates) -> dict:
    """The key fields a reader of text features checks (all but the precision they were computed in)."""
    key = text_key(ref, names, templates)
    return {k: key[k] for k in ("kind", "model", "names_hash", "n_items", "templates", "dtype")}


def _compute_text_shard(ref: ModelRef, names, templates, start: int, stop: int, batch_size: int, bar):
    """Encode concepts [start, stop) -> ({features (n, D)}, [], info); batches of ~batch_size prompts."""
    m = ref.get()
    per_batch = max(1, batch_size // len(templates))
    out = []
    with torch.inference_mode():
        for s in range(start, stop, per_batch):
            chunk = names[s:min(s + per_batch, stop)]
            tokens = m.tokenizer([t.format(n) for n in chunk for t in templates]).to(ref.device)
            with autocast(ref.device):
                z = m.model.encode_text(tokens)
            z = F.normalize(z.float(), dim=-1).view(len(chunk), len(templates), -1)
            out.append(F.normalize(z.mean(dim=1), dim=-1).cpu())
            bar.update(len(chunk))
    return {"features": torch.cat(out) if out else torch.empty(0, m.dim)}, model_info(m)


def extract_text_features(model, pretrained, names, *, name: str = "custom", prompts=DEFAULT_PROMPTS,
                          checkpoint=None, cache_dir=None, batch_size: int = 1024, device=None,
                          shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False, progress: bool = True,
                          extra_meta: dict | None = None, download: bool = False) -> TextFeatures:
    """Text features (K, D) of concept ``names`` under a prompt set, computed once and cached."""
    names = list(names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("names must be a non-empty list of concept strings.")
    ref = ModelRef.resolve(model, pretrained, checkpoint, device, download)
    prompt_name, templates = prompt_templates(prompts)
    key = text_key(ref, names, templates)
    store = text_dir(ref.model_id, name, names, prompt_name, cache_dir)
    state = {}

    def set_total(n):
        state["bar"] = progress_bar(n, f"{name} text", "concept", progress)

    def compute(s, e):
        return _compute_text_shard(ref, names, templates, s, e, batch_size, state["bar"])

    def finalize(folder, infos):
        return {**common_meta(ref, infos), "kind": "text", "name": name, "prompts": prompt_name,
                "templates": templates, "n_items": len(names), "dtype": "float32", "shard_size": shard_size,
                "skipped": [], **(extra_meta or {})}

    meta = run_shards(store, key, len(names), shard_size, compute, finalize, overwrite, set_total)
    if "bar" in state:
        state["bar"].close()
    return _text_result(ref, store, meta, name, prompts, names, cache_dir)


def _text_result(ref, store, meta, name, prompts, names, cache_dir) -> TextFeatures:
    try:
        features = load_shards(store, meta)["features"]
    except CacheError as e:
        from .feature_check import text_command

        raise e.with_hint(text_command(ref, name, prompts, cache_dir)) from None
    return TextFeatures(name, meta["prompts"], names, features, meta, store / meta["folder"])


def load_text_features(model, pretrained, names, *, name: str = "custom", prompts=DEFAULT_PROMPTS, checkpoint=None,
                       cache_dir=None) -> TextFeatures:
    """Read cached text features, verified against ``names`` and the prompt set's current templates;
    a missing, stale or damaged cache raises ``CacheError`` naming the file, what is wrong and the
    command that makes it."""
    names = list(names)
    ref = ModelRef.resolve(model, pretrained, checkpoint, "cpu")
    prompt_name, templates = prompt_templates(prompts)
    store = text_dir(ref.model_id, name, names, prompt_name, cache_dir)
    try:
        meta = check_result(store, "float32", text_expect(ref, names, templates))
    except CacheError as e:
        from .feature_check import elsewhere, text_command

        reason = f"text features of {name} x {prompt_name}: {e.reason}"
        if e.missing:
            reason += elsewhere(ref, store, cache_dir)
        raise CacheError(e.path, reason, e.missing, text_command(ref, name, prompts, cache_dir)) from None
    return _text_result(ref, store, meta, name, prompts, names, cache_dir)


def corpus_cache_name(corpus: str, preprocess: str) -> str:
    """The text-cache name of a registered corpus built with ``preprocess`` (what ``make features`` uses)."""
    return f"{corpus}-{preprocess}"


def corpus_text_features(model, pretrained, corpus, *, prompts=DEFAULT_PROMPTS, preprocess: str | None = None,
                         checkpoint=None, cache_dir=None, device=None, batch_size: int = 1024,
                         progress: bool = True, download: bool = False):
    """``(Corpus, TextFeatures, info)`` of ``corpus``: a registered corpus name, a corpus file, a
    ``Corpus`` (``corpus.resolve_corpus``; ``info`` says which, with the file's content hash) or the
    ``(Corpus, info)`` that ``resolve_corpus`` returned; its text features computed once under the
    cache name ``make features`` uses (a second call, or a corpus ``make features`` already
    extracted, reads the cache)."""
    from .corpus import resolve_corpus

    corp, info = corpus if isinstance(corpus, tuple) else resolve_corpus(corpus, preprocess)
    text = extract_text_features(model, pretrained, corp.names, name=info["cache_name"], prompts=prompts,
                                 checkpoint=checkpoint, cache_dir=cache_dir, batch_size=batch_size, device=device,
                                 progress=progress, download=download,
                                 extra_meta={"corpus": info["name"] if info["kind"] == "registered" else None})
    return corp, text, info
